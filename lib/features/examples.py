"""The examples table: top activations and interval samples with their surrounding tokens."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path

from ..sparse import SparseEncoder, linear_encoder, offsets, sampled_dots
from .config import FeatureStatsConfig
from .threads import pipelined

__all__ = ["PassCodes", "example_entries", "example_windows", "write_examples"]


class PassCodes:
    """Every (token, unit, activation) a statistics pass encoded, kept for its example windows.

    A TopK feature's activation depends on the whole token (k of F win), so without these the windows encode every
    window token again: most of the pass's tokens, 154 of features:A/2's 339 s (1 thread) on the default run.  The
    pass hands each chunk here in token order (``add``); ``lookup`` answers (token, unit) pairs by a binary search
    in the ascending keys token · U + unit.  Entries past ``max_bytes`` (12 bytes each: the paper preset's 10M
    tokens × 131k features would not fit) make the pass drop the cache, and the windows encode as before."""

    def __init__(self, n_units: int, max_bytes: int = 1 << 30):
        self.U, self.max_entries = int(n_units), max_bytes // 12
        self.n, self._chunks = 0, []
        self.full = False

    @classmethod
    def for_pass(cls, sae) -> "PassCodes | None":
        """An empty cache for a pass of ``sae`` when its windows need whole tokens encoded (a TopK-like encoder);
        None for neurons and for ReLU-linear encoders, whose windows take sampled dots."""
        return cls(sae.d_sae) if sae is not None and not linear_encoder(sae) else None

    def add(self, g0: int, rows_E: torch.Tensor, cols_E: torch.Tensor, vals_E: torch.Tensor) -> None:
        """One chunk's entries, sorted by row then column; its rows are tokens g0, g0 + 1, … of the set."""
        if self.full:
            return
        self.n += int(cols_E.numel())
        if self.n > self.max_entries:
            self.full, self._chunks = True, []
            return
        key = (rows_E.to(torch.int64) + int(g0)) * self.U + cols_E.to(torch.int64)
        self._chunks.append((int(g0), key, vals_E.to(torch.float32).clone()))

    def finish(self) -> "PassCodes | None":
        """The cache, ready for ``lookup``; None when it overflowed."""
        if self.full:
            return None
        self._chunks.sort(key=lambda c: c[0])
        self.key = torch.cat([c[1] for c in self._chunks]) if self._chunks else torch.zeros(0, dtype=torch.int64)
        self.val = torch.cat([c[2] for c in self._chunks]) if self._chunks else torch.zeros(0)
        self._chunks = []
        if self.key.numel() > 1 and not bool((self.key[1:] > self.key[:-1]).all()):
            raise ValueError("PassCodes: chunks overlap or are not sorted by token, then unit")
        return self

    def lookup(self, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The activation of unit ``u`` on token ``g`` of the set, for each pair (0 where it did not fire)."""
        want = g.to(torch.int64) * self.U + u.to(torch.int64)
        a = torch.zeros(want.numel(), dtype=torch.float32)
        if self.key.numel():
            at = torch.searchsorted(self.key, want).clamp_(max=self.key.numel() - 1)
            a = torch.where(self.key.index_select(0, at) == want, self.val.index_select(0, at), a)
        return a


def example_windows(cfg, ex_g: np.ndarray, ex_u: np.ndarray, ctx_idx: np.ndarray, split, model, sae, progress,
                     mlp_acts=None, workers: int = 1, codes: PassCodes | None = None):
    """Token ids and unit activations in a window around each example token (re-running the model only on
    the contexts that hold an example; ``codes``, the pass's own encodings of the token set, when it kept them).
    Returns (tokens (n, W) int32 with −1 padding, acts (n, W) float32, centre index (n,))."""
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
    linear = sae is not None and linear_encoder(sae)   # f = ReLU(x W + c) per unit: sampled dots suffice
    if codes is not None:
        linear = False
    elif linear:
        W_enc = sae.W_enc_DF.detach().float().contiguous()
        c_F = sae.b_enc_F.detach().float() - sae.input_offset_D.detach().float() @ W_enc
    elif sae is not None:
        encoder = SparseEncoder(sae, cfg.bf16)
    fwd = mlp_acts or model.mlp_acts

    def windows(i: int):  # in a worker thread: one batch of contexts
        kb = uniq[i:i + B]
        lo, hi = np.searchsorted(ks, kb[0], "left"), np.searchsorted(ks, kb[-1], "right")
        sel = order[lo:hi]
        toks = split.contexts(ctx_idx[kb])
        local = np.searchsorted(kb, k[sel])
        p = pos[sel][:, None] + offs[None, :]                                        # (m, W)
        valid = (p >= 1) & (p < n_ctx)
        pc = np.clip(p, 1, n_ctx - 1)
        t_out = np.where(valid, toks[local[:, None], pc], -1).astype(np.int32)
        u = torch.from_numpy(np.repeat(ex_u[sel].astype(np.int64), W))
        if codes is not None:   # the pass's own activations: token pc of context kb[local] is set token kb·body + pc − 1
            g = torch.from_numpy((kb[local][:, None] * body + pc - 1).reshape(-1))
            a_out = np.where(valid, codes.lookup(g, u).view(len(sel), W).numpy(), 0.0).astype(np.float32)
            return sel, t_out, a_out
        x = fwd(torch.from_numpy(toks).to(model.device)).float().cpu()              # (b, n_ctx, D)
        flat_row = torch.from_numpy((local[:, None] * n_ctx + pc).reshape(-1))       # token rows of x
        xf = x.reshape(-1, x.shape[-1])
        if linear:
            # only the (token, unit) pairs the windows need: a sampled matmul over their unique pairs
            key, inv = torch.unique(flat_row * U + u, return_inverse=True)
            r_, c_ = torch.div(key, U, rounding_mode="floor"), key % U
            a = torch.relu(sampled_dots(offsets(r_, xf.shape[0]), c_, c_F.index_select(0, c_), xf, W_enc))[inv]
        elif sae is not None:
            # a unit's activation depends on the whole token (TopK keeps k of F): encode each window token once,
            # sparsely (the pass's own encoder: TopK's exact bf16 selection), then look each (token, unit) pair up
            rows, inv = torch.unique(flat_row, return_inverse=True)
            r_, c_, v_ = encoder(xf.index_select(0, rows), inplace=True)   # sorted by row, then column
            key, want = r_ * U + c_, inv * U + u
            a = torch.zeros(len(want), dtype=torch.float32)
            if len(key):
                at = torch.searchsorted(key, want).clamp_(max=len(key) - 1)
                a = torch.where(key.index_select(0, at) == want, v_.index_select(0, at).float(), a)
        else:
            a = xf[flat_row, u]
        a_out = np.where(valid, a.view(len(sel), W).numpy(), 0.0).astype(np.float32)
        return sel, t_out, a_out

    steps = range(0, len(uniq), B)
    for sel, t_out, a_out in tqdm(pipelined(windows, steps, workers), total=len(steps), desc="example windows",
                                  disable=not progress, unit="batch"):
        toks_out[sel] = t_out
        acts_out[sel] = a_out
    return toks_out, acts_out, np.full(n, Wb, dtype=np.int16)


def example_entries(res: dict, cfg: FeatureStatsConfig) -> dict[str, np.ndarray]:
    """The examples the accumulator kept — top-k, then each interval's samples — as flat arrays ``unit, g``
    (token index in the set), ``act, section`` (−1 top, i interval i) and ``rank``, sorted by unit, section,
    rank; empty slots dropped."""
    U = len(res["count"])
    I, S, Kt = cfg.n_intervals, cfg.per_interval, cfg.top_k
    intervals = res["intervals"]
    top_g = res["top_g"].reshape(-1)
    interval_g = intervals["g"].reshape(-1)
    parts = {
        "unit": (np.repeat(np.arange(U), Kt), np.repeat(np.arange(U), I * S)),
        "g": (top_g, interval_g),
        "act": (res["top_val"].reshape(-1), intervals["val"].reshape(-1)),
        "section": (np.full(U * Kt, -1, np.int16), np.tile(np.repeat(np.arange(I), S), U).astype(np.int16)),
        "rank": (np.tile(np.arange(Kt), U), np.tile(np.arange(S), U * I)),
    }
    kept = (top_g >= 0, interval_g >= 0)
    ex = {k: np.concatenate([a[kept[0]], b[kept[1]]]) for k, (a, b) in parts.items()}
    order = np.lexsort((ex["rank"], ex["section"], ex["unit"]))
    return {k: v[order] for k, v in ex.items()}


def write_examples(out: Path, cfg: FeatureStatsConfig, n_units: int, ex: dict[str, np.ndarray],
                   ctx_idx: np.ndarray, split, model, sae, progress: bool, mlp_acts=None, workers: int = 1,
                   codes: PassCodes | None = None) -> None:
    """Write ``examples.parquet`` (one row per example with its window, row groups of ``row_group_units``
    units)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    body = split.body
    win_tok, win_act, centre = example_windows(cfg, ex["g"], ex["unit"], ctx_idx, split, model, sae, progress,
                                               mlp_acts, workers, codes)
    win_act[np.arange(len(ex["g"])), centre.astype(np.int64)] = ex["act"]  # the pass's own value at the centre
    ex_ctx = ctx_idx[ex["g"] // body]
    ex_pos = (ex["g"] % body + 1).astype(np.int16)
    ex_tok = split.ids[ex_ctx * body + ex_pos - 1].astype(np.int32) if len(ex["g"]) else np.zeros(0, np.int32)
    W = win_tok.shape[1]
    table = pa.table({
        "unit": pa.array(ex["unit"].astype(np.int32)),
        "section": pa.array(ex["section"]),                 # −1 = top activations, i ≥ 0 = interval i
        "rank": pa.array(ex["rank"].astype(np.int16)),
        "act": pa.array(ex["act"].astype(np.float32)),
        "token_index": pa.array(ex["g"].astype(np.int64)),  # index in the token set
        "context": pa.array(ex_ctx.astype(np.int64)),       # context index in the split
        "pos": pa.array(ex_pos),
        "token": pa.array(ex_tok),
        "center": pa.array(centre),
        "tokens": pa.FixedSizeListArray.from_arrays(pa.array(win_tok.reshape(-1)), W),
        "acts": pa.FixedSizeListArray.from_arrays(pa.array(win_act.reshape(-1)), W),
    })
    # row groups by unit ranges, so one unit's examples are one row-group read
    bounds = np.searchsorted(ex["unit"], np.arange(0, n_units + cfg.row_group_units, cfg.row_group_units))
    with atomic_path(out / "examples.parquet", suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd") as w:
            for a, b in zip(bounds[:-1], bounds[1:]):
                w.write_table(table.slice(int(a), int(b - a)), row_group_size=max(1, int(b - a)))
