"""The pass over a run: forward, sparse encoding and accumulation of a token set, resumable.

``compute_stats`` checks the source, fingerprints what the result depends on (weights, token set, config), and
reuses a finished pass with the same fingerprint; otherwise it resumes a checkpointed pass (``state.npz``) or
starts one, streams chunks through the ``StatsAccumulator`` (checkpointing every ``checkpoint_seconds``), and
hands the results to ``finalize`` for the two tables.  ``meta.json`` is written last: its presence means done.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..corpus import DOMAINS
from ..errors import ConfigError
from ..io import atomic_path, atomic_write_json, file_sha, read_json
from ..sparse import SparseEncoder, positive_entries
from .accumulator import StatsAccumulator
from .config import STATS_VERSION, FeatureStatsConfig, stats_config
from .examples import PassCodes
from .finalize import finalize
from .loading import FeatureStats, stats_dir
from .threads import intra_op_threads, pipelined, worker_count
from ..tokensets import token_set_contexts

__all__ = ["compute_feature_stats", "compute_neuron_stats", "compute_stats"]

# Test hook, not API: stop the pass with ``Interrupted`` after this many chunks, as a kill would (after a
# checkpoint).  tests/test_features.py patches it to check that a resumed pass gives the same tables.
_STOP_AFTER_CHUNKS: int | None = None


class Interrupted(Exception):
    """The pass was stopped by the test hook ``_STOP_AFTER_CHUNKS`` (its state is saved, as after a kill)."""


def compute_feature_stats(run, dict_id: str, cfg: FeatureStatsConfig | None = None, progress: bool = True,
                          out_dir: str | Path | None = None, device: str = "cpu") -> "FeatureStats":
    """Statistics of every feature of dictionary ``dict_id`` (resumable; a finished pass is reused)."""
    if "/" not in dict_id:
        raise ConfigError(f"{dict_id!r} is not a dictionary id (like 'A/1'); for neurons use compute_neuron_stats")
    return compute_stats(run, dict_id, cfg, progress=progress, out_dir=out_dir, device=device)


def compute_neuron_stats(run, transformer: str, cfg: FeatureStatsConfig | None = None, progress: bool = True,
                         out_dir: str | Path | None = None, device: str = "cpu") -> "FeatureStats":
    """The same statistics for the MLP neurons of ``transformer`` (the paper's baseline)."""
    if "/" in transformer:
        raise ConfigError(f"{transformer!r} is a dictionary id; for neurons pass the transformer name, e.g. 'A'")
    return compute_stats(run, transformer, cfg, progress=progress, out_dir=out_dir, device=device)


def _weights_of(run, source: str) -> Path:
    """The weights file the statistics of ``source`` depend on; a clear error when it is not trained yet."""
    if "/" in source:
        run.cfg.dictionary(source)  # validates the id
        weights = run.dict_dir(source) / "sae.safetensors"
        stage = f"dictionary:{source}"
    else:
        stats_dir(run, source)  # validates the transformer name
        weights = run.model_dir(source) / "model.safetensors"
        stage = f"transformer:{source}"
    if not weights.exists():
        what = "dictionary" if "/" in source else "transformer"
        raise FileNotFoundError(f"{what} {source} is not trained yet ({weights} missing); run "
                                f"`monosemantic run --stages {stage}` first")
    return weights


def _fingerprint(run, source: str, cfg: FeatureStatsConfig, weights: Path, split, ctx_idx: np.ndarray) -> dict:
    """What the tables depend on; settings that change only speed (threads, chunking, bf16 filter) are left out."""
    transformer = source.split("/")[0]
    return {"version": STATS_VERSION, "source": source, "weights_sha": file_sha(weights),
            "model_sha": file_sha(run.model_dir(transformer) / "model.safetensors"),
            "split": cfg.split, "split_tokens": int(split.ids.size), "n_contexts": int(len(ctx_idx)),
            "cfg": {k: v for k, v in cfg.to_dict().items() if k not in ("checkpoint_seconds", "bf16",
                                                                      "batch_contexts", "workers")}}


@torch.no_grad()
def compute_stats(run, source: str, cfg: FeatureStatsConfig | None = None, progress: bool = True,
                  out_dir: str | Path | None = None, device: str = "cpu") -> FeatureStats:
    """Statistics of ``source``: a dictionary id ("A/1", its features) or a transformer name ("A", its neurons)."""
    cfg = stats_config(run, cfg)
    out = Path(out_dir) if out_dir is not None else stats_dir(run, source)
    weights = _weights_of(run, source)
    split = run.split(cfg.split)
    ctx_idx = token_set_contexts(split, cfg.n_tokens)
    fingerprint = _fingerprint(run, source, cfg, weights, split, ctx_idx)
    meta = read_json(out / "meta.json")
    if meta is not None and meta.get("fingerprint") == fingerprint:
        return FeatureStats(out, run=run)

    (out / "meta.json").unlink(missing_ok=True)  # stale results must never pass for the new ones
    model = run.model(source.split("/")[0], device=device)
    model.eval()
    sae = run.dictionary(source, device="cpu") if "/" in source else None  # the sparse encoder is a CPU kernel
    if sae is not None:
        sae.eval()
    acc = StatsAccumulator(sae.d_sae if sae is not None else model.d_mlp, len(DOMAINS), cfg,
                           vocab=run.tokenizer.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.npz"
    done_ctx = _resume(state_path, acc, fingerprint)
    mlp_acts = model.mlp_acts_function(torch.from_numpy(split.contexts(ctx_idx[:8])).to(model.device))
    workers = worker_count(cfg.workers, mlp_acts)
    t_start = time.time()
    # a TopK-like encoder's windows need whole tokens encoded: keep the pass's codes, when it covers every token
    codes = PassCodes.for_pass(sae) if done_ctx == 0 else None
    done_ctx = _accumulate(acc, cfg, source, split, ctx_idx, done_ctx, model, mlp_acts, sae, workers,
                           lambda done: _save_state(state_path, acc, done, fingerprint), progress, codes)
    pass_seconds = time.time() - t_start
    if pass_seconds > cfg.checkpoint_seconds:  # a kill during the windows/tables step resumes there
        _save_state(state_path, acc, done_ctx, fingerprint)
    t1 = time.time()
    with intra_op_threads(1):
        meta = finalize(run, out, source, cfg, acc.results(), ctx_idx, split, model, sae, fingerprint, progress,
                        mlp_acts, workers, codes.finish() if codes is not None else None)
    meta["timing"] = {"pass_seconds": round(pass_seconds, 3), "finalize_seconds": round(time.time() - t1, 3)}
    atomic_write_json(out / "meta.json", meta)  # last: its presence means the statistics are complete
    state_path.unlink(missing_ok=True)
    return FeatureStats(out, run=run)


def _resume(state_path: Path, acc: StatsAccumulator, fingerprint: dict) -> int:
    """Load a checkpoint written for the same fingerprint into ``acc``; returns the contexts it had done."""
    if not state_path.exists():
        return 0
    with np.load(state_path, allow_pickle=False) as z:
        if json.loads(str(z["fingerprint"])) != fingerprint:
            return 0
        acc.load_state_dict({k: z[k] for k in z.files})
        return int(z["done_ctx"])


def _accumulate(acc: StatsAccumulator, cfg: FeatureStatsConfig, source: str, split, ctx_idx: np.ndarray,
                done_ctx: int, model, mlp_acts, sae, workers: int, checkpoint, progress: bool,
                codes: PassCodes | None = None) -> int:
    """Stream the contexts from ``done_ctx`` on through ``acc`` (chunks produced ahead by worker threads), and
    each chunk's encodings into ``codes`` when given; ``checkpoint(done_ctx)`` every ``cfg.checkpoint_seconds``.
    Returns the contexts done."""
    from tqdm.auto import tqdm

    body, B, K = split.body, cfg.batch_contexts, len(DOMAINS)
    encoder = SparseEncoder(sae, cfg.bf16) if sae is not None else None

    def produce(c0: int):  # in a worker thread: forward + sparse encoding of one chunk
        idx = ctx_idx[c0:c0 + B]
        toks = torch.from_numpy(split.contexts(idx)).to(model.device)
        x = mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp).float().cpu().contiguous()
        tok = toks[:, 1:].reshape(-1).cpu()
        rows, cols, vals = encoder(x, inplace=True) if encoder is not None else positive_entries(x)
        dom = torch.from_numpy(split.domains(idx)[:, 1:].reshape(-1).astype(np.int64)).clamp_(max=K - 1)
        return c0, len(idx), dom, tok, rows, cols, vals

    bar = tqdm(total=len(ctx_idx) * body, initial=done_ctx * body, unit="tok", unit_scale=True,
               desc=f"{'feature' if sae is not None else 'neuron'} stats {source}", disable=not progress)
    last_ckpt, n_chunks = time.time(), 0
    try:
        with intra_op_threads(1):
            for c0, n, dom, tok, rows, cols, vals in pipelined(produce, range(done_ctx, len(ctx_idx), B), workers):
                acc.update(torch.arange(c0 * body, (c0 + n) * body, dtype=torch.int64), dom, rows, cols, vals, tok)
                if codes is not None:
                    codes.add(c0 * body, rows, cols, vals)
                done_ctx = c0 + n
                n_chunks += 1
                bar.update(n * body)
                if _STOP_AFTER_CHUNKS is not None and n_chunks >= _STOP_AFTER_CHUNKS:
                    checkpoint(done_ctx)
                    raise Interrupted(f"stopped after {n_chunks} chunks (test hook)")
                if time.time() - last_ckpt > cfg.checkpoint_seconds and done_ctx < len(ctx_idx):
                    checkpoint(done_ctx)
                    last_ckpt = time.time()
    finally:
        bar.close()
    return done_ctx


def _save_state(path: Path, acc: StatsAccumulator, done_ctx: int, fingerprint: dict) -> None:
    d = acc.state_dict()
    d["done_ctx"] = np.array(done_ctx, dtype=np.int64)
    d["fingerprint"] = np.array(json.dumps(fingerprint))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **d)
