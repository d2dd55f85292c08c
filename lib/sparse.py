"""Sparse encoding: the strictly positive entries of a dictionary's encoder without a dense fp32 (N, F) matrix.

The one home of the mechanism every consumer shares — training (``fast.py``), the statistics pass
(``features``), dead/ultralow counts (``metrics.store_density``), universality and feature splitting
(``encode_sparse``):

- capability: ``bf16_available()`` (the CPU has native bf16 dot products) and ``bf16_default(d_sae)`` (whether the
  bf16 filter is used when the caller does not say; ``MONOSEMANTIC_FAST_BF16=0/1`` forces it);
- active entries of x̄ W + b: ``active_fp32`` (a dense fp32 product in row chunks, each chunk's positive entries
  compacted while it is in cache) and ``candidates_bf16`` (a bf16 product with a proven error margin whose
  positive entries are a superset of the fp32 ones: see its docstring); ``sampled_dots`` recomputes chosen
  entries in fp32;
- compaction and CSR helpers: ``flat_nonzero``, ``flat_positive_bf16``, ``offsets``, ``csr_tensor``;
- ``SparseEncoder`` (entries ``(rows, cols, vals)`` of ``sae.encode``), ``positive_entries`` (of a dense matrix,
  the neurons), ``encode_sparse`` (a scipy CSR matrix);
- ``TokenMass``: each unit's activation mass per token id, streamed from those entries, and the one definition
  of a unit's *top tokens* (used by the statistics tables and by feature splitting).

The bf16 filter is exact: candidates are recomputed in fp32 and only strictly positive ones kept, so both modes
give the same entries, with fp32 values.  Dictionary activations are non-negative for every registered kind, so
"active" means strictly positive throughout.

Work buffers (``scratch``) are kept per thread between calls: fresh multi-MB allocations cost page faults on
every training step.
"""
from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError

__all__ = ["bf16_available", "bf16_default", "flat_nonzero", "flat_positive_bf16", "offsets", "csr_tensor",
           "sampled_dots", "scratch", "chunk_rows", "active_fp32", "bf16_operand", "bf16_operand_rows",
           "candidates_bf16", "topk_entries", "batch_topk_entries", "topk_encoder_k", "TOPK_SLACK", "linear_encoder",
           "threshold_encoder", "THRESHOLD_SLACK", "SparseEncoder", "positive_entries", "encode_sparse", "FAST_MIN_FEATURES",
           "TokenMass", "TOP_TOKEN_MIN_COUNT"]

U_BF16 = 2.0 ** -8           # unit roundoff of bf16 (8 significant bits, round to nearest)
BIAS_SLACK = 2.0 ** -10      # relative slack on the bias row (covers u^2 and the fp32 accumulation on it)
CHUNK_ELEMS = 1 << 23        # entries of pre per row chunk (32 MiB fp32): full-speed GEMMs, filter mostly from cache


# ---- capability ---------------------------------------------------------------------------------------------

_BF16_HW: bool | None = None


def bf16_available() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); probed once."""
    global _BF16_HW
    if _BF16_HW is None:
        ok = False
        try:
            ok = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except Exception:  # older/newer torch without the probes
            try:
                ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and \
                    torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
            except Exception:
                ok = False
        _BF16_HW = ok
    return _BF16_HW


_BF16_MIN_F = 1024  # below this the fp32 recompute of the candidates costs more than the bf16 matmul saves


def bf16_default(d_sae: int | None = None) -> bool:
    """Whether to use the bf16 filter when the caller does not say: the hardware has it and F ≥ 1024.  The
    environment variable ``MONOSEMANTIC_FAST_BF16=0/1`` forces it off/on."""
    env = os.environ.get("MONOSEMANTIC_FAST_BF16", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return bf16_available() and (d_sae is None or d_sae >= _BF16_MIN_F)


# ---- compaction and CSR -----------------------------------------------------------------------------------------

def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Ascending flat indices of the True entries of a contiguous bool tensor.

    Looks at 8 bools per int64 word first, so the expensive compaction runs only over the (few) non-zero words.
    """
    flat = mask.reshape(-1)
    n = flat.numel()
    if n == 0 or n % 8:
        return flat.nonzero().view(-1)
    words = flat.view(torch.int64)
    w = words.nonzero().view(-1)
    if w.numel() == 0:
        return w
    sub = words.index_select(0, w).view(torch.uint8).view(-1, 8).nonzero()
    return w.index_select(0, sub[:, 0]).mul_(8).add_(sub[:, 1])


def flat_positive_bf16(out: torch.Tensor) -> torch.Tensor:
    """Ascending flat indices of the entries > 0 of a contiguous bf16 tensor, which it overwrites.

    bf16 > 0 ⇔ its int16 bit pattern > 0 (sign bit clear, not +0).  Clamping the int16 view at 0 (one vectorised
    in-place pass) zeroes everything else, then the non-zero int64 words (4 entries each) are expanded.  A NaN
    with the sign bit clear also passes (the fp32 recompute drops it).
    """
    v = out.view(torch.int16).clamp_min_(0).reshape(-1)
    if v.numel() % 4:
        return v.nonzero().view(-1)
    words = v.view(torch.int64)
    w = words.nonzero().view(-1)
    if w.numel() == 0:
        return w
    sub = words.index_select(0, w).view(torch.int16).view(-1, 4).nonzero()
    return w.index_select(0, sub[:, 0]).mul_(4).add_(sub[:, 1])


def batch_topk_indices(acts_BF: torch.Tensor, n: int) -> torch.Tensor:
    """Flat indices (unsorted) of the n largest entries of a (B, F) tensor, BatchTopK's selection: the same set as
    ``acts_BF.flatten().topk(n).indices`` (ties aside), ~10× sooner at B = 4096, F ≥ 4096 (1.1 → 0.12 s).

    A full top-n over B·F entries is one slow partial sort.  Instead: each row's top m = 2⌈n/B⌉ are candidates;
    the n-th largest candidate t is ≤ the true n-th largest (candidates are a subset), so every entry of the true
    top n is ≥ t, and the top n of the entries ≥ t is exact whatever the rows' skew.  Falls back to the full sort
    when t ≤ 0 (fewer than n positive candidates: the tail is zeros, chosen arbitrarily either way).
    """
    B, F = acts_BF.shape
    flat = acts_BF.reshape(-1)
    n = min(int(n), flat.numel())
    m = min(F, 2 * -(-n // max(B, 1)))
    if 0 < n and m < F:
        cand_vals = acts_BF.topk(m, dim=1, sorted=False).values.reshape(-1)
        t = cand_vals.kthvalue(cand_vals.numel() - n + 1).values
        if t > 0:
            cand = flat_nonzero((acts_BF >= t).contiguous())
            return cand.index_select(0, flat.index_select(0, cand).topk(n, sorted=False).indices)
    return flat.topk(n, sorted=False).indices


def offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Row pointer (n+1,) of sorted bucket ids ``keys``."""
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    if keys.numel():
        torch.cumsum(torch.bincount(keys, minlength=n), 0, out=ptr[1:])
    return ptr


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` without the invariant check (the callers build valid patterns) or the beta
    warning."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def sampled_dots(ptr: torch.Tensor, idx: torch.Tensor, init: torch.Tensor, A_MK: torch.Tensor,
                 B_KN: torch.Tensor) -> torch.Tensor:
    """Values of ``A_MK @ B_KN + init`` on the CSR pattern (``ptr``, ``idx``) only, in pattern order, fp32."""
    pattern = csr_tensor(ptr, idx, init, (A_MK.shape[0], B_KN.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.sampled_addmm(pattern, A_MK, B_KN).values()


# ---- work buffers ---------------------------------------------------------------------------------------------

_SCRATCH: dict = {}


def scratch(name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A reused work buffer, one per thread and name (its contents are garbage between calls).

    Always a normal tensor, even when first asked for under ``torch.inference_mode``: a buffer born there is an
    inference tensor, and the next caller outside it (training after an analysis, in one notebook) could not write
    into it ("Inplace update to inference tensor outside InferenceMode")."""
    key = (name, threading.get_ident())
    n = math.prod(shape)
    t = _SCRATCH.get(key)
    if t is None or t.dtype != dtype or t.numel() < n or t.is_inference():
        _SCRATCH.pop(key, None)
        with torch.inference_mode(False):
            t = _SCRATCH[key] = torch.empty(n, dtype=dtype)
    return t[:n].view(shape)


def chunk_rows(B: int, F: int) -> int:
    """Rows per chunk of a (B, F) product: ``CHUNK_ELEMS`` entries, a multiple of 8 rows (so r·F is divisible by
    8 and the word-wise compaction applies to every chunk but maybe the last)."""
    r = max(8, CHUNK_ELEMS // max(F, 1))
    r -= r % 8
    return max(8, min(r, B))


# ---- active entries of x̄ W + b ---------------------------------------------------------------------------------

def active_fp32(xbar_ND: torch.Tensor, W_DF: torch.Tensor, b_F: torch.Tensor, above: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices, values) of the entries of xbar @ W + b above ``above`` (strictly; default: the positive
    ones), computed in row chunks."""
    N, F = xbar_ND.shape[0], W_DF.shape[1]
    R = chunk_rows(N, F)
    buf = scratch("pre32", (R, F), torch.float32)
    idx, vals = [], []
    for i in range(0, N, R):
        n = min(R, N - i)
        pre = torch.addmm(b_F, xbar_ND[i:i + n], W_DF, out=buf[:n])
        fl = flat_nonzero(pre > above)
        vals.append(pre.view(-1).index_select(0, fl))
        idx.append(fl.add_(i * F))
    if not idx:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    return torch.cat(idx), torch.cat(vals)


def bf16_operand_rows(D: int) -> int:
    """Rows K of the filter's operands: D, two margin rows, two bias rows, padded to a multiple of 16."""
    return (D + 4 + 15) // 16 * 16


def bf16_operand(W_DF: torch.Tensor, b_F: torch.Tensor, out: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The right-hand operand (K, F) bf16 of the filter's product (see ``candidates_bf16``) and Σ‖W_:j‖², which
    is NaN/inf iff W holds a NaN/inf.  Built once per weight matrix; ``out`` a (K, F) bf16 buffer to fill."""
    D, F = W_DF.shape
    Kp = bf16_operand_rows(D)
    up = 1.0 + 4 * U_BF16
    Wa = torch.empty(Kp, F, dtype=torch.bfloat16) if out is None else out
    n2 = torch.zeros(F, dtype=torch.float32)
    nlo2 = torch.zeros(F, dtype=torch.float32)
    for i in range(0, D, 128):  # bf16 copy and the two squared column norms in row blocks (no D×F temporary)
        blk = W_DF[i:i + 128]
        r = blk.shape[0]
        Wa[i:i + r] = blk
        n2 += blk.square().sum(0)
        nlo2 += Wa[i:i + r].float().sub_(blk).square_().sum(0)
    Wa[D] = n2.sqrt().mul_(up)
    Wa[D + 1] = nlo2.sqrt_().mul_(up)
    b2 = b_F + b_F.abs() * BIAS_SLACK
    hi = b2.to(torch.bfloat16)
    Wa[D + 2] = hi
    Wa[D + 3] = b2 - hi.float()
    Wa[D + 4:] = 0
    return Wa, n2.sum()


def candidates_bf16(xbar_ND: torch.Tensor, Wa_KF: torch.Tensor) -> torch.Tensor:
    """Flat indices of a superset of {xbar @ W + b > 0} from one bf16 matmul with a rigorous error margin
    (``Wa_KF = bf16_operand(W, b)[0]``).

    With x̃ = bf16(x̄) = x̄ − x_lo and w̃ = bf16(w) = w − w_lo (x_lo, w_lo exact in fp32):

        x̄·w − x̃·w̃ = x_lo·w + x̃·w_lo,   |·| ≤ ‖x_lo‖‖w‖ + ‖x̃‖‖w_lo‖            (Cauchy–Schwarz)

    and the fp32 accumulation of the K exact bf16 products adds ≤ γ_K Σ|x̃_i w̃_i| ≤ γ_K (1+u) ‖x̃‖‖w‖
    (γ_K = K·2⁻²⁴/(1 − K·2⁻²⁴)).  So one (N × K) @ (K × F) bf16 product, K = D + 4 (padded to 16), computes

        x̃·w̃ + (‖x_lo‖ + γ_K(1+u)‖x̃‖)·‖w‖ + ‖x̃‖·‖w_lo‖ + b_hi + b_lo

    with both margin factors inflated by (1 + 4u) before their own bf16 rounding, and b_hi + b_lo carrying
    b + 2⁻¹⁰|b| to 16 bits (covering the residual u²|b| and the accumulation error on the bias terms).  That sum is
    ≥ the fp32 pre-activation's exact value minus nothing, i.e. > 0 wherever x̄·w + b > 0; rounding the fp32
    accumulator to bf16 keeps its sign (up to flush-to-zero below 1e-38).  Typically ‖x_lo‖ ≈ 0.4u‖x̄‖, so the
    margin is ≈ 0.8u‖x̄‖‖w‖ (u = 2⁻⁸) and the candidates are ≈ 1.3× the active entries.
    """
    N = xbar_ND.shape[0]
    Kp, F = Wa_KF.shape
    xa = _bf16_lhs(xbar_ND, Kp)
    R = chunk_rows(N, F)
    buf = scratch("pre16", (R, F), torch.bfloat16)
    idx = []
    for i in range(0, N, R):
        n = min(R, N - i)
        fl = flat_positive_bf16(torch.mm(xa[i:i + n], Wa_KF, out=buf[:n]))
        idx.append(fl.add_(i * F))
    return torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)


def _bf16_lhs(xbar_ND: torch.Tensor, Kp: int) -> torch.Tensor:
    """The left-hand operand (N, K) bf16 of ``candidates_bf16``'s product: x̃ and the two margin factors (see
    there), then the two bias columns of ones and zero padding.  A scratch buffer."""
    N, D = xbar_ND.shape
    up = 1.0 + 4 * U_BF16
    gamma = (Kp * 2.0 ** -24) / (1 - Kp * 2.0 ** -24) * (1 + U_BF16)
    xa = scratch("xa16", (N, Kp), torch.bfloat16)
    xa[:, :D] = xbar_ND  # round to nearest even
    xt = xa[:, :D].float()
    xt_norm = xt.square().sum(1).sqrt_()
    xlo_norm = xt.neg_().add_(xbar_ND).square_().sum(1).sqrt_()  # ‖x̄ − x̃‖
    xa[:, D] = xlo_norm.add_(xt_norm, alpha=gamma).mul_(up)
    xa[:, D + 1] = xt_norm.mul_(up)
    xa[:, D + 2:D + 4] = 1.0
    xa[:, D + 4:] = 0
    return xa


TOPK_SLACK = 16  # bf16 candidates per row beyond k (recomputed in fp32): rows whose check fails are redone densely


def topk_entries(xbar_ND: torch.Tensor, W_DF: torch.Tensor, b_F: torch.Tensor, k: int,
                 Wa_KF: torch.Tensor | None = None, slack: int = TOPK_SLACK,
                 subset: tuple[torch.Tensor, int] | None = None):
    """The k largest entries of each row of pre = x̄ W + b: (ascending flat indices into (N, F), their fp32
    values — pre-activations, before any ReLU — and the number of rows the bf16 check sent to the dense path).

    fp32 (``Wa_KF`` None): pre in row chunks of ``CHUNK_ELEMS`` and ``topk`` on each, as the dense ``encode`` does.
    bf16 (``Wa_KF = bf16_operand(W, b)[0]``), exact as well: one bf16 product gives for every entry an upper bound
    u_bj ≥ pre_bj (``candidates_bf16``'s margin; the product's own rounding to bf16 is covered by taking
    t_b + 2u|t_b|).  Per row, the k + ``slack`` largest bounds are the candidates, recomputed in fp32
    (``sampled_dots``); their top k is the row's true top k whenever its k-th value exceeds t_b + 2u|t_b|, t_b the
    smallest candidate bound — every other entry is ≤ its bound ≤ that.  Rows where it does not (near-ties across
    the margin; rare) are recomputed in fp32 and selected densely.  Same entries as fp32 up to exact ties.

    ``subset = (cols_S, k_S)`` (bf16 only; ``cols_S`` ascending) also returns, as a second triple, the k_S largest
    entries of each row of pre restricted to the columns ``cols_S`` (flat indices into (N, len(cols_S))), from the
    same bf16 product with its own slack of max(``slack``, k_S / 2): TopK's AuxK over the dead latents, whose fp32
    product over 11k columns cost as much as the main one on the default run's A/2.  Dead latents'
    pre-activations bunch together, so their bounds need the larger slack (measured: k_S/2 leaves ~4 % of rows to
    the dense check)."""
    N, F = xbar_ND.shape[0], W_DF.shape[1]
    k = min(int(k), F)
    m = k + int(slack)
    dense = Wa_KF is None or m >= F
    R = chunk_rows(N, F)
    if subset is not None and dense:
        raise ValueError("topk_entries: a subset selection shares the bf16 product; pass Wa_KF (and F > k + slack)")
    buf = scratch("pre32" if dense else "pre16", (R, F), torch.float32 if dense else torch.bfloat16)
    if dense:
        idx, vals = [], []
        for i in range(0, N, R):
            n = min(R, N - i)
            v, j = torch.addmm(b_F, xbar_ND[i:i + n], W_DF, out=buf[:n]).topk(k, dim=-1, sorted=False)
            idx.append(j.add_((torch.arange(n) * F).unsqueeze(-1)).view(-1).add_(i * F))
            vals.append(v.reshape(-1))
        if not idx:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0), 0
        fl, order = torch.cat(idx).sort()
        return fl, torch.cat(vals).index_select(0, order), 0
    perm = None
    if subset is not None:
        cols_S, k_S = subset
        S = int(cols_S.numel())
        k_S = min(int(k_S), S)
        m_S = min(S, k_S + max(int(slack), k_S // 2))
        # the subset's columns last in the product, so its selection reads a column block in place (a gather of
        # 11k strided columns per chunk cost 0.18 s a step at A/2)
        rest = torch.ones(F, dtype=torch.bool)
        rest[cols_S] = False
        perm = torch.cat([rest.nonzero().view(-1), cols_S])
        Wa_KF = Wa_KF.index_select(1, perm)
    j, t, sub = _bf16_row_candidates(xbar_ND, Wa_KF, m, perm, cols_S if perm is not None and k_S > 0 else None,
                                     m_S if perm is not None else 0)
    Wc = W_DF if W_DF.stride(0) == 1 else W_DF.t().contiguous().t()
    main = _topk_of_candidates(xbar_ND, Wc, b_F, k, j, t, R, F)
    if subset is None:
        return main
    if k_S == 0 or N == 0:
        return main, (torch.zeros(0, dtype=torch.int64), torch.zeros(0), 0)
    local = torch.full((F,), -1, dtype=torch.int64)
    local[cols_S] = torch.arange(S)
    fl, v, bad = _topk_of_candidates(xbar_ND, Wc, b_F, k_S, sub[0], sub[1], R, F, cols_S)
    rows = torch.div(fl, F, rounding_mode="floor")
    fl_S = rows * S + local.index_select(0, fl - rows * F)    # global columns → positions in cols_S (order kept)
    return main, (fl_S, v, bad)


def batch_topk_entries(xbar_ND: torch.Tensor, W_DF: torch.Tensor, b_F: torch.Tensor, n: int,
                       Wa_KF: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchTopK's selection from pre = x̄ W + b: (ascending flat indices into (N, F), their fp32 pre-activations)
    of the n largest ReLU(pre) of the whole batch — the set ``batch_topk_indices(pre.relu(), n)`` picks, without an
    fp32 (N, F) product when ``Wa_KF = bf16_operand(W, b)[0]`` is given.

    ``batch_topk_indices``' argument on bf16 bounds: one bf16 product gives an upper bound u_bj ≥ pre_bj for every
    entry (``candidates_bf16``); each row's m = 3⌈n/N⌉ largest bounds are its candidates, recomputed in fp32
    (``sampled_dots``), and s_b = its smallest candidate bound, widened by 2u|s_b|, bounds every other entry of
    the row.  t = the n-th largest ReLU'd candidate is ≤ the true n-th largest (the candidates are a subset), so
    the batch's top n lie among the entries ≥ t.  A row with s_b < t holds none beyond its candidates; a row with
    s_b ≥ t (its bounds crowd above t: a token on which many latents are large) is recomputed in fp32 over all
    columns.  The top n of that pool is exact (up to fp32 ties and the ulp between a sampled dot and the dense
    product).  Without ``Wa_KF``, or when t ≤ 0 (fewer than n positive candidates: the tail is zeros, chosen
    arbitrarily either way), the dense path's ops."""
    N, F = xbar_ND.shape[0], W_DF.shape[1]
    n = min(int(n), N * F)
    m = min(F, 3 * -(-n // max(N, 1)))
    if Wa_KF is not None and 0 < n and m < F:
        j, s_b, _ = _bf16_row_candidates(xbar_ND, Wa_KF, m)
        s_b = s_b.add_(s_b.abs().mul_(2 * U_BF16))
        Wc = W_DF if W_DF.stride(0) == 1 else W_DF.t().contiguous().t()
        v = sampled_dots(torch.arange(0, N * m + 1, m), j.view(-1), b_F.index_select(0, j.view(-1)), xbar_ND, Wc)
        a = v.clamp_min(0.0)
        t = a.kthvalue(a.numel() - n + 1).values
        if t > 0:
            fl = j.add_((torch.arange(N) * F).unsqueeze(-1)).view(-1)
            crowded = (s_b >= t).nonzero().view(-1)
            keep = a >= t
            if len(crowded):
                keep.view(N, m)[crowded] = False
                pre_C = xbar_ND.index_select(0, crowded) @ W_DF + b_F
                # the dense product may put a candidate that sat exactly at t an ulp below it: widen the test
                at_C = flat_nonzero((pre_C >= t - t.abs() * CROWDED_SLACK).contiguous())
                r_C = torch.div(at_C, F, rounding_mode="floor")
                pool_fl = torch.cat([fl[keep], crowded.index_select(0, r_C) * F + (at_C - r_C * F)])
                pool_v = torch.cat([v[keep], pre_C.view(-1).index_select(0, at_C)])
            else:
                pool_fl, pool_v = fl[keep], v[keep]
            if pool_v.numel() >= n:   # else (never seen) the dense path below
                top = pool_v.topk(n, sorted=False).indices
                sel, order = pool_fl.index_select(0, top).sort()
                return sel, pool_v.index_select(0, top).index_select(0, order)
    pre = xbar_ND @ W_DF + b_F   # the dense path's ops (kinds.batch_topk_activation), so the same entries
    sel, _ = batch_topk_indices(pre.relu(), n).sort()
    return sel, pre.view(-1).index_select(0, sel)


# batch_topk_entries' dense recompute of crowded rows keeps entries down to t(1 − CROWDED_SLACK): the sampled dot
# that set t and the dense product sum in different orders (~1e-7 relative apart), and the pool must keep n entries
CROWDED_SLACK = 2.0 ** -16


def _bf16_row_candidates(xbar_ND: torch.Tensor, Wa_KF: torch.Tensor, m: int, perm: torch.Tensor | None = None,
                         cols_S: torch.Tensor | None = None, m_S: int = 0):
    """Each row's m largest bf16 upper bounds of pre (``candidates_bf16``' product): their columns (N, m),
    ascending per row, and the smallest of them per row (fp32, not yet widened for the product's own rounding) —
    the candidates of ``topk_entries`` and ``batch_topk_entries``.  ``perm``: ``Wa_KF``'s columns are permuted
    (column c of the product is ``perm[c]``), the last S of them ``cols_S``; with ``cols_S`` and m_S > 0, the
    third result is the same pair for the m_S largest bounds among those S columns (as columns of F), else None."""
    N = xbar_ND.shape[0]
    F = Wa_KF.shape[1]
    S = 0 if cols_S is None else int(cols_S.numel())
    xa = _bf16_lhs(xbar_ND, Wa_KF.shape[0])
    R = chunk_rows(N, F)
    buf = scratch("pre16", (R, F), torch.bfloat16)
    cand_l, t_l, cand_s, t_s = [], [], [], []
    for i in range(0, N, R):
        r = min(R, N - i)
        pre16 = torch.mm(xa[i:i + r], Wa_KF, out=buf[:r])
        ub, j = pre16.topk(m, dim=-1, sorted=False)
        cand_l.append((j if perm is None else perm[j]).sort(dim=-1).values)
        t_l.append(ub.float().amin(-1))
        if S and m_S > 0:
            ub, j = pre16[:, F - S:].topk(m_S, dim=-1, sorted=False)
            cand_s.append(cols_S[j.sort(dim=-1).values])
            t_s.append(ub.float().amin(-1))
    if not cand_l:
        return torch.zeros(0, m, dtype=torch.int64), torch.zeros(0), None
    sub = (torch.cat(cand_s), torch.cat(t_s)) if cand_s else None
    return torch.cat(cand_l), torch.cat(t_l), sub


def _topk_of_candidates(xbar_ND, Wc, b_F, k: int, j: torch.Tensor, t: torch.Tensor, R: int, F: int,
                        cols_S: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``topk_entries``' second half: the candidates ``j`` (N, m; columns, ascending per row) recomputed in fp32
    by one sampled product (``Wc`` column-major), their top k, and the exact check against ``t`` (the smallest
    candidate bound per row, before its 2u|t| widening); failing rows are selected densely over ``cols_S`` (all
    columns when None)."""
    N, m = j.shape
    t = t.add_(t.abs().mul_(2 * U_BF16))
    cand = sampled_dots(torch.arange(0, N * m + 1, m), j.view(-1), b_F.index_select(0, j.view(-1)), xbar_ND,
                        Wc).view(N, m)
    v, p = cand.topk(k, dim=-1, sorted=False)
    j = j.gather(1, p)
    bad = (v.amin(-1) <= t).nonzero().view(-1)
    if len(bad):  # the check failed: these rows' exact top k may hold a non-candidate
        W_S = Wc if cols_S is None else Wc.index_select(1, cols_S)
        b_S = b_F if cols_S is None else b_F.index_select(0, cols_S)
        for c in bad.split(R):
            v[c], jj = torch.addmm(b_S, xbar_ND.index_select(0, c), W_S).topk(k, dim=-1, sorted=False)
            j[c] = jj if cols_S is None else cols_S[jj]
    fl, order = j.add_((torch.arange(N) * F).unsqueeze(-1)).view(-1).sort()
    return fl, v.view(-1).index_select(0, order), int(bad.numel())


def _encodes_as(sae, kind_cls) -> bool:
    """``sae`` is a ``kind_cls`` whose ``encode`` is that class's own and whose pre-activation is the base
    class's x̄ W_enc + b_enc with x̄ = x − b_dec, with its parameters on the CPU: what a kernel here assumes."""
    from .sae import Dictionary

    cls = type(sae)
    return (isinstance(sae, kind_cls) and cls.encode is kind_cls.encode and cls.pre_acts is Dictionary.pre_acts
            and sae.subtracts_b_dec and all(p.device.type == "cpu" for p in (sae.W_enc_DF, sae.b_enc_F, sae.b_dec_D)))


def topk_encoder_k(sae) -> int | None:
    """k when ``sae`` encodes as ReLU(TopK_k(x̄ W_enc + b_enc)) per row — the TopK kind, not a subclass that
    changes its ``encode`` or ``pre_acts`` (BatchTopK's inference threshold) — with its parameters on the CPU."""
    from .kinds import TopKDictionary

    return int(sae.k) if _encodes_as(sae, TopKDictionary) else None


def threshold_encoder(sae) -> float | None:
    """θ ≥ 0 when ``sae`` encodes as ReLU(pre)·1[pre > θ], pre = x̄ W_enc + b_enc, with one threshold for every
    latent — BatchTopK's inference (``kinds.BatchTopKDictionary.encode``), not a subclass that changes it — with
    its parameters on the CPU; else None.  Its active entries are those of pre above max(θ, 0)."""
    from .kinds import BatchTopKDictionary

    return max(float(sae.threshold), 0.0) if _encodes_as(sae, BatchTopKDictionary) else None


# The bf16 filter of a threshold encoder tests pre > θ·(1 − THRESHOLD_SLACK) (a bias shifted by that much): a
# superset of the fp32 entries above θ whenever their rounding is below θ/256 — ~1e-4 relative at D 512 against
# ~1e-2 here — and the fp32 recompute of the candidates keeps exactly those above θ.
THRESHOLD_SLACK = 2.0 ** -8


# ---- encoders ---------------------------------------------------------------------------------------------------

def linear_encoder(sae) -> bool:
    """True when ``sae`` encodes as ReLU(x̄ W_enc + b_enc), x̄ = x − ``input_offset_D`` (b_dec, or 0 for
    april2024) — a kind that overrides neither ``pre_acts`` nor ``encode`` — with its parameters on the CPU: the
    kernels here apply to it."""
    from .sae import Dictionary

    cls = type(sae)
    return (isinstance(sae, Dictionary)
            and all(getattr(cls, n) is getattr(Dictionary, n) for n in ("pre_acts", "encode"))
            and all(p.device.type == "cpu" for p in (sae.W_enc_DF, sae.b_enc_F, sae.b_dec_D)))


class SparseEncoder:
    """Strictly positive entries ``(rows, cols, vals)`` of ``sae.encode(x_ND)``, sorted by row then column,
    without materialising the dense (N, F) matrix in fp32.

    For the ReLU-L1 dictionary (a kind that keeps the base ``pre_acts``/``encode``) x̄ = x − b_dec goes through
    ``active_fp32``, or, with ``bf16`` (default ``bf16_default()``: the hardware has it), through the exact bf16
    filter (``candidates_bf16``, then an fp32 recompute of the candidates, ``sampled_dots``) — the same entries.
    The TopK kind (``topk_encoder_k``) goes through ``topk_entries`` (fp32, or its exact bf16 candidates).
    A threshold encoder (``threshold_encoder``: BatchTopK at inference) is the ReLU path with the test pre > θ
    (its bf16 filter on a bias lowered by θ(1 − ``THRESHOLD_SLACK``), the recompute kept above θ).
    Any other kind, or ``dense=True``, runs its own ``encode`` densely in row chunks of ``chunk_elems`` entries."""

    def __init__(self, sae, bf16: bool | None = None, dense: bool = False, chunk_elems: int = 1 << 22):
        self.sae = sae
        self.chunk_elems = int(chunk_elems)
        self.linear = not dense and linear_encoder(sae)
        self.topk = None if dense else topk_encoder_k(sae)
        self.theta = None if dense else threshold_encoder(sae)
        # the ReLU path computes a threshold encoder too, with the test pre > above
        self.above = 0.0 if self.theta is None else self.theta
        self.linear = self.linear or self.theta is not None
        # None: wherever the hardware has it, whatever F — the statistics pass measured it faster even at F 512
        fast = self.linear or self.topk is not None
        self.bf16 = bool(fast and (bf16_default() if bf16 is None else bf16))
        if fast:
            self.W = sae.W_enc_DF.detach().float().contiguous()
            self.b = sae.b_enc_F.detach().float()
            self.b_dec = sae.input_offset_D.detach().float()
        if self.topk is not None:  # column-major: topk_entries' sampled product reads it without a copy
            self.W = self.W.t().contiguous().t()
        if self.bf16:
            self.Wa, _ = bf16_operand(self.W, self.b - self.above * (1 - THRESHOLD_SLACK))

    @torch.no_grad()
    def __call__(self, x_ND: torch.Tensor, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``inplace``: ``x_ND`` (float32, contiguous) may be overwritten (saves a copy of the chunk)."""
        x = x_ND.float().contiguous()
        N = x.shape[0]
        if not self.linear and self.topk is None:
            return self._generic(x)
        F = self.W.shape[1]
        xbar = x.sub_(self.b_dec) if inplace and x is x_ND else x - self.b_dec
        if self.topk is not None:  # ReLU(TopK(pre)): the per-row top k, then its strictly positive entries
            fl, vals, _ = topk_entries(xbar, self.W, self.b, self.topk, self.Wa if self.bf16 else None)
            keep = (vals > 0).nonzero().view(-1)
            fl, vals = fl.index_select(0, keep), vals.index_select(0, keep)
            rows = torch.div(fl, F, rounding_mode="floor")
            return rows, fl - rows * F, vals
        if self.bf16:
            fl = candidates_bf16(xbar, self.Wa)
            rows = torch.div(fl, F, rounding_mode="floor")
            cols = fl - rows * F
            vals = sampled_dots(offsets(rows, N), cols, self.b.index_select(0, cols), xbar, self.W)
            keep = vals > self.above
            return rows[keep], cols[keep], vals[keep]
        fl, vals = active_fp32(xbar, self.W, self.b, self.above)
        rows = torch.div(fl, F, rounding_mode="floor")
        return rows, fl - rows * F, vals

    def _generic(self, x):
        F = int(self.sae.d_sae)
        step = max(1, self.chunk_elems // F)
        rows_l, cols_l, vals_l = [], [], []
        for i in range(0, x.shape[0], step):
            f = self.sae.encode(x[i:i + step]).float()
            fl = flat_nonzero((f > 0).contiguous())
            r = torch.div(fl, F, rounding_mode="floor")
            rows_l.append(r + i)
            cols_l.append(fl - r * F)
            vals_l.append(f.reshape(-1).index_select(0, fl))
        z = torch.zeros(0, dtype=torch.int64)
        return (torch.cat(rows_l) if rows_l else z, torch.cat(cols_l) if cols_l else z,
                torch.cat(vals_l) if vals_l else torch.zeros(0))


def positive_entries(x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strictly positive entries of a dense matrix (the neurons' own activations)."""
    x = x_ND.float().contiguous()
    D = x.shape[1]
    fl = flat_nonzero(x > 0)
    rows = torch.div(fl, D, rounding_mode="floor")
    return rows, fl - rows * D, x.view(-1).index_select(0, fl)


FAST_MIN_FEATURES = 2048  # encode_sparse's "auto": the sparse kernel from here up (benchmarks/universality.py)


def encode_sparse(sae, x_ND: torch.Tensor, chunk_elems: int = 1 << 22, kernel: str = "auto") -> sp.csr_matrix:
    """The dictionary's feature activations as a CSR matrix (N, F) float32 holding exactly the nonzero entries.

    ``kernel="dense"``: ``sae.encode`` on row chunks of ``chunk_elems`` entries (kept in cache) — works for every
    dictionary kind.  ``kernel="fast"``: the ``SparseEncoder`` of a ReLU or TopK dictionary (an exact bf16 filter
    where ``bf16_default()``).  ``"auto"``: fast for dictionaries of ≥ 2048 features on the CPU that support it
    (where the filter pays), dense otherwise.  All three give the same entries (TopK: up to fp32 near-ties at the
    k-th value, ``topk_entries``).  The default run's TopK A/1 over compare's 1M tokens: 85 s dense, ~15 fast."""
    x = x_ND.float().contiguous()
    N, F = x.shape[0], int(sae.d_sae)
    fast_ok = linear_encoder(sae) or topk_encoder_k(sae) is not None or threshold_encoder(sae) is not None
    if kernel == "auto":
        kernel = "fast" if F >= FAST_MIN_FEATURES and x.device.type == "cpu" and fast_ok else "dense"
    if kernel == "fast" and not fast_ok:
        raise ConfigError(f"the fast kernel does not support dictionary kind {sae.cfg.kind!r}; use 'dense'")
    if kernel not in ("fast", "dense"):
        raise ConfigError(f"unknown encode kernel {kernel!r}; use 'auto', 'dense' or 'fast'")
    rows, cols, vals = SparseEncoder(sae, dense=kernel == "dense", chunk_elems=chunk_elems)(x)
    indptr = offsets(rows.cpu(), N).numpy()
    return sp.csr_matrix((vals.cpu().numpy().astype(np.float32, copy=False), cols.cpu().numpy().astype(np.int32),
                          indptr), shape=(N, F))


# ---- per-token activation mass: the one definition of "top tokens" ------------------------------------------

TOP_TOKEN_MIN_COUNT = 3   # a token must occur this often in the token set to be a unit's top token


class TokenMass:
    """Streaming activation mass of each unit on each token id, and the token counts of the stream.

    ``mass[u, t] = Σ_{positions p with token t} f_u(p)`` and ``count[t]`` = occurrences of ``t``.  A unit's **top
    tokens** (:meth:`top`) are the tokens on which it is most active *on average*, ``mass[u, t] / count[t]``,
    largest first, among tokens seen at least ``min_count`` times (by total mass when no token qualifies); a unit
    that never fired has none.  Averaging (not the raw mass) keeps frequent tokens from outranking the ones the
    unit is specific to; the count floor keeps a token seen once from ranking on one lucky activation.

    Up to ``DENSE_CELLS`` (unit, token) cells the mass is a dense float64 vector updated by ``index_add_`` (cost
    per entry only: the neurons' 200M entries a pass stay cheap).  The bound, 2²⁶ cells (512 MiB), takes in the
    default run's 16,384 features × 4,096 tokens: its sparse form re-sorts every distinct pair at each flush
    (``np.unique``), which cost A/2's statistics pass 30 s of its 190 and the splitting pass 22 s.  Above it, the
    pairs are kept sparse — sorted keys ``u·V + t`` with their sums, coalesced every ``flush_entries`` — so a
    larger dictionary or vocabulary costs only its distinct pairs.  The state (:meth:`state_dict`, the sparse
    form either way) round-trips between the two.
    """

    DENSE_CELLS = 1 << 26

    def __init__(self, n_units: int, vocab: int, flush_entries: int = 1 << 22):
        self.U, self.V, self.flush_entries = int(n_units), int(vocab), int(flush_entries)
        self.count = np.zeros(self.V, np.int64)
        self.dense = torch.zeros(self.U * self.V, dtype=torch.float64) if self.U * self.V <= self.DENSE_CELLS else None
        self.keys = np.zeros(0, np.int64)      # sparse form: sorted, distinct u·V + t
        self.sums = np.zeros(0, np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_pending = 0

    def update(self, tokens_N, rows_E, cols_E, vals_E) -> None:
        """Add one chunk: ``tokens_N`` the token id of each of its positions, ``(rows_E, cols_E, vals_E)`` its
        active entries (rows index the chunk's positions, cols are units)."""
        tokens_N = np.asarray(tokens_N, np.int64)
        self.count += np.bincount(tokens_N, minlength=self.V)[:self.V]
        rows_E, cols_E = np.asarray(rows_E, np.int64), np.asarray(cols_E, np.int64)
        if rows_E.size and self.dense is not None:
            self.dense.index_add_(0, torch.from_numpy(cols_E * self.V + tokens_N[rows_E]),
                                  torch.from_numpy(np.asarray(vals_E, np.float64)))
        elif rows_E.size:
            self._pending.append((cols_E * self.V + tokens_N[rows_E], np.asarray(vals_E, np.float64)))
            self._n_pending += rows_E.size
            if self._n_pending >= self.flush_entries:
                self._flush()

    def _flush(self) -> None:
        if self.dense is not None:   # the sparse form of the dense mass
            keys = torch.nonzero(self.dense).flatten()
            self.keys, self.sums = keys.numpy(), self.dense[keys].numpy()
            return
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        sums = np.concatenate([self.sums] + [v for _, v in self._pending])
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.sums = np.bincount(inv, weights=sums, minlength=self.keys.size)
        self._pending, self._n_pending = [], 0

    def matrix(self) -> sp.csr_matrix:
        """The mass as a CSR matrix (U, V)."""
        self._flush()
        return sp.csr_matrix((self.sums, (self.keys // self.V, self.keys % self.V)), shape=(self.U, self.V))

    def top(self, k: int, min_count: int = TOP_TOKEN_MIN_COUNT) -> list[np.ndarray]:
        """Each unit's ``k`` top token ids (see the class docstring), largest mean activation first."""
        mass = self.matrix()
        mass.sum_duplicates()                               # sorted token ids within each unit
        row = np.repeat(np.arange(self.U), np.diff(mass.indptr))
        ids, v = mass.indices.astype(np.int64), mass.data
        c = self.count[ids]
        ok = c >= min_count
        has_ok = np.bincount(row[ok], minlength=self.U) > 0
        keep = ok | ~has_ok[row]                            # qualifying tokens, or all of a unit without any
        row, ids, v, c, ok = row[keep], ids[keep], v[keep], c[keep], ok[keep]
        score = np.where(ok, v / np.maximum(c, 1), v)
        # one sort for every unit: by unit, then score descending, then token id (the per-unit stable sort's ties)
        order = np.lexsort((ids, -score, row))
        row, ids = row[order], ids[order]
        start = np.searchsorted(row, np.arange(self.U))
        rank = np.arange(len(row)) - start[row]
        sel = rank < k
        bounds = np.searchsorted(row[sel], np.arange(self.U + 1))
        top = ids[sel]
        return [top[bounds[u]:bounds[u + 1]] for u in range(self.U)]

    def state_dict(self, prefix: str = "mass_") -> dict[str, np.ndarray]:
        self._flush()
        return {f"{prefix}count": self.count, f"{prefix}keys": self.keys, f"{prefix}sums": self.sums}

    def load_state_dict(self, d: dict, prefix: str = "mass_") -> None:
        count = np.asarray(d[f"{prefix}count"], np.int64)
        if count.shape != (self.V,):
            raise ValueError(f"checkpoint token counts have shape {count.shape}, expected ({self.V},)")
        self.count, self.keys = count.copy(), np.asarray(d[f"{prefix}keys"], np.int64).copy()
        self.sums = np.asarray(d[f"{prefix}sums"], np.float64).copy()
        self._pending, self._n_pending = [], 0
        if self.dense is not None:
            self.dense.zero_()
            self.dense[torch.from_numpy(self.keys)] = torch.from_numpy(self.sums)
