"""Feature statistics: one streaming pass over a token set gives every feature's (or neuron's) browser page.

For every *unit* — a feature of a dictionary, or, as the baseline, a neuron of the MLP — one pass over a fixed
token set computes (the paper's feature browser, *Towards Monosemanticity* 2023):

- density (fraction of tokens where the unit fires), max / mean / sum / sum² of its activation;
- an activation histogram with log-spaced bins, split by the token's corpus domain (python, bible, base64, text),
  so it can be coloured by the proxy as in the paper;
- the top-k activating tokens, with their surrounding tokens and the unit's activation on each;
- examples sampled uniformly from evenly spaced activation intervals (the paper's "subsample intervals");
- logit effects: decoder vector → W_out → LayerNorm approximation → W_U, median-centred; top and bottom tokens;
- the neurons a feature is built from (its largest decoder weights);
- per domain (base64 is the exact proxy): specificity (share of the unit's activation on the domain),
  sensitivity (share of the domain's tokens on which the unit fires) and the Pearson correlation with the domain
  indicator.

How it is fast and bounded
--------------------------
The dictionary's encoder is the only dense work (B×D @ D×F); with bf16 hardware it runs as an exact *filter*
(``SparseEncoder``: a bf16 matmul with a proven margin, then an fp32 recompute of the candidates), so what leaves it
is the list of strictly positive entries ``(row, unit, value)`` — a few dozen per token.  Everything after that
touches only those entries (features fire rarely), in vectorised torch:

- counts, sums, per-domain sums and both histograms are ``bincount``s;
- top-k: an entry is a candidate only if it beats its unit's current k-th value; candidates are appended to the
  unit's k slots while they are free, and only rows that overflow are merged by a sort (``_Slots``);
- interval samples: each unit's activation range [0, M) (M a power of two above its running max, doubled when
  the max grows, so fine bins nest exactly) is cut into ``fine_bins`` linear bins; each bin keeps the ``S``
  entries with the smallest pseudo-random key (a hash of token and unit: a bottom-S sketch).  At the end each
  of the ``n_intervals`` intervals is a run of whole fine bins (its edges are the evenly spaced fractions of the
  max, snapped to the fine grid — within max/32), and its examples are the S smallest keys over those bins: a
  uniform sample without replacement of the interval's tokens, whatever the chunking.
- memory is O(units × (top_k + fine_bins × S + histogram bins)) plus a few chunks, independent of the token count.

Chunks are produced (forward + sparse encoding) by one single-threaded worker thread per core and consumed in
order by the accumulator; on a shared machine this beats two-thread OpenMP kernels, which stall whenever one of
their threads is descheduled.

The pass checkpoints its state every ``checkpoint_seconds`` and resumes after a kill; the keys are hashes, so
the result does not depend on where it was interrupted.  The surrounding tokens of the chosen examples are
filled in at the end by re-running the model on the contexts that hold them.

Storage (beside the run)::

    dictionaries/A/1/feature_stats/    transformers/A/neuron_stats/
        meta.json          the config, fingerprint, token set, bin edges (written last: its presence = done)
        units.parquet      one row per unit (density, proxy scores, logits, neurons, histograms, intervals)
        examples.parquet   one row per example, sorted by unit, row groups of ``row_group_units`` units
        state.npz          checkpoint while the pass runs (removed when done)

``units.parquet`` columns: ``unit, density, count, max_act, mean_act, sum_act, sumsq_act, dead, ultralow``; per
domain d ``act_share_d`` (specificity), ``fire_share_d``, ``sensitivity_d``, ``corr_d``; ``proxy_specificity,
proxy_sensitivity, proxy_corr`` (the base64 ones), ``top_domain, top_tokens`` (JSON list); fixed-size lists
``logit_top_ids/vals, logit_bottom_ids/vals, neuron_ids/weights, hist`` ((log bins + 2) × domains, row-major),
``interval_lo/hi/count, domain_count/sum``.  ``examples.parquet``: ``unit, section`` (−1 top, i interval),
``rank, act, token_index, context, pos, token, center, tokens, acts`` (the window; −1 pads).

``FeatureStats.load(run, "A/1")`` (or ``"A"`` for the neurons) reads ``units.parquet`` once and one row group of
``examples.parquet`` per unit asked for, so a unit's page loads in milliseconds.

Tensor names carry shapes: N tokens of a chunk, E active entries, U units, D d_in, G bins, K domains.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .corpus import DOMAINS, PROXY_DOMAIN
from .errors import ConfigError
from .io import atomic_path, atomic_write_json, read_json
from .sparse import SparseEncoder, offsets, positive_entries, sampled_dots

__all__ = ["FeatureStatsConfig", "preset_config", "StatsAccumulator", "FeatureStats", "UnitStats", "Example",
           "Histogram", "compute_feature_stats", "compute_neuron_stats", "compute_stats", "stats_dir",
           "SparseEncoder", "FastMLPActs", "logit_effects", "correlated_neurons", "token_set_contexts"]

STATS_VERSION = 1


@dataclass
class FeatureStatsConfig:
    """The statistics pass.  ``n_tokens`` is the token budget (non-BOS positions; the paper's browser used
    far more, ≥ 1M is the default); the split is read as evenly spaced contexts, so every domain is sampled."""

    n_tokens: int = 1_000_000
    split: str = "train"
    batch_contexts: int = 128          # contexts per chunk (memory ≈ 6 × batch_contexts × n_ctx × d_mlp × 4 B)
    top_k: int = 20                    # top activating examples kept per unit
    n_intervals: int = 11              # the paper: 11 intervals evenly spaced between 0 and the max activation
    per_interval: int = 5              # examples sampled per interval
    fine_bins: int = 64                # linear sub-bins per unit behind the interval sampler (a power of two)
    log10_min: float = -4.0            # activation histogram: log-spaced bins from 10^min to 10^max,
    log10_max: float = 3.0             # plus one underflow and one overflow bin
    bins_per_decade: int = 20
    window_before: int = 10            # surrounding tokens stored with each example
    window_after: int = 5
    n_logits: int = 10                 # top and bottom tokens of the logit effects
    n_neurons: int = 8                 # neurons a feature is built from (largest |decoder weight|)
    seed: int = 0
    checkpoint_seconds: float = 60.0
    row_group_units: int = 32          # units per parquet row group of examples.parquet
    bf16: bool | None = None           # bf16 encoder filter (exact: see SparseEncoder); None = sparse.bf16_default(F)
    workers: int | None = None         # worker threads (one per core by default; results do not depend on it)

    def validate(self) -> "FeatureStatsConfig":
        if self.n_tokens < 1:
            raise ConfigError(f"feature_stats.n_tokens must be ≥ 1, got {self.n_tokens}")
        if self.fine_bins < 16 or self.fine_bins & (self.fine_bins - 1):
            raise ConfigError(f"feature_stats.fine_bins must be a power of two ≥ 16, got {self.fine_bins}")
        if not 1 <= self.n_intervals <= self.fine_bins // 2:
            raise ConfigError(f"feature_stats.n_intervals must be in [1, fine_bins/2 = {self.fine_bins // 2}], "
                              f"got {self.n_intervals}; raise fine_bins or use fewer intervals")
        for name in ("top_k", "per_interval", "batch_contexts", "bins_per_decade", "row_group_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"feature_stats.{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.log10_max > self.log10_min:
            raise ConfigError("feature_stats.log10_max must exceed log10_min")
        if self.window_before < 0 or self.window_after < 0:
            raise ConfigError("feature_stats.window_before/window_after must be ≥ 0")
        return self

    @property
    def log_bins(self) -> int:
        """Number of finite log-spaced bins (the histogram has two more: underflow and overflow)."""
        return int(round((self.log10_max - self.log10_min) * self.bins_per_decade))

    def log_edges(self) -> np.ndarray:
        return 10.0 ** np.linspace(self.log10_min, self.log10_max, self.log_bins + 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset_config(preset: str) -> FeatureStatsConfig:
    """The statistics pass of each preset: ``tiny`` small enough for tests and notebooks, ``default`` ≥ 1M
    tokens (the issue's target), ``paper`` 10M."""
    if preset == "tiny":
        return FeatureStatsConfig(n_tokens=30_000, batch_contexts=128, top_k=12, checkpoint_seconds=30.0)
    if preset == "paper":
        return FeatureStatsConfig(n_tokens=10_000_000, batch_contexts=256)
    return FeatureStatsConfig()


def _cfg_from(run, cfg: FeatureStatsConfig | None) -> FeatureStatsConfig:
    if cfg is None:  # the run config's knob (RunConfig.feature_stats) when it has one, else the preset's
        cfg = getattr(run.cfg, "feature_stats", None) or preset_config(run.cfg.preset)
    if isinstance(cfg, dict):
        cfg = FeatureStatsConfig(**cfg)
    return dataclasses.replace(cfg).validate()


# =====================================================================================================
# the streaming accumulator (no model, no run: testable on synthetic entries)
# =====================================================================================================

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

    def __init__(self, n_units: int, n_domains: int, cfg: FeatureStatsConfig):
        self.U, self.K, self.cfg = int(n_units), int(n_domains), cfg
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
               vals_E: torch.Tensor) -> None:
        g_N, dom_N = torch.as_tensor(g_N, dtype=torch.int64), torch.as_tensor(dom_N).to(torch.int64)
        rows_E, cols_E = torch.as_tensor(rows_E, dtype=torch.int64), torch.as_tensor(cols_E, dtype=torch.int64)
        vals_E = torch.as_tensor(vals_E, dtype=torch.float32).contiguous()
        U, K, G = self.U, self.K, self.G
        self.n_tokens += int(g_N.numel())
        self.domain_tokens += torch.bincount(dom_N, minlength=K)[:K]
        if vals_E.numel() == 0:
            return
        if not bool((vals_E > 0).all()) or not bool(torch.isfinite(vals_E).all()):
            raise ValueError("StatsAccumulator.update takes strictly positive, finite activations only")
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
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        for k in self._STATE:
            setattr(self, k, _checked(d[k], getattr(self, k), k))
        self.top.load_state_dict(d, "top_")
        self.res.load_state_dict(d, "res_")
        self.n_tokens = int(d["n_tokens"])

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
        return out


# =====================================================================================================
# sparse encoding (dictionary features or raw neurons → strictly positive entries)
# =====================================================================================================

class FastMLPActs:
    """A fused forward to the MLP activations of a one-layer attention + MLP model (LayerNorm, learned
    positions, causal attention): ``F.layer_norm`` and ``F.scaled_dot_product_attention`` instead of the hooked
    module graph — 1.6× faster single-threaded on a CPU and thread-safe (no hooks), so chunks can run in parallel.

    It reads the standard weight names of the subject model's state dict, and is trusted only after it matches
    ``model.mlp_acts`` on real tokens (:meth:`verify`); the pass falls back to ``model.mlp_acts`` otherwise.
    (The natural home of this is the subject-model adapter; it lives here until it moves there.)"""

    def __init__(self, model):
        c = model.model.cfg
        supported = (c.n_layers == 1 and model.layer == 0 and model.hook == "blocks.0.mlp.hook_post"
                     and c.normalization_type == "LN" and c.positional_embedding_type == "standard"
                     and c.act_fn in ("relu", "gelu") and not getattr(c, "attn_only", False)
                     and not getattr(c, "parallel_attn_mlp", False) and not getattr(c, "gated_mlp", False)
                     and getattr(c, "attention_dir", "causal") == "causal"
                     and not getattr(c, "use_local_attn", False)
                     and (getattr(c, "attn_scores_soft_cap", -1.0) or -1.0) <= 0
                     and getattr(c, "n_key_value_heads", None) in (None, c.n_heads))
        if not supported:
            raise ConfigError("the fused forward supports one-layer LayerNorm attention + MLP models only")
        sd = {k: v.detach().float() for k, v in model.model.state_dict().items()}
        H, dh, d = c.n_heads, c.d_head, c.d_model
        self.W_E, self.W_pos = sd["embed.W_E"], sd["pos_embed.W_pos"]
        self.ln1 = (sd["blocks.0.ln1.w"], sd["blocks.0.ln1.b"])
        self.ln2 = (sd["blocks.0.ln2.w"], sd["blocks.0.ln2.b"])
        Wq, Wk, Wv = (sd[f"blocks.0.attn.W_{n}"].permute(1, 0, 2).reshape(d, H * dh) for n in "QKV")
        self.W_qkv = torch.cat([Wq, Wk, Wv], 1).contiguous()
        self.b_qkv = torch.cat([sd[f"blocks.0.attn.b_{n}"].reshape(-1) for n in "QKV"])
        self.W_O = sd["blocks.0.attn.W_O"].reshape(H * dh, d).contiguous()
        self.b_O = sd["blocks.0.attn.b_O"]
        self.W_in, self.b_in = sd["blocks.0.mlp.W_in"].contiguous(), sd["blocks.0.mlp.b_in"]
        self.eps = float(c.eps)
        self.scale = 1.0 / float(model.model.blocks[0].attn.attn_scale)
        self.H, self.dh, self.d = H, dh, d
        self.act = torch.relu if c.act_fn == "relu" else torch.nn.functional.gelu

    @torch.no_grad()
    def __call__(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as Fn

        B, T = tokens_BT.shape
        H, dh, d = self.H, self.dh, self.d
        resid = self.W_E[tokens_BT] + self.W_pos[:T]
        h = Fn.layer_norm(resid, (d,), *self.ln1, eps=self.eps)
        qkv = torch.addmm(self.b_qkv, h.view(B * T, d), self.W_qkv).view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
        z = Fn.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True, scale=self.scale)
        resid = resid + torch.addmm(self.b_O, z.transpose(1, 2).reshape(B * T, H * dh), self.W_O).view(B, T, d)
        h = Fn.layer_norm(resid, (d,), *self.ln2, eps=self.eps)
        return self.act(torch.addmm(self.b_in, h.view(B * T, d), self.W_in)).view(B, T, -1)

    def verify(self, model, tokens_BT: torch.Tensor, tol: float = 1e-4) -> bool:
        ref = model.mlp_acts(tokens_BT).float()
        got = self(tokens_BT)
        return got.shape == ref.shape and bool(((got - ref).abs().max() <= tol * (1 + ref.abs().max())).item())


def mlp_acts_function(model, probe_tokens: torch.Tensor):
    """``FastMLPActs`` when it applies and matches the model on ``probe_tokens``, else ``model.mlp_acts``."""
    if str(model.device) != "cpu":
        return model.mlp_acts
    try:
        fast = FastMLPActs(model)
    except (ConfigError, KeyError, AttributeError):
        return model.mlp_acts
    return fast if fast.verify(model, probe_tokens) else model.mlp_acts


# =====================================================================================================
# logit effects
# =====================================================================================================

@torch.no_grad()
def final_ln_scale(model, tokens_BT: torch.Tensor) -> float:
    """The mean scale the final LayerNorm divides by, over non-BOS positions (the paper's LayerNorm
    approximation freezes it); 1.0 when the model has no final LayerNorm with a scale hook."""
    hook = "ln_final.hook_scale"
    tl = model.model
    if hook not in getattr(tl, "hook_dict", {}):
        return 1.0
    store = {}

    def grab(act, hook):
        store["s"] = act

    tl.run_with_hooks(tokens_BT.to(model.device), return_type=None, fwd_hooks=[(hook, grab)])
    return float(store["s"][:, 1:].double().mean())


@torch.no_grad()
def logit_effects(dirs_UM: torch.Tensor, W_out_MD: torch.Tensor, W_U_DV: torch.Tensor,
                  ln_w_D: torch.Tensor | None, ln_scale: float = 1.0, center: bool = True) -> torch.Tensor:
    """Direct logit effect of MLP-space directions (decoder rows, or one-hot neurons), median-centred:

        r = dir · W_out;  r ← (r − mean(r)) · ln_w / ln_scale   (LayerNorm with its scale frozen);  ℓ = r · W_U

    then ℓ − median(ℓ) per direction.  Shape (U, d_vocab)."""
    r = dirs_UM.float() @ W_out_MD.float()
    if ln_w_D is not None:
        if center:
            r = r - r.mean(-1, keepdim=True)
        r = r * ln_w_D.float() / ln_scale
    lg = r @ W_U_DV.float()
    V = lg.shape[-1]
    k1, k2 = (V - 1) // 2, V // 2                     # the two middle order statistics (equal for odd V)
    part = np.partition(lg.numpy(), [k1, k2], axis=-1)
    med = (part[:, k1].astype(np.float64) + part[:, k2]) / 2
    return lg - torch.from_numpy(med).float()[:, None]


# =====================================================================================================
# the pass over a run
# =====================================================================================================

def stats_dir(run, source: str) -> Path:
    """Where the statistics of ``source`` live: a dictionary id ("A/1") or a transformer name ("A")."""
    if "/" in source:
        return run.dict_dir(source) / "feature_stats"
    if source not in run.cfg.transformers:
        raise ConfigError(f"no transformer {source!r} in this run (it has {sorted(run.cfg.transformers)}); for a "
                          f"dictionary pass its id, e.g. 'A/1'")
    return run.model_dir(source) / "neuron_stats"


def token_set_contexts(split, n_tokens: int) -> np.ndarray:
    """Evenly spaced context indices of ``split`` holding about ``n_tokens`` non-BOS tokens (all if fewer)."""
    n = min(split.n_contexts, max(1, -(-int(n_tokens) // split.body)))
    return np.unique(np.linspace(0, split.n_contexts - 1, n).round().astype(np.int64))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


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


@contextmanager
def _threads(n: int):
    """Run the block with ``n`` intra-op threads.  The pass parallelises over chunks instead (one worker thread
    per core, each single-threaded): on a shared machine, two-thread OpenMP regions stall whenever the other
    thread is descheduled, and the small ops of a chunk gain little from them anyway."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _workers(cfg: FeatureStatsConfig, mlp_acts, model) -> int:
    if mlp_acts is getattr(model, "mlp_acts", None):
        return 1  # the hooked forward registers hooks on shared modules: not thread-safe
    n = cfg.workers if cfg.workers is not None else min(os.cpu_count() or 1, max(1, torch.get_num_threads()))
    return max(1, int(n))


def _pipelined(fn, items, workers: int):
    """``fn(item)`` for each item, in order, computed up to ``workers + 1`` items ahead by single-threaded worker
    threads (torch ops release the GIL)."""
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    ex = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,),
                            thread_name_prefix="monosemantic-stats")
    try:
        it = iter(items)
        q = deque(ex.submit(fn, x) for x in itertools.islice(it, workers + 1))
        while q:
            r = q.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                q.append(ex.submit(fn, nxt))
            yield r
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class _Interrupted(Exception):
    """Raised by the test hook ``_stop_after`` to simulate a kill after a checkpoint."""


@torch.no_grad()
def compute_stats(run, source: str, cfg: FeatureStatsConfig | None = None, progress: bool = True,
                  out_dir: str | Path | None = None, device: str = "cpu", _stop_after: int | None = None
                  ) -> "FeatureStats":
    from tqdm.auto import tqdm

    cfg = _cfg_from(run, cfg)
    is_dict = "/" in source
    out = Path(out_dir) if out_dir is not None else stats_dir(run, source)
    transformer = source.split("/")[0]
    if is_dict:
        run.cfg.dictionary(source)  # validates the id
        weights = run.dict_dir(source) / "sae.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"dictionary {source} is not trained yet ({weights} missing); run "
                                    f"`monosemantic run --stages dictionary:{source}` first")
    else:
        stats_dir(run, source)
        weights = run.model_dir(source) / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"transformer {source} is not trained yet ({weights} missing); run "
                                    f"`monosemantic run --stages transformer:{source}` first")
    split = run.split(cfg.split)
    ctx_idx = token_set_contexts(split, cfg.n_tokens)
    fingerprint = {"version": STATS_VERSION, "source": source, "weights_sha": _sha(weights),
                   "model_sha": _sha(run.model_dir(transformer) / "model.safetensors"),
                   "split": cfg.split, "split_tokens": int(split.ids.size), "n_contexts": int(len(ctx_idx)),
                   "cfg": {k: v for k, v in cfg.to_dict().items() if k not in ("checkpoint_seconds", "bf16",
                                                                             "batch_contexts", "workers")}}
    meta = read_json(out / "meta.json")
    if meta is not None and meta.get("fingerprint") == fingerprint:
        return FeatureStats(out, run=run)

    (out / "meta.json").unlink(missing_ok=True)  # stale results must never pass for the new ones
    model = run.model(transformer, device=device)
    model.eval()
    sae = run.dictionary(source, device="cpu") if is_dict else None  # the sparse encoder is a CPU kernel
    if sae is not None:
        sae.eval()
        encoder = SparseEncoder(sae, cfg.bf16)
    U = sae.d_sae if sae is not None else model.d_mlp
    K = len(DOMAINS)
    acc = StatsAccumulator(U, K, cfg)
    body = split.body
    state_path = out / "state.npz"
    done_ctx = 0
    if state_path.exists():
        with np.load(state_path, allow_pickle=False) as z:
            saved_fp = json.loads(str(z["fingerprint"]))
            if saved_fp == fingerprint:
                acc.load_state_dict({k: z[k] for k in z.files})
                done_ctx = int(z["done_ctx"])
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    last_ckpt = time.time()
    n_chunks = 0
    bar = tqdm(total=len(ctx_idx) * body, initial=done_ctx * body, unit="tok", unit_scale=True,
               desc=f"{'feature' if is_dict else 'neuron'} stats {source}", disable=not progress)
    B = cfg.batch_contexts
    mlp_acts = mlp_acts_function(model, torch.from_numpy(split.contexts(ctx_idx[:8])).to(model.device))
    workers = _workers(cfg, mlp_acts, model)

    def produce(c0: int):  # in a worker thread: forward + sparse encoding of one chunk
        idx = ctx_idx[c0:c0 + B]
        toks = torch.from_numpy(split.contexts(idx)).to(model.device)
        x = mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp).float().cpu().contiguous()
        rows, cols, vals = encoder(x, inplace=True) if sae is not None else positive_entries(x)
        dom = torch.from_numpy(split.domains(idx)[:, 1:].reshape(-1).astype(np.int64)).clamp_(max=K - 1)
        return c0, len(idx), dom, rows, cols, vals

    with _threads(1):
        for c0, n, dom, rows, cols, vals in _pipelined(produce, range(done_ctx, len(ctx_idx), B), workers):
            acc.update(torch.arange(c0 * body, (c0 + n) * body, dtype=torch.int64), dom, rows, cols, vals)
            done_ctx = c0 + n
            n_chunks += 1
            bar.update(n * body)
            if _stop_after is not None and n_chunks >= _stop_after:
                _save_state(state_path, acc, done_ctx, fingerprint)
                bar.close()
                raise _Interrupted(f"stopped after {n_chunks} chunks (test hook)")
            if time.time() - last_ckpt > cfg.checkpoint_seconds and done_ctx < len(ctx_idx):
                _save_state(state_path, acc, done_ctx, fingerprint)
                last_ckpt = time.time()
    bar.close()
    pass_seconds = time.time() - t_start
    if pass_seconds > cfg.checkpoint_seconds:  # a kill during the windows/tables step resumes there
        _save_state(state_path, acc, done_ctx, fingerprint)
    t1 = time.time()
    with _threads(1):
        res = acc.results()
        meta = _finalize(run, out, source, cfg, res, ctx_idx, split, model, sae, fingerprint, progress, mlp_acts,
                         workers)
    meta["timing"] = {"pass_seconds": round(pass_seconds, 3), "finalize_seconds": round(time.time() - t1, 3)}
    atomic_write_json(out / "meta.json", meta)  # last: its presence means the statistics are complete
    state_path.unlink(missing_ok=True)
    return FeatureStats(out, run=run)


def _save_state(path: Path, acc: StatsAccumulator, done_ctx: int, fingerprint: dict) -> None:
    d = acc.state_dict()
    d["done_ctx"] = np.array(done_ctx, dtype=np.int64)
    d["fingerprint"] = np.array(json.dumps(fingerprint))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **d)


@torch.no_grad()
def _example_windows(cfg, ex_g: np.ndarray, ex_u: np.ndarray, ctx_idx: np.ndarray, split, model, sae, progress,
                     mlp_acts=None, workers: int = 1):
    """Token ids and unit activations in a window around each example token (re-running the model only on
    the contexts that hold an example).  Returns (tokens (n, W) int32 with −1 padding, acts (n, W) float32,
    centre index (n,))."""
    from tqdm.auto import tqdm

    body, n_ctx = split.body, split.n_ctx
    Wb, Wa = cfg.window_before, cfg.window_after
    W = Wb + Wa + 1
    n = len(ex_g)
    toks_out = np.full((n, W), -1, dtype=np.int32)
    acts_out = np.zeros((n, W), dtype=np.float32)
    k = ex_g // body                  # index into ctx_idx
    pos = ex_g % body + 1             # position in the context (BOS at 0)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    uniq = np.unique(ks)
    B = cfg.batch_contexts
    offs = np.arange(-Wb, Wa + 1)
    U = sae.d_sae if sae is not None else model.d_mlp
    if sae is not None:
        W_enc = sae.W_enc_DF.detach().float().contiguous()
        c_F = sae.b_enc_F.detach().float() - sae.b_dec_D.detach().float() @ W_enc
    fwd = mlp_acts or model.mlp_acts

    def windows(i: int):  # in a worker thread: one batch of contexts
        kb = uniq[i:i + B]
        lo, hi = np.searchsorted(ks, kb[0], "left"), np.searchsorted(ks, kb[-1], "right")
        sel = order[lo:hi]
        toks = split.contexts(ctx_idx[kb])
        x = fwd(torch.from_numpy(toks).to(model.device)).float().cpu()              # (b, n_ctx, D)
        local = np.searchsorted(kb, k[sel])
        p = pos[sel][:, None] + offs[None, :]                                        # (m, W)
        valid = (p >= 1) & (p < n_ctx)
        pc = np.clip(p, 1, n_ctx - 1)
        t_out = np.where(valid, toks[local[:, None], pc], -1).astype(np.int32)
        flat_row = torch.from_numpy((local[:, None] * n_ctx + pc).reshape(-1))       # token rows of x
        u = torch.from_numpy(np.repeat(ex_u[sel].astype(np.int64), W))
        xf = x.reshape(-1, x.shape[-1])
        if sae is not None:
            # only the (token, unit) pairs the windows need: a sampled matmul over their unique pairs
            key, inv = torch.unique(flat_row * U + u, return_inverse=True)
            r_, c_ = torch.div(key, U, rounding_mode="floor"), key % U
            a = torch.relu(sampled_dots(offsets(r_, xf.shape[0]), c_, c_F.index_select(0, c_), xf, W_enc))[inv]
        else:
            a = xf[flat_row, u]
        a_out = np.where(valid, a.view(len(sel), W).numpy(), 0.0).astype(np.float32)
        return sel, t_out, a_out

    steps = range(0, len(uniq), B)
    for sel, t_out, a_out in tqdm(_pipelined(windows, steps, workers), total=len(steps), desc="example windows",
                                  disable=not progress, unit="batch"):
        toks_out[sel] = t_out
        acts_out[sel] = a_out
    return toks_out, acts_out, np.full(n, Wb, dtype=np.int16)


def _finalize(run, out: Path, source: str, cfg: FeatureStatsConfig, res: dict, ctx_idx: np.ndarray, split, model,
              sae, fingerprint: dict, progress: bool, mlp_acts=None, workers: int = 1) -> dict:
    """Write examples.parquet and units.parquet; return the meta record (the caller writes meta.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    U = len(res["count"])
    K = len(DOMAINS)
    n_tok = res["n_tokens"]
    body = split.body
    iv = res["intervals"]
    I, S, Kt = cfg.n_intervals, cfg.per_interval, cfg.top_k

    # ---- examples: top-k then interval samples, sorted by unit ----------------------------------------
    top_u = np.repeat(np.arange(U), Kt)
    top_g = res["top_g"].reshape(-1)
    top_v = res["top_val"].reshape(-1)
    top_rank = np.tile(np.arange(Kt), U)
    ok = top_g >= 0
    e_u, e_g, e_v = [top_u[ok]], [top_g[ok]], [top_v[ok]]
    e_sec, e_rank = [np.full(ok.sum(), -1, np.int16)], [top_rank[ok]]
    iv_u = np.repeat(np.arange(U), I * S)
    iv_sec = np.tile(np.repeat(np.arange(I), S), U)
    iv_rank = np.tile(np.arange(S), U * I)
    iv_g = iv["g"].reshape(-1)
    ok = iv_g >= 0
    e_u.append(iv_u[ok]); e_g.append(iv_g[ok]); e_v.append(iv["val"].reshape(-1)[ok])
    e_sec.append(iv_sec[ok].astype(np.int16)); e_rank.append(iv_rank[ok])
    ex_u, ex_g, ex_v = np.concatenate(e_u), np.concatenate(e_g), np.concatenate(e_v)
    ex_sec, ex_rank = np.concatenate(e_sec), np.concatenate(e_rank)
    order = np.lexsort((ex_rank, ex_sec, ex_u))
    ex_u, ex_g, ex_v, ex_sec, ex_rank = ex_u[order], ex_g[order], ex_v[order], ex_sec[order], ex_rank[order]
    win_tok, win_act, centre = _example_windows(cfg, ex_g, ex_u, ctx_idx, split, model, sae, progress, mlp_acts,
                                                workers)
    win_act[np.arange(len(ex_g)), centre.astype(np.int64)] = ex_v  # the pass's own value at the centre
    ex_ctx = ctx_idx[ex_g // body]
    ex_pos = (ex_g % body + 1).astype(np.int16)
    ex_tok = split.ids[ex_ctx * body + ex_pos - 1].astype(np.int32) if len(ex_g) else np.zeros(0, np.int32)
    W = win_tok.shape[1]
    examples = pa.table({
        "unit": pa.array(ex_u.astype(np.int32)),
        "section": pa.array(ex_sec),                       # −1 = top activations, i ≥ 0 = interval i
        "rank": pa.array(ex_rank.astype(np.int16)),
        "act": pa.array(ex_v.astype(np.float32)),
        "token_index": pa.array(ex_g.astype(np.int64)),    # index in the token set
        "context": pa.array(ex_ctx.astype(np.int64)),      # context index in the split
        "pos": pa.array(ex_pos),
        "token": pa.array(ex_tok),
        "center": pa.array(centre),
        "tokens": pa.FixedSizeListArray.from_arrays(pa.array(win_tok.reshape(-1)), W),
        "acts": pa.FixedSizeListArray.from_arrays(pa.array(win_act.reshape(-1)), W),
    })
    # row groups by unit ranges, so one unit's examples are one row-group read
    bounds = np.searchsorted(ex_u, np.arange(0, U + cfg.row_group_units, cfg.row_group_units))
    with atomic_path(out / "examples.parquet", suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, examples.schema, compression="zstd") as w:
            for a, b in zip(bounds[:-1], bounds[1:]):
                w.write_table(examples.slice(int(a), int(b - a)), row_group_size=max(1, int(b - a)))

    # ---- per-unit table --------------------------------------------------------------------------------
    count, s, ss, mx = res["count"], res["sum"], res["sumsq"], res["max"]
    dcount, dsum, nK = res["dcount"], res["dsum"], res["domain_tokens"]
    density = count / max(n_tok, 1)
    cols: dict[str, Any] = {"unit": np.arange(U, dtype=np.int32), "density": density, "count": count,
                            "max_act": mx, "mean_act": np.where(count > 0, s / np.maximum(count, 1), 0.0),
                            "sum_act": s, "sumsq_act": ss}
    thr = run.cfg.eval.ultralow_density
    cols["dead"] = count == 0
    cols["ultralow"] = (count > 0) & (density < thr)
    mean_all = s / max(n_tok, 1)
    var_all = np.maximum(ss / max(n_tok, 1) - mean_all ** 2, 0.0)
    for k, name in enumerate(DOMAINS):
        nd = int(nK[k])
        cols[f"act_share_{name}"] = np.where(s > 0, dsum[:, k] / np.where(s > 0, s, 1), 0.0)
        cols[f"fire_share_{name}"] = np.where(count > 0, dcount[:, k] / np.maximum(count, 1), 0.0)
        cols[f"sensitivity_{name}"] = dcount[:, k] / nd if nd else np.zeros(U)
        p = nd / max(n_tok, 1)
        cov = dsum[:, k] / max(n_tok, 1) - mean_all * p
        denom = np.sqrt(var_all * p * (1 - p))
        cols[f"corr_{name}"] = np.where(denom > 0, cov / np.where(denom > 0, denom, 1), 0.0)
    cols["proxy_specificity"] = cols[f"act_share_{PROXY_DOMAIN}"]
    cols["proxy_sensitivity"] = cols[f"sensitivity_{PROXY_DOMAIN}"]
    cols["proxy_corr"] = cols[f"corr_{PROXY_DOMAIN}"]
    share = np.stack([cols[f"act_share_{d}"] for d in DOMAINS], 1)
    cols["top_domain"] = np.where(count > 0, np.array(DOMAINS, dtype=object)[share.argmax(1)], "")

    # top tokens: the distinct centre tokens of the top examples, most frequent first
    strs = run.tokenizer.token_strings()
    is_top = ex_sec == -1
    top_tokens = [""] * U
    tu, tt = ex_u[is_top], ex_tok[is_top]
    starts = np.searchsorted(tu, np.arange(U + 1))
    for u in np.nonzero(count)[0]:
        ids, cnt = np.unique(tt[starts[u]:starts[u + 1]], return_counts=True)
        top = ids[np.argsort(-cnt, kind="stable")][:5]
        top_tokens[u] = json.dumps([strs[int(t)] for t in top], ensure_ascii=False)
    cols["top_tokens"] = np.array(top_tokens, dtype=object)

    # logit effects and building neurons
    tokens_for_scale = torch.from_numpy(split.contexts(ctx_idx[:min(len(ctx_idx), 16)])).to(model.device)
    scale = final_ln_scale(model, tokens_for_scale)
    W_out, W_U, ln_w = model.W_out.detach().cpu(), model.W_U.detach().cpu(), model.ln_final_weight
    ln_w = None if ln_w is None else ln_w.detach().cpu()
    nl = min(cfg.n_logits, W_U.shape[1])
    top_ids = np.zeros((U, nl), np.int32); top_vals = np.zeros((U, nl), np.float32)
    bot_ids = np.zeros((U, nl), np.int32); bot_vals = np.zeros((U, nl), np.float32)
    dirs = sae.W_dec_FD.detach().cpu().float() if sae is not None else torch.eye(U)
    step = max(1, (1 << 24) // max(W_U.shape[1], 1))
    for a in range(0, U, step):
        lg = logit_effects(dirs[a:a + step], W_out, W_U, ln_w, scale)
        t = lg.topk(nl, dim=-1)
        bt = (-lg).topk(nl, dim=-1)
        top_ids[a:a + step], top_vals[a:a + step] = t.indices.numpy(), t.values.numpy()
        bot_ids[a:a + step], bot_vals[a:a + step] = bt.indices.numpy(), -bt.values.numpy()
    nn_ = min(cfg.n_neurons, dirs.shape[1])
    if sae is not None:
        nt = dirs.abs().topk(nn_, dim=-1).indices
        neuron_ids = nt.numpy().astype(np.int32)
        neuron_w = dirs.gather(1, nt).numpy().astype(np.float32)
    else:
        neuron_ids = np.arange(U, dtype=np.int32)[:, None]
        neuron_w = np.ones((U, 1), np.float32)

    table = pa.table({
        **{k: pa.array(v) for k, v in cols.items()},
        "logit_top_ids": pa.FixedSizeListArray.from_arrays(pa.array(top_ids.reshape(-1)), nl),
        "logit_top_vals": pa.FixedSizeListArray.from_arrays(pa.array(top_vals.reshape(-1)), nl),
        "logit_bottom_ids": pa.FixedSizeListArray.from_arrays(pa.array(bot_ids.reshape(-1)), nl),
        "logit_bottom_vals": pa.FixedSizeListArray.from_arrays(pa.array(bot_vals.reshape(-1)), nl),
        "neuron_ids": pa.FixedSizeListArray.from_arrays(pa.array(neuron_ids.reshape(-1)), neuron_ids.shape[1]),
        "neuron_weights": pa.FixedSizeListArray.from_arrays(pa.array(neuron_w.reshape(-1)), neuron_w.shape[1]),
        "hist": pa.FixedSizeListArray.from_arrays(pa.array(res["hist"].reshape(-1).astype(np.int32)),
                                                  res["hist"].shape[1] * K),
        "interval_lo": pa.FixedSizeListArray.from_arrays(pa.array(iv["lo"].reshape(-1)), I),
        "interval_hi": pa.FixedSizeListArray.from_arrays(pa.array(iv["hi"].reshape(-1)), I),
        "interval_count": pa.FixedSizeListArray.from_arrays(pa.array(iv["count"].reshape(-1)), I),
        "domain_count": pa.FixedSizeListArray.from_arrays(pa.array(dcount.reshape(-1)), K),
        "domain_sum": pa.FixedSizeListArray.from_arrays(pa.array(dsum.reshape(-1)), K),
    })
    with atomic_path(out / "units.parquet", suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {
        "kind": "feature" if sae is not None else "neuron", "source": source, "n_units": U,
        "n_tokens": int(n_tok), "domains": DOMAINS, "proxy_domain": PROXY_DOMAIN,
        "domain_tokens": {d: int(nK[k]) for k, d in enumerate(DOMAINS)},
        "split": cfg.split, "contexts": int(len(ctx_idx)), "n_ctx": split.n_ctx,
        "ultralow_threshold": thr, "log_edges": cfg.log_edges().tolist(), "ln_scale": scale,
        "config": cfg.to_dict(), "fingerprint": fingerprint, "row_group_units": cfg.row_group_units,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# =====================================================================================================
# loading
# =====================================================================================================

@dataclass
class Example:
    """One example token of a unit, with its window: ``tokens[center]`` is the token, ``acts[i]`` the unit's
    activation on ``tokens[i]`` (windows are clipped at the context's ends)."""

    section: int            # −1: top activations; i ≥ 0: interval i
    rank: int
    act: float
    context: int
    pos: int
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    center: int


@dataclass
class Histogram:
    """Activation histogram of one unit: ``counts[b, k]`` firing tokens in log bin b of domain k; bin 0 is
    underflow (below ``edges[0]``), the last is overflow; ``zero`` tokens where the unit does not fire, so
    ``zero + counts.sum() == n_tokens``."""

    edges: np.ndarray       # (G+1,) finite log-spaced edges
    counts: np.ndarray      # (G+2, K)
    zero: int
    domains: list[str]

    @property
    def total(self) -> int:
        return int(self.zero + self.counts.sum())


@dataclass
class UnitStats:
    """Everything a feature (or neuron) page shows, as plain data."""

    kind: str               # "feature" | "neuron"
    source: str             # "A/1" | "A"
    unit: int
    row: dict               # the units.parquet row (density, max_act, proxy scores, …)
    histogram: Histogram
    top: list[Example]
    intervals: list[dict]   # per interval: lo, hi, count, examples
    logits_top: list[tuple[str, float]]
    logits_bottom: list[tuple[str, float]]
    neurons: list[tuple[int, float]]
    n_tokens: int
    proxy_domain: str
    domains: list[str]
    domain_tokens: dict[str, int]

    @property
    def label(self) -> str:
        return f"{self.source} feature {self.unit}" if self.kind == "feature" else f"{self.source} neuron {self.unit}"


class FeatureStats:
    """The statistics of one dictionary's features (or one transformer's neurons), loaded from parquet.

    ``table`` is a DataFrame with one row per unit (list columns left out: use :meth:`unit`); ``unit(u)``
    returns a :class:`UnitStats` in milliseconds (one parquet row group)."""

    def __init__(self, directory: str | Path, run=None):
        import pyarrow.parquet as pq

        self.dir = Path(directory)
        meta = read_json(self.dir / "meta.json")
        if meta is None:
            raise FileNotFoundError(f"no statistics in {self.dir} (meta.json missing): compute them with "
                                    f"monosemantic.features.compute_feature_stats(run, dict_id) or "
                                    f"compute_neuron_stats(run, transformer)")
        self.meta = meta
        self.run = run
        self.kind, self.source = meta["kind"], meta["source"]
        self.n_units, self.n_tokens = int(meta["n_units"]), int(meta["n_tokens"])
        self.domains, self.proxy_domain = list(meta["domains"]), meta["proxy_domain"]
        self.log_edges = np.asarray(meta["log_edges"])
        self._units = pq.read_table(self.dir / "units.parquet")
        scalar = [f.name for f in self._units.schema if not str(f.type).startswith("fixed_size_list")]
        self.table = self._units.select(scalar).to_pandas().set_index("unit")
        self.table["top_tokens"] = self.table["top_tokens"].map(lambda s: json.loads(s) if s else [])
        self._examples = pq.ParquetFile(self.dir / "examples.parquet")
        self._rgu = int(meta["row_group_units"])
        self._lists = {name: self._units.column(name).combine_chunks() for name in self._units.column_names
                       if name not in scalar}
        self._token_strs: list[str] | None = None

    @classmethod
    def load(cls, run, source: str) -> "FeatureStats":
        """``run`` is a ``Run`` or a run directory; ``source`` a dictionary id ("A/1") or transformer ("A")."""
        if isinstance(run, (str, Path)):
            from .runs import Run

            run = Run.open(run)
        return _load_cached(run.root.resolve(), source, run)

    @classmethod
    def exists(cls, run, source: str) -> bool:
        return (stats_dir(run, source) / "meta.json").exists()

    # ---- token strings ----------------------------------------------------------------------------------
    def token_strings(self) -> list[str]:
        if self._token_strs is None:
            if self.run is None:
                raise ConfigError("these statistics were opened without their run; open them with "
                                  "FeatureStats.load(run, source) to get token strings")
            self._token_strs = self.run.tokenizer.token_strings()
        return self._token_strs

    # ---- per unit -----------------------------------------------------------------------------------------
    def _check(self, u: int) -> int:
        u = int(u)
        if not 0 <= u < self.n_units:
            raise IndexError(f"{self.kind} {u} out of range: {self.source} has {self.n_units} {self.kind}s "
                             f"(0 … {self.n_units - 1})")
        return u

    def _list(self, name: str, u: int) -> np.ndarray:
        arr = self._lists[name]
        n = arr.type.list_size
        return np.asarray(arr.values.slice(u * n, n))

    @lru_cache(maxsize=16)
    def _row_group(self, i: int):
        return self._examples.read_row_group(i)

    def examples(self, u: int):
        """The unit's examples as a DataFrame (section −1 = top activations, then intervals 0 …)."""
        import pyarrow.compute as pc

        u = self._check(u)
        t = self._row_group(u // self._rgu) if u // self._rgu < self._examples.num_row_groups else None
        if t is None:
            import pandas as pd

            return pd.DataFrame(columns=[f.name for f in self._examples.schema_arrow])
        t = t.filter(pc.equal(t["unit"], u))
        return t.to_pandas()

    def histogram(self, u: int) -> Histogram:
        u = self._check(u)
        K = len(self.domains)
        counts = self._list("hist", u).reshape(-1, K).astype(np.int64)
        return Histogram(edges=self.log_edges, counts=counts, zero=int(self.n_tokens - counts.sum()),
                         domains=self.domains)

    def unit(self, u: int) -> UnitStats:
        u = self._check(u)
        strs = self.token_strings()
        row = self.table.loc[u].to_dict()
        row["unit"] = u
        ex = self.examples(u)
        items = []
        for r in ex.itertuples(index=False):
            ids = [int(t) for t in r.tokens]
            keep = [i for i, t in enumerate(ids) if t >= 0]
            c = int(r.center) - sum(1 for i in range(int(r.center)) if ids[i] < 0)
            items.append(Example(section=int(r.section), rank=int(r.rank), act=float(r.act), context=int(r.context),
                                 pos=int(r.pos), token_ids=[ids[i] for i in keep], tokens=[strs[ids[i]] for i in keep],
                                 acts=[float(r.acts[i]) for i in keep], center=c))
        lo, hi, cnt = self._list("interval_lo", u), self._list("interval_hi", u), self._list("interval_count", u)
        intervals = [{"index": i, "lo": float(lo[i]), "hi": float(hi[i]), "count": int(cnt[i]),
                      "examples": [e for e in items if e.section == i]} for i in range(len(lo))]
        lt = [(strs[int(t)], float(v)) for t, v in zip(self._list("logit_top_ids", u), self._list("logit_top_vals", u))]
        lb = [(strs[int(t)], float(v)) for t, v in zip(self._list("logit_bottom_ids", u),
                                                        self._list("logit_bottom_vals", u))]
        neurons = [(int(i), float(w)) for i, w in zip(self._list("neuron_ids", u), self._list("neuron_weights", u))]
        return UnitStats(kind=self.kind, source=self.source, unit=u, row=row, histogram=self.histogram(u),
                         top=[e for e in items if e.section == -1], intervals=intervals, logits_top=lt,
                         logits_bottom=lb, neurons=neurons, n_tokens=self.n_tokens, proxy_domain=self.proxy_domain,
                         domains=self.domains, domain_tokens=dict(self.meta["domain_tokens"]))

    # ---- tables ---------------------------------------------------------------------------------------------
    def domain_scores(self, domain: str | None = None):
        """Per-unit specificity (activation share), firing share, sensitivity and correlation for ``domain``
        (default: the exact proxy)."""
        d = domain or self.proxy_domain
        if d not in self.domains:
            raise ConfigError(f"unknown domain {d!r}; the corpus domains are {self.domains}")
        t = self.table
        return t[[f"act_share_{d}", f"fire_share_{d}", f"sensitivity_{d}", f"corr_{d}", "density"]].rename(
            columns=lambda c: c.replace(f"_{d}", ""))

    def find(self, domain: str | None = None, by: str = "corr", min_count: int = 1, n: int = 10):
        """Units ranked for a domain: ``by`` one of corr, act_share, sensitivity, fire_share."""
        s = self.domain_scores(domain)
        if by not in s.columns:
            raise ConfigError(f"unknown ranking {by!r}; choose one of {list(s.columns)}")
        s = s[self.table["count"] >= min_count]
        return s.sort_values(by, ascending=False).head(n)

    def alive(self):
        return self.table[~self.table["dead"]]


@lru_cache(maxsize=32)
def _load_cached_inner(root: Path, source: str, mtime: float, run) -> FeatureStats:
    return FeatureStats(stats_dir(run, source), run=run)


def _load_cached(root: Path, source: str, run) -> FeatureStats:
    d = stats_dir(run, source)
    meta = d / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(
            f"no statistics for {source} in {run.root}: compute them with "
            + (f"monosemantic.features.compute_feature_stats(run, {source!r})" if "/" in source else
               f"monosemantic.features.compute_neuron_stats(run, {source!r})"))
    return _load_cached_inner(root, source, meta.stat().st_mtime, run)


# =====================================================================================================
# feature ↔ neuron correlations (targeted: a few features over part of the token set)
# =====================================================================================================

@torch.no_grad()
def correlated_neurons(run, dict_id: str, features: Iterable[int], n_tokens: int = 200_000, top: int = 5,
                       split: str | None = None, progress: bool = False):
    """Pearson correlation of each given feature with every MLP neuron over the first ``n_tokens`` of the
    statistics token set; returns a DataFrame (feature, neuron, corr) of the ``top`` neurons per feature."""
    import pandas as pd
    from tqdm.auto import tqdm

    feats = [int(f) for f in features]
    cfg = _cfg_from(run, None)
    sp = run.split(split or cfg.split)
    model = run.model(dict_id.split("/")[0])
    sae = run.dictionary(dict_id)
    if any(not 0 <= f < sae.d_sae for f in feats):
        raise IndexError(f"features {feats} out of range for {dict_id} (0 … {sae.d_sae - 1})")
    ctx = token_set_contexts(sp, min(n_tokens, cfg.n_tokens))
    W = sae.W_enc_DF.detach()[:, feats]
    c = sae.b_enc_F.detach()[feats] - sae.b_dec_D.detach() @ W
    D, k = model.d_mlp, len(feats)
    n = 0
    sf = torch.zeros(k, dtype=torch.float64); sff = torch.zeros(k, dtype=torch.float64)
    sx = torch.zeros(D, dtype=torch.float64); sxx = torch.zeros(D, dtype=torch.float64)
    sfx = torch.zeros(k, D, dtype=torch.float64)
    fwd = mlp_acts_function(model, torch.from_numpy(sp.contexts(ctx[:8])))
    B = cfg.batch_contexts

    def produce(i: int):  # in a worker thread: the chunk's neurons and the chosen features
        x = fwd(torch.from_numpy(sp.contexts(ctx[i:i + B])))[:, 1:].reshape(-1, D).float()
        f = torch.relu(x @ W + c).double()
        xd = x.double()
        return x.shape[0], f.sum(0), (f * f).sum(0), xd.sum(0), (xd * xd).sum(0), f.T @ xd

    steps = range(0, len(ctx), B)
    with _threads(1):
        for m, a, b, cx, d, e in tqdm(_pipelined(produce, steps, _workers(cfg, fwd, model)), total=len(steps),
                                      disable=not progress, desc="correlations"):
            n += m
            sf += a; sff += b; sx += cx; sxx += d; sfx += e
    cov = sfx / n - (sf / n)[:, None] * (sx / n)[None, :]
    vf = (sff / n - (sf / n) ** 2).clamp_min(0); vx = (sxx / n - (sx / n) ** 2).clamp_min(0)
    den = (vf[:, None] * vx[None, :]).sqrt()
    corr = torch.where(den > 0, cov / den.clamp_min(1e-30), torch.zeros_like(cov))
    rows = []
    for a, fid in enumerate(feats):
        t = corr[a].topk(min(top, D))
        rows += [{"feature": fid, "neuron": int(j), "corr": float(v)} for v, j in zip(t.values, t.indices)]
    return pd.DataFrame(rows)
