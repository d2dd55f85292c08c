"""The streaming accumulator: per-unit statistics from sparse activation entries (no model, no run:
testable on synthetic entries)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError
from ..sparse import TokenMass
from .config import FeatureStatsConfig

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)


KEY_BITS = 24
EMPTY_KEY = 1 << KEY_BITS        # larger than every key: an empty reservoir slot


def hash_keys(g_E: np.ndarray, u_E: np.ndarray, seed: int) -> np.ndarray:
    """A uniform 24-bit integer key for every (token, unit) pair: the top bits of splitmix64 of the pair.
    Deterministic, so samples do not depend on chunking or on where a pass was resumed."""
    with np.errstate(over="ignore"):
        z = g_E.astype(np.uint64) * _M1 + u_E.astype(np.uint64) * _M2 + np.uint64(seed & 0xFFFFFFFF) * _M4
        z = (z ^ (z >> np.uint64(30))) * _M3
        z = (z ^ (z >> np.uint64(27))) * _M4
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(64 - KEY_BITS)).astype(np.int64)


def _segment_rank(keys_sorted: torch.Tensor) -> torch.Tensor:
    """Rank of each element within its run of equal (sorted) keys."""
    n = keys_sorted.numel()
    if n == 0:
        return keys_sorted.new_zeros(0)
    start = torch.ones(n, dtype=torch.bool)
    start[1:] = keys_sorted[1:] != keys_sorted[:-1]
    idx = torch.arange(n)
    seg_start = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0).values
    return idx - seg_start


class _Slots:
    """R rows of at most S entries each, keeping per row the S entries with the smallest integer key (ties: the
    earlier token, as one pass over all tokens in order would).  Rows fill by appending, without sorting, until
    full; only rows that overflow are merged by a sort.  ``thr[r]`` is the largest key kept in a full row (an
    offer must be smaller to get in), ``kmax`` otherwise.  Storage is flat: slot = row × S + i."""

    def __init__(self, R: int, S: int, kmax: int, payload: dict[str, torch.dtype]):
        self.R, self.S, self.kmax = int(R), int(S), int(kmax)
        self.key = torch.full((self.R * self.S,), self.kmax, dtype=torch.int64)
        self.g = torch.full((self.R * self.S,), -1, dtype=torch.int64)
        self.pay = {n: torch.zeros(self.R * self.S, dtype=dt) for n, dt in payload.items()}
        self.count = torch.zeros(self.R, dtype=torch.int64)
        self.thr = torch.full((self.R,), self.kmax, dtype=torch.int64)

    def _take(self, idx, row, key, g, pay):
        return row[idx], key[idx], g[idx], {n: v[idx] for n, v in pay.items()}

    def offer(self, row, key, g, pay: dict, ordered: bool = True) -> None:
        """Offer entries; ``ordered``: they come in token order and after every entry already kept."""
        S, R = self.S, self.R
        idx = torch.nonzero(key < self.thr.index_select(0, row)).flatten()
        if idx.numel() == 0:
            return
        if not ordered:
            idx = idx[torch.sort(g.index_select(0, idx), stable=True).indices]
        rk = row.index_select(0, idx)
        idx = idx[torch.sort(rk * (self.kmax + 1) + key.index_select(0, idx), stable=True).indices]
        rk = row.index_select(0, idx)
        r = _segment_rank(rk)
        k = torch.nonzero(r < S).flatten()          # no row takes more than S from one offer
        idx, r = idx.index_select(0, k), r.index_select(0, k)
        row, key, g = rk.index_select(0, k), key.index_select(0, idx), g.index_select(0, idx)
        pay = {n: v.index_select(0, idx) for n, v in pay.items()}
        n_new = torch.bincount(row, minlength=R)
        total = self.count + n_new
        fits = total.index_select(0, row) <= S
        a = torch.nonzero(fits).flatten()
        if a.numel():
            slot = row[a] * S + self.count.index_select(0, row[a]) + r[a]
            self.key.index_copy_(0, slot, key[a])
            self.g.index_copy_(0, slot, g[a])
            for n, v in pay.items():
                self.pay[n].index_copy_(0, slot, v[a])
        ok_rows = (total <= S) & (n_new > 0)
        self.count = torch.where(ok_rows, total, self.count)
        full = torch.nonzero(ok_rows & (total == S)).flatten()
        if full.numel():
            self.thr[full] = self.key.view(R, S).index_select(0, full).max(1).values
        o = torch.nonzero(~fits).flatten()
        if o.numel() == 0:
            return
        # rows that overflow: existing slots (in slot order) then the new entries, one stable sort by (row, key)
        orow, okey, og, opay = self._take(o, row, key, g, pay)
        rows_o = torch.nonzero((total > S) & (n_new > 0)).flatten()
        slots = (rows_o[:, None] * S + torch.arange(S)[None, :]).flatten()
        all_row = torch.cat([rows_o.repeat_interleave(S), orow])
        all_key = torch.cat([self.key.index_select(0, slots), okey])
        all_g = torch.cat([self.g.index_select(0, slots), og])
        all_pay = {n: torch.cat([self.pay[n].index_select(0, slots), opay[n]]) for n in pay}
        srt = torch.sort(all_row * (self.kmax + 1) + all_key, stable=True).indices
        all_row, all_key, all_g, all_pay = self._take(srt, all_row, all_key, all_g, all_pay)
        rr = _segment_rank(all_row)
        keep = torch.nonzero(rr < S).flatten()
        dst = all_row[keep] * S + rr[keep]
        self.key.index_copy_(0, dst, all_key[keep])
        self.g.index_copy_(0, dst, all_g[keep])
        for n in pay:
            self.pay[n].index_copy_(0, dst, all_pay[n][keep])
        self.count[rows_o] = S
        self.thr[rows_o] = self.key.index_select(0, rows_o * S + S - 1)

    def clear(self, rows: torch.Tensor) -> dict:
        """Empty ``rows``; return their kept entries (row, key, g, payload)."""
        S = self.S
        slots = (rows[:, None] * S + torch.arange(S)[None, :]).flatten()
        key = self.key.index_select(0, slots)
        ok = torch.nonzero(key < self.kmax).flatten()
        out = {"row": rows.repeat_interleave(S)[ok], "key": key[ok], "g": self.g.index_select(0, slots)[ok],
               "pay": {n: v.index_select(0, slots)[ok] for n, v in self.pay.items()}}
        self.key[slots] = self.kmax
        self.g[slots] = -1
        self.count[rows] = 0
        self.thr[rows] = self.kmax
        return out

    def sorted_rows(self):
        """(key, g, payload) as (R, S) tensors, each row sorted by (key, token); empty slots last."""
        R, S = self.R, self.S
        o = torch.sort(self.g, stable=True).indices
        row = o // S
        o = o[torch.sort(row * (self.kmax + 1) + self.key[o], stable=True).indices]
        key = self.key[o].view(R, S)
        g = torch.where(key < self.kmax, self.g[o].view(R, S), -1)
        return key, g, {n: v[o].view(R, S) for n, v in self.pay.items()}

    _STATE = ("key", "g", "count", "thr")

    def state_dict(self, prefix: str) -> dict:
        d = {f"{prefix}{k}": getattr(self, k).numpy() for k in self._STATE}
        d.update({f"{prefix}pay_{n}": v.numpy() for n, v in self.pay.items()})
        return d

    def load_state_dict(self, d: dict, prefix: str) -> None:
        for k in self._STATE:
            setattr(self, k, _checked(d[f"{prefix}{k}"], getattr(self, k), f"{prefix}{k}"))
        for n in self.pay:
            self.pay[n] = _checked(d[f"{prefix}pay_{n}"], self.pay[n], f"{prefix}pay_{n}")


def _checked(arr, cur: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.array(arr))
    if t.shape != cur.shape or t.dtype != cur.dtype:
        raise ConfigError(f"checkpoint array {name} has shape {tuple(t.shape)}/{t.dtype}, expected "
                          f"{tuple(cur.shape)}/{cur.dtype}: it was written by another config")
    return t


_VKEY_MAX = 1 << 31  # top-k key: 2^31 − 1 − (float32 bits of the value); larger values → smaller keys


def _value_key(v: torch.Tensor) -> torch.Tensor:
    return (_VKEY_MAX - 1) - v.view(torch.int32).to(torch.int64)


class StatsAccumulator:
    """Streaming per-unit statistics from sparse activation entries.

    Feed it chunks with :meth:`update`: ``g_N`` the global index of each token of the chunk (strictly increasing
    across chunks), ``dom_N`` its domain code, and the strictly positive entries ``(rows_E, cols_E, vals_E)``
    (``rows`` index the chunk's tokens, ``cols`` are units).  :meth:`results` gives numpy arrays; the state
    round-trips through :meth:`state_dict` for checkpoints.
    """

    def __init__(self, n_units: int, n_domains: int, cfg: FeatureStatsConfig, vocab: int | None = None):
        self.U, self.K, self.cfg = int(n_units), int(n_domains), cfg
        # per-token activation mass, for the top tokens (only when ``update`` is given the tokens)
        self.mass = TokenMass(self.U, vocab) if vocab else None
        U, K = self.U, self.K
        self.G = cfg.fine_bins
        self.log2G = int(math.log2(self.G))
        self.S = cfg.per_interval
        self.HB = cfg.log_bins + 2
        self.n_tokens = 0
        self.domain_tokens = torch.zeros(K, dtype=torch.int64)
        self.count = torch.zeros(U, dtype=torch.int64)
        self.sum = torch.zeros(U, dtype=torch.float64)
        self.sumsq = torch.zeros(U, dtype=torch.float64)
        self.max = torch.zeros(U, dtype=torch.float32)
        self.dcount = torch.zeros(U * K, dtype=torch.int64)
        self.dsum = torch.zeros(U * K, dtype=torch.float64)
        self.hist = torch.zeros(U * self.HB * K, dtype=torch.int64)
        # fine linear grid on [0, 2^e): e = frexp exponent of the running max (max < 2^e)
        self.e = torch.full((U,), -1000, dtype=torch.int32)
        self.lin = torch.zeros(U * self.G, dtype=torch.int64)
        self.top = _Slots(U, cfg.top_k, _VKEY_MAX, {"val": torch.float32})
        self.res = _Slots(U * self.G, self.S, EMPTY_KEY, {"val": torch.float32})

    # ---- the update ----------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, g_N: torch.Tensor, dom_N: torch.Tensor, rows_E: torch.Tensor, cols_E: torch.Tensor,
               vals_E: torch.Tensor, tok_N: torch.Tensor | None = None) -> None:
        g_N, dom_N = torch.as_tensor(g_N, dtype=torch.int64), torch.as_tensor(dom_N).to(torch.int64)
        rows_E, cols_E = torch.as_tensor(rows_E, dtype=torch.int64), torch.as_tensor(cols_E, dtype=torch.int64)
        vals_E = torch.as_tensor(vals_E, dtype=torch.float32).contiguous()
        U, K, G = self.U, self.K, self.G
        self.n_tokens += int(g_N.numel())
        self.domain_tokens += torch.bincount(dom_N, minlength=K)[:K]
        if vals_E.numel() and not (bool((vals_E > 0).all()) and bool(torch.isfinite(vals_E).all())):
            raise ValueError("StatsAccumulator.update takes strictly positive, finite activations only")
        if self.mass is not None:
            if tok_N is None:
                raise ValueError("this StatsAccumulator was made with a vocab: pass the chunk's tokens as tok_N")
            self.mass.update(torch.as_tensor(tok_N).numpy(), rows_E.numpy(), cols_E.numpy(), vals_E.numpy())
        if vals_E.numel() == 0:
            return
        dom_E = dom_N.index_select(0, rows_E)
        g_E = g_N.index_select(0, rows_E)
        v64 = vals_E.double()
        self.count += torch.bincount(cols_E, minlength=U)
        self.sum += torch.bincount(cols_E, weights=v64, minlength=U)
        self.sumsq += torch.bincount(cols_E, weights=v64 * v64, minlength=U)
        ck = cols_E * K + dom_E
        self.dcount += torch.bincount(ck, minlength=U * K)
        self.dsum += torch.bincount(ck, weights=v64, minlength=U * K)
        lb = torch.floor((torch.log10(vals_E) - self.cfg.log10_min) * self.cfg.bins_per_decade)
        lb = lb.clamp_(-1, self.HB - 2).to(torch.int64) + 1
        self.hist += torch.bincount((cols_E * self.HB + lb) * K + dom_E, minlength=U * self.HB * K)

        # running max → fine-grid exponent; remap the units whose grid doubled
        cmax = torch.zeros(U, dtype=torch.float32).scatter_reduce_(0, cols_E, vals_E, "amax")
        new_max = torch.maximum(self.max, cmax)
        e_new = torch.frexp(new_max).exponent.to(torch.int32)
        grow = (self.max > 0) & (e_new > self.e)
        if bool(grow.any()):
            self._regrid(torch.nonzero(grow).flatten(), (e_new - self.e)[grow])
        self.e = torch.where(new_max > 0, e_new, self.e)
        self.max = new_max
        b = torch.ldexp(vals_E, (self.log2G - self.e.index_select(0, cols_E)).to(torch.float32))
        b = b.floor_().to(torch.int64).clamp_(0, G - 1)
        bucket = cols_E * G + b
        self.lin += torch.bincount(bucket, minlength=U * G)

        # top-k, and the interval sampler's bottom-S keys per fine bin: only entries that beat a threshold
        self.top.offer(cols_E, _value_key(vals_E), g_E, {"val": vals_E})
        keys = torch.from_numpy(hash_keys(g_E.numpy(), cols_E.numpy(), self.cfg.seed))
        self.res.offer(bucket, keys, g_E, {"val": vals_E})

    def _regrid(self, units: torch.Tensor, shift: torch.Tensor) -> None:
        """The grid of ``units`` grew by 2^shift: fine bin i becomes i >> shift (bins nest exactly)."""
        G = self.G
        shift = shift.to(torch.int64).clamp_(max=self.log2G + 1)
        rows = (units[:, None] * G + torch.arange(G)[None, :]).flatten()               # old bucket rows
        new_rows = (units[:, None] * G + (torch.arange(G)[None, :] >> shift[:, None])).flatten()
        lin = self.lin[rows]
        self.lin[rows] = 0
        self.lin.index_add_(0, new_rows, lin)
        kept = self.res.clear(rows)
        if kept["row"].numel():
            remap = torch.zeros(self.U * G, dtype=torch.int64)
            remap[rows] = new_rows
            self.res.offer(remap[kept["row"]], kept["key"], kept["g"], kept["pay"], ordered=False)

    # ---- checkpoints -------------------------------------------------------------------------------------
    _STATE = ("domain_tokens", "count", "sum", "sumsq", "max", "dcount", "dsum", "hist", "e", "lin")

    def state_dict(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k).numpy() for k in self._STATE}
        d.update(self.top.state_dict("top_"))
        d.update(self.res.state_dict("res_"))
        d["n_tokens"] = np.array(self.n_tokens, dtype=np.int64)
        if self.mass is not None:
            d.update(self.mass.state_dict("mass_"))
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        for k in self._STATE:
            setattr(self, k, _checked(d[k], getattr(self, k), k))
        self.top.load_state_dict(d, "top_")
        self.res.load_state_dict(d, "res_")
        self.n_tokens = int(d["n_tokens"])
        if self.mass is not None:
            self.mass.load_state_dict(d, "mass_")

    # ---- results ---------------------------------------------------------------------------------------
    def intervals(self) -> dict[str, np.ndarray]:
        """Evenly spaced activation intervals (snapped to the fine grid) and their sampled examples.

        Returns ``lo``/``hi`` (U, I) interval bounds, ``count`` (U, I) firing tokens inside, and the samples
        ``val``/``g`` (U, I, S) (g = −1 where an interval holds fewer than S tokens), sorted by key."""
        U, G, S, I = self.U, self.G, self.S, self.cfg.n_intervals
        mx = self.max.double()
        w = torch.ldexp(torch.ones(U, dtype=torch.float64), (self.e - self.log2G).double())  # fine bin width
        occupied = torch.where(mx > 0, torch.floor(mx / w).to(torch.int64) + 1, torch.zeros(U, dtype=torch.int64))
        occupied = occupied.clamp_(max=G)
        j = torch.arange(I + 1, dtype=torch.int64)
        edges = (j[None, :] * occupied[:, None]) // I                       # (U, I+1) fine-bin edges
        lo = (edges[:, :-1].double() * w[:, None]).float()
        hi = (edges[:, 1:].double() * w[:, None]).float()
        hi[:, -1] = torch.where(mx > 0, torch.maximum(hi[:, -1], self.max), hi[:, -1])
        bins = torch.arange(G)[None, :]
        interval_of_bin = torch.full((U, G), -1, dtype=torch.int64)
        for i in range(I):
            inside = (bins >= edges[:, i:i + 1]) & (bins < edges[:, i + 1:i + 2])
            interval_of_bin[inside] = i
        lin = self.lin.view(U, G)
        count = torch.zeros(U, I, dtype=torch.int64)
        valid_bins = interval_of_bin >= 0
        uu = torch.arange(U)[:, None].expand(U, G)
        count.index_put_((uu[valid_bins], interval_of_bin[valid_bins]), lin[valid_bins], accumulate=True)
        # samples: the S smallest keys over the interval's fine bins
        kk, gg, pay = self.res.sorted_rows()
        k = kk.view(U, G, S)
        ok = (k < EMPTY_KEY) & valid_bins[:, :, None]
        seg = (torch.arange(U)[:, None, None] * I + interval_of_bin[:, :, None]).expand(U, G, S)[ok]
        kk, vv, gg = k[ok], pay["val"].view(U, G, S)[ok], gg.view(U, G, S)[ok]
        o = torch.sort(gg, stable=True).indices
        seg, kk, vv, gg = seg[o], kk[o], vv[o], gg[o]
        order = torch.sort(seg * (EMPTY_KEY + 1) + kk, stable=True).indices
        seg, vv, gg = seg[order], vv[order], gg[order]
        rank = _segment_rank(seg)
        keep = rank < S
        val = torch.zeros(U * I * S, dtype=torch.float32)
        gs = torch.full((U * I * S,), -1, dtype=torch.int64)
        dst = seg[keep] * S + rank[keep]
        val[dst] = vv[keep]
        gs[dst] = gg[keep]
        return {"lo": lo.numpy(), "hi": hi.numpy(), "count": count.numpy(), "val": val.view(U, I, S).numpy(),
                "g": gs.view(U, I, S).numpy()}

    def results(self) -> dict[str, np.ndarray]:
        U, K = self.U, self.K
        key, g, pay = self.top.sorted_rows()
        top_val = torch.where(key < _VKEY_MAX, pay["val"], torch.tensor(-math.inf))
        out = {
            "n_tokens": self.n_tokens, "domain_tokens": self.domain_tokens.numpy(), "count": self.count.numpy(),
            "sum": self.sum.numpy(), "sumsq": self.sumsq.numpy(), "max": self.max.numpy(),
            "dcount": self.dcount.view(U, K).numpy(), "dsum": self.dsum.view(U, K).numpy(),
            "hist": self.hist.view(U, self.HB, K).numpy(), "top_val": top_val.numpy(), "top_g": g.numpy(),
        }
        out["intervals"] = self.intervals()
        if self.mass is not None:
            out["mass"] = self.mass
        return out
