"""The scores, for every unit at once: simulation (Spearman), detection (balanced accuracy) and the logit test.

Simulation, the paper's score: over every token of a unit's held-out examples (top activations, samples of the
11 equal-width activation intervals, random tokens), the Spearman correlation of the simulated and the true
activations — the Pearson correlation of their average ranks (ties share their mean rank).  A unit whose true
activations are constant there (it never fires on them) has no score (NaN); an explanation that predicts a
constant (names nothing that occurs) scores 0.

Detection: each of those tokens in its context is *firing* (true activation > 0) or not; the explanation says
firing where its simulation is > 0.  Score = balanced accuracy (TPR + TNR)/2, NaN when a class is empty.

Logit test: does the explanation predict which output tokens the unit's logit effect raises?  Its prediction for
an output token v is how much more often v *follows* the explanation's patterns than it follows any token on the
explanation stream, weighted by the rules' values:

    S(u, v) = Σ_rules value · #(pattern followed by v)  /  (#(any token followed by v) + 1)

(wildcard rules count their token's occurrences, pair rules add their own value minus the wildcard's on theirs).
Score = AUC of S separating the unit's ``logit_tokens`` most-raised tokens (``features.logit_weights``, the one
logit-effect definition) from as many random vocabulary tokens: 0.5 is chance, 1 perfect.  The paper's medians:
features 0.74, neurons 0.53, a randomized transformer 0.50.

Every unit gets an AUC, as in the paper; but where S is the same on all 2K compared tokens — the explanation names
no token, or its patterns are never followed on the explanation stream by any compared token — every pair ties
and the AUC is 0.5 *by construction*.  Such a unit is not ``testable`` (``logit_test``); the summary reports how
many there are and the median over the testable ones beside the all-unit median.  A second reference,
``shuffled``: the same AUC against *another* unit's most-raised tokens (a seeded permutation of the units).  It
measures what the test rewards without any link between this explanation and this logit effect — e.g. a group
whose logit effects favour tokens frequent on the stream (S is 0 on a token never seen there, and random
vocabulary tokens often are never seen) scores above 0.5 when shuffled; the unit-specific signal is the gap.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .rules import Rules

__all__ = ["group_spearman", "balanced_accuracy", "next_token_tables", "logit_predictions", "pair_auc", "logit_auc",
           "logit_test", "random_tokens"]


def _group_average_ranks(group_n: np.ndarray, x_n: np.ndarray) -> np.ndarray:
    """Average rank (0-based) of each x within its group; ties share the mean of their positions."""
    n = len(x_n)
    order = np.lexsort((x_n, group_n))
    g, x = group_n[order], x_n[order]
    new_group = np.ones(n, bool)
    new_group[1:] = g[1:] != g[:-1]
    new_run = new_group.copy()
    new_run[1:] |= x[1:] != x[:-1]
    idx = np.arange(n)
    g_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    run_id = np.cumsum(new_run) - 1
    run_first = idx[new_run]
    run_len = np.diff(np.append(run_first, n))
    pos = run_first[run_id] - g_start + (run_len[run_id] - 1) / 2.0
    out = np.empty(n)
    out[order] = pos
    return out


def group_spearman(group_n: np.ndarray, true_n: np.ndarray, pred_n: np.ndarray, n_groups: int) -> np.ndarray:
    """Spearman correlation of ``pred`` and ``true`` within each group (see the module docstring): NaN where
    ``true`` is constant, 0 where only ``pred`` is."""
    group_n = np.asarray(group_n, np.int64)
    if len(group_n) == 0:
        return np.full(n_groups, np.nan)
    rt = _group_average_ranks(group_n, np.asarray(true_n, np.float64))
    rp = _group_average_ranks(group_n, np.asarray(pred_n, np.float64))
    cnt = np.bincount(group_n, minlength=n_groups).astype(np.float64)
    c = np.maximum(cnt, 1)
    mt = np.bincount(group_n, rt, n_groups) / c
    mp = np.bincount(group_n, rp, n_groups) / c
    dt, dp = rt - mt[group_n], rp - mp[group_n]
    cov = np.bincount(group_n, dt * dp, n_groups)
    vt = np.bincount(group_n, dt * dt, n_groups)
    vp = np.bincount(group_n, dp * dp, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vt * vp)
    r = np.where(vp > 1e-12, r, 0.0)
    return np.where(vt > 1e-12, np.clip(r, -1.0, 1.0), np.nan)


def balanced_accuracy(group_n: np.ndarray, firing_n: np.ndarray, said_n: np.ndarray, n_groups: int) -> np.ndarray:
    """(TPR + TNR)/2 of ``said`` (the explanation says firing) against ``firing``, per group; NaN when a group
    lacks firing or non-firing tokens."""
    g = np.asarray(group_n, np.int64)
    f, s = np.asarray(firing_n, bool), np.asarray(said_n, bool)
    pos = np.bincount(g, f, n_groups)
    neg = np.bincount(g, ~f, n_groups)
    tp = np.bincount(g, f & s, n_groups)
    tn = np.bincount(g, ~f & ~s, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), (tp / pos + tn / neg) / 2, np.nan)


def next_token_tables(contexts_CT: np.ndarray, pair_ids_CB: np.ndarray, vocab: int, n_pairs: int):
    """Counts of the token that follows each token (V × V) and each (preceding, token) pair (pairs × V) over
    the non-BOS positions of ``contexts_CT``, and of every following token (V,)."""
    tok = contexts_CT[:, 1:-1].reshape(-1).astype(np.int64)
    nxt = contexts_CT[:, 2:].reshape(-1).astype(np.int64)
    pid = pair_ids_CB[:, :-1].reshape(-1).astype(np.int64)
    ones = np.ones(len(tok), np.float64)
    after_tok = sp.csr_matrix((ones, (tok, nxt)), shape=(vocab, vocab))
    after_pair = sp.csr_matrix((ones, (pid, nxt)), shape=(n_pairs, vocab))
    return after_tok, after_pair, np.bincount(nxt, minlength=vocab).astype(np.float64)


def random_tokens(top_ids_UK: np.ndarray, vocab: int, seed: int, exclude: tuple[int, ...] = ()) -> np.ndarray:
    """For each unit as many random vocabulary tokens as it has top tokens, none of them among its top tokens
    nor in ``exclude`` (special tokens).  Seeded."""
    U, K = top_ids_UK.shape
    rng = np.random.default_rng([seed, 1313])
    draw = rng.integers(0, vocab, (U, 4 * K + 8))
    bad = (draw[:, :, None] == top_ids_UK[:, None, :]).any(-1) | np.isin(draw, list(exclude))
    order = np.argsort(bad, axis=1, kind="stable")
    return np.take_along_axis(draw, order, 1)[:, :K]


def logit_predictions(rules: Rules, pair_codes_: np.ndarray, tables):
    """The explanation's prediction S (module docstring) as a function ``S(ids_UK) -> (U, K)``: unit u's score of
    each output token ``ids_UK[u]``, from the rules through the following-token tables."""
    after_tok, after_pair, base = tables
    U, V = rules.n_units, rules.vocab
    wild = rules.prev < 0
    W_t = sp.csr_matrix((rules.value[wild].astype(np.float64), (rules.unit[wild], rules.token[wild])), shape=(U, V))
    pr = ~wild
    pair_idx = np.searchsorted(pair_codes_, rules.prev[pr] * V + rules.token[pr])
    ok = (pair_idx < len(pair_codes_)) & (pair_codes_[np.minimum(pair_idx, len(pair_codes_) - 1)]
                                          == rules.prev[pr] * V + rules.token[pr])
    own_wild = np.asarray(W_t[rules.unit[pr], rules.token[pr]]).ravel() if pr.any() else np.zeros(0)
    W_p = sp.csr_matrix(((rules.value[pr] - own_wild)[ok].astype(np.float64),
                         (rules.unit[pr][ok], pair_idx[ok])), shape=(U, len(pair_codes_)))
    S = (W_t @ after_tok + W_p @ after_pair).tocsr()
    scale = 1.0 / (base + 1.0)
    rows = np.arange(U)[:, None]

    def score(ids_UK: np.ndarray) -> np.ndarray:
        return np.asarray(S[np.broadcast_to(rows, ids_UK.shape).ravel(), ids_UK.ravel()]).reshape(ids_UK.shape) \
            * scale[ids_UK]

    return score


def pair_auc(pos_UK: np.ndarray, neg_UK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUC, testable) per row: the share of (positive, negative) pairs the positive wins (ties ½); testable where
    the scores are not all equal (otherwise the AUC is 0.5 by construction)."""
    cmp = (pos_UK[:, :, None] > neg_UK[:, None, :]) + 0.5 * (pos_UK[:, :, None] == neg_UK[:, None, :])
    both = np.concatenate([pos_UK, neg_UK], axis=1)
    return cmp.mean(axis=(1, 2)), both.max(axis=1) > both.min(axis=1)


def logit_auc(rules: Rules, pair_codes_: np.ndarray, tables, top_ids_UK: np.ndarray, neg_ids_UK: np.ndarray
              ) -> np.ndarray:
    """The logit test's AUC per unit (module docstring): S from the rules through the following-token tables."""
    score = logit_predictions(rules, pair_codes_, tables)
    return pair_auc(score(top_ids_UK), score(neg_ids_UK))[0]


def logit_test(rules: Rules, pair_codes_: np.ndarray, tables, top_ids_UK: np.ndarray, vocab: int, seed: int,
               exclude: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """The logit test of every unit (module docstring): ``logit_auc`` (every unit; 0.5 where untestable),
    ``logit_testable`` (S not constant on the compared tokens) and ``logit_auc_shuffled`` (against a permuted
    unit's most-raised tokens and their own random tokens; NaN where that comparison is untestable)."""
    score = logit_predictions(rules, pair_codes_, tables)
    neg = random_tokens(top_ids_UK, vocab, seed, exclude)
    auc, testable = pair_auc(score(top_ids_UK), score(neg))
    U = len(top_ids_UK)
    perm = np.random.default_rng([seed, 1314]).permutation(U)
    if U > 1:                                   # no unit keeps its own tokens (a derangement by rotation of fixed points)
        fixed = np.flatnonzero(perm == np.arange(U))
        if len(fixed) == 1:
            j = (fixed[0] + 1) % U
            perm[[fixed[0], j]] = perm[[j, fixed[0]]]
        elif len(fixed) > 1:
            perm[fixed] = perm[np.roll(fixed, 1)]
    top_s = top_ids_UK[perm]
    shuf, shuf_ok = pair_auc(score(top_s), score(random_tokens(top_s, vocab, seed + 1, exclude)))
    return {"logit_auc": auc, "logit_testable": testable, "logit_auc_shuffled": np.where(shuf_ok, shuf, np.nan)}
