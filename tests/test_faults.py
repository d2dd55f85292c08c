"""Fault injection on the tiny preset: SIGKILL inside every stage at seeded random points and resume; corrupt
one artifact of each kind and let ``run`` find and rebuild it.  Either way the summary must equal an
uninterrupted run's (``tiny_run``) within the tolerance the README states for a resumed run."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monosemantic import preset, run_pipeline
from monosemantic.runs import Run

CLI = [sys.executable, "-m", "monosemantic.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
RTOL = 1e-4   # README: a resumed run's numbers equal an uninterrupted one's to this relative tolerance


def _numbers(summary: dict) -> dict:
    out = {f"{t}.eval_loss": v["eval_loss"] for t, v in summary["transformers"].items()}
    for d, m in summary["dictionaries"].items():
        out.update({f"{d}.{k}": m[k] for k in ("l0", "mse", "fvu", "loss_recovered", "dead", "ultralow")})
    return out


def _assert_same_numbers(a: dict, b: dict) -> None:
    na, nb = _numbers(a), _numbers(b)
    assert set(na) == set(nb)
    bad = {k: (na[k], nb[k]) for k in na if abs(na[k] - nb[k]) > RTOL * max(abs(na[k]), abs(nb[k]), 1e-12)}
    assert not bad, bad


def _status(root: Path) -> dict:
    try:
        return json.loads((root / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _running_stage(root: Path) -> str | None:
    return next((s for s, r in _status(root).items() if r.get("status") == "running"), None)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_inside_every_stage_then_resume(seed, tiny_run, tmp_path):
    """For each stage in order: start (or resume) the CLI, wait until that stage is running, SIGKILL after a
    seeded random delay.  Then one last resume finishes the run."""
    rng = random.Random(seed)
    root = tmp_path / "run"
    cmd = CLI + ["run", "--preset", "tiny", "--out", str(root), "--quiet", "--jobs", "1"]   # stage by stage
    killed_in = []
    for stage in Run(root, preset("tiny")).stages():
        if _status(root).get(stage, {}).get("status") == "done":
            continue  # a kill's random delay let the run finish this stage already: aim at the next one
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                                start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and _running_stage(root) != stage:
            time.sleep(0.005)
        if proc.poll() is not None:
            break  # the run finished before this stage could be caught
        time.sleep(rng.uniform(0.0, 0.4))
        now = _running_stage(root)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if now:
            killed_in.append(now)
    assert len(set(killed_in)) >= 5, killed_in  # the kills really landed inside many different stages
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    s = Run.open(root).summary()
    assert all(v["status"] == "done" for v in s["stages"].values())
    assert not (root / ".lock").exists()
    _assert_same_numbers(s, tiny_run.summary())
    log = Run.open(root).train_log("A/1")
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 61))  # each step logged once across kills


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# one artifact of each kind a later stage reads, and the stage that must rebuild it
CORRUPTIONS = [
    ("corpus/docs.jsonl", "corpus"),
    ("tokens/val.npy", "tokenize"),
    ("tokens/meta.json", "tokenize"),
    ("transformers/A/model.safetensors", "transformer:A"),
    ("transformers/B/eval.json", "transformer:B"),
    ("acts/A/acts_00002.npy", "harvest:A"),
    ("acts/B/meta_00000.npy", "harvest:B"),
    ("dictionaries/A/1/sae.safetensors", "dictionary:A/1"),
    ("dictionaries/B/1/density.npy", "dictionary:B/1"),
    ("dictionaries/A/0/metrics.json", "dictionary:A/0"),
]


def test_a_deleted_activation_store_is_harvested_again(tiny_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    shutil.rmtree(root / "acts/B")
    logs: list[str] = []
    run = run_pipeline(root, preset("tiny"), progress=False, log=logs.append)
    assert "[monosemantic] harvest:B: starting" in logs
    assert len(run.store("B")) == len(tiny_run.store("B"))
    run.store("B").verify()


@pytest.mark.parametrize("rel,stage", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupt_artifact_is_found_and_rebuilt(rel, stage, tiny_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    original = (root / rel).read_bytes()
    _cut(root / rel)
    logs: list[str] = []
    run = run_pipeline(root, preset("tiny"), progress=False, log=logs.append)
    assert any(line.startswith(f"[monosemantic] {stage}: ") and "corrupt" in line and rel.split("/")[-1] in line
               for line in logs), logs
    assert f"[monosemantic] {stage}: starting" in logs
    rebuilt = [line.split(": ")[0].split("] ")[1] for line in logs if line.endswith("starting")]
    assert rebuilt == [stage], rebuilt  # only the stage that owns the file ran again
    s = run.summary()
    assert all(v["status"] == "done" for v in s["stages"].values())
    _assert_same_numbers(s, tiny_run.summary())
    if not rel.endswith(".json"):  # seeded stages and final checkpoints give the same bytes back
        assert (root / rel).read_bytes() == original, f"{rel} was rebuilt with other content"
