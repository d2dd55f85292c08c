"""The one command: the tiny run end to end, summary JSON, resume after a kill, and bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from monosemantic import CheckpointMismatchError, ConfigError, preset, run_pipeline
from monosemantic.runs import Run

CLI = [sys.executable, "-m", "monosemantic.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_summary_json_has_every_documented_key(tiny_run):
    out = subprocess.run(CLI + ["summary", str(tiny_run.root), "--json"], capture_output=True, text=True, env=ENV,
                         check=True)
    s = json.loads(out.stdout)
    assert all(v["status"] == "done" for v in s["stages"].values())
    assert set(s["stages"]) == {"corpus", "tokenize", "transformer:A", "transformer:B", "harvest:A", "harvest:B",
                                "dictionary:A/0", "dictionary:A/1", "dictionary:B/1"}
    for t in ("A", "B"):
        assert 0 < s["transformers"][t]["eval_loss"] < 7.0  # below uniform over 512 tokens (ln 512 = 6.24)
    for d in ("A/0", "A/1", "B/1"):
        m = s["dictionaries"][d]
        assert m["recipe"] == "tm2023"   # the run config names each dictionary's training recipe
        for k in ("d_sae", "l0", "mse", "fvu", "loss_recovered", "dead_fraction", "ultralow_fraction"):
            assert k in m, (d, k)
        t = tiny_run.cfg.dictionary(d).train_config(tiny_run.cfg.sae_train)
        assert (m["train_steps"], m["batch_size"], m["train_tokens"]) == (t.steps, 512, t.steps * 512)
        assert 0 < m["fvu"] < 1 and 0 < m["l0"] < m["d_sae"] and 0 <= m["dead_fraction"] <= 1
        assert m["loss_recovered"] > 0.5
        # dead / ultralow over the activation store, and the low-density mode from the same densities
        assert m["density_source"] == "store" and m["density_tokens"] == min(len(tiny_run.store(d[0])),
                                                                              tiny_run.cfg.eval.density_rows)
        from monosemantic.metrics import density_modes

        modes = density_modes(np.load(tiny_run.dict_dir(d) / "density.npy"))
        assert m["low_density_mode"] == (modes["low"] if modes and modes["bimodal"] else 0)
    assert s["dictionaries"]["A/1"]["d_sae"] == 512
    # transformers A and B differ only by their seed
    assert json.loads((tiny_run.root / "transformers/A/config.json").read_text())["tl_config"]["seed"] != \
        json.loads((tiny_run.root / "transformers/B/config.json").read_text())["tl_config"]["seed"]


def test_training_curves_are_logged_per_step(tiny_run):
    log = [r for r in tiny_run.train_log("A/1") if "loss" in r]
    assert [r["step"] for r in log] == list(range(1, tiny_run.cfg.sae_train.steps + 1))
    lm = tiny_run.train_log("A")
    assert len(lm) == tiny_run.cfg.lm_train.steps and lm[-1]["loss"] < lm[0]["loss"]
    assert any("eval_loss" in r for r in lm)


def test_rerun_skips_done_stages(tiny_run):
    logs = []
    run_pipeline(tiny_run.root, preset("tiny"), progress=False, log=logs.append)
    assert all(line.endswith("done, skipped") for line in logs) and len(logs) == len(tiny_run.stages())


def test_config_mismatch_refuses_and_changes_nothing(tiny_run):
    before = (tiny_run.root / "run.json").read_bytes(), (tiny_run.root / "status.json").read_bytes()
    cfg = preset("tiny")
    cfg.lm_train.steps = 61
    with pytest.raises(CheckpointMismatchError, match=r"lm_train.steps: 60 → 61"):
        run_pipeline(tiny_run.root, cfg, progress=False, log=lambda s: None)
    assert before == ((tiny_run.root / "run.json").read_bytes(), (tiny_run.root / "status.json").read_bytes())


def test_unknown_preset_is_a_clear_cli_error(tmp_path):
    out = subprocess.run(CLI + ["run", "--preset", "huge", "--out", str(tmp_path / "x")], capture_output=True,
                         text=True, env=ENV)
    assert out.returncode == 2
    assert "unknown preset 'huge'; choose one of ['default', 'kernels', 'paper', 'quality', 'tiny']" in out.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_corpus_spec_is_a_clear_cli_error(tmp_path):
    out = subprocess.run(CLI + ["run", "--preset", "tiny", "--corpus", "nonsense", "--out", str(tmp_path / "x"),
                                "--quiet"], capture_output=True, text=True, env=ENV)
    assert out.returncode == 2 and "unknown corpus spec 'nonsense'" in out.stderr


def test_summary_of_a_non_run_directory(tmp_path):
    out = subprocess.run(CLI + ["summary", str(tmp_path)], capture_output=True, text=True, env=ENV)
    assert out.returncode == 2 and "is not a run directory" in out.stderr


def test_presets_validate_and_carry_the_papers_sizes():
    d = preset("default")
    assert [x.id for x in d.dictionaries] == ["A/0", "A/1", "A/2", "B/1"]
    assert [x.d_sae for x in d.dictionaries] == [512, 4096, 16384, 4096]
    assert (d.model.n_layers, d.model.d_model, d.model.d_mlp, d.model.act_fn, d.model.n_ctx) == (1, 128, 512, "relu", 128)
    p = preset("paper")
    assert p.sae_train.batch_size == 8192 and p.sae_train.steps == 1_000_000
    assert max(x.d_sae for x in p.dictionaries) == 131072 and p.dictionaries[0].l1_coefficient == 0.004
    bad = preset("tiny")
    bad.dictionaries[0].id = "C/0"
    with pytest.raises(ConfigError, match="transformer 'C', which this run does not train"):
        bad.validate()


def test_killed_run_resumes(tmp_path):
    """SIGKILL the CLI in the middle of a stage, then run the same command again: it finishes, skipping what
    was done and resuming the killed stage from its checkpoint."""
    out = tmp_path / "run"
    cmd = CLI + ["run", "--preset", "tiny", "--out", str(out), "--quiet", "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    ckpt = out / "transformers/B/ckpt/progress.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = json.loads((out / "status.json").read_text())
    assert status["transformer:B"]["status"] == "running" and status["transformer:A"]["status"] == "done"
    step_at_kill = json.loads(ckpt.read_text())["step"]
    assert 0 < step_at_kill < 60
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "transformer:A: done, skipped" in res.stdout and "transformer:B: resuming" in res.stdout
    s = Run.open(out).summary()
    assert all(v["status"] == "done" for v in s["stages"].values())
    log = Run.open(out).train_log("B")
    assert [r["step"] for r in log] == list(range(1, 61))  # every step logged exactly once across the kill


def test_stage_deps_of_the_default_preset():
    from monosemantic.pipeline import stage_deps

    run = Run(Path("/nonexistent"), preset("default"))
    deps = {s: stage_deps(run, s) for s in run.stages()}
    assert deps["corpus"] == [] and deps["transformer:B"] == ["tokenize"] and deps["harvest:B"] == ["transformer:B"]
    assert deps["dictionary:A/2"] == ["harvest:A"] and deps["dictionary:B/1"] == ["harvest:B"]
    assert deps["compare:A/1~B/1"] == ["dictionary:A/1", "dictionary:B/1"]
    assert deps["splitting:A"] == ["dictionary:A/0", "dictionary:A/1", "dictionary:A/2"]
    assert deps["neurons:A"] == ["transformer:A"] and deps["interpret:A/1"] == ["dictionary:A/1"]
    order = run.stages()
    assert all(order.index(d) < order.index(s) for s in order for d in deps[s])   # never after the stage
    assert stage_deps(run, "unknownkind:x") == order                          # unknown: wait for everything


def test_critical_path_starts_the_longest_chains_first():
    from monosemantic.pipeline import critical_path, stage_cost, stage_deps

    run = Run(Path("/nonexistent"), preset("default"))
    todo = run.stages()
    path = critical_path(run, todo)
    # a chain's length is its stages' costs: each stage's own plus the longest chain that waits on it
    for s in todo:
        after = [path[t] for t in todo if s in stage_deps(run, t)]
        assert path[s] == pytest.approx(stage_cost(run, s) + max(after, default=0.0)), s
    assert path["features:A/2"] == stage_cost(run, "features:A/2")
    # A/2 and then splitting is the longest chain after the harvests, then A/1's, B/1's, A/0's
    assert path["dictionary:A/2"] == pytest.approx(stage_cost(run, "dictionary:A/2") + path["splitting:A"])
    assert path["dictionary:A/2"] > path["dictionary:A/1"] > path["dictionary:B/1"] > path["dictionary:A/0"]
    assert path["splitting:A"] > path["features:A/2"] > path["features:A/1"]
    # (steps + 3 × its 45 dense first steps) × batch × F, with each dictionary's own steps and batch
    assert stage_cost(run, "dictionary:A/2") == pytest.approx((600 + 3 * 45) * 1024 * 16384 / 1e9)
    assert stage_cost(run, "dictionary:A/1") == pytest.approx((1200 + 3 * 45) * 2048 * 4096 / 1e9)
    assert stage_cost(run, "dictionary:A/0") == pytest.approx((500 + 3 * 45) * 4096 * 512 / 1e9)
    assert stage_cost(run, "features:A/1") == pytest.approx(500_000 * 4096 / 1e9)           # tokens × F
    assert all(path[d] > path[s] for s in todo for d in stage_deps(run, s))   # what a stage reads comes first


def _fake_parallel(tmp_path, monkeypatch, fail=None, jobs=2):
    """The scheduler over the default preset's stages, with a stage that sleeps and marks itself done, in threads."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from monosemantic import pipeline

    run = Run.create(tmp_path / "run", preset("default"))
    events, lock = [], threading.Lock()

    def fake(root, s, threads, cfg):
        with lock:
            events.append(("start", s, time.time()))
        time.sleep(0.05 if s.startswith("dictionary") else 0.01)
        if s == fail:
            raise ValueError(f"{s} broke")
        with lock:   # before the mark: the scheduler may start a dependent stage as soon as it sees "done"
            events.append(("end", s, time.time()))
        Run.open(root).mark(s, "done")
        return 0.0

    monkeypatch.setattr(pipeline, "_stage_in_worker", fake)
    lines = []
    todo = run.stages()
    err = None
    try:
        pipeline._run_parallel(run, todo, jobs, lines.append, executor=ThreadPoolExecutor(jobs))
    except ValueError as e:
        err = e
    return run, events, lines, err


def test_parallel_scheduler_waits_for_deps_and_runs_at_most_jobs(tmp_path, monkeypatch):
    from monosemantic.pipeline import stage_deps

    run, events, lines, err = _fake_parallel(tmp_path, monkeypatch)
    assert err is None
    assert all(r["status"] == "done" for r in run.status().values())
    ends = {s: t for e, s, t in events if e == "end"}
    starts = {s: t for e, s, t in events if e == "start"}
    assert set(starts) == set(run.stages())
    for s in run.stages():
        assert all(ends[d] <= starts[s] for d in stage_deps(run, s)), s
    live, peak = 0, 0
    for e, _, _ in sorted(events, key=lambda x: x[2]):
        live += 1 if e == "start" else -1
        peak = max(peak, live)
    assert peak == 2                                                        # two at once, never three
    assert abs(starts["transformer:A"] - starts["transformer:B"]) < 0.05     # A and B together
    assert starts["dictionary:A/2"] <= starts["dictionary:A/1"] <= starts["dictionary:A/0"]   # longest chain first
    assert sum("starting" in ln for ln in lines) == len(run.stages())


def test_parallel_failure_lets_the_running_stage_finish_and_starts_nothing_new(tmp_path, monkeypatch):
    run, events, lines, err = _fake_parallel(tmp_path, monkeypatch, fail="dictionary:A/0")
    assert isinstance(err, ValueError) and "dictionary:A/0 broke" in str(err)
    st = run.status()
    started = [s for e, s, _ in events if e == "start"]
    assert st["dictionary:A/0"]["status"] == "pending"       # the fake never marked it; a real stage says "running"
    # the stage running beside it finished; nothing started after the failure was seen
    assert all(st[s]["status"] == "done" for s in started if s != "dictionary:A/0")
    assert "compare:A/1~B/1" not in started and any("failed (ValueError)" in ln for ln in lines)


def test_parallel_cli_run_is_killed_and_resumes(tmp_path):
    """Two transformers train at once in worker processes; SIGKILL the CLI's process group while one is mid-training
    (the other has started too), then the same command resumes it from its checkpoint, every step logged once."""
    out = tmp_path / "run"
    stages = ["corpus", "tokenize", "transformer:A", "transformer:B", "harvest:A", "harvest:B"]
    cmd = CLI + ["run", "--preset", "tiny", "--out", str(out), "--quiet", "--jobs", "2", "--stages"] + stages
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    ckpts = [out / f"transformers/{t}/ckpt/progress.json" for t in "AB"]

    def mid_training(c):   # a checkpoint short of the last step (60): that transformer is still training
        try:
            return 0 < json.loads(c.read_text())["step"] < 60
        except (OSError, ValueError, KeyError):
            return False

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(mid_training(c) for c in ckpts):
        time.sleep(0.005)
    assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = json.loads((out / "status.json").read_text())
    killed = [t for t in "AB" if status[f"transformer:{t}"]["status"] == "running"]
    assert killed and all(status[f"transformer:{t}"]["status"] in ("running", "done") for t in "AB")
    assert "started_at" in status["transformer:A"] and "started_at" in status["transformer:B"]   # both had started
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(f"transformer:{t}: resuming" in res.stdout for t in killed)
    run = Run.open(out)
    assert all(run.is_done(s) for s in stages)
    for t in "AB":
        assert [r["step"] for r in run.train_log(t)] == list(range(1, 61))
    assert len(run.store("A")) > 0 and len(run.store("B")) > 0


def test_jobs_must_be_a_positive_number_or_auto():
    from monosemantic.pipeline import resolve_jobs

    assert resolve_jobs("auto", "cpu") == (2 if (os.cpu_count() or 1) >= 2 else 1)
    assert resolve_jobs(3) == 3
    for bad in (0, "two", -1):
        with pytest.raises(ConfigError, match="jobs must be a positive number or 'auto'"):
            resolve_jobs(bad)


def test_analysis_stages_write_stats_and_universality(tiny_run, tmp_path):
    """features:/neurons:/compare: stages run after the dictionaries and land in the summary."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    cfg = preset("tiny")
    cfg.analyses = ["features:A/1", "neurons:A", "compare:A/1~B/1", "splitting:A"]
    logs = []
    run = run_pipeline(root, cfg, progress=False, log=logs.append)
    assert "[monosemantic] compare:A/1~B/1: starting" in logs   # analyses added to a finished run
    assert json.loads((root / "run.json").read_text())["analyses"] == cfg.analyses
    fewer = preset("tiny")
    fewer.analyses = ["features:A/1"]                                # dropping analyses is a different config
    with pytest.raises(CheckpointMismatchError, match="analyses"):
        run_pipeline(root, fewer, progress=False, log=lambda s: None)
    s = run.summary()
    assert s["stages"]["features:A/1"]["status"] == "done" and s["stages"]["neurons:A"]["status"] == "done"
    u = s["universality"]
    assert -1 <= u["feature_median"] <= 1 and -1 <= u["neuron_median"] <= 1
    from monosemantic.features import FeatureStats
    assert len(FeatureStats.load(run, "A/1").table) == 512
    assert s["stages"]["splitting:A"]["status"] == "done" and "splitting" in s
    with pytest.raises(ConfigError, match="analysis 'compare:A/1' is not one of"):
        bad = preset("tiny")
        bad.analyses = ["compare:A/1"]
        bad.validate()


def test_parallel_run_of_stages_whose_inputs_are_missing_is_a_clear_error(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from monosemantic import pipeline

    run = Run.create(tmp_path / "run", preset("default"))
    with pytest.raises(ConfigError, match=r"need stages that are not done and not asked for: \['harvest:A', "
                                          r"'harvest:B'\]"):
        pipeline._run_parallel(run, ["dictionary:A/1", "dictionary:B/1"], 2, lambda _: None,
                               executor=ThreadPoolExecutor(2))
    assert run.status()["dictionary:A/1"]["status"] == "pending"        # nothing was started


def test_parallel_run_workers_exit_when_the_run_process_is_killed(tmp_path):
    """A signal to the run's main process alone (``kill -9 PID``) must not leave its stage workers training on:
    they would keep writing into stages that the next ``run`` resumes.  The pool ``_run_parallel`` builds gives
    each worker ``_exit_with_parent``."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time, multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from monosemantic.pipeline import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    ex = ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=_exit_with_parent,\n"
        "                             initargs=(os.getpid(),))\n"
        "    futs = [ex.submit(time.sleep, 120) for _ in range(2)]\n"
        "    while len(ex._processes) < 2: time.sleep(0.05)\n"
        "    time.sleep(2.0)\n"
        "    print(*ex._processes, flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"   # a zombie has exited
        except FileNotFoundError:
            return False

    assert all(alive(p) for p in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    still = [p for p in workers if alive(p)]
    for p in still:
        os.kill(p, signal.SIGKILL)
    assert not still, "stage workers outlived the killed run process"
