"""A sparse-aware training step for the ReLU-L1 dictionary: the same objective and the same gradients as
``ReluDictionary.loss`` + autograd, at a fraction of the cost.

Only the encoder's forward matmul is dense (B×D @ D×F).  Everything after it touches only each token's active
features (L0 ≈ 10–100 of F):

    forward   x̄ = x − b_dec                                  dense  B×D
              pre = x̄ W_enc + b_enc, in row chunks           dense  B×D×F  (fp32, or bf16 as a filter, see below)
              active set {(b, j): pre_bj > 0}                packed nonzero on each chunk while it is in cache
              x̂ = Σ_j f_bj W_dec[j] + b_dec                  embedding_bag(per_sample_weights=f)
    backward  dx̂ = 2 (x̂ − x) / (B·D)                          dense  B×D
              df_bj = dx̂_b · W_dec[j] + λ/B  (active only)   sampled_addmm, feature-major
              dW_dec[j] = Σ_b f_bj dx̂_b                      embedding_bag over the feature-major pattern
              dW_enc[:, j] = Σ_b df_bj x̄_b                    embedding_bag over the feature-major pattern
              db_enc = Σ_b df_b ;  db_dec = Σ_b dx̂_b − W_enc db_enc

(df = dL/dpre on the active entries: ReLU passes it through there and zeroes it elsewhere, and d|f|/df = 1 there.)

API
---
``fast_supported(sae) -> bool``
    True when ``sae`` is a ReLU-L1 dictionary — its class overrides none of ``pre_acts/encode/decode/forward/
    loss`` (so ``ReluDictionary``, not e.g. a TopK kind) — with float32 parameters on the CPU.  Call ``fast_loss``
    only when this is True.

``fast_loss(sae, x_BD, *, bf16=None, step=None) -> dict``
    Drop-in for ``sae.loss(x_BD, step=step)`` (``step`` is ignored, as by ``ReluDictionary.loss``).  Returns

    * ``"loss"``, ``"mse"``, ``"sparsity"`` — 0-d float32 tensors, the same quantities as ``sae.loss``.  They
      carry a ``grad_fn``: ``loss.backward()`` (or any combination of the three) fills ``.grad`` of ``W_enc_DF``,
      ``b_enc_F``, ``W_dec_FD``, ``b_dec_D`` — and of ``x_BD`` if it requires grad — with the gradients autograd
      computes through the dense path.  All four ``.grad`` are dense, contiguous, float32.
    * ``"f_BF"`` — the feature activations, detached, as a ``torch.sparse_csr_tensor`` of shape (B, F) holding
      exactly the strictly positive entries, columns ascending within each row (``.crow_indices()``,
      ``.col_indices()``, ``.values()``; ``.to_dense()`` gives the dense ``f_BF``).  Dense-only code such as
      ``(f_BF > 0).any(0)`` does not work on it: use the two keys below.
    * ``"l0"`` — 0-d float32 tensor: mean number of active features per row (= ``(f_BF > 0).sum(-1).mean()``).
    * ``"fired_F"`` — bool tensor (F,): feature active on at least one row of the batch (= ``(f_BF > 0).any(0)``).
    * ``"bf16"`` — Python bool: whether the bf16 filter was used for this call.

``fast_train_step(sae, opt, x_BD, *, bf16=None) -> dict``
    One step of the loop in ``train_sae.py`` (zero_grad(set_to_none), fast_loss, backward,
    before_optimizer_step, opt.step, after_optimizer_step); returns the ``fast_loss`` dict.

``make_adam(params, lr, betas, **kw)``
    ``torch.optim.Adam(..., fused=True)`` (falls back to the default where unsupported): the same update in one
    kernel per tensor.  Measured here, 1 thread: 12 ms vs 93 ms per step at F=16384 (2.5 vs 9 ms at F=4096).

``bf16_default(d_sae=None) -> bool``
    What ``bf16=None`` resolves to: True when the CPU has native bf16 dot products (AVX512-BF16 or AMX, via
    ``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``) and F ≥ 1024 (below that the fp32
    recompute of the candidates costs more than the bf16 matmul saves).  The environment variable
    ``MONOSEMANTIC_FAST_BF16=0/1`` forces it off/on.

``release_buffers()``
    Frees the work buffers kept between calls (one set per thread; up to ≈ 70 MiB at F=16384).

Precision
---------
fp32 mode (``bf16=False``): the dense encoder is an fp32 ``addmm``; every sparse kernel is fp32.  Results equal
the dense path up to fp32 summation order: measured at B=4096, D=512, F=4096 and 16384, L0≈30 — loss/mse
exact, sparsity ≤ 1.5e-7, gradients ‖Δ‖/‖g‖ ≤ 3.2e-7.  Tests assert < 1e-5 (losses) and < 1e-4 (gradients),
l0/fired_F exact.

bf16 mode (``bf16=True``): the bf16 matmul is only a *filter* that provably keeps every fp32-positive entry (see
``_candidates_bf16``: a rank-2 Cauchy–Schwarz bound on the rounding of x̄ and W_enc, plus the fp32 accumulation
error, is folded into the same matmul as two extra columns, and the bias is carried to 16 bits).  The candidates'
pre-activations (≈ 1.25× the active count) are then recomputed in fp32 with ``sampled_addmm`` and only the
strictly positive ones kept.  So bf16 mode decides the *same* active set as fp32 mode, and its values and
gradients are fp32: same tolerances as fp32 mode (measured ≤ 1.2e-6 on the gradients at F=16384).  No bf16
rounding reaches any output.  Master weights, gradients and optimizer state stay fp32.

Speed (benchmarks/fast_kernels.py; B=4096, D=512, L0≈30; full step incl. Adam, decoder projection and
renormalisation, dead-feature bookkeeping; 1 thread, CPU time — the shared 2-core machine made wall-clock medians
unusable, see the benchmark's report):

    F=4096:   dense fp32 1525 ms, dense autocast-bf16 981 ms, fast fp32 256 ms (6.0×), fast bf16 178 ms (8.6×)
    F=16384:  dense fp32 6446 ms, dense autocast-bf16 4240 ms, fast fp32 986 ms (6.5×), fast bf16 616 ms (10.5×)

The fast fp32 step runs at 84–90 % of the dense-encoder roofline (2·B·D·F at the measured fp32 matmul peak),
bf16 at 55–69 % of the bf16 roofline.  torch.compile was measured for the sampled dot products (the largest
non-GEMM kernel) and lost to ``sampled_addmm`` (19.5 vs 15 ms, plus 5 s compile), so it is not used.
``THP_MEM_ALLOC_ENABLE=1`` in the environment (read by torch at start-up) saves another 3–8 % at F=16384: the
33 MiB gradient/temporary buffers otherwise page-fault on every step.

With 2 threads on this shared 2-core machine (load average ≈ 7) and ``OMP_WAIT_POLICY=PASSIVE``, wall-clock
medians gave the same ratios: 6.0× / 8.4× (F=4096) and 5.7× / 10.2× (F=16384) for fast fp32 / fast bf16.  Without
``OMP_WAIT_POLICY=PASSIVE`` an oversubscribed machine makes every OpenMP barrier spin while the partner thread is
descheduled; the fast path has ~3× more (small) parallel ops than the dense one and suffered most (2 threads up
to 8× slower than 1 thread).  Set that variable (or use 1 thread) when the cores are shared.

Caveats
-------
* A NaN/inf in ``W_enc_DF``/``b_enc_F`` makes ``loss`` NaN/inf (as in the dense path, so the loop's divergence
  check still fires); the gradients are then meaningless (as in the dense path).
* Ties: an entry whose pre-activation is exactly 0 is inactive in both paths (ReLU'(0) = 0 in torch).  Entries
  within ~1e-7 relative of zero can be classified differently from the dense path because the summation order
  differs — fp32 rounding, not a method difference.  bf16 mode additionally assumes no flush-to-zero matters,
  i.e. pre-activations are not below ~1e-38.
* Small problems: the fast path has ~1 ms of fixed overhead per step; it breaks even near B·F ≈ 2.5e5 and wins
  2× at B=1024, D=128, F=512 (measured, 1 thread).
* Not thread-safe across concurrent calls on the *same* parameters (nor is autograd); separate threads get
  separate work buffers.
"""
from __future__ import annotations

import math
import os
import threading
import warnings

import torch
import torch.nn.functional as Fn
from torch.autograd.function import once_differentiable

__all__ = ["fast_supported", "fast_loss", "fast_train_step", "make_adam", "bf16_default", "release_buffers",
           "plan_step"]

_U_BF16 = 2.0 ** -8          # unit roundoff of bf16 (8 significant bits, round to nearest)
_BIAS_SLACK = 2.0 ** -10     # relative slack on the bias row (covers u^2 and the fp32 accumulation on it)
_CHUNK_ELEMS = 1 << 23       # entries of pre per row chunk (32 MiB fp32): full-speed GEMMs, filter mostly from cache


# ---- capability ---------------------------------------------------------------------------------------------

_BF16_HW: bool | None = None


def _bf16_hardware() -> bool:
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
    """What ``bf16=None`` resolves to (see the module docstring)."""
    env = os.environ.get("MONOSEMANTIC_FAST_BF16", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return _bf16_hardware() and (d_sae is None or d_sae >= _BF16_MIN_F)


# Where each path wins, by the active fraction L0/F of the previous step (benchmarks/fast_kernels.py, B 4096,
# D 512, F 4096, 2 threads, ms per step; dense fp32 ≈ 770 throughout):
#   L0 100 (2.4 %): fast fp32 177, fast bf16 150   L0 300 (7.3 %): 283 / 308   L0 800 (19.5 %): 548 / 736
# A fresh Kaiming-initialised dictionary fires on about half its features until the L1 term has pushed the
# encoder biases down, so the first tens of steps are dense whatever the kind of step.
DENSE_ABOVE = 0.25   # active fraction above which the plain dense step is the faster one
BF16_BELOW = 0.05    # the bf16 filter's candidates are recomputed in fp32: it pays only while they are few


def plan_step(density: float | None, d_sae: int, bf16: bool | None = None) -> tuple[bool, bool]:
    """``(use_fast, use_bf16)`` for a step whose previous step had active fraction ``density`` (None: unknown, as
    on the first step after a resume, or of a dictionary with b_e = 0, which is about half active).  Both paths compute the same loss and
    gradients (module docstring), so this only picks the cheaper one.  ``bf16=True/False`` forces the filter
    whenever the fast path runs; ``None`` uses it where the hardware has it and the step is sparse enough."""
    if density is None or density > DENSE_ABOVE:
        return False, False
    if bf16 is None:
        return True, bf16_default(d_sae) and density < BF16_BELOW
    return True, bool(bf16)


def fast_supported(sae) -> bool:
    """True for the ReLU-L1 objective (a kind that overrides none of the forward/loss hooks), fp32, CPU."""
    from .sae import Dictionary

    cls = type(sae)
    if not isinstance(sae, Dictionary):
        return False
    for name in ("pre_acts", "encode", "decode", "forward", "loss"):
        if getattr(cls, name) is not getattr(Dictionary, name):
            return False
    ps = (sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D)
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in ps)


# ---- kernels --------------------------------------------------------------------------------------------------

def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
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


def _flat_positive_bf16(out: torch.Tensor) -> torch.Tensor:
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


def _chunk_rows(B: int, F: int) -> int:
    r = max(8, _CHUNK_ELEMS // max(F, 1))
    r -= r % 8  # r·F divisible by 8 → the word-wise nonzero applies to every chunk but (maybe) the last
    return max(8, min(r, B))


_SCRATCH: dict = {}


def _scratch(name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A reused work buffer, one per thread (fresh multi-MB allocations cost page faults on every step).

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


def release_buffers() -> None:
    """Free the work buffers kept between calls (32 MiB fp32 chunk, 16 MiB bf16 chunk, the bf16 operands)."""
    _SCRATCH.clear()


def _active_fp32(xbar: torch.Tensor, W: torch.Tensor, b: torch.Tensor):
    """(flat indices, values) of the strictly positive entries of xbar @ W + b, computed in row chunks."""
    B, F = xbar.shape[0], W.shape[1]
    R = _chunk_rows(B, F)
    buf = _scratch("pre32", (R, F), torch.float32)
    idx, vals = [], []
    for i in range(0, B, R):
        n = min(R, B - i)
        pre = torch.addmm(b, xbar[i:i + n], W, out=buf[:n])
        fl = _flat_nonzero(pre > 0)
        vals.append(pre.view(-1).index_select(0, fl))
        idx.append(fl.add_(i * F))
    return torch.cat(idx), torch.cat(vals)


def _candidates_bf16(xbar: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of a superset of {xbar @ W + b > 0} from one bf16 matmul with a rigorous error margin, and
    Σ‖W_:j‖² (NaN/inf iff W holds a NaN/inf).

    With x̃ = bf16(x̄) = x̄ − x_lo and w̃ = bf16(w) = w − w_lo (x_lo, w_lo exact in fp32):

        x̄·w − x̃·w̃ = x_lo·w + x̃·w_lo,   |·| ≤ ‖x_lo‖‖w‖ + ‖x̃‖‖w_lo‖            (Cauchy–Schwarz)

    and the fp32 accumulation of the K exact bf16 products adds ≤ γ_K Σ|x̃_i w̃_i| ≤ γ_K (1+u) ‖x̃‖‖w‖
    (γ_K = K·2⁻²⁴/(1 − K·2⁻²⁴)).  So one (B × K) @ (K × F) bf16 product, K = D + 4 (padded to 16), computes

        x̃·w̃ + (‖x_lo‖ + γ_K(1+u)‖x̃‖)·‖w‖ + ‖x̃‖·‖w_lo‖ + b_hi + b_lo

    with both margin factors inflated by (1 + 4u) before their own bf16 rounding, and b_hi + b_lo carrying
    b + 2⁻¹⁰|b| to 16 bits (covering the residual u²|b| and the accumulation error on the bias terms).  That sum is
    ≥ the fp32 pre-activation's exact value minus nothing, i.e. > 0 wherever x̄·w + b > 0; rounding the fp32
    accumulator to bf16 keeps its sign (up to flush-to-zero below 1e-38).  Typically ‖x_lo‖ ≈ 0.4u‖x̄‖, so the
    margin is ≈ 0.8u‖x̄‖‖w‖ (u = 2⁻⁸) and the candidates are ≈ 1.3× the active entries.
    """
    B, D = xbar.shape
    F = W.shape[1]
    Kp = (D + 4 + 15) // 16 * 16
    up = 1.0 + 4 * _U_BF16
    gamma = (Kp * 2.0 ** -24) / (1 - Kp * 2.0 ** -24) * (1 + _U_BF16)
    xa = _scratch("xa16", (B, Kp), torch.bfloat16)
    xa[:, :D] = xbar  # round to nearest even
    xt = xa[:, :D].float()
    xt_norm = xt.square().sum(1).sqrt_()
    xlo_norm = xt.neg_().add_(xbar).square_().sum(1).sqrt_()  # ‖x̄ − x̃‖
    xa[:, D] = xlo_norm.add_(xt_norm, alpha=gamma).mul_(up)
    xa[:, D + 1] = xt_norm.mul_(up)
    xa[:, D + 2:D + 4] = 1.0
    xa[:, D + 4:] = 0
    Wa = _scratch("Wa16", (Kp, F), torch.bfloat16)
    n2 = torch.zeros(F, dtype=torch.float32)
    nlo2 = torch.zeros(F, dtype=torch.float32)
    for i in range(0, D, 128):  # bf16 copy and the two squared column norms in row blocks (no D×F temporary)
        blk = W[i:i + 128]
        r = blk.shape[0]
        Wa[i:i + r] = blk
        n2 += blk.square().sum(0)
        nlo2 += Wa[i:i + r].float().sub_(blk).square_().sum(0)
    Wa[D] = n2.sqrt().mul_(up)
    Wa[D + 1] = nlo2.sqrt_().mul_(up)
    b2 = b + b.abs() * _BIAS_SLACK
    hi = b2.to(torch.bfloat16)
    Wa[D + 2] = hi
    Wa[D + 3] = b2 - hi.float()
    Wa[D + 4:] = 0
    R = _chunk_rows(B, F)
    buf = _scratch("pre16", (R, F), torch.bfloat16)
    idx = []
    for i in range(0, B, R):
        n = min(R, B - i)
        fl = _flat_positive_bf16(torch.mm(xa[i:i + n], Wa, out=buf[:n]))
        idx.append(fl.add_(i * F))
    return torch.cat(idx), n2.sum()


def _csr(crow, col, val, shape):
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Row pointer (n+1,) of sorted bucket ids ``keys``."""
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    if keys.numel():
        torch.cumsum(torch.bincount(keys, minlength=n), 0, out=ptr[1:])
    return ptr


def _sparse_pattern(x, W_enc, b_enc, use_bf16: bool):
    """The active set of ReLU(x̄ W_enc + b_enc) in both orders.

    Returns (rows, cols, vals) in row-major order, (rowsT, colsT, valsT, colptr) in feature-major order, a
    permutation linking the two — ``("to_rows", p)``: rows = rowsT[p], or ``("to_cols", p)``: rowsT = rows[p] —
    and a scalar that is NaN/inf iff W_enc or b_enc holds a NaN/inf.
    """
    B, F = x.shape[0], W_enc.shape[1]
    if use_bf16:
        fl, probe = _candidates_bf16(x, W_enc, b_enc)
        rows = torch.div(fl, F, rounding_mode="floor")
        cols = fl - rows * F
        perm = torch.argsort(cols, stable=True)
        colsT, rowsT = cols.index_select(0, perm), rows.index_select(0, perm)
        # fp32 recompute of the candidates, feature-major (each encoder column is read once, from cache)
        init = b_enc.index_select(0, colsT)
        valsT = torch.sparse.sampled_addmm(_csr(_offsets(colsT, F), rowsT, init, (F, B)), W_enc.t(), x.t()).values()
        keep = (valsT > 0).nonzero().view(-1)
        rowsT, colsT, valsT = rowsT.index_select(0, keep), colsT.index_select(0, keep), valsT.index_select(0, keep)
        to_rows = torch.argsort(rowsT, stable=True)  # stable: columns stay ascending within a row
        rows, cols, vals = (t.index_select(0, to_rows) for t in (rowsT, colsT, valsT))
        link = ("to_rows", to_rows)
    else:
        fl, vals = _active_fp32(x, W_enc, b_enc)
        rows = torch.div(fl, F, rounding_mode="floor")
        cols = fl - rows * F
        perm = torch.argsort(cols, stable=True)
        rowsT, colsT, valsT = rows.index_select(0, perm), cols.index_select(0, perm), vals.index_select(0, perm)
        link = ("to_cols", perm)
        probe = torch.mv(W_enc, torch.ones(F, dtype=W_enc.dtype)).sum()
    return rows, cols, vals, rowsT, colsT, valsT, _offsets(colsT, F), link, probe + b_enc.sum()


class _FastReluL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, lam: float, use_bf16: bool):
        B, D = x.shape
        F = W_enc.shape[1]
        xbar = x - b_dec
        rows, cols, vals, rowsT, colsT, valsT, colptr, (link, perm), probe = _sparse_pattern(
            xbar, W_enc, b_enc, use_bf16)
        crow = _offsets(rows, B)
        x_hat = Fn.embedding_bag(cols, W_dec, crow[:-1], mode="sum", per_sample_weights=vals)
        x_hat += b_dec
        r = x_hat.sub_(x)
        mse = r.pow(2).mean()
        l1 = vals.sum() / B
        # NaN/inf guard: the filters drop NaN pre-activations, the dense path would propagate them into the loss
        loss = mse + lam * l1 + probe * 0.0
        ctx.save_for_backward(W_enc, W_dec, xbar, r, rowsT, colsT, valsT, colptr, cols, crow, perm)
        ctx.link = link
        ctx.lam, ctx.shape = lam, (B, D, F)
        fired = colptr[1:] > colptr[:-1]
        l0 = torch.tensor(vals.numel() / max(B, 1), dtype=torch.float32)
        ctx.mark_non_differentiable(vals, crow, cols, l0, fired)
        return loss, mse, l1, vals, crow, cols, l0, fired

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_mse, g_l1, *_):
        W_enc, W_dec, xbar, r, rowsT, colsT, valsT, colptr, cols, crow, perm = ctx.saved_tensors
        B, D, F = ctx.shape
        zero = torch.zeros((), dtype=torch.float32)
        g_loss = zero if g_loss is None else g_loss
        gm = g_loss + (zero if g_mse is None else g_mse)
        gs = g_loss * ctx.lam + (zero if g_l1 is None else g_l1)
        need_x, need_We, need_be, need_Wd, need_bd = ctx.needs_input_grad[:5]
        dxh = r * (gm * (2.0 / (B * D)))
        # dL/df on the active entries, feature-major (= dL/dpre there; ReLU passes it, elsewhere it is 0)
        init = (gs / B).expand(valsT.numel()).contiguous()
        dfT = torch.sparse.sampled_addmm(_csr(colptr, rowsT, init, (F, B)), W_dec, dxh.t()).values()
        off = colptr[:-1]
        dW_dec = dW_enc = db_enc = db_dec = dx = None
        if need_Wd:
            dW_dec = Fn.embedding_bag(rowsT, dxh, off, mode="sum", per_sample_weights=valsT)
        if need_We:
            dW_enc = torch.empty(D, F, dtype=torch.float32)
            dW_enc.copy_(Fn.embedding_bag(rowsT, xbar, off, mode="sum", per_sample_weights=dfT).t())
        if need_be or need_bd:
            db_enc = torch.zeros(F, dtype=torch.float32).index_add_(0, colsT, dfT)
        if need_bd:
            db_dec = dxh.sum(0) - torch.mv(W_enc, db_enc)
        if need_x:
            if ctx.link == "to_rows":
                df = dfT.index_select(0, perm)
            else:
                df = torch.empty_like(dfT)
                df[perm] = dfT
            dxbar = Fn.embedding_bag(cols, W_enc.t().contiguous(), crow[:-1], mode="sum", per_sample_weights=df)
            dx = dxbar - dxh
        return dx, dW_enc, (db_enc if need_be else None), dW_dec, db_dec, None, None


def fast_loss(sae, x_BD: torch.Tensor, *, bf16: bool | None = None, step: int | None = None) -> dict:
    """Sparse-aware ``ReluDictionary.loss``; see the module docstring for what is returned and the tolerances."""
    use_bf16 = bf16_default(sae.W_enc_DF.shape[1]) if bf16 is None else bool(bf16)
    x = x_BD if x_BD.dtype == torch.float32 else x_BD.float()
    if x.ndim != 2 or x.shape[-1] != sae.W_enc_DF.shape[0]:
        sae.check_input(x)
    x = x.contiguous()
    if x.shape[0] == 0:  # nothing to be sparse about; the dense path defines the (NaN) result
        out = sae.loss(x)
        F = sae.W_enc_DF.shape[1]
        empty = torch.zeros(0, dtype=torch.int64)
        f = _csr(torch.zeros(1, dtype=torch.int64), empty, torch.zeros(0), (0, F))
        return {**out, "f_BF": f, "l0": torch.tensor(float("nan")),
                "fired_F": torch.zeros(F, dtype=torch.bool), "bf16": False}
    loss, mse, l1, vals, crow, cols, l0, fired = _FastReluL1.apply(
        x, sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D, float(sae.cfg.l1_coefficient), use_bf16)
    f = _csr(crow, cols, vals, (x.shape[0], sae.W_enc_DF.shape[1]))
    return {"loss": loss, "mse": mse, "sparsity": l1, "f_BF": f, "l0": l0, "fired_F": fired, "bf16": use_bf16}


def make_adam(params, lr: float = 1e-3, betas=(0.9, 0.999), **kw) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the single-kernel CPU implementation (same update rule, one pass per tensor)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **kw)


def fast_train_step(sae, opt: torch.optim.Optimizer, x_BD: torch.Tensor, *, bf16: bool | None = None) -> dict:
    """zero_grad → fast_loss → backward → before_optimizer_step → opt.step → after_optimizer_step."""
    opt.zero_grad(set_to_none=True)
    out = fast_loss(sae, x_BD, bf16=bf16)
    out["loss"].backward()
    sae.before_optimizer_step()
    opt.step()
    sae.after_optimizer_step()
    return out
