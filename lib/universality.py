"""Universality: do two dictionaries — of two transformers, or of two seeds — learn the same features?

The paper's measure (Bricken et al. 2023, "Universality"): the Pearson correlation of two features' activations
over a shared set of tokens.  For every feature of dictionary *a* its best match in *b* is the feature with the
highest correlation; the paper reports a median best-match correlation of 0.72 for A/1 vs B/1, against 0.46 for
the neurons of transformer A vs those of transformer B.

Everything here is computed in one streaming pass over a fixed token set (``token_set``: every non-BOS position
of validation contexts, then of train contexts in a seeded order, until ``n_tokens``):

* each transformer runs once per batch; each dictionary encodes its transformer's MLP activations into a sparse
  matrix (only the active features: L0 ≪ F);
* ``CrossStats`` accumulates the sufficient statistics n, Σx, Σx², Σy, Σy² and the cross moments Σxy (and, for
  feature splitting, the masked moments Σ1[x≠0]y², Σx²1[y≠0]).  Sparse × sparse products (scipy's SpGEMM, whose
  cost is Σ_tokens L0_a·L0_b rather than N·F_a·F_b) are added straight into dense float64 accumulators; dense
  inputs (neurons) go through an fp32 matmul per batch, added in float64, after shifting each column by its
  first-batch mean (Pearson is shift invariant; the shift removes the cancellation in Σx² − n·x̄²).
* Pearson r = cov / √(var_x var_y) from the sums.  A column with zero variance on the token set (a dead feature,
  or a constant neuron) has no correlation: its row/column is NaN, it is excluded from every median, and counted.

API
---
``compare(run, "A/1", "B/1", n_tokens=None, write=True) -> Comparison``
    Features of A/1 vs B/1 *and*, when the two are on different transformers, the neurons of A vs B in the same
    pass.  Sides are dictionary ids of the run, ``"A/neurons"`` (a transformer's neurons), or ``Side`` objects
    wrapping any ``Dictionary`` (e.g. a second seed trained ad hoc).  With ``write`` the tables go to
    ``RUN/analyses/universality/<a>~<b>/`` and the headline numbers to ``RUN/analyses.json`` (merged, atomic),
    which ``monosemantic summary --json`` shows as ``universality``.
``load_comparison(run, "A/1", "B/1") -> Comparison``   what ``compare(..., write=True)`` saved.
``CrossStats``, ``pearson_from_sums``-style helpers, ``best_matches``, ``one_to_one``, ``logit_weights``,
``rowwise_pearson``, ``max_cosine``, ``diagonal_order``: the pieces, usable on any data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError
from .metrics import feature_status
from .runs import update_analyses
from .sparse import encode_sparse
from .io import atomic_parquet, atomic_save_npy, atomic_write_json, json_safe, load_npy, read_json, safe_name

try:  # in-place ``dense += csr`` (scipy's own kernel behind csr.toarray(out=...)): no dense temporary per batch
    from scipy.sparse._sparsetools import csr_todense as _csr_todense
except Exception:  # pragma: no cover - a scipy without the private module: fall back to a temporary
    _csr_todense = None

__all__ = [
    "PAPER", "DEFAULT_TOKENS", "Side", "TokenSet", "token_set", "default_tokens", "CrossStats",
    "best_matches", "one_to_one", "logit_weights", "rowwise_pearson", "max_cosine", "diagonal_order",
    "PairResult", "Comparison", "compare", "load_comparison", "comparison_dir",
]

PAPER = {"feature_median": 0.72, "neuron_median": 0.46}
# tokens in the shared set, per preset; the paper used 40.96M in one example
DEFAULT_TOKENS = {"tiny": 32_768, "default": 1_048_576, "paper": 40_960_000}
# feature splitting encodes every size (A/2 = 16,384 features costs 4× A/1): a smaller set by default on a CPU
SPLIT_TOKENS = {"tiny": 32_768, "default": 524_288, "paper": 40_960_000}
HIST_EDGES = np.linspace(-1.0, 1.0, 81)


def default_tokens(cfg) -> int:
    return DEFAULT_TOKENS.get(getattr(cfg, "preset", ""), 1_048_576)


# ---- the shared token set ----------------------------------------------------------------------------------

@dataclass
class TokenSet:
    """Fixed contexts of a run (validation first, then train in a seeded order); every non-BOS position counts."""

    parts: list[tuple[str, np.ndarray]]     # (split name, context indices)
    n_ctx: int

    @property
    def contexts(self) -> int:
        return int(sum(len(i) for _, i in self.parts))

    @property
    def tokens(self) -> int:
        return self.contexts * (self.n_ctx - 1)

    def describe(self) -> dict:
        return {"tokens": self.tokens, "contexts": {s: int(len(i)) for s, i in self.parts}, "n_ctx": self.n_ctx}

    def batches(self, run, batch_tokens: int = 32_768, with_domains: bool = False) -> Iterator:
        """int64 arrays (b, n_ctx) of contexts, BOS at position 0 (with ``with_domains``: pairs (contexts,
        uint8 domain codes (b, n_ctx), 255 at BOS))."""
        per = max(1, batch_tokens // (self.n_ctx - 1))
        for split_name, idx in self.parts:
            split = run.split(split_name)
            for i in range(0, len(idx), per):
                sel = idx[i:i + per]
                yield (split.contexts(sel), split.domains(sel)) if with_domains else split.contexts(sel)


def token_set(run, n_tokens: int | None = None, seed: int = 0, splits: Sequence[str] = ("val", "train")) -> TokenSet:
    """The first ``n_tokens`` non-BOS tokens (rounded up to whole contexts) of ``splits`` in turn; contexts of each
    split in a seeded order.  Uses every context there is if the splits hold fewer tokens (see ``.tokens``)."""
    n_tokens = int(n_tokens or default_tokens(run.cfg))
    if n_tokens <= 0:
        raise ConfigError(f"n_tokens must be positive, got {n_tokens}")
    body = run.cfg.model.n_ctx - 1
    need = -(-n_tokens // body)
    parts = []
    for k, s in enumerate(splits):
        if need <= 0:
            break
        sp_ = run.split(s)
        order = np.random.default_rng([seed, 4242, k]).permutation(sp_.n_contexts)[:need]
        parts.append((s, np.sort(order)))   # sorted: sequential reads of the memory-mapped arrays
        need -= len(order)
    return TokenSet(parts, run.cfg.model.n_ctx)


# ---- sides: what is being correlated -----------------------------------------------------------------------

@dataclass
class Side:
    """One side of a comparison: the features of ``dictionary`` (``None``: the MLP neurons) on ``transformer``."""

    label: str
    transformer: str
    dictionary: Any = None          # a monosemantic.Dictionary, or None for the neurons

    @property
    def is_neurons(self) -> bool:
        return self.dictionary is None


def _resolve(run, spec) -> Side:
    if isinstance(spec, Side):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a comparison side is a dictionary id ('A/1'), 'A/neurons', or a Side; got {spec!r}")
    t, _, rest = spec.partition("/")
    if rest in ("", "neurons"):
        if t not in run.cfg.transformers:
            raise ConfigError(f"no transformer {t!r} in this run (it has {sorted(run.cfg.transformers)})")
        return Side(f"{t}/neurons", t, None)
    run.cfg.dictionary(spec)  # raises with the list of ids
    return Side(spec, t, run.dictionary(spec))


# ---- streaming statistics ----------------------------------------------------------------------------------

def _as_input(x):
    """scipy sparse → CSR float; torch/numpy dense → float32 numpy (C order)."""
    if sp.issparse(x):
        return x.tocsr()
    if torch.is_tensor(x):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _add_product(acc: np.ndarray, x, y) -> None:
    """acc += xᵀ y for x (N, P), y (N, Q), each dense (numpy) or CSR."""
    if sp.issparse(x) and sp.issparse(y):
        c = (x.T.tocsr() @ y).tocsr()      # csr_todense adds duplicates and needs no sorted indices
        data = c.data.astype(acc.dtype, copy=False)
        if _csr_todense is not None and acc.flags.c_contiguous:
            _csr_todense(acc.shape[0], acc.shape[1], c.indptr, c.indices, data, acc)
        else:  # pragma: no cover
            acc += c.toarray()
    elif sp.issparse(x):
        acc += np.asarray((x.T @ y), dtype=acc.dtype)
    elif sp.issparse(y):
        acc += np.asarray((y.T @ x).T, dtype=acc.dtype)
    else:
        acc += (torch.from_numpy(x).t() @ torch.from_numpy(y)).numpy().astype(acc.dtype, copy=False)


def _col_sums(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Σx, Σx², number of nonzeros) per column, float64/float64/int64."""
    if sp.issparse(x):
        P = x.shape[1]
        cols, vals = x.indices, x.data.astype(np.float64)
        return (np.bincount(cols, weights=vals, minlength=P), np.bincount(cols, weights=vals * vals, minlength=P),
                np.bincount(cols[vals != 0], minlength=P).astype(np.int64))
    xd = x.astype(np.float64)
    return xd.sum(0), (xd * xd).sum(0), (x != 0).sum(0).astype(np.int64)


def _nnz(x) -> np.ndarray:
    if sp.issparse(x):
        return np.bincount(x.indices[x.data != 0], minlength=x.shape[1]).astype(np.int64)
    return (x != 0).sum(0).astype(np.int64)


def _indicator(x):
    if sp.issparse(x):
        m = x.copy()
        m.data = (m.data != 0).astype(np.float32)
        return m
    return (x != 0).astype(np.float32)


def _square(x):
    if sp.issparse(x):
        m = x.copy()
        m.data = m.data * m.data
        return m
    return x * x


class CrossStats:
    """Streaming sufficient statistics of two activation matrices X (N×P) and Y (N×Q) over the same rows.

    ``update(x, y)`` takes a batch of rows of each (scipy sparse, numpy or torch; sparse inputs are never
    densified).  ``pearson()`` gives the P×Q correlation matrix; ``masked_cosine()`` the feature-splitting
    similarity.  ``pearson=True`` keeps Σxy in float64 and shifts dense inputs by their first-batch column means;
    ``masked=True`` adds Σ1[x≠0]y² and Σx²1[y≠0] (sums of non-negative terms, so float32 accumulators lose only
    ~batches·2⁻²⁴ relative; no shift, the masked cosine is not shift invariant).
    """

    def __init__(self, p: int, q: int, *, pearson: bool = True, masked: bool = False):
        if not (pearson or masked):
            raise ConfigError("CrossStats needs pearson=True and/or masked=True")
        self.p, self.q, self.want_pearson, self.want_masked = p, q, pearson, masked
        self.n = 0
        self.sum_x, self.sum_y = np.zeros(p), np.zeros(q)
        self.sumsq_x, self.sumsq_y = np.zeros(p), np.zeros(q)
        self.nnz_x, self.nnz_y = np.zeros(p, np.int64), np.zeros(q, np.int64)
        self.xy = np.zeros((p, q), np.float64 if pearson else np.float32)
        self.mx_y2 = np.zeros((p, q), np.float32) if masked else None   # Σ 1[x≠0] y²
        self.x2_my = np.zeros((p, q), np.float32) if masked else None   # Σ x² 1[y≠0]
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None

    def _shift(self, x, which: str):
        if not self.want_pearson or self.want_masked or sp.issparse(x):
            return x
        cur = getattr(self, f"shift_{which}")
        if cur is None:
            cur = x.mean(0).astype(np.float32) if len(x) else np.zeros(x.shape[1], np.float32)
            setattr(self, f"shift_{which}", cur)
        return x - cur

    def update(self, x, y) -> "CrossStats":
        x, y = _as_input(x), _as_input(y)
        if x.shape[0] != y.shape[0] or x.shape[1] != self.p or y.shape[1] != self.q:
            raise ConfigError(f"CrossStats({self.p}, {self.q}) got batches of shapes {x.shape} and {y.shape}")
        if x.shape[0] == 0:
            return self
        if self.want_masked:  # nonzero counts of the raw values
            for v in (x, y):
                if (sp.issparse(v) and v.data.size and v.data.min() < 0) or (not sp.issparse(v) and v.size and v.min() < 0):
                    raise ConfigError("the masked cosine is defined for non-negative activations (ReLU features)")
        xs, ys = self._shift(x, "x"), self._shift(y, "y")
        sx, sxx, nx = _col_sums(xs)
        sy, syy, ny = _col_sums(ys)
        self.sum_x += sx
        self.sumsq_x += sxx
        self.sum_y += sy
        self.sumsq_y += syy
        # nonzero counts (firing) always refer to the raw values
        self.nnz_x += nx if xs is x else _nnz(x)
        self.nnz_y += ny if ys is y else _nnz(y)
        self.n += x.shape[0]
        _add_product(self.xy, xs, ys)
        if self.want_masked:
            _add_product(self.mx_y2, _indicator(x), _square(y))
            _add_product(self.x2_my, _square(x), _indicator(y))
        return self

    # ---- results ----
    def pearson(self, rows: slice | None = None) -> np.ndarray:
        """P×Q Pearson correlations (float64), NaN in the rows/columns of zero-variance columns."""
        if not self.want_pearson:
            raise ConfigError("these stats were accumulated with pearson=False")
        n = max(self.n, 1)
        mx, my = self.sum_x / n, self.sum_y / n
        vx, vy = self.sumsq_x / n - mx * mx, self.sumsq_y / n - my * my
        ok_x = (vx > 1e-12 * np.maximum(self.sumsq_x / n, 1e-300)) & (vx > 0)
        ok_y = (vy > 1e-12 * np.maximum(self.sumsq_y / n, 1e-300)) & (vy > 0)
        sx = np.where(ok_x, np.sqrt(np.where(ok_x, vx, 1.0)), np.nan)
        sy = np.where(ok_y, np.sqrt(np.where(ok_y, vy, 1.0)), np.nan)
        rows = rows or slice(0, self.p)
        cov = self.xy[rows] / n - np.outer(mx[rows], my)
        r = cov / np.outer(sx[rows], sy)
        np.clip(r, -1.0, 1.0, out=r)
        return r

    def masked_cosine(self, directions: bool = False, rows: slice | None = None):
        """max(cos on tokens where x fires, cos on tokens where y fires), P×Q float32 (NaN where x or y never fires).

        cos_x[i, j] = Σ x_i y_j / (‖x_i‖ · √Σ_{x_i≠0} y_j²); ``directions=True`` returns (max, cos_x, cos_y);
        ``rows`` restricts to a block of rows (to bound memory on large pairs)."""
        if not self.want_masked:
            raise ConfigError("these stats were accumulated with masked=False")
        rows = rows or slice(0, self.p)
        xy = self.xy[rows].astype(np.float32, copy=False)
        nx = np.sqrt(self.sumsq_x[rows]).astype(np.float32)
        ny = np.sqrt(self.sumsq_y).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = xy / (nx[:, None] * np.sqrt(self.mx_y2[rows]))
            cy = xy / (np.sqrt(self.x2_my[rows]) * ny[None, :])
        # a pair that never co-fires has Σxy = 0: similarity 0, not 0/0
        zero = xy == 0
        cx[zero] = 0.0
        cy[zero] = 0.0
        dead = (self.nnz_x[rows] == 0)[:, None] | (self.nnz_y == 0)[None, :]
        cx[dead] = np.nan
        cy[dead] = np.nan
        np.clip(cx, 0.0, 1.0, out=cx)
        np.clip(cy, 0.0, 1.0, out=cy)
        m = np.fmax(cx, cy)
        m[dead] = np.nan
        return (m, cx, cy) if directions else m


# ---- matching ----------------------------------------------------------------------------------------------

def best_matches(sim: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """For each row (axis=1) or column (axis=0): index of the largest defined value and that value.
    Rows with no defined value get index −1 and NaN."""
    s = sim if axis == 1 else sim.T
    filled = np.where(np.isnan(s), -np.inf, s)
    idx = filled.argmax(1) if s.shape[1] else np.zeros(s.shape[0], np.int64)
    val = filled[np.arange(s.shape[0]), idx] if s.shape[1] else np.full(s.shape[0], -np.inf)
    none = ~np.isfinite(val)
    return np.where(none, -1, idx).astype(np.int64), np.where(none, np.nan, val).astype(np.float64)


def one_to_one(sim: np.ndarray, valid_rows: np.ndarray | None = None, valid_cols: np.ndarray | None = None):
    """Maximum-total one-to-one matching (linear assignment, rectangular allowed) of rows to columns.

    Every row (or every column, whichever side is smaller) is matched; undefined (NaN) pairs are used only when
    unavoidable — they cost more than any set of defined pairs can gain (−(2·min(P, Q) + 1) each) — and are then
    dropped from the result.  So the matching has the fewest undefined pairs and, among those, the largest total.
    Returns (rows, cols, values) sorted by row; only rows/cols flagged valid take part (default: those with at
    least one defined value)."""
    from scipy.optimize import linear_sum_assignment

    defined = ~np.isnan(sim)
    vr = defined.any(1) if valid_rows is None else np.asarray(valid_rows, bool) & defined.any(1)
    vc = defined.any(0) if valid_cols is None else np.asarray(valid_cols, bool) & defined.any(0)
    ri, ci = np.flatnonzero(vr), np.flatnonzero(vc)
    if not len(ri) or not len(ci):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    sub = sim[np.ix_(ri, ci)]
    cost = np.where(np.isnan(sub), -(2.0 * min(sub.shape) + 1.0), sub)
    r, c = linear_sum_assignment(cost, maximize=True)
    rows, cols = ri[r], ci[c]
    vals = sim[rows, cols]
    keep = ~np.isnan(vals)
    o = np.argsort(rows[keep], kind="stable")
    return rows[keep][o], cols[keep][o], vals[keep][o]


def diagonal_order(corr: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
    """Row and column orders that put one-to-one matches on the diagonal, strongest first; unmatched rows and
    columns follow (columns ordered by the position of their best-matching row)."""
    P, Q = corr.shape
    o = np.argsort(-values, kind="stable")
    row_order = list(rows[o])
    col_order = list(cols[o])
    rest_r = np.setdiff1d(np.arange(P), rows)
    best_r, val_r = best_matches(corr, 1)
    rest_r = rest_r[np.argsort(-np.nan_to_num(val_r[rest_r], nan=-9.0), kind="stable")]
    row_order += list(rest_r)
    pos = np.empty(P, np.int64)
    pos[np.asarray(row_order, np.int64)] = np.arange(P)
    rest_c = np.setdiff1d(np.arange(Q), cols)
    best_c, _ = best_matches(corr, 0)
    key = np.where(best_c[rest_c] >= 0, pos[np.maximum(best_c[rest_c], 0)], P + 1)
    col_order += list(rest_c[np.argsort(key, kind="stable")])
    return np.asarray(row_order, np.int64), np.asarray(col_order, np.int64)


# ---- weights -----------------------------------------------------------------------------------------------

@torch.no_grad()
def logit_weights(model, dictionary=None, rows: np.ndarray | None = None) -> torch.Tensor:
    """Direct effect on the logits (F or d_mlp, d_vocab): decoder vector → W_out → final-LayerNorm gain → W_U.
    (The LayerNorm's 1/σ is a positive scalar per token: it does not change a correlation.)"""
    W_out = model.W_out.detach().float().cpu()                 # (d_mlp, d_model)
    if dictionary is None:
        D = W_out if rows is None else W_out[torch.as_tensor(rows, dtype=torch.long)]
    else:
        W = dictionary.W_dec_FD.detach().float().cpu()
        if rows is not None:
            W = W[torch.as_tensor(rows, dtype=torch.long)]
        D = W @ W_out
    g = model.ln_final_weight
    if g is not None:
        D = D * g.detach().float().cpu()
    return D @ model.W_U.detach().float().cpu()


def rowwise_pearson(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pearson correlation of row i of ``a`` with row i of ``b`` (NaN for a constant row)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / den
    r[den == 0] = float("nan")
    return r.clamp(-1, 1).numpy()


def max_cosine(u: np.ndarray | torch.Tensor, v: np.ndarray | torch.Tensor, chunk: int = 2048):
    """For each row of ``u``: the largest cosine similarity with a row of ``v`` and its index."""
    u = torch.nn.functional.normalize(torch.as_tensor(u, dtype=torch.float32), dim=1)
    v = torch.nn.functional.normalize(torch.as_tensor(v, dtype=torch.float32), dim=1)
    vals, idx = [], []
    for i in range(0, len(u), chunk):
        m = (u[i:i + chunk] @ v.T).max(1)
        vals.append(m.values)
        idx.append(m.indices)
    if not vals:
        return np.zeros(0), np.zeros(0, np.int64)
    return torch.cat(vals).double().numpy(), torch.cat(idx).numpy()


def _pair_cosine(u: torch.Tensor, v: torch.Tensor, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    out = np.full(len(ia), np.nan)
    ok = (ia >= 0) & (ib >= 0)
    if ok.any():
        a = torch.nn.functional.normalize(u[torch.as_tensor(ia[ok])].float(), dim=1)
        b = torch.nn.functional.normalize(v[torch.as_tensor(ib[ok])].float(), dim=1)
        out[ok] = (a * b).sum(1).double().numpy()
    return out


# ---- results -----------------------------------------------------------------------------------------------

def _median(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else None


def _status(fires: np.ndarray, tokens: int, ultralow: float, defined: np.ndarray) -> np.ndarray:
    return feature_status(fires / max(int(tokens), 1), ultralow, defined)


@dataclass
class PairResult:
    """The correlation of every unit of ``a`` with every unit of ``b`` (features, or neurons), and the matches."""

    a: str
    b: str
    corr: np.ndarray                 # (P, Q) float32, NaN where a side has zero variance
    fires_a: np.ndarray              # tokens on which each unit is nonzero
    fires_b: np.ndarray
    tokens: int
    ultralow: float                  # density threshold below which a unit is "ultralow" (excluded like the paper)
    same_transformer: bool
    logit_corr_ab: np.ndarray | None = None   # per row of a: logit-weight correlation with its best match
    logit_corr_ba: np.ndarray | None = None
    logit_corr_assigned: np.ndarray | None = None
    decoder_cos_ab: np.ndarray | None = None  # same transformer only: decoder cosine with the best match
    decoder_cos_ba: np.ndarray | None = None
    decoder_max_cos_ab: np.ndarray | None = None   # max cosine with any decoder vector of b (→ MMCS)
    decoder_max_cos_ba: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def defined_a(self) -> np.ndarray:
        if "defined_a" not in self._cache:
            self._cache["defined_a"] = (~np.isnan(self.corr).all(1) if self.corr.shape[1]
                                        else np.zeros(self.corr.shape[0], bool))
        return self._cache["defined_a"]

    @property
    def defined_b(self) -> np.ndarray:
        if "defined_b" not in self._cache:
            self._cache["defined_b"] = (~np.isnan(self.corr).all(0) if self.corr.shape[0]
                                        else np.zeros(self.corr.shape[1], bool))
        return self._cache["defined_b"]

    @property
    def status_a(self) -> np.ndarray:
        return _status(self.fires_a, self.tokens, self.ultralow, self.defined_a)

    @property
    def status_b(self) -> np.ndarray:
        return _status(self.fires_b, self.tokens, self.ultralow, self.defined_b)

    def best(self, direction: str = "ab") -> tuple[np.ndarray, np.ndarray]:
        if direction not in self._cache:
            self._cache[direction] = best_matches(self.corr, 1 if direction == "ab" else 0)
        return self._cache[direction]

    def assignment(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "assign" not in self._cache:
            self._cache["assign"] = one_to_one(self.corr, self.status_a == "alive", self.status_b == "alive")
        return self._cache["assign"]

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """Row/column orders with the one-to-one matches on the diagonal (for the matrix view)."""
        if "order" not in self._cache:
            self._cache["order"] = diagonal_order(self.corr, *self.assignment())
        return self._cache["order"]

    def best_values(self, direction: str = "ab", include: Sequence[str] = ("alive",)) -> np.ndarray:
        """Best-match correlations of the units whose status is in ``include`` (the paper: alive only)."""
        st = self.status_a if direction == "ab" else self.status_b
        v = self.best(direction)[1]
        return v[np.isin(st, list(include)) & ~np.isnan(v)]

    def table(self, side: str = "a"):
        import pandas as pd

        d = "ab" if side == "a" else "ba"
        fires = self.fires_a if side == "a" else self.fires_b
        idx, val = self.best(d)
        rows, cols, vals = self.assignment()
        n = len(fires)
        assigned = np.full(n, -1, np.int64)
        assigned_v = np.full(n, np.nan)
        mine, other = (rows, cols) if side == "a" else (cols, rows)
        assigned[mine] = other
        assigned_v[mine] = vals
        df = pd.DataFrame({
            "unit": np.arange(n), "fires": fires, "density": fires / max(self.tokens, 1),
            "status": self.status_a if side == "a" else self.status_b,
            "best_match": idx, "best_corr": val, "assigned_match": assigned, "assigned_corr": assigned_v,
        })
        lc = self.logit_corr_ab if side == "a" else self.logit_corr_ba
        if lc is not None:
            df["logit_corr"] = lc
        dc = self.decoder_cos_ab if side == "a" else self.decoder_cos_ba
        if dc is not None:
            df["decoder_cos"] = dc
            df["decoder_max_cos"] = self.decoder_max_cos_ab if side == "a" else self.decoder_max_cos_ba
        return df

    def _density_modes(self) -> dict | None:
        """a's alive units split into density modes (metrics.density_modes); when there are two, the best-match
        numbers of the high mode: the paper's analyses leave its ultralow cluster out."""
        from .metrics import density_modes

        alive = self.status_a == "alive"
        dens = self.fires_a / max(self.tokens, 1)
        m = density_modes(dens[alive])
        if m is None:
            return None
        if m["bimodal"]:
            _, val = self.best("ab")
            v = val[alive & (dens >= m["threshold"])]
            v = v[~np.isnan(v)]
            m.update({"high_median": _median(v),
                      "high_fraction_above_0.5": float((v > 0.5).mean()) if len(v) else None,
                      "high_fraction_above_0.7": float((v > 0.7).mean()) if len(v) else None})
        return m

    def histogram(self, direction: str = "ab") -> list[int]:
        return np.histogram(self.best_values(direction), bins=HIST_EDGES)[0].tolist()

    def summary(self) -> dict:
        st_a, st_b = self.status_a, self.status_b
        va, vb = self.best_values("ab"), self.best_values("ba")
        vall = self.best_values("ab", ("alive", "ultralow"))
        rows, cols, vals = self.assignment()
        out = {
            "a": self.a, "b": self.b, "tokens": self.tokens, "units_a": int(len(st_a)), "units_b": int(len(st_b)),
            "median": _median(va), "median_b_to_a": _median(vb), "mean": float(va.mean()) if len(va) else None,
            "median_with_ultralow": _median(vall),
            "quantiles": {q: float(np.quantile(va, float(q))) for q in ("0.1", "0.25", "0.75", "0.9")} if len(va) else {},
            "fraction_above_0.5": float((va > 0.5).mean()) if len(va) else None,
            "fraction_above_0.7": float((va > 0.7).mean()) if len(va) else None,
            "fraction_above_0.9": float((va > 0.9).mean()) if len(va) else None,
            "alive_a": int((st_a == "alive").sum()), "dead_a": int((st_a == "dead").sum()),
            "ultralow_a": int((st_a == "ultralow").sum()), "undefined_a": int((st_a == "undefined").sum()),
            "alive_b": int((st_b == "alive").sum()), "dead_b": int((st_b == "dead").sum()),
            "ultralow_b": int((st_b == "ultralow").sum()), "undefined_b": int((st_b == "undefined").sum()),
            "ultralow_threshold": self.ultralow,
            "assignment_pairs": int(len(vals)),
            "assignment_mean": float(vals.mean()) if len(vals) else None,
            "assignment_median": _median(vals),
            "histogram": {"edges": HIST_EDGES.tolist(), "counts": self.histogram("ab")},
        }
        out["density_modes"] = self._density_modes()
        if self.logit_corr_ab is not None:
            alive = st_a == "alive"
            out["logit_corr_median"] = _median(self.logit_corr_ab[alive])
            if self.logit_corr_assigned is not None:
                out["logit_corr_assigned_median"] = _median(self.logit_corr_assigned)
        if self.decoder_max_cos_ab is not None:
            alive_a, alive_b = st_a == "alive", st_b == "alive"
            out["decoder_mmcs"] = float(np.mean(self.decoder_max_cos_ab[alive_a])) if alive_a.any() else None
            out["decoder_mmcs_b_to_a"] = float(np.mean(self.decoder_max_cos_ba[alive_b])) if alive_b.any() else None
            out["decoder_cos_best_match_median"] = _median(self.decoder_cos_ab[alive_a])
            if "dec_assigned" in self._cache:
                out["decoder_cos_assigned_median"] = _median(self._cache["dec_assigned"])
        return json_safe(out)

    # ---- persistence ----
    def save(self, directory: Path, prefix: str) -> None:
        atomic_save_npy(directory / f"corr_{prefix}.npy", self.corr.astype(np.float32))
        for side in ("a", "b"):
            df = self.table(side)
            atomic_parquet(df, directory / f"{prefix}_{side}.parquet")
        extra = {k: getattr(self, k).tolist() for k in ("logit_corr_assigned",) if getattr(self, k) is not None}
        meta = {"a": self.a, "b": self.b, "tokens": self.tokens, "ultralow": self.ultralow,
                "same_transformer": self.same_transformer, **extra}
        if "dec_assigned" in self._cache:
            meta["dec_assigned"] = self._cache["dec_assigned"].tolist()
        atomic_write_json(directory / f"{prefix}_meta.json", meta)

    @classmethod
    def load(cls, directory: Path, prefix: str) -> "PairResult":
        import pandas as pd

        meta = read_json(directory / f"{prefix}_meta.json")
        ta = pd.read_parquet(directory / f"{prefix}_a.parquet")
        tb = pd.read_parquet(directory / f"{prefix}_b.parquet")
        r = cls(a=meta["a"], b=meta["b"], corr=np.asarray(load_npy(directory / f"corr_{prefix}.npy", mmap=False)),
                fires_a=ta["fires"].to_numpy(), fires_b=tb["fires"].to_numpy(), tokens=int(meta["tokens"]),
                ultralow=float(meta["ultralow"]), same_transformer=bool(meta["same_transformer"]))
        if "logit_corr" in ta:
            r.logit_corr_ab, r.logit_corr_ba = ta["logit_corr"].to_numpy(), tb["logit_corr"].to_numpy()
        if "logit_corr_assigned" in meta:
            r.logit_corr_assigned = np.asarray(meta["logit_corr_assigned"], dtype=float)
        if "decoder_cos" in ta:
            r.decoder_cos_ab, r.decoder_cos_ba = ta["decoder_cos"].to_numpy(), tb["decoder_cos"].to_numpy()
            r.decoder_max_cos_ab, r.decoder_max_cos_ba = ta["decoder_max_cos"].to_numpy(), tb["decoder_max_cos"].to_numpy()
        if "dec_assigned" in meta:
            r._cache["dec_assigned"] = np.asarray(meta["dec_assigned"], dtype=float)
        # the saved matching (a linear assignment on a 4096² matrix takes seconds): restored, not recomputed
        am = ta["assigned_match"].to_numpy()
        rows = np.flatnonzero(am >= 0)
        r._cache["assign"] = (rows.astype(np.int64), am[rows].astype(np.int64), ta["assigned_corr"].to_numpy()[rows])
        for d, t in (("ab", ta), ("ba", tb)):
            r._cache[d] = (t["best_match"].to_numpy().astype(np.int64), t["best_corr"].to_numpy().astype(np.float64))
        return r


@dataclass
class Comparison:
    """``features``: dictionary a vs dictionary b.  ``neurons``: the MLP neurons of a's transformer vs b's (only
    when the two transformers differ — the paper's baseline)."""

    features: PairResult
    neurons: PairResult | None
    token_info: dict
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.features.a}~{self.features.b}"

    def summary(self) -> dict:
        f = self.features.summary()
        out = {"a": f["a"], "b": f["b"], "same_transformer": self.features.same_transformer,
               "tokens": self.token_info.get("tokens", self.features.tokens), "contexts": self.token_info.get("contexts"),
               "feature_median": f["median"], "feature_median_b_to_a": f["median_b_to_a"],
               "neuron_median": None, "seconds": round(self.seconds, 2), "paper": dict(PAPER), "features": f}
        if self.neurons is not None:
            n = self.neurons.summary()
            out["neuron_median"] = n["median"]
            out["neuron_median_b_to_a"] = n["median_b_to_a"]
            out["neurons"] = n
        return json_safe(out)

    def tables(self) -> dict:
        t = {"features_a": self.features.table("a"), "features_b": self.features.table("b")}
        if self.neurons is not None:
            t["neurons_a"], t["neurons_b"] = self.neurons.table("a"), self.neurons.table("b")
        return t

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.features.save(directory, "features")
        if self.neurons is not None:
            self.neurons.save(directory, "neurons")
        atomic_write_json(directory / "summary.json", self.summary())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Comparison":
        directory = Path(directory)
        s = read_json(directory / "summary.json")
        if s is None:
            raise FileNotFoundError(f"no comparison at {directory}; run `monosemantic compare` first")
        neurons = PairResult.load(directory, "neurons") if (directory / "neurons_meta.json").exists() else None
        return cls(PairResult.load(directory, "features"), neurons,
                   {"tokens": s["tokens"], "contexts": s.get("contexts")}, s.get("seconds", 0.0))


# ---- the analysis ------------------------------------------------------------------------------------------

def comparison_dir(run, a: str, b: str) -> Path:
    return Path(run.root) / "analyses" / "universality" / f"{safe_name(a)}~{safe_name(b)}"


def iter_activation_batches(run, sides: Sequence[Side], tokens: TokenSet, batch_tokens: int = 32_768,
                            device: str = "cpu", progress: bool = False) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Yield ({transformer: MLP activations (n, d_mlp) float32 torch, non-BOS positions}, token ids (n,),
    domain codes (n,)) — each transformer of ``sides`` runs once per batch."""
    from tqdm.auto import tqdm

    models = {}
    for s in sides:
        if s.transformer not in models:
            m = run.model(s.transformer, device=device)
            m.eval()
            models[s.transformer] = m
    bar = tqdm(total=tokens.tokens, desc="activations", unit="tok", unit_scale=True, disable=not progress)
    for toks, doms in tokens.batches(run, batch_tokens, with_domains=True):
        t = torch.from_numpy(toks).to(device)
        acts = {}
        for name, m in models.items():
            a = m.mlp_acts(t)[:, 1:]
            acts[name] = a.reshape(-1, a.shape[-1]).float().cpu()
        bar.update(toks.shape[0] * (toks.shape[1] - 1))
        yield acts, toks[:, 1:].reshape(-1), doms[:, 1:].reshape(-1)
    bar.close()


def _encode(side: Side, acts: dict, kernel: str = "auto"):
    x = acts[side.transformer]
    if side.is_neurons:
        return x.numpy()
    return encode_sparse(side.dictionary, x, kernel=kernel)


def compare(run, a="A/1", b="B/1", *, n_tokens: int | None = None, neurons: bool = True, write: bool = True,
            seed: int = 0, batch_tokens: int = 32_768, device: str = "cpu", progress: bool = False,
            logit: bool = True, kernel: str = "auto") -> Comparison:
    """Correlate every feature of ``a`` with every feature of ``b`` over a shared token set (see module docstring).

    ``a``/``b``: dictionary ids of ``run`` (``"A/1"``), ``"A/neurons"``, or ``Side(label, transformer, dictionary)``
    for any dictionary (e.g. a second seed).  When the transformers differ and ``neurons`` is set, the neurons of
    the two transformers are correlated in the same pass (the baseline).  ``logit``: also the logit-weight
    correlation of matched pairs.  ``kernel``: the encoder (see ``encode_sparse``).  Returns a ``Comparison``;
    with ``write`` it is saved and merged into the run's summary."""
    import time

    t0 = time.time()
    sa, sb = _resolve(run, a), _resolve(run, b)
    same = sa.transformer == sb.transformer
    for s in (sa, sb):
        if not s.is_neurons and s.dictionary.d_in != run.cfg.model.d_mlp:
            raise ConfigError(f"dictionary {s.label} has d_in={s.dictionary.d_in}, but the run's MLP has "
                              f"{run.cfg.model.d_mlp} neurons")
    tokens = token_set(run, n_tokens, seed=seed)
    want_neurons = neurons and not same and not (sa.is_neurons and sb.is_neurons)
    P = run.cfg.model.d_mlp if sa.is_neurons else sa.dictionary.d_sae
    Q = run.cfg.model.d_mlp if sb.is_neurons else sb.dictionary.d_sae
    fstats = CrossStats(P, Q)
    nstats = CrossStats(run.cfg.model.d_mlp, run.cfg.model.d_mlp) if want_neurons else None
    na, nb = Side(f"{sa.transformer}/neurons", sa.transformer), Side(f"{sb.transformer}/neurons", sb.transformer)
    with torch.inference_mode():
        for acts, _, _ in iter_activation_batches(run, [sa, sb], tokens, batch_tokens, device, progress):
            fstats.update(_encode(sa, acts, kernel), _encode(sb, acts, kernel))
            if nstats is not None:
                nstats.update(acts[sa.transformer].numpy(), acts[sb.transformer].numpy())
    ultralow = float(run.cfg.eval.ultralow_density)
    feats = _pair_result(run, sa, sb, fstats, ultralow, logit)
    neur = _pair_result(run, na, nb, nstats, ultralow, logit) if nstats is not None else None
    comp = Comparison(feats, neur, tokens.describe(), time.time() - t0)
    if write:
        comp.save(comparison_dir(run, sa.label, sb.label))
        _record(run, comp)
    return comp


def _pair_result(run, sa: Side, sb: Side, stats: CrossStats, ultralow: float, logit: bool) -> PairResult:
    corr = np.empty((stats.p, stats.q), np.float32)
    step = max(1, (1 << 24) // max(stats.q, 1))
    for i in range(0, stats.p, step):
        corr[i:i + step] = stats.pearson(slice(i, i + step))
    r = PairResult(sa.label, sb.label, corr, stats.nnz_x.copy(), stats.nnz_y.copy(), stats.n, ultralow,
                   sa.transformer == sb.transformer)
    ia, _ = r.best("ab")
    ib, _ = r.best("ba")
    rows, cols, _ = r.assignment()
    if logit:
        ma, mb = run.model(sa.transformer), run.model(sb.transformer)
        La = logit_weights(ma, sa.dictionary)
        Lb = logit_weights(mb, sb.dictionary)
        r.logit_corr_ab = _rows_corr(La, Lb, np.arange(stats.p), ia)
        r.logit_corr_ba = _rows_corr(Lb, La, np.arange(stats.q), ib)
        r.logit_corr_assigned = _rows_corr(La, Lb, rows, cols)
    if r.same_transformer and not sa.is_neurons and not sb.is_neurons:
        Da, Db = sa.dictionary.W_dec_FD.detach().float().cpu(), sb.dictionary.W_dec_FD.detach().float().cpu()
        r.decoder_cos_ab = _pair_cosine(Da, Db, np.arange(stats.p), ia)
        r.decoder_cos_ba = _pair_cosine(Db, Da, np.arange(stats.q), ib)
        r.decoder_max_cos_ab = max_cosine(Da, Db)[0]
        r.decoder_max_cos_ba = max_cosine(Db, Da)[0]
        r._cache["dec_assigned"] = _pair_cosine(Da, Db, rows, cols)
    return r


def _rows_corr(La: torch.Tensor, Lb: torch.Tensor, ia: np.ndarray, ib: np.ndarray, chunk: int = 1024) -> np.ndarray:
    out = np.full(len(ia), np.nan)
    ok = np.flatnonzero((ia >= 0) & (ib >= 0))
    for i in range(0, len(ok), chunk):
        k = ok[i:i + chunk]
        out[k] = rowwise_pearson(La[torch.as_tensor(ia[k])], Lb[torch.as_tensor(ib[k])])
    return out


def _record(run, comp: Comparison) -> None:
    s = comp.summary()
    brief = {k: s[k] for k in ("a", "b", "same_transformer", "tokens", "feature_median", "feature_median_b_to_a",
                               "neuron_median", "seconds")}
    f = s["features"]
    brief.update({k: f.get(k) for k in ("alive_a", "dead_a", "ultralow_a", "undefined_a", "alive_b", "dead_b",
                                        "ultralow_b", "undefined_b", "assignment_mean", "logit_corr_median",
                                        "decoder_mmcs", "fraction_above_0.5", "fraction_above_0.7")})
    modes = f.get("density_modes") or {}
    if modes.get("bimodal"):
        brief.update({"feature_median_high_mode": modes["high_median"], "high_mode_features": modes["high"],
                      "high_mode_threshold": modes["threshold"],
                      "high_mode_fraction_above_0.5": modes["high_fraction_above_0.5"],
                      "high_mode_fraction_above_0.7": modes["high_fraction_above_0.7"]})
    if comp.neurons is not None:
        n = s["neurons"]
        brief.update({"neuron_dead_a": n["dead_a"], "neuron_dead_b": n["dead_b"],
                      "neuron_logit_corr_median": n.get("logit_corr_median")})
    brief["paper"] = dict(PAPER)

    def merge(doc: dict) -> dict:
        doc[comp.key] = brief
        # the headline numbers: the paper's pair A/1~B/1 when present, else the latest cross-transformer comparison
        if not comp.features.same_transformer and comp.neurons is not None and \
                (comp.key == "A/1~B/1" or "A/1~B/1" not in doc):
            doc["pair"] = comp.key
            doc["feature_median"] = brief["feature_median"]
            doc["neuron_median"] = brief["neuron_median"]
            doc["feature_median_high_mode"] = brief.get("feature_median_high_mode")
        return doc

    update_analyses(run.root, "universality", merge)


def load_comparison(run, a: str = "A/1", b: str = "B/1") -> Comparison:
    return Comparison.load(comparison_dir(run, a, b))
