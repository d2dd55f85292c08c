"""The whole recipe as resumable stages: corpus → tokenize → transformer:T → harvest:T → dictionary:T/n.

``run_pipeline`` runs every stage not yet done, in order; a stage killed half-way is re-entered and resumes
from its own checkpoints (transformer and dictionary training, activation shards).  Each stage writes its
outputs atomically and is marked done only after they exist.

``jobs=2`` runs two stages at once, each in its own process with half the cores, as soon as the stages it reads
(``stage_deps``) are done: transformers A and B together, then their harvests, A's dictionaries beside B's, the
analyses beside each other.  A stage's step on one core runs at ~0.64 of its speed on two (measured: the
transformer's 0.32 against 0.20 s, A/1's 0.25 against 0.16 s), so two at once finish ~25 % sooner.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import RunConfig
from .errors import ConfigError
from .io import atomic_save_npy, atomic_write_json, check_npy, check_safetensors, read_json
from .runs import Run
from .subject import resolve_device


def _stage_corpus(run: Run, progress: bool) -> None:
    from .corpus import load_corpus, write_corpus

    docs = load_corpus(run.cfg.corpus)
    write_corpus(docs, run.cfg.corpus, run.corpus_dir)


def _stage_tokenize(run: Run, progress: bool) -> None:
    from .corpus import read_corpus
    from .tokenizer import Tokenizer, tokenize_corpus

    docs = read_corpus(run.corpus_dir)
    tok = Tokenizer.train((d["text"] for d in docs), run.cfg.tokenizer)
    tokenize_corpus(docs, tok, run.tokens_dir, run.cfg.corpus.val_fraction, run.cfg.corpus.seed, progress=progress)
    tok.save(run.tokens_dir / "tokenizer.json")  # last: its presence means the stage finished


def _stage_transformer(name: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .train_lm import train_transformer

        train_transformer(run.model_dir(name), run.tokens_dir, run.cfg.model, run.cfg.lm_train,
                          d_vocab=run.tokenizer.vocab_size, seed=run.cfg.transformers[name],
                          device=resolve_device(run.cfg.device), progress=progress)
    return stage


def _stage_harvest(name: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .activations import harvest

        names = list(run.cfg.transformers)
        model = run.model(name, device=str(resolve_device(run.cfg.device)))
        split = run.split("train")
        # each transformer's dictionaries see different tokens (the paper's B/1 was trained on other tokens than A/1)
        need = -(-run.cfg.harvest.rows // run.cfg.harvest.positions_per_context)
        offset = names.index(name) * need if (names.index(name) + 1) * need <= split.n_contexts else 0
        harvest(model, split, run.acts_dir(name), run.cfg.harvest, seed=run.cfg.corpus.seed, context_offset=offset,
                progress=progress)
    return stage


def _stage_dictionary(dict_id: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .metrics import evaluate_dictionary
        from .train_sae import train_dictionary

        spec = run.cfg.dictionary(dict_id)
        dev = resolve_device(run.cfg.device)
        train = spec.train_config(run.cfg.sae_train)
        model = run.model(spec.transformer, device=str(dev))
        dcfg = spec.dictionary_config(model.d_mlp)
        out = run.dict_dir(dict_id)
        t0 = time.time()
        sae = train_dictionary(run.store(spec.transformer), dcfg, train, out_dir=out, device=dev,
                               seed=spec.seed, progress=progress)
        train_s = time.time() - t0
        from . import distributed as D

        if not D.is_main():  # under torchrun, rank 0 evaluates and writes
            return
        m = evaluate_dictionary(sae, model, run.split("val"), run.cfg.eval, progress=progress,
                                store=run.store(spec.transformer))
        atomic_save_npy(out / "density.npy", m.pop("_density"))
        m["train_seconds"] = train_s
        atomic_write_json(out / "metrics.json", m)
    return stage


def _stage_features(dict_id: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .features import compute_feature_stats

        compute_feature_stats(run, dict_id, progress=progress)
    return stage


def _stage_neurons(name: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .features import compute_neuron_stats

        compute_neuron_stats(run, name, progress=progress)
    return stage


def _stage_compare(pair: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .universality import compare

        a, b = pair.split("~")
        compare(run, a, b, write=True, progress=progress, device=str(resolve_device(run.cfg.device)))
    return stage


def _stage_splitting(transformer: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .splitting import feature_map, link_dictionaries

        ids = [d.id for d in run.cfg.dictionaries if d.transformer == transformer]
        res = link_dictionaries(run, ids, progress=progress, device=str(resolve_device(run.cfg.device)))
        feature_map(run, ids, splitting=res)
    return stage


def _stage_interpret(dict_id: str) -> Callable:
    def stage(run: Run, progress: bool) -> None:
        from .interpret import interpret

        interpret(run, dict_id, progress=progress)
    return stage


def stage_fn(name: str) -> Callable:
    if name == "corpus":
        return _stage_corpus
    if name == "tokenize":
        return _stage_tokenize
    kind, _, arg = name.partition(":")
    table = {"transformer": _stage_transformer, "harvest": _stage_harvest, "dictionary": _stage_dictionary,
             "features": _stage_features, "neurons": _stage_neurons, "compare": _stage_compare,
             "splitting": _stage_splitting, "interpret": _stage_interpret}
    if kind not in table or not arg:
        raise ConfigError(f"unknown stage {name!r}")
    return table[kind](arg)


# ---- integrity: what each finished stage left, checked before a later stage reads it ---------------------------

def _check_json_lines(path: Path, stage: str) -> None:
    from .errors import CorruptArtifactError

    if not path.exists():
        raise CorruptArtifactError(path, "missing", stage)
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CorruptArtifactError(path, f"line {n} is not valid JSON ({e})", stage) from None


def _require_json(path: Path, stage: str) -> dict:
    from .errors import CorruptArtifactError

    d = read_json(path, stage=stage)
    if d is None:
        raise CorruptArtifactError(path, "missing", stage)
    return d


def verify_stage(run: Run, stage: str) -> None:
    """Check the artifacts a finished ``stage`` left (headers, sizes, shapes, JSON — never the whole tensors);
    raise ``CorruptArtifactError`` naming the first bad file and the stage that rebuilds it.  Analysis stages
    verify their own caches when they are loaded."""
    kind, _, arg = stage.partition(":")
    if kind == "corpus":
        _check_json_lines(run.corpus_dir / "docs.jsonl", stage)
        _require_json(run.corpus_dir / "manifest.json", stage)
    elif kind == "tokenize":
        _require_json(run.tokens_dir / "meta.json", stage)
        _require_json(run.tokens_dir / "tokenizer.json", stage)
        for split in ("train", "val"):
            (n,), _ = check_npy(run.tokens_dir / f"{split}.npy", stage)
            (m,), _ = check_npy(run.tokens_dir / f"{split}_domain.npy", stage)
            if n != m:
                from .errors import CorruptArtifactError

                raise CorruptArtifactError(run.tokens_dir / f"{split}_domain.npy",
                                           f"{m} domain labels for {n} tokens", stage)
    elif kind == "transformer":
        check_safetensors(run.model_dir(arg) / "model.safetensors", stage)
        _require_json(run.model_dir(arg) / "config.json", stage)
        _require_json(run.model_dir(arg) / "eval.json", stage)
    elif kind == "harvest":
        _require_json(run.acts_dir(arg) / "store.json", stage)  # the largest artifact: users delete it
        run.store(arg).verify()
    elif kind == "dictionary":
        out = run.dict_dir(arg)
        check_safetensors(out / "sae.safetensors", stage)
        _require_json(out / "cfg.json", stage)
        _require_json(out / "metrics.json", stage)
        check_npy(out / "density.npy", stage)


def _rebuild_corrupt(run: Run, log: Callable[[str], None]) -> list[str]:
    """Mark every finished stage whose artifacts fail ``verify_stage`` as pending, so this run rebuilds it.
    Transformer and dictionary stages rebuild from their final checkpoint (the same weights); harvest shards
    and the corpus/tokens are seeded, so a rebuilt stage gives back what it had."""
    from .errors import CorruptArtifactError

    bad = []
    for s, rec in run.status().items():
        if rec.get("status") != "done":
            continue
        try:
            verify_stage(run, s)
        except CorruptArtifactError as e:
            log(f"[monosemantic] {s}: {e.path} is corrupt ({e.problem}); rebuilding this stage")
            run.mark(s, "pending", rebuilt_because=f"{e.path}: {e.problem}")
            bad.append(s)
    return bad


def _run_stage(run: Run, s: str, progress: bool, log: Callable[[str], None]) -> None:
    """Run one stage.  Its status becomes "running" while it runs and "done" only after it returned (its outputs
    written); a failure leaves "running", which the next invocation resumes."""
    prev = run.status()[s]
    log(f"[monosemantic] {s}: {'resuming' if prev.get('status') == 'running' else 'starting'}")
    t0 = time.time()
    run.mark(s, "running", started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    stage_fn(s)(run, progress)
    secs = time.time() - t0  # of the session that finished the stage
    run.mark(s, "done", seconds=round(secs, 2))
    log(f"[monosemantic] {s}: done in {secs:.1f}s")


def train_dictionary_stage(root: str | Path, dict_id: str, device: str | None = None, progress: bool = True) -> Run:
    """Train and evaluate one dictionary of an existing run — the entry point that also works under torchrun
    (every rank trains on its shard of the store; rank 0 evaluates, writes and marks the stage done).  A finished
    dictionary stays "done" while it is re-entered (it resumes from its final checkpoint)."""
    from . import distributed as D

    run = Run.open(root)
    if device:
        run.cfg.device = device
    stage = f"dictionary:{dict_id}"
    spec = run.cfg.dictionary(dict_id)
    if not run.is_done(f"harvest:{spec.transformer}"):
        raise ConfigError(f"{stage} needs the activations of transformer {spec.transformer}: run "
                          f"`monosemantic run --out {root} --stages harvest:{spec.transformer}` first")
    dev = resolve_device(run.cfg.device)
    verify_stage(run, f"harvest:{spec.transformer}")  # before any status changes
    D.init_from_env(dev)
    with run.lock() if D.is_main() else nullcontext():
        was_done = run.is_done(stage)
        t0 = time.time()
        if D.is_main() and not was_done:
            run.mark(stage, "running", world_size=D.world())
        stage_fn(stage)(run, progress and D.is_main())
        if D.is_main():
            run.mark(stage, "done", seconds=round(time.time() - t0, 2), world_size=D.world())
    D.barrier()
    return run


def stage_deps(run: Run, stage: str) -> list[str]:
    """The stages whose outputs ``stage`` reads: what a parallel run waits for before it starts ``stage``.  An
    analysis kind this table does not know waits for every stage before it (the safe answer)."""
    kind, _, arg = stage.partition(":")
    dicts = {d.id: d for d in run.cfg.dictionaries}

    def side(x: str) -> str:   # a dictionary id, or a transformer (its neurons: "A", "A/neurons")
        return f"dictionary:{x}" if x in dicts else f"transformer:{x.split('/')[0]}"

    if stage == "corpus":
        return []
    if stage == "tokenize":
        return ["corpus"]
    if kind == "transformer":
        return ["tokenize"]
    if kind == "harvest":
        return [f"transformer:{arg}"]
    if kind == "dictionary" and arg in dicts:
        return [f"harvest:{dicts[arg].transformer}"]
    if kind in ("features", "interpret") and arg in dicts:
        return [f"dictionary:{arg}"]
    if kind == "neurons":
        return [f"transformer:{arg}"]
    if kind == "compare" and "~" in arg:
        return [side(x) for x in arg.split("~")]
    if kind == "splitting":
        return [f"dictionary:{i}" for i, d in dicts.items() if d.transformer == arg]
    stages = run.stages()
    return stages[:stages.index(stage)] if stage in stages else stages


# A dictionary's first steps run dense — its features start out firing on a large share of the inputs (april2024's
# tied init: half of them) until λ has pushed them down — at about 4× the cost of a sparse step: the default run's
# A/2 (300 steps at 4096) spent 196 s on its first 46 steps and 268 s on the other 254.
DENSE_START_STEPS, DENSE_START_COST = 45, 4


def stage_cost(run: Run, stage: str) -> float:
    """A rough relative cost of ``stage`` — the products of features (or vocabulary, or neurons) and tokens its
    work scales with, in units of 10⁹ — used only to order a parallel run.  On the default run one unit took
    20–35 s of one core for every stage kind but the smallest (A/0 64 s, neurons 84 s)."""
    cfg = run.cfg
    kind, _, arg = stage.partition(":")
    dicts = {d.id: d for d in cfg.dictionaries}
    m, lm, h = cfg.model, cfg.lm_train, cfg.harvest
    if kind == "transformer":
        c = lm.steps * lm.batch_size * m.n_ctx * cfg.tokenizer.vocab_size      # the unembedding dominates
    elif kind == "harvest":
        c = h.rows / max(1, h.positions_per_context) * m.n_ctx * m.d_mlp
    elif kind == "dictionary" and arg in dicts:
        d = dicts[arg]
        t = d.train_config(cfg.sae_train)
        c = (t.steps + (DENSE_START_COST - 1) * min(t.steps, DENSE_START_STEPS)) * t.batch_size * d.d_sae
    elif kind == "features" and arg in dicts:
        c = cfg.feature_stats.n_tokens * dicts[arg].d_sae
    elif kind == "neurons":
        c = cfg.feature_stats.n_tokens * m.d_mlp
    elif kind == "compare":
        c = cfg.universality.tokens * sum(dicts[x].d_sae if x in dicts else m.d_mlp for x in arg.split("~"))
    elif kind == "splitting":
        c = cfg.splitting.tokens * sum(d.d_sae for d in dicts.values() if d.transformer == arg)
    elif kind == "interpret" and arg in dicts:
        i, F = cfg.interpret, dicts[arg].d_sae
        c = (i.explain_tokens + i.holdout_tokens) * (F + m.d_mlp) * 2 + i.control_steps * cfg.sae_train.batch_size * F
    else:
        c = 1e9
    return c / 1e9


def critical_path(run: Run, todo: list[str]) -> dict[str, float]:
    """Each stage of ``todo``: its ``stage_cost`` plus the costliest chain of ``todo`` stages that waits on it —
    the order a parallel run starts ready stages in (the longest chain first, so the last stage does not run alone
    on one core while the other idles: on the default run, A/2 and then splitting)."""
    after = {s: [t for t in todo if s in stage_deps(run, t)] for s in todo}
    path: dict[str, float] = {}
    for s in reversed(todo):            # stage order: every dependent comes after what it reads
        path[s] = stage_cost(run, s) + max((path[t] for t in after[s]), default=0.0)
    return path


def resolve_jobs(jobs: int | str, device: str = "cpu") -> int:
    """``jobs`` as a number: ``"auto"`` is 2 on a CPU with at least two cores (each stage then computes on half of
    them; see the module docstring), 1 on a GPU (one device: its stages take turns)."""
    if jobs == "auto":
        return 2 if resolve_device(device).type == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"jobs must be a positive number or 'auto', got {jobs!r}")
    return n


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """A worker's initializer: a daemon thread that ends the worker once ``parent_pid`` is gone (the worker is
    reparented).  A parallel run killed by a signal to its main process only (``kill PID``, a supervisor's
    SIGTERM/SIGKILL) otherwise left its workers training on, writing into stages the next ``run`` resumes — two
    processes on one stage.  The stage's status stays "running" and its checkpoints are atomic, so the next ``run``
    resumes it."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _stage_in_worker(root: str, stage: str, threads: int, cfg: dict) -> float:
    """One stage of a parallel run, in a worker process: ``threads`` intra-op threads, the parent's config (its
    device included), no progress bars (the parent reports), the stage's status marked as in ``_run_stage``.
    Returns its seconds."""
    torch.set_num_threads(threads)
    t0 = time.time()
    try:
        _run_stage(Run(Path(root), RunConfig.from_dict(cfg)), stage, False, lambda _: None)
    except BaseException as e:
        try:
            pickle.loads(pickle.dumps(e))   # what the parent will receive
        except Exception:
            raise RuntimeError(f"{stage}: {type(e).__name__}: {e}") from None
        raise
    return time.time() - t0


def _run_parallel(run: Run, todo: list[str], jobs: int, log: Callable[[str], None], heartbeat: float = 60.0,
                  executor=None) -> None:
    """Run ``todo`` (in stage order) ``jobs`` at a time, each stage once its ``stage_deps`` are done, the ready
    stage with the longest chain ahead of it first (``critical_path``; ties in stage order).  A failed stage stops
    new starts; the running ones finish (their work is kept), then its error is raised — its status stays
    "running", so the next invocation resumes it, as in a sequential run."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    import multiprocessing as mp

    threads = max(1, torch.get_num_threads() // jobs)
    cfg = run.cfg.to_dict()
    ex = executor or ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
                                         initargs=(os.getpid(),))
    path = critical_path(run, todo)
    pending, running, error = sorted(todo, key=lambda s: -path[s]), {}, None   # stable: ties keep stage order
    total = len(run.stages())
    try:
        while pending or running:
            if error is None:
                for s in list(pending):
                    if len(running) >= jobs:
                        break
                    if all(run.is_done(d) for d in stage_deps(run, s)):
                        pending.remove(s)
                        prev = run.status()[s].get("status")
                        log(f"[monosemantic] {s}: {'resuming' if prev == 'running' else 'starting'}")
                        running[ex.submit(_stage_in_worker, str(run.root), s, threads, cfg)] = (s, time.time())
            if not running:
                if error is None and pending:
                    missing = sorted({d for s in pending for d in stage_deps(run, s) if not run.is_done(d)})
                    raise ConfigError(f"stages {pending} need stages that are not done and not asked for: {missing}")
                break
            done, _ = wait(list(running), timeout=heartbeat, return_when=FIRST_COMPLETED)
            if not done:
                n_done = sum(r.get("status") == "done" for r in run.status().values())
                now = ", ".join(f"{s} ({time.time() - t0:.0f}s)" for s, t0 in running.values())
                log(f"[monosemantic] running {now}; {n_done} of {total} stages done")
            for f in done:
                s, t0 = running.pop(f)
                try:
                    f.result()
                    log(f"[monosemantic] {s}: done in {time.time() - t0:.1f}s")
                except BaseException as e:
                    log(f"[monosemantic] {s}: failed ({type(e).__name__})")
                    error = error or e
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    if error is not None:
        raise error


def run_pipeline(root: str | Path, cfg: RunConfig, stages: list[str] | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, jobs: int | str = 1) -> Run:
    """Run (or resume) every stage of ``cfg`` in ``root``.  ``stages`` restricts to those names (with their
    prerequisites already done).  One process at a time per run directory (``Run.lock``); finished stages whose
    artifacts turn out corrupt are rebuilt.  ``jobs`` > 1 (or ``"auto"``, see ``resolve_jobs``) runs that many
    stages at once, in worker processes (module docstring); their progress comes as a line a minute."""
    resolve_device(cfg.device)  # a device this machine lacks is refused before anything is written
    run = Run.create(root, cfg)
    all_stages = run.stages()
    if stages:
        bad = [s for s in stages if s not in all_stages]
        if bad:
            raise ConfigError(f"unknown stages {bad}; this run has {all_stages}")
    jobs = resolve_jobs(jobs, cfg.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with run.lock():
        rebuilt = _rebuild_corrupt(run, log)
        if stages:  # a prerequisite found corrupt is rebuilt before the stages asked for
            stages = rebuilt + list(stages)
        todo = []
        for s in all_stages:
            if stages and s not in stages:
                continue
            if run.is_done(s):
                log(f"[monosemantic] {s}: done, skipped")
                continue
            todo.append(s)
        if jobs > 1 and len(todo) > 1:
            _run_parallel(run, todo, jobs, log)
        else:
            for s in todo:
                _run_stage(run, s, progress, log)
    return run
