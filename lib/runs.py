"""Run directories: where every artifact of a run lives, and which stages are done.

    RUN/
      run.json                    the RunConfig (a later invocation must match it)
      status.json                 per stage: pending | running | done, seconds, finished_at
      corpus/docs.jsonl, manifest.json
      tokens/tokenizer.json, {train,val}.npy, {train,val}_domain.npy, meta.json
      transformers/A/model.safetensors, config.json, eval.json, train_log.jsonl, ckpt/
      acts/A/store.json, acts_NNNNN.npy, meta_NNNNN.npy
      dictionaries/A/1/sae.safetensors, cfg.json, metrics.json, density.npy, train_log.jsonl, ckpt/

``Run`` gives typed access to all of it (``run.model("A")``, ``run.dictionary("A/1")``, ``run.metrics("A/1")``) so
notebooks, widgets and analyses never build paths by hand.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import RunConfig, diff_configs
from .errors import CheckpointMismatchError, CorruptArtifactError, RunLockedError
from .io import atomic_write_json, load_npy, read_json, read_jsonl
from .registry import recipe_label


class Run:
    def __init__(self, root: str | Path, cfg: RunConfig):
        self.root = Path(root)
        self.cfg = cfg

    # ---- opening ----------------------------------------------------------------------------------------
    # keys of RunConfig that say where/how a run executes, not what it computes: a run finished on one device
    # can be resumed or analysed on another
    NOT_RECIPE = ("device",)

    @classmethod
    def create(cls, root: str | Path, cfg: RunConfig) -> "Run":
        """Open ``root`` for ``cfg``: a new directory gets ``run.json``; an existing one must have the same config
        (the device aside), unless none of its stages has finished yet — then the new config replaces the old
        (a first run that failed at its corpus leaves nothing a corrected command could clash with) — or the new
        config only adds analyses (stages after everything the run has)."""
        root = Path(root)
        cfg.validate()
        run = cls(root, cfg)
        try:
            existing = read_json(root / "run.json")
        except CorruptArtifactError as e:
            if run._anything_done():
                raise CorruptArtifactError(e.path, e.problem, fix=(
                    f"stages have finished in {root}, so its config cannot be guessed: restore run.json, or start "
                    f"a new --out directory")) from None
            existing = None
        if existing is not None and not run._anything_done():
            existing = None  # nothing was built under the old config: take the new one
        if existing is not None:
            try:  # normalise: sections added to RunConfig after the run was created take their defaults
                existing = RunConfig.from_dict(existing).to_dict()
            except Exception:
                pass
            new = cfg.to_dict()
            grows = set(existing.get("analyses", [])) <= set(new.get("analyses", []))
            diff = diff_configs(_recipe(existing), _recipe(new))
            if diff and grows and not diff_configs({**_recipe(existing), "analyses": None},
                                                   {**_recipe(new), "analyses": None}):
                # more analyses on the same run: they only add stages after what is done
                atomic_write_json(root / "run.json", new)
                diff = []
            if diff:
                raise CheckpointMismatchError(
                    f"{root} holds a run with a different config ({'; '.join(diff[:6])}"
                    f"{' …' if len(diff) > 6 else ''}); use a new --out directory, or rerun with the same preset and "
                    f"options (nothing in {root} was changed)")
        else:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(root / "run.json", cfg.to_dict())
        return run

    def _anything_done(self) -> bool:
        try:
            st = read_json(self.root / "status.json", {}) or {}
        except CorruptArtifactError:
            return True  # cannot tell: assume work was done
        return not isinstance(st, dict) or any(isinstance(r, dict) and r.get("status") == "done" for r in st.values())

    # ---- one process at a time ----------------------------------------------------------------------------
    @contextmanager
    def lock(self):
        """Hold ``RUN/.lock`` (our pid) while a command writes the run; a second writer is refused with the
        holder's pid, and a lock left by a dead process is taken over."""
        path = self.root / ".lock"
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(path)
                if holder is not None and holder != os.getpid() and _alive(holder):
                    raise RunLockedError(
                        f"{self.root} is in use by another monosemantic process (pid {holder}); wait for it to "
                        f"finish or stop it (kill {holder}). If no such process exists, delete {path}") from None
                path.unlink(missing_ok=True)  # stale (dead holder) or unreadable: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n{socket.gethostname()}\n")
            break
        else:
            raise RunLockedError(f"could not take {path}; delete it if no monosemantic process is running")
        try:
            yield self
        finally:
            if _lock_holder(path) == os.getpid():
                path.unlink(missing_ok=True)

    @classmethod
    def open(cls, root: str | Path) -> "Run":
        root = Path(root)
        try:
            d = read_json(root / "run.json")
        except CorruptArtifactError as e:
            raise CorruptArtifactError(e.path, e.problem, fix=(
                "it holds the run's config: restore it from a copy, or start a new run directory")) from None
        if d is None:
            raise FileNotFoundError(f"{root} is not a run directory (no run.json); create one with "
                                    f"`monosemantic run --preset tiny --out {root}`")
        return cls(root, RunConfig.from_dict(d))

    # ---- paths ------------------------------------------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        return self.root / "corpus"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    def model_dir(self, name: str) -> Path:
        return self.root / "transformers" / name

    def acts_dir(self, name: str) -> Path:
        return self.root / "acts" / name

    def dict_dir(self, dict_id: str) -> Path:
        self.cfg.dictionary(dict_id)  # validates the id
        return self.root / "dictionaries" / dict_id

    # ---- status -----------------------------------------------------------------------------------------
    def stages(self) -> list[str]:
        names = ["corpus", "tokenize"]
        names += [f"transformer:{t}" for t in self.cfg.transformers]
        names += [f"harvest:{t}" for t in self.cfg.transformers if any(d.transformer == t for d in self.cfg.dictionaries)]
        names += [f"dictionary:{d.id}" for d in self.cfg.dictionaries]
        names += list(self.cfg.analyses)
        return names

    def _status_file(self) -> dict:
        path = self.root / "status.json"
        fix = (f"delete it and rerun `monosemantic run --out {self.root}`: every stage is then re-entered, and "
               f"each resumes from its own checkpoints and outputs")
        try:
            st = read_json(path, {}) or {}
        except CorruptArtifactError as e:
            raise CorruptArtifactError(path, e.problem, fix=fix) from None
        if not isinstance(st, dict):
            raise CorruptArtifactError(path, "not a JSON object of stage records", fix=(
                f"delete it and rerun `monosemantic run --out {self.root}`: every stage is then re-entered, and "
                f"each resumes from its own checkpoints and outputs"))
        return st

    def status(self) -> dict:
        st = self._status_file()
        return {s: st.get(s, {"status": "pending"}) for s in self.stages()}

    def is_done(self, stage: str) -> bool:
        return self.status().get(stage, {}).get("status") == "done"

    def mark(self, stage: str, status: str, **extra) -> None:
        """Set ``stage``'s record; a locked read-modify-write (``io.update_json``), so the stage processes of a
        parallel run (``run_pipeline(jobs=2)``) never lose each other's marks."""
        from .io import update_json

        def edit(_):
            st = self._status_file()   # read under the lock, with its own errors for a corrupt file
            rec = {**st.get(stage, {}), "status": status, **extra}
            if status == "done":
                rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            st[stage] = rec
            return st

        update_json(self.root / "status.json", edit, {})

    # ---- artifacts --------------------------------------------------------------------------------------
    @cached_property
    def tokenizer(self):
        from .tokenizer import Tokenizer

        return Tokenizer.load(self.tokens_dir / "tokenizer.json")

    def split(self, name: str = "val"):
        from .tokenizer import TokenSplit

        return TokenSplit(self.tokens_dir, name, self.cfg.model.n_ctx)

    def model(self, name: str, device: str = "cpu"):
        from .subject import SubjectModel

        m = SubjectModel.load(self.model_dir(name), device=device)
        m.tokenizer = self.tokenizer
        return m

    def store(self, name: str):
        from .activations import ActivationStore

        return ActivationStore(self.acts_dir(name))

    def dictionary(self, dict_id: str, device: str = "cpu"):
        from .sae import Dictionary

        return Dictionary.load(self.dict_dir(dict_id), map_location=device)

    def metrics(self, dict_id: str) -> dict | None:
        return read_json(self.dict_dir(dict_id) / "metrics.json")

    def density(self, dict_id: str) -> np.ndarray:
        return np.asarray(load_npy(self.dict_dir(dict_id) / "density.npy", mmap=False))

    def train_log(self, what: str) -> list[dict]:
        """Training curve of a transformer (``"A"``) or a dictionary (``"A/1"``)."""
        d = self.dict_dir(what) if "/" in what else self.model_dir(what)
        return read_jsonl(d / "train_log.jsonl")

    def transformer_eval(self, name: str) -> dict | None:
        return read_json(self.model_dir(name) / "eval.json")

    def corpus_manifest(self) -> dict | None:
        return read_json(self.corpus_dir / "manifest.json")

    # ---- summary ----------------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Stage status and every metric, as documented in the README (``monosemantic summary --json``)."""
        out: dict = {"run": str(self.root), "preset": self.cfg.preset, "stages": {}, "transformers": {},
                     "dictionaries": {}}
        for s, rec in self.status().items():
            out["stages"][s] = {k: rec[k] for k in ("status", "seconds") if k in rec}
        man = self.corpus_manifest()
        if man:
            out["corpus"] = {k: man[k] for k in ("spec", "documents", "bytes", "sha256")}
            out["corpus"]["sources"] = {k: {"bytes": v["bytes"], "documents": v["documents"]} for k, v in man["sources"].items()}
        for t in self.cfg.transformers:
            ev = self.transformer_eval(t)
            if ev:
                out["transformers"][t] = {"eval_loss": ev["eval_loss"], "steps": ev["steps"],
                                          "tokens_seen": ev["tokens_seen"], "n_params": ev["n_params"]}
        for d in self.cfg.dictionaries:
            m = self.metrics(d.id)
            if m:
                out["dictionaries"][d.id] = {"recipe": recipe_label(d.kind, d.recipe), **{k: m[k] for k in (
                    "d_sae", "kind", "l1_coefficient", "l0", "mse", "fvu", "loss_recovered", "loss_clean",
                    "loss_zero_ablated", "loss_spliced", "dead", "ultralow", "dead_fraction", "ultralow_fraction",
                    "ultralow_threshold", "tokens", "density_tokens", "density_source", "train_seconds") if k in m}}
                t = d.train_config(self.cfg.sae_train)   # the budget it trained on
                out["dictionaries"][d.id].update({"train_steps": t.steps, "batch_size": t.batch_size,
                                                  "train_tokens": t.steps * t.batch_size})
                if "density_modes" in m:  # a short run's low-density mode: how many features, below what density
                    from .metrics import low_mode_count

                    n_low = low_mode_count(m)
                    out["dictionaries"][d.id].update({"low_density_mode": n_low, "low_density_mode_threshold":
                                                      m["density_modes"]["threshold"] if n_low else None})
        extra = read_json(self.root / "analyses.json")
        if extra:
            out.update(extra)
        return out


def as_run(run) -> Run:
    """A ``Run`` from a run directory, or the ``Run`` itself: what every function taking ``run`` accepts."""
    return Run.open(run) if isinstance(run, (str, Path)) else run


def _recipe(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in Run.NOT_RECIPE}


def _lock_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def update_analyses(run_root: str | Path, key: str, fn) -> dict:
    """Read-modify-write of ``RUN/analyses.json`` under an exclusive lock (``io.update_json``):
    ``doc[key] = fn(doc.get(key, {}))``.  Other keys are left as they are; the file is replaced atomically (every
    analysis records its headline here)."""
    from .io import update_json

    def edit(doc):
        doc = doc or {}
        doc[key] = fn(dict(doc.get(key) or {}))
        return doc

    return update_json(Path(run_root) / "analyses.json", edit, {})
