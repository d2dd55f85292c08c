"""Atomic artifact writes and pickle-free tensor I/O.

Every artifact is written to a temporary file in the same folder and renamed into place, so a crash or kill
never leaves a half-written file where a finished one is expected.  Tensors go through safetensors only.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def json_safe(o: Any) -> Any:
    """``o`` as plain, strict JSON data: numpy scalars and arrays made plain, tuples made lists, dict keys made
    strings, NaN/inf floats made None (strict JSON has no NaN), anything else (a Path, an enum) made its ``str``.

    The one converter for fingerprints and result records: what it returns compares equal to what
    ``json.loads(json.dumps(...))`` gives back after a round trip through a file."""
    if isinstance(o, dict):
        return {k if isinstance(k, str) else json.dumps(json_safe(k)).strip('"'): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if o is None or isinstance(o, str):
        return o
    return str(o)


def update_json(path: str | Path, fn, default: Any = None) -> Any:
    """Read-modify-write of the JSON file ``path`` under an exclusive lock (``path`` + ``.lock``): the file is
    replaced atomically by ``fn(current)`` (``current`` is ``default`` when there is no file yet), so two writers
    (two kernels) never lose each other's change.  Returns what was written."""
    import contextlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        with contextlib.suppress(ImportError):  # no fcntl (Windows): one writer at a time is then up to the user
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        doc = fn(read_json(path, default))
        atomic_write_json(path, doc)
    return doc


def atomic_parquet(df, path: str | Path) -> None:
    """Write a pandas DataFrame to ``path`` as parquet, atomically (no index column)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def safe_name(label: str) -> str:
    """``label`` (a dictionary id like ``A/1``) as one file or folder name: runs of other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


def read_json(path: str | Path, default: Any = None, stage: str | None = None) -> Any:
    """The JSON in ``path`` (``default`` if there is no such file).  A file cut short or otherwise not JSON raises
    ``CorruptArtifactError`` naming it and ``stage``, the stage that rebuilds it."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        from .errors import CorruptArtifactError

        raise CorruptArtifactError(path, f"not valid JSON ({e})", stage) from None


def file_sha(path: str | Path) -> str:
    """A short content hash of a file (the weights an analysis was computed from).  Remembered per (path, mtime,
    size, inode): a card or a fingerprint check asks for the same weights' hash many times, and every writer here
    replaces a file atomically (a new inode and mtime), so a changed file is hashed again."""
    st = os.stat(path)
    return _file_sha(str(path), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=256)
def _file_sha(path: str, mtime_ns: int, size: int, ino: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def tensors_sha(module: torch.nn.Module) -> str:
    """A short content hash of a module's parameters and buffers (a dictionary that was never saved)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def finished_with(path: str | Path, fingerprint: dict) -> bool:
    """Whether the result whose fingerprint file is ``path`` was finished for exactly ``fingerprint`` (what it
    depends on: weights' hashes, token set, settings).  An analysis writes its fingerprint last
    (``mark_finished``), so a killed or stale result never passes for a finished one; readers reuse it instead of
    recomputing (a notebook opening a finished run)."""
    try:
        return read_json(path) == json_safe(fingerprint)
    except Exception:  # noqa: BLE001 - an unreadable fingerprint means: recompute
        return False


def mark_finished(path: str | Path, fingerprint: dict) -> None:
    atomic_write_json(path, json_safe(fingerprint))


def atomic_save_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a path that lacks it
            np.save(fh, arr, allow_pickle=False)


def check_npy(path: str | Path, stage: str | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` at ``path``, after checking that its header parses and the file holds
    every byte the header promises (a truncated shard would otherwise fail later inside mmap, unnamed).
    Reads only the header.  Raises ``CorruptArtifactError`` naming the file and ``stage``."""
    from .errors import CorruptArtifactError

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read_header(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise CorruptArtifactError(path, "missing", stage) from None
    except (ValueError, OSError, SyntaxError, EOFError) as e:
        raise CorruptArtifactError(path, f"not a .npy array ({e})", stage) from None
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise CorruptArtifactError(path, f"truncated ({size:,} bytes of the {need:,} its header promises)", stage)
    return tuple(shape), dtype


def load_npy(path: str | Path, mmap: bool = True, stage: str | None = None) -> np.ndarray:
    check_npy(path, stage)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def check_safetensors(path: str | Path, stage: str | None = None) -> dict[str, dict]:
    """The header of the safetensors file at ``path`` (name → dtype, shape, data_offsets), after checking that it
    parses and that the file holds every byte it promises.  Reads only the header.  Raises
    ``CorruptArtifactError`` naming the file and ``stage``."""
    from .errors import CorruptArtifactError

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise ValueError(f"header length {n} is implausible")
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        raise CorruptArtifactError(path, "missing", stage) from None
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise CorruptArtifactError(path, f"not a safetensors file ({e})", stage) from None
    if not isinstance(header, dict):
        raise CorruptArtifactError(path, "not a safetensors file (header is not an object)", stage)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    size = path.stat().st_size
    if size < 8 + n + end:
        raise CorruptArtifactError(path, f"truncated ({size:,} bytes of the {8 + n + end:,} its header promises)",
                                   stage)
    return tensors


def load_safetensors(path: str | Path, device: str = "cpu", stage: str | None = None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    check_safetensors(path, stage)
    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:  # a header that parses over data that does not fit it
        from .errors import CorruptArtifactError

        raise CorruptArtifactError(path, f"not a readable safetensors file ({e})", stage) from None


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append rows to a JSON-lines log (logs are append-only; a torn last line is skipped on read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r, default=_json_default) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    return _parse_jsonl(path.read_text()) if path.exists() else []


def _parse_jsonl(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    return out


def truncate_jsonl(path: str | Path, last_step: int) -> None:
    """Keep the rows of a training log up to ``last_step`` (their ``step``): on resuming from a checkpoint, the
    rows a killed run appended after it — the log is appended before the checkpoint commits — are dropped, so the
    resumed steps are logged once."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    rows = _parse_jsonl(text)
    keep = [r for r in rows if int(r.get("step", 0)) <= last_step]
    if len(keep) != len(rows) or (text and not text.endswith("\n")):
        atomic_write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in keep))


# A checkpoint is a state file named by its step plus progress.json naming it, written last: the commit point.
# Overwriting one state file in place would leave, after a kill between the two writes, a state that is ahead of
# the step progress.json gives — and a resumed run that trains those steps twice.
def save_checkpoint(ckpt_dir: str | Path, tensors: dict[str, torch.Tensor], progress: dict) -> None:
    """Save ``tensors`` as ``state-<step>.safetensors``, then ``progress.json`` (``progress`` + the file's name),
    then remove older state files."""
    ckpt_dir = Path(ckpt_dir)
    name = f"state-{int(progress['step']):09d}.safetensors"
    save_safetensors(tensors, ckpt_dir / name)
    atomic_write_json(ckpt_dir / "progress.json", {**progress, "state": name})
    for old in ckpt_dir.glob("state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def checkpoint_state(ckpt_dir: str | Path, progress: dict, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint ``progress`` (its progress.json) commits.  A checkpoint written before state
    files were named by step holds ``state.safetensors``."""
    return load_safetensors(Path(ckpt_dir) / progress.get("state", "state.safetensors"), device=device)


def optimizer_state_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> tuple[dict, dict]:
    """Flatten an Adam-style optimizer state into (tensors, json-scalars) keyed by parameter index."""
    tensors, scalars = {}, {}
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for k, v in st.items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"opt.{i}.{k}"] = v
            else:
                scalars[f"{i}.{k}"] = float(v.item() if torch.is_tensor(v) else v)
    return tensors, scalars


def load_optimizer_state(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], tensors: dict, scalars: dict) -> None:
    for i, p in enumerate(params):
        st = {}
        for k, v in tensors.items():
            if k.startswith(f"opt.{i}."):
                st[k.split(".", 2)[2]] = v.to(p.device)
        for k, v in scalars.items():
            idx, name = k.split(".", 1)
            if int(idx) == i:
                st[name] = torch.tensor(v, dtype=torch.float32) if name == "step" else v
        if st:
            opt.state[p] = st
