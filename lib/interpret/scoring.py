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
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .rules import Rules

__all__ = ["group_spearman", "balanced_accuracy", "next_token_tables", "logit_auc", "random_tokens"]


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


def logit_auc(rules: Rules, pair_codes_: np.ndarray, tables, top_ids_UK: np.ndarray, neg_ids_UK: np.ndarray
              ) -> np.ndarray:
    """The logit test's AUC per unit (module docstring): S from the rules through the following-token tables."""
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

    def score(ids):
        return np.asarray(S[np.broadcast_to(rows, ids.shape).ravel(), ids.ravel()]).reshape(ids.shape) * scale[ids]

    sp_, sn = score(top_ids_UK), score(neg_ids_UK)
    cmp = (sp_[:, :, None] > sn[:, None, :]) + 0.5 * (sp_[:, :, None] == sn[:, None, :])
    return cmp.mean(axis=(1, 2))
