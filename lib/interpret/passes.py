"""Scoring one set of units — a dictionary's features or a transformer's neurons — end to end.

``score_units(subject, explain, holdout, cfg)``:

1. the explanation stream (``explain``: train-split contexts from ``tokensets``) twice through the forward and
   the sparse encoder: pass 1 the per-token activation mass, pass 2 the per-pair mass on each unit's candidate
   tokens → ``Rules`` (``rules.RuleFitter``);
2. the held-out stream (``holdout``: validation-split contexts) once through the statistics accumulator
   (``features.StatsAccumulator``: top activations and uniform samples of the 11 equal-width intervals, the
   mechanism of the feature pages), plus random tokens; their 9-token windows with the unit's true activations
   (``features.examples.example_windows``, one extra token before so the first scored token has its preceding
   one);
3. simulation, detection and the logit test (``scoring``) for every unit at once.

Returns the per-unit table and the held-out windows (kept so another explainer — an LLM — can be scored on the
same examples).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import FeatureStatsConfig, InterpretConfig
from ..corpus import DOMAINS
from ..features.accumulator import StatsAccumulator
from ..features.examples import PassCodes, example_entries, example_windows
from ..features.threads import intra_op_threads, pipelined, worker_count
from ..features.units import top_logit_effects
from ..sparse import SparseEncoder, positive_entries
from .rules import RuleFitter, Rules, pair_codes, simulate
from .scoring import balanced_accuracy, group_spearman, logit_test, next_token_tables

__all__ = ["Subject", "TokenSetRef", "score_units", "RANDOM_SECTION"]

REPLAY_BYTES = 1 << 29  # the explanation pass's chunks kept for its second pass, up to this size (fit_rules)
RANDOM_SECTION = -2   # section of a random held-out example (−1: top activations, i ≥ 0: interval i)


@dataclass
class Subject:
    """The units to score: ``sae`` None means the neurons of ``model``."""

    model: object
    sae: object = None
    name: str = ""

    @property
    def n_units(self) -> int:
        return int(self.sae.d_sae) if self.sae is not None else int(self.model.d_mlp)


@dataclass
class TokenSetRef:
    split: object          # a TokenSplit
    ctx_idx: np.ndarray    # its contexts (tokensets.token_set_contexts)

    @property
    def n_tokens(self) -> int:
        return int(len(self.ctx_idx) * self.split.body)


class _Runner:
    """Chunks of a token set through the forward and the sparse encoder, computed ahead by worker threads:
    yields (first context, contexts (b, n_ctx), domains (b, n_ctx−1), rows, cols, vals)."""

    def __init__(self, subject: Subject, batch: int):
        self.s, self.B, self.m = subject, batch, subject.model
        self.encoder = SparseEncoder(subject.sae) if subject.sae is not None else None
        self.mlp_acts, self.workers = None, 1

    def prepare(self, split, ctx_idx):
        if self.mlp_acts is None:
            self.mlp_acts = self.m.mlp_acts_function(torch.from_numpy(split.contexts(ctx_idx[:8])).to(self.m.device))
            self.workers = worker_count(None, self.mlp_acts)

    def __call__(self, ref: TokenSetRef, desc: str, progress: bool):
        from tqdm.auto import tqdm

        split, ctx_idx = ref.split, ref.ctx_idx
        self.prepare(split, ctx_idx)
        m, enc, K = self.m, self.encoder, len(DOMAINS)

        def produce(c0: int):
            idx = ctx_idx[c0:c0 + self.B]
            toks = split.contexts(idx)
            x = self.mlp_acts(torch.from_numpy(toks).to(m.device))[:, 1:].reshape(-1, m.d_mlp).float().cpu()
            rows, cols, vals = enc(x.contiguous(), inplace=True) if enc is not None else positive_entries(x)
            dom = np.minimum(split.domains(idx)[:, 1:], K - 1).astype(np.int64)
            return c0, toks, dom, rows.numpy(), cols.numpy(), vals.numpy()

        steps = range(0, len(ctx_idx), self.B)
        with intra_op_threads(1):
            yield from tqdm(pipelined(produce, steps, self.workers), total=len(steps), desc=desc,
                            disable=not progress, unit="chunk", leave=False)


def fit_rules(runner: _Runner, subject: Subject, ref: TokenSetRef, cfg: InterpretConfig, vocab: int,
              progress: bool):
    """Pass 1 and 2 over the explanation stream → (Rules, pair codes, contexts, pair ids)."""
    contexts = ref.split.contexts(ref.ctx_idx)
    pair_ids, codes = pair_codes(contexts, vocab)
    fitter = RuleFitter(subject.n_units, vocab, codes, cfg)
    # pass 2 replays pass 1's chunks when they fit in memory (a dictionary's: k per token) instead of running the
    # transformer and the encoder again; a dense subject (neurons: ~half of 512 per token) streams twice
    kept, budget = [], REPLAY_BYTES
    for chunk in runner(ref, f"explain {subject.name} (1/2)", progress):
        _, toks, _, r, c, v = chunk
        fitter.update_tokens(toks[:, 1:].reshape(-1), r, c, v)
        budget -= r.nbytes + c.nbytes + v.nbytes + toks.nbytes
        if kept is not None:
            if budget >= 0:
                kept.append(chunk)
            else:
                kept = None
    fitter.choose_candidates()
    for c0, toks, _, r, c, v in kept if kept is not None else runner(ref, f"explain {subject.name} (2/2)", progress):
        fitter.update_pairs(toks[:, 1:].reshape(-1), pair_ids[c0:c0 + len(toks)].reshape(-1), r, c, v)
    return fitter.rules(), codes, contexts, pair_ids


def _stats_config(cfg: InterpretConfig) -> FeatureStatsConfig:
    """The statistics accumulator's settings for the held-out examples (the feature pages' 11 intervals)."""
    return dataclasses.replace(FeatureStatsConfig(), top_k=cfg.top_examples, per_interval=max(1, cfg.per_interval),
                               window_before=cfg.window_before + 1, window_after=cfg.window_after,
                               batch_contexts=cfg.batch_contexts, seed=cfg.seed).validate()


def heldout_windows(runner: _Runner, subject: Subject, ref: TokenSetRef, cfg: InterpretConfig, progress: bool):
    """The held-out examples of every unit and their windows: dict of unit, g, section (−1 top, i interval,
    −2 random), tokens (n, W+1) (−1 pads), acts (n, W+1); and each unit's firing count there."""
    fcfg = _stats_config(cfg)
    U, body = subject.n_units, ref.split.body
    acc = StatsAccumulator(U, len(DOMAINS), fcfg)
    # a TopK-like encoder's windows read the pass's own codes (as the feature statistics' do)
    kept = PassCodes.for_pass(subject.sae)
    for c0, toks, dom, r, c, v in runner(ref, f"held-out {subject.name}", progress):
        n = len(toks)
        r, c, v = torch.from_numpy(r), torch.from_numpy(c), torch.from_numpy(v)
        acc.update(torch.arange(c0 * body, (c0 + n) * body), torch.from_numpy(dom.reshape(-1)), r, c, v)
        if kept is not None:
            kept.add(c0 * body, r, c, v)
    res = acc.results()
    ex = example_entries(res, fcfg)
    if cfg.per_interval == 0:
        ex = {k: a[ex["section"] < 0] for k, a in ex.items()}
    rng = np.random.default_rng([cfg.seed, 77])
    R = cfg.random_examples
    unit = np.concatenate([ex["unit"], np.repeat(np.arange(U), R)])
    g = np.concatenate([ex["g"], rng.integers(0, ref.n_tokens, U * R)])
    section = np.concatenate([ex["section"].astype(np.int64), np.full(U * R, RANDOM_SECTION)])
    order = np.argsort(unit, kind="stable")
    unit, g, section = unit[order], g[order], section[order]
    toks, acts, _ = example_windows(fcfg, g, unit, ref.ctx_idx, ref.split, subject.model, subject.sae, progress,
                                    runner.mlp_acts, runner.workers, kept.finish() if kept is not None else None)
    return {"unit": unit, "g": g, "section": section, "tokens": toks, "acts": acts}, res["count"]


def simulate_windows(rules: Rules, win: dict, bos_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true, predicted, valid) activations (n, W) on the scored tokens of the windows (all but the first)."""
    tok, prev = win["tokens"][:, 1:], win["tokens"][:, :-1].copy()
    prev[(prev < 0) & (tok >= 0)] = bos_id        # a pad right before a token: it is position 1, after BOS
    pred = simulate(rules, win["unit"], tok, prev)
    return win["acts"][:, 1:], pred, tok >= 0


def score_units(subject: Subject, explain: TokenSetRef, holdout: TokenSetRef, cfg: InterpretConfig,
                vocab: int, bos_id: int, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Explain and score every unit of ``subject`` (module docstring): (per-unit table, held-out windows)."""
    runner = _Runner(subject, cfg.batch_contexts)
    U = subject.n_units
    rules, codes, contexts, pair_ids = fit_rules(runner, subject, explain, cfg, vocab, progress)
    win, fired_holdout = heldout_windows(runner, subject, holdout, cfg, progress)
    true, pred, valid = simulate_windows(rules, win, bos_id)
    grp = np.broadcast_to(win["unit"][:, None], true.shape)[valid]
    spearman = group_spearman(grp, true[valid], pred[valid], U)
    detection = balanced_accuracy(grp, true[valid] > 0, pred[valid] > 0, U)
    top = top_logit_effects(subject.model, subject.sae, U, cfg.logit_tokens, 1.0)["top_ids"].astype(np.int64)
    logit = logit_test(rules, codes, next_token_tables(contexts, pair_ids, vocab, len(codes)), top, vocab, cfg.seed,
                       exclude=(bos_id,))
    scored = rules.fired >= cfg.min_count
    table = pd.DataFrame({
        "unit": np.arange(U, dtype=np.int32), "scored": scored, "fired": rules.fired,
        "density": rules.fired / max(explain.n_tokens, 1),
        "fired_holdout": np.asarray(fired_holdout, np.int64), "named": rules.named.astype(np.int32),
        "single_token": rules.single_token, "n_rules": np.bincount(rules.unit, minlength=U).astype(np.int32),
        "explained": rules.explained, "spearman": spearman, "detection": detection, **logit,
        "rules": rules.as_json(),
    })
    windows = pd.DataFrame({"unit": win["unit"].astype(np.int32), "section": win["section"].astype(np.int16),
                            "g": win["g"].astype(np.int64), "tokens": list(win["tokens"].astype(np.int32)),
                            "acts": list(win["acts"].astype(np.float32))})
    return table, windows
