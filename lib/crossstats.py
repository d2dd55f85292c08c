"""Cross statistics of two sets of units over one token set: the streaming sums behind Pearson correlation and
the masked cosine, and what is read from them (best matches, a one-to-one assignment, an order for display),
plus the sides being compared and the one pass that produces their activations.

``CrossStats`` accumulates n, Σx, Σx², Σy, Σy² and the cross moments Σxy (and, for feature splitting, the masked
moments Σ1[x≠0]y², Σx²1[y≠0]).  Sparse × sparse products (scipy's SpGEMM, whose cost is Σ_tokens L0_a·L0_b
rather than N·F_a·F_b) are added straight into dense float64 accumulators; dense inputs (neurons) go through an
fp32 matmul per batch, added in float64, after shifting each column by its first-batch mean (Pearson is shift
invariant; the shift removes the cancellation in Σx² − n·x̄²).  A column with zero variance on the token set has
no correlation: its row/column is NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError
from .tokensets import TokenSet

try:  # in-place ``dense += csr`` (scipy's own kernel behind csr.toarray(out=...)): no dense temporary per batch
    from scipy.sparse._sparsetools import csr_todense as _csr_todense
except Exception:  # pragma: no cover - a scipy without the private module: fall back to a temporary
    _csr_todense = None

__all__ = ["Side", "resolve_side", "iter_activation_batches", "CrossStats", "best_matches", "one_to_one",
           "diagonal_order", "rowwise_pearson", "max_cosine", "pair_cosine"]


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


def resolve_side(run, spec) -> Side:
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
    xd = torch.from_numpy(x).double()   # torch: numpy's float32 → float64 cast and column sums were 35 of compare's
    return (xd.sum(0).numpy(), xd.square_().sum(0).numpy(),   # 150 s on the default run (its neurons' rows)
            torch.from_numpy(x).ne(0).sum(0).numpy().astype(np.int64))


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


def pair_cosine(u: torch.Tensor, v: torch.Tensor, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    out = np.full(len(ia), np.nan)
    ok = (ia >= 0) & (ib >= 0)
    if ok.any():
        a = torch.nn.functional.normalize(u[torch.as_tensor(ia[ok])].float(), dim=1)
        b = torch.nn.functional.normalize(v[torch.as_tensor(ib[ok])].float(), dim=1)
        out[ok] = (a * b).sum(1).double().numpy()
    return out




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
    fwd = {}  # each model's fastest exact forward (SubjectModel.mlp_acts_function), checked on the first batch
    bar = tqdm(total=tokens.tokens, desc="activations", unit="tok", unit_scale=True, disable=not progress)
    for toks, doms in tokens.batches(run, batch_tokens, with_domains=True):
        t = torch.from_numpy(toks).to(device)
        acts = {}
        for name, m in models.items():
            if name not in fwd:
                fwd[name] = m.mlp_acts_function(t[:8])
            a = fwd[name](t)[:, 1:]
            acts[name] = a.reshape(-1, a.shape[-1]).float().cpu()
        bar.update(toks.shape[0] * (toks.shape[1] - 1))
        yield acts, toks[:, 1:].reshape(-1), doms[:, 1:].reshape(-1)
    bar.close()
