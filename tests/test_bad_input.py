"""Bad input, as a new user brings it: every case is one line on stderr naming the problem and the fix, exit 2,
and nothing already in the run directory changes.  The table is data: a case prepares its inputs and returns
the command line; ``expect`` is a fragment of the one line it must print."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from monosemantic.cli import main


def _copy_run(tiny_run, tmp: Path) -> Path:
    root = tmp / "run"
    shutil.copytree(tiny_run.root, root)
    return root


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _random_bytes(path: Path, n: int = 200_000, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def _fresh(tmp: Path, corpus: Path) -> list[str]:
    return ["run", "--preset", "tiny", "--corpus", str(corpus), "--out", str(tmp / "new"), "--quiet"]


def _executable(tmp: Path) -> Path:
    p = tmp / "tool"
    p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40)
    p.chmod(0o755)
    return p


def _live_lock(root: Path) -> list[str]:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (root / ".lock").write_text(f"{holder.pid}\nhost\n")
    _live_lock.holders.append(holder)
    return ["run", "--preset", "tiny", "--out", str(root), "--quiet"]


_live_lock.holders = []


@dataclass
class Case:
    name: str
    prepare: Callable[[Path, Path | None], list[str]]   # (tmp dir, copied run or None) -> argv
    expect: str                                          # a fragment of the one error line
    needs_run: bool = False


CASES = [
    Case("random bytes named .jsonl", lambda t, r: _fresh(t, _random_bytes(t / "c.jsonl")), "is not UTF-8 text"),
    Case("random bytes named .parquet", lambda t, r: _fresh(t, _random_bytes(t / "c.parquet")),
         "is not a readable parquet file"),
    Case("random bytes named .txt", lambda t, r: _fresh(t, _random_bytes(t / "c.txt")), "is not UTF-8 text"),
    Case("a .bin file", lambda t, r: _fresh(t, _random_bytes(t / "weights.bin")), "unsupported file type (.bin)"),
    Case("an executable", lambda t, r: _fresh(t, _executable(t)), "unsupported file type (no suffix)"),
    Case("a folder with no corpus files", lambda t, r: (_random_bytes(t / "x.bin"), _fresh(t, t))[1],
         "holds no corpus files"),
    Case("a missing corpus path", lambda t, r: _fresh(t, t / "nope.txt"), "does not exist"),
    Case("a one-line text file", lambda t, r: ((t / "one.txt").write_text("just one line\n"),
                                               _fresh(t, t / "one.txt"))[1], "needs at least 2"),
    Case("--device cuda without CUDA",
         lambda t, r: ["run", "--preset", "tiny", "--device", "cuda", "--out", str(t / "new"), "--quiet"],
         "no CUDA GPU"),
    Case("--device nonsense",
         lambda t, r: ["run", "--preset", "tiny", "--device", "tpu", "--out", str(t / "new"), "--quiet"],
         "device must be 'auto', 'cpu' or 'cuda[:N]'"),
    Case("an unknown stage", lambda t, r: ["run", "--preset", "tiny", "--out", str(r), "--stages", "dictionary:A/9"],
         "unknown stages ['dictionary:A/9']", needs_run=True),
    Case("run.json cut short, then run",
         lambda t, r: (_truncate(r / "run.json"), ["run", "--preset", "tiny", "--out", str(r), "--quiet"])[1],
         "run.json is corrupt: not valid JSON", needs_run=True),
    Case("run.json cut short, then summary",
         lambda t, r: (_truncate(r / "run.json"), ["summary", str(r)])[1], "run.json is corrupt", needs_run=True),
    Case("status.json cut short, then summary",
         lambda t, r: (_truncate(r / "status.json"), ["summary", str(r)])[1],
         "status.json is corrupt", needs_run=True),
    Case("a truncated activation shard, then train-dictionary",
         lambda t, r: (_truncate(r / "acts/A/acts_00001.npy"), ["train-dictionary", str(r), "A/1", "--quiet"])[1],
         "acts_00001.npy is corrupt: truncated", needs_run=True),
    Case("a truncated sae.safetensors, then compare",
         lambda t, r: (_truncate(r / "dictionaries/A/1/sae.safetensors"),
                       ["compare", str(r), "A/1", "B/1", "--quiet", "--tokens", "2048"])[1],
         "sae.safetensors is corrupt", needs_run=True),
    Case("an unknown dictionary in compare", lambda t, r: ["compare", str(r), "A/7", "B/1", "--quiet"],
         "A/7", needs_run=True),
    Case("a run directory in use by a live process", lambda t, r: _live_lock(r), "in use by another monosemantic "
         "process (pid", needs_run=True),
    Case("summary of a directory that is no run", lambda t, r: ["summary", str(t)], "is not a run directory"),
    Case("a different recipe on a finished run",
         lambda t, r: ["run", "--preset", "default", "--out", str(r), "--quiet"], "holds a run with a different "
         "config", needs_run=True),
]


def _snapshot(root: Path | None) -> dict:
    if root is None or not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line_and_loses_nothing(case, tiny_run, tmp_path, capsys):
    root = _copy_run(tiny_run, tmp_path) if case.needs_run else None
    argv = case.prepare(tmp_path, root)
    before = _snapshot(root)
    try:
        code = main(argv)
    finally:
        for h in _live_lock.holders:
            h.kill()
        _live_lock.holders.clear()
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("monosemantic: warning:")]
    assert len(lines) == 1 and lines[0].startswith("monosemantic: error: "), err
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(root) == before, "a refused command changed the run directory"


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "run", "--preset", "tiny", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])


def test_a_few_undecodable_bytes_warn_and_are_read(tmp_path):
    from monosemantic.config import CorpusConfig
    from monosemantic.corpus import CorpusWarning, load_corpus

    p = tmp_path / "mostly.txt"
    p.write_bytes(("In the beginning was the word.\n" * 200).encode() + b"\xff\xfe" * 40)
    with pytest.warns(CorpusWarning, match="undecodable bytes"):
        docs = load_corpus(CorpusConfig(spec=str(p)))
    assert "".join(d["text"] for d in docs).startswith("In the beginning")


def test_a_single_text_file_is_a_corpus(tmp_path):
    """One book in one .txt: cut into documents, so train and val both get some."""
    from monosemantic import preset, run_pipeline

    words = " ".join(f"w{i % 97}" for i in range(60_000))
    (tmp_path / "book.txt").write_text("\n".join(words[i:i + 70] for i in range(0, len(words), 70)))
    cfg = preset("tiny")
    cfg.corpus.spec = str(tmp_path / "book.txt")
    run = run_pipeline(tmp_path / "run", cfg, progress=False, log=lambda s: None,
                       stages=["corpus", "tokenize"])
    meta = json.loads((run.tokens_dir / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] > 10 and meta["splits"]["val"]["documents"] >= 1
    assert run.split("val").n_contexts >= 1


def test_a_corrected_corpus_after_a_failed_first_run(tmp_path, capsys):
    """The first run failed at its corpus: nothing was built, so the corrected command is accepted."""
    out = tmp_path / "run"
    assert main(["run", "--preset", "tiny", "--corpus", str(tmp_path / "typo.txt"), "--out", str(out),
                 "--quiet", "--stages", "corpus"]) == 2
    (tmp_path / "book.txt").write_text("and it was so.\n" * 3000)
    assert main(["run", "--preset", "tiny", "--corpus", str(tmp_path / "book.txt"), "--out", str(out),
                 "--quiet", "--stages", "corpus"]) == 0
    assert json.loads((out / "run.json").read_text())["corpus"]["spec"] == str(tmp_path / "book.txt")


def test_the_device_is_not_part_of_the_recipe(tiny_run, tmp_path, capsys):
    """A run finished on one device resumes (and is analysed) on another: only what it computes must match."""
    root = _copy_run(tiny_run, tmp_path)
    assert main(["run", "--preset", "tiny", "--device", "cpu", "--out", str(root), "--quiet"]) == 0
    assert "done" in capsys.readouterr().out


def test_a_stale_lock_is_taken_over(tiny_run, tmp_path, capsys):
    root = _copy_run(tiny_run, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / ".lock").write_text(f"{dead.pid}\nhost\n")
    assert main(["run", "--preset", "tiny", "--out", str(root), "--quiet"]) == 0
    assert not (root / ".lock").exists()
