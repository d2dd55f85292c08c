"""The token-in-context explainer and its simulator: a pattern trie over (preceding token, token) fitted to a
unit's activations on a token stream — an offline, N2G-style explainer (Gao et al. 2024) without a model call.

Patterns.  A rule names a token ``t``, either after any token (the wildcard rule ``* t``) or after one preceding
token ``p`` (``p t``).  A unit's explanation is a trie of depth two: up to ``max_tokens`` named tokens, each with up
to ``max_context`` preceding-token children.  The simulator predicts at position i (tokens t_i, preceding p_i):

    â_i = v(p_i t_i)  if the rule ``p_i t_i`` exists,  else  v(* t_i)  if ``* t_i`` exists,  else 0.

Fitting (least squares within that class).  On the explanation stream, with n(·) the occurrence counts and s(·)
the sums of the unit's activation a (``sparse.TokenMass`` keyed by the token, and by the (p, t) pair):

    m(t) = s(t)/n(t),   m(p t) = s(p t)/n(p t)
    child gain      g(p t) = n(p t) · (m(p t) − m(t))²          (how much a context refines its token)
    children of t:  pairs with n ≥ min_count and g ≥ min_gain·Q, largest g first, at most max_context
    wildcard value  v(* t) = (s(t) − Σ_children s) / (n(t) − Σ_children n)      (mean over the other contexts)
    node gain       G(t) = Σ_children n·m² + n_rest·v(* t)²     (squared error removed against predicting 0)
    named tokens:   n(t) ≥ min_count and G ≥ min_gain·Q, largest G first, at most max_tokens

with Q = Σ_i a_i² the unit's squared activation on the stream; ``explained`` = Σ G / Q is the share of it the
explanation removes in-sample.  Every value is its pattern's conditional mean (least squares for a lookup); a
pattern must occur ``min_count`` times so that one lucky activation is not a rule.  Candidate tokens are each
unit's ``3·max_tokens`` tokens of largest s(t)²/n(t), so the pair pass touches only entries on those tokens.

A unit's explanation is **single-token** when it names exactly one token (whatever its contexts).

Pattern keys: a rule (unit u, preceding p or −1, token t) is the int64 ``(u·(V+1) + p+1)·V + t``; simulation is a
``searchsorted`` of the window's keys into the sorted rule keys, for every unit at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..sparse import TokenMass

__all__ = ["Rules", "RuleFitter", "pair_codes", "segment_rank", "simulate", "explanation_text"]


def segment_rank(keys_sorted: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal (sorted) keys."""
    n = len(keys_sorted)
    if n == 0:
        return np.zeros(0, np.int64)
    start = np.ones(n, bool)
    start[1:] = keys_sorted[1:] != keys_sorted[:-1]
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def pair_codes(contexts_CT: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Compact ids of the (preceding, token) pairs of every non-BOS position of ``contexts_CT`` (BOS at 0):
    returns (pair ids (C, T−1), the sorted distinct codes ``p·V + t``)."""
    codes = contexts_CT[:, :-1].astype(np.int64) * vocab + contexts_CT[:, 1:]
    uniq, inv = np.unique(codes, return_inverse=True)
    return inv.reshape(codes.shape), uniq


@dataclass
class Rules:
    """Every unit's explanation, as flat arrays sorted by unit then rank (a named token's wildcard row, then its
    children).  ``prev`` is −1 for a wildcard rule; ``node`` the rank of the named token within its unit."""

    n_units: int
    vocab: int
    unit: np.ndarray          # (R,) int64
    prev: np.ndarray          # (R,) int64, −1 = any preceding token
    token: np.ndarray         # (R,) int64
    value: np.ndarray         # (R,) float32: the predicted activation
    count: np.ndarray         # (R,) int64: occurrences on the explanation stream
    node: np.ndarray          # (R,) int64
    explained: np.ndarray = field(default=None)   # (U,) share of Σa² the explanation removes in-sample
    named: np.ndarray = field(default=None)       # (U,) tokens named
    fired: np.ndarray = field(default=None)       # (U,) firing positions on the explanation stream

    def __post_init__(self):
        U = self.n_units
        self.explained = np.zeros(U) if self.explained is None else self.explained
        self.named = np.bincount(self.unit[self.prev < 0], minlength=U) if self.named is None else self.named
        self.fired = np.zeros(U, np.int64) if self.fired is None else self.fired

    @property
    def single_token(self) -> np.ndarray:
        return self.named == 1

    def keys(self) -> np.ndarray:
        return (self.unit * (self.vocab + 1) + self.prev + 1) * self.vocab + self.token

    def of_unit(self, u: int) -> list[dict]:
        lo, hi = np.searchsorted(self.unit, [u, u + 1])
        return [{"prev": int(self.prev[i]), "token": int(self.token[i]), "value": float(self.value[i]),
                 "count": int(self.count[i])} for i in range(lo, hi)]

    def as_json(self) -> list[str]:
        """Each unit's rules as a JSON list of [prev, token, value, count]."""
        bounds = np.searchsorted(self.unit, np.arange(self.n_units + 1))
        rows = np.stack([self.prev, self.token], 1).tolist()
        vals, cnt = np.round(self.value.astype(np.float64), 4).tolist(), self.count.tolist()
        return [json.dumps([[*rows[i], vals[i], cnt[i]] for i in range(bounds[u], bounds[u + 1])])
                for u in range(self.n_units)]

    @classmethod
    def from_json(cls, texts: list[str], vocab: int, named: np.ndarray | None = None) -> "Rules":
        """The inverse of :meth:`as_json` (``named``: the tokens each explanation names, as saved)."""
        parts = [(u, r) for u, t in enumerate(texts) for r in json.loads(t or "[]")]
        arr = np.array([[u, *r] for u, r in parts], dtype=np.float64).reshape(-1, 5)
        return cls(len(texts), vocab, arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64),
                   arr[:, 2].astype(np.int64), arr[:, 3].astype(np.float32), arr[:, 4].astype(np.int64),
                   np.zeros(len(arr), np.int64), named=None if named is None else np.asarray(named, np.int64))


class RuleFitter:
    """Fits ``Rules`` from a stream in two passes (see the module docstring): feed every chunk to
    :meth:`update_tokens` (pass 1), call :meth:`choose_candidates`, feed the same chunks to :meth:`update_pairs`
    (pass 2), then :meth:`rules`.  A chunk is its positions' tokens ``tok_N`` and pair ids ``pair_N`` with the
    unit's strictly positive entries ``(rows_E, cols_E, vals_E)`` (rows index the chunk's positions)."""

    def __init__(self, n_units: int, vocab: int, pair_codes_: np.ndarray, cfg):
        self.U, self.V, self.cfg = int(n_units), int(vocab), cfg
        self.pairs = pair_codes_
        self.tokens = TokenMass(self.U, self.V)
        self.pair_mass = TokenMass(self.U, len(pair_codes_))
        self.sumsq = np.zeros(self.U)
        self.fired = np.zeros(self.U, np.int64)
        self.cand_keys: np.ndarray | None = None

    def update_tokens(self, tok_N, rows_E, cols_E, vals_E) -> None:
        self.tokens.update(tok_N, rows_E, cols_E, vals_E)
        v = np.asarray(vals_E, np.float64)
        self.sumsq += np.bincount(cols_E, weights=v * v, minlength=self.U)
        self.fired += np.bincount(cols_E, minlength=self.U)

    def choose_candidates(self) -> None:
        """Each unit's 3·max_tokens candidate tokens: largest s(t)²/n(t) among tokens seen ≥ min_count times."""
        M = self.tokens.matrix()
        u = np.repeat(np.arange(self.U), np.diff(M.indptr))
        n = self.tokens.count[M.indices]
        score = np.where(n >= self.cfg.min_count, M.data ** 2 / np.maximum(n, 1), -1.0)
        order = np.lexsort((-score, u))
        keep = order[(segment_rank(u[order]) < 3 * self.cfg.max_tokens) & (score[order] > 0)]
        self.cand_keys = np.sort(u[keep] * self.V + M.indices[keep])

    def update_pairs(self, tok_N, pair_N, rows_E, cols_E, vals_E) -> None:
        rows_E, cols_E = np.asarray(rows_E, np.int64), np.asarray(cols_E, np.int64)
        k = cols_E * self.V + np.asarray(tok_N, np.int64)[rows_E]
        pos = np.searchsorted(self.cand_keys, k)
        hit = (pos < len(self.cand_keys)) & (self.cand_keys[np.minimum(pos, len(self.cand_keys) - 1)] == k)
        self.pair_mass.update(pair_N, rows_E[hit], cols_E[hit], np.asarray(vals_E)[hit])

    def rules(self) -> Rules:
        cfg, V, U = self.cfg, self.V, self.U
        floor = cfg.min_gain * self.sumsq                                   # (U,) minimum gain of a rule
        # tokens: candidates with their sums and counts
        M = self.tokens.matrix()
        tu, tt = self.cand_keys // V, self.cand_keys % V
        t_s = np.asarray(M[tu, tt]).ravel() if len(tu) else np.zeros(0)
        t_n = self.tokens.count[tt]
        # pairs on candidate tokens
        P = self.pair_mass.matrix().tocoo()
        pu, code = P.row.astype(np.int64), self.pairs[P.col]
        pp, pt, ps, pn = code // V, code % V, P.data, self.pair_mass.count[P.col]
        node_of_pair = np.searchsorted(self.cand_keys, pu * V + pt)
        m_t = t_s / np.maximum(t_n, 1)
        m_p = ps / np.maximum(pn, 1)
        gain = pn * (m_p - m_t[node_of_pair]) ** 2
        ok = (pn >= cfg.min_count) & (gain >= floor[pu]) & (gain > 0)
        o = np.flatnonzero(ok)
        o = o[np.lexsort((-gain[o], node_of_pair[o]))]
        o = o[segment_rank(node_of_pair[o]) < cfg.max_context]             # children of each candidate token
        c_node = node_of_pair[o]
        n_rest = t_n - np.bincount(c_node, weights=pn[o], minlength=len(tu))
        s_rest = t_s - np.bincount(c_node, weights=ps[o], minlength=len(tu))
        v_wild = np.where(n_rest > 0, s_rest / np.maximum(n_rest, 1), 0.0)
        G = np.bincount(c_node, weights=pn[o] * m_p[o] ** 2, minlength=len(tu)) + n_rest * v_wild ** 2
        keep = np.flatnonzero((t_n >= cfg.min_count) & (G >= floor[tu]) & (G > 0))
        keep = keep[np.lexsort((-G[keep], tu[keep]))]
        keep = keep[segment_rank(tu[keep]) < cfg.max_tokens]
        rank = np.full(len(tu), -1, np.int64)
        rank[keep] = segment_rank(tu[keep])
        explained = np.bincount(tu[keep], weights=G[keep], minlength=U) / np.maximum(self.sumsq, 1e-30)
        # rows: wildcard of each named token (when it predicts > 0), then its children
        w = keep[v_wild[keep] > 0]
        c = np.flatnonzero(rank[c_node] >= 0)
        unit = np.concatenate([tu[w], pu[o[c]]])
        prev = np.concatenate([np.full(len(w), -1, np.int64), pp[o[c]]])
        token = np.concatenate([tt[w], pt[o[c]]])
        value = np.concatenate([v_wild[w], m_p[o[c]]]).astype(np.float32)
        count = np.concatenate([n_rest[w], pn[o[c]]]).astype(np.int64)
        node = np.concatenate([rank[w], rank[c_node[c]]])
        srt = np.lexsort((-value, prev >= 0, node, unit))
        named = np.bincount(tu[keep], minlength=U)
        return Rules(U, V, unit[srt], prev[srt], token[srt], value[srt], count[srt], node[srt],
                     explained=np.minimum(explained, 1.0), named=named, fired=self.fired.copy())


def simulate(rules: Rules, units_n: np.ndarray, tokens_nW: np.ndarray, prev_nW: np.ndarray) -> np.ndarray:
    """Predicted activations (n, W) of unit ``units_n[i]`` on each token of window i: the pair rule of (prev,
    token) if the explanation has it, else the token's wildcard rule, else 0.  Tokens −1 (padding) get 0; a
    preceding token −1 is unknown (only wildcard rules match)."""
    keys = rules.keys()
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], rules.value[order]
    V = rules.vocab
    u = np.asarray(units_n, np.int64)[:, None]
    t = np.asarray(tokens_nW, np.int64)
    p = np.asarray(prev_nW, np.int64)
    out = np.zeros(t.shape, np.float32)
    if not len(keys):
        return out
    valid = t >= 0
    for prev_part, known in ((np.full_like(p, -1), valid), (p, valid & (p >= 0))):   # wildcard, then pair
        k = (u * (V + 1) + prev_part + 1) * V + np.where(valid, t, 0)
        pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        hit = known & (keys[pos] == k)
        out[hit] = vals[pos[hit]]
    return out


def explanation_text(rules_of_unit: list[dict], token_strings: list[str], max_rules: int = 12) -> str:
    """A readable explanation: ``"Lord" 3.1; "the"→"Lord" 4.2; …`` (wildcard rules name the token alone)."""
    if not rules_of_unit:
        return "(no rule: fires on no token pattern often enough)"
    parts = []
    for r in rules_of_unit[:max_rules]:
        tok = json.dumps(token_strings[r["token"]], ensure_ascii=False)
        pat = tok if r["prev"] < 0 else f"{json.dumps(token_strings[r['prev']], ensure_ascii=False)}→{tok}"
        parts.append(f"{pat} {r['value']:.3g}")
    more = len(rules_of_unit) - max_rules
    return "; ".join(parts) + (f"; … {more} more" if more > 0 else "")
