"""A sparse-aware training step for the ReLU-L1 dictionary: the same objective and the same gradients as
``ReluDictionary.loss`` + autograd, at a fraction of the cost.

Only the encoder's forward matmul is dense (B×D @ D×F).  Everything after it touches only each token's active
features (L0 ≈ 10–100 of F):

    forward   x̄ = x − b_dec                                  dense  B×D
              pre = x̄ W_enc + b_enc, chunked over rows       dense  B×D×F  (fp32, or bf16 as a filter, see below)
              active set {(b, j): pre_bj > 0} → CSR(B×F)     packed nonzero on the chunk in cache
              x̂ = Σ_j f_bj W_dec[j] + b_dec                  embedding_bag(per_sample_weights=f)
    backward  dx̂ = 2 (x̂ − x) / (B·D)                          dense  B×D
              df_bj = dx̂_b · W_dec[j] + λ/B  (active only)   sampled_addmm
              dW_dec[j] = Σ_b f_bj dx̂_b                      embedding_bag over the transposed pattern
              dW_enc[:, j] = Σ_b df_bj x̄_b                    embedding_bag over the transposed pattern
              db_enc = Σ_b df_b ;  db_dec = Σ_b dx̂_b − W_enc db_enc

API
---
``fast_supported(sae) -> bool``
    True when ``sae`` is a ReLU-L1 dictionary (its class does not override ``pre_acts/encode/decode/forward/
    loss``) with float32 parameters on the CPU.  Call ``fast_loss`` only when this is True.

``fast_loss(sae, x_BD, *, bf16=None, step=None) -> dict``
    Drop-in for ``sae.loss(x_BD, step=step)``.  Returns

    * ``"loss"``, ``"mse"``, ``"sparsity"`` — 0-d float32 tensors.  ``loss`` (and ``mse``/``sparsity``) carry a
      ``grad_fn``: ``loss.backward()`` fills ``.grad`` of ``W_enc_DF``, ``b_enc_F``, ``W_dec_FD``, ``b_dec_D``
      (and of ``x_BD`` if it requires grad) with the gradients autograd computes through the dense path.
    * ``"f_BF"`` — the feature activations as a ``torch.sparse_csr_tensor`` of shape (B, F), float32, detached,
      holding exactly the strictly positive entries (``.crow_indices()``, ``.col_indices()``, ``.values()``;
      ``.to_dense()`` gives the dense ``f_BF``).  Dense-only code such as ``(f_BF > 0).any(0)`` does not work on
      it: use the two keys below.
    * ``"l0"`` — 0-d float32 tensor, mean number of active features per row (= ``(f_BF > 0).sum(-1).mean()``).
    * ``"fired_F"`` — bool tensor (F,), True where the feature is active on at least one row of the batch
      (= ``(f_BF > 0).any(0)``).
    * ``"bf16"`` — bool, whether the bf16 encoder filter was used for this call.

``fast_train_step(sae, opt, x_BD, *, bf16=None) -> dict``
    One full step of the loop in ``train_sae.py`` (zero_grad, fast_loss, backward, before_optimizer_step,
    opt.step, after_optimizer_step); returns the ``fast_loss`` dict.  Create the optimizer with
    ``make_adam`` (``fused=True`` Adam: on this CPU the default for-loop Adam costs more than the whole sparse
    forward/backward at F=16384).

``bf16_default() -> bool``
    What ``bf16=None`` resolves to: True when the CPU has native bf16 dot products (AVX512-BF16 or AMX) and
    the environment variable ``MONOSEMANTIC_FAST_BF16`` is not ``0`` (set it to ``1`` to force bf16 on).

Precision
---------
fp32 mode (``bf16=False``): the dense encoder is an fp32 ``addmm``; all sparse kernels are fp32.  Everything
equals the dense path up to fp32 summation order (relative differences ~1e-6; tested at < 1e-4).

bf16 mode (``bf16=True``): the dense bf16 matmul is used only as a *filter*.  It computes, per entry,

    pre~_bj + c·‖x̄_b‖·‖W_enc[:, j]‖        (c = 3·2⁻⁸, the bias kept to 16 bits as a hi+lo bf16 pair)

whose error is provably smaller than the margin term (bf16 rounds each factor by ≤ 2⁻⁸ relative, accumulation
is fp32, Cauchy–Schwarz bounds Σ|x̄_i w_ij| by ‖x̄‖‖w_j‖), so the candidate set is a superset of the fp32 active
set.  The candidates' pre-activations are then recomputed in fp32 (``sampled_addmm``) and only the strictly
positive ones are kept.  So bf16 mode decides the *same* active set as fp32 and its values and gradients are
fp32: it meets the same tolerance as fp32 mode (no bf16 rounding reaches the outputs).  The price is the fp32
recompute of the candidates (about 1.5–2× the true active count).  Master weights stay fp32; nothing about the
parameters or optimizer changes.

Caveats
-------
* A NaN/inf in ``W_enc_DF``/``b_enc_F`` makes ``loss`` NaN/inf (as in the dense path, so the loop's divergence
  check still fires); the gradients are then meaningless (as in the dense path).
* Ties: an entry whose fp32 pre-activation is exactly 0 is inactive in both paths (ReLU'(0) = 0 in torch).
  Entries within ~1e-7 relative of zero may be classified differently from the dense path because the
  summation order differs; this is fp32 rounding, not a method difference.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as Fn

__all__ = ["fast_supported", "fast_loss", "fast_train_step", "make_adam", "bf16_default"]

_U_BF16 = 2.0 ** -8          # unit roundoff of bf16 (8 significant bits, round to nearest)
_MARGIN_C = 3 * _U_BF16      # margin factor c (the bound needs (1-u)^2 c ≥ 2u + u^2 + K·2^-24 (1+c))
_BIAS_SLACK = 2.0 ** -10     # relative slack on the bias row (covers u^2 and the fp32 accumulation on it)
_CHUNK_ELEMS = 1 << 22       # entries of pre per row chunk (16 MiB fp32): stays in cache between matmul and filter


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


def bf16_default() -> bool:
    env = os.environ.get("MONOSEMANTIC_FAST_BF16", "").strip()
    if env in ("0", "false", "False", "no"):
        return False
    if env in ("1", "true", "True", "yes"):
        return True
    return _bf16_hardware()


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


def _chunk_rows(B: int, F: int) -> int:
    r = max(8, _CHUNK_ELEMS // max(F, 1))
    r -= r % 8  # r·F divisible by 8 → the packed nonzero applies to every chunk but the last
    return max(8, min(r, B))


def _active_fp32(xbar: torch.Tensor, W: torch.Tensor, b: torch.Tensor):
    """(flat indices, values) of the strictly positive entries of xbar @ W + b, computed in row chunks."""
    B, F = xbar.shape[0], W.shape[1]
    R = _chunk_rows(B, F)
    buf = torch.empty(min(R, B), F, dtype=torch.float32)
    idx, vals = [], []
    for i in range(0, B, R):
        n = min(R, B - i)
        pre = torch.addmm(b, xbar[i:i + n], W, out=buf[:n])
        fl = _flat_nonzero(pre > 0)
        vals.append(pre.view(-1).index_select(0, fl))
        idx.append(fl.add_(i * F))
    return torch.cat(idx), torch.cat(vals)


def _candidates_bf16(xbar: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flat indices of a superset of {pre > 0}, from one bf16 matmul with the margin folded in (see module doc)."""
    B, D = xbar.shape
    F = W.shape[1]
    K = D + 3
    Kp = (K + 15) // 16 * 16
    xa = torch.zeros(B, Kp, dtype=torch.bfloat16)
    xa[:, :D] = xbar
    xa[:, D] = xbar.norm(dim=1).mul_(_MARGIN_C)
    xa[:, D + 1:D + 3] = 1.0
    Wa = torch.empty(Kp, F, dtype=torch.bfloat16)
    Wa[:D] = W
    Wa[D] = W.norm(dim=0)
    b2 = b + b.abs() * _BIAS_SLACK
    hi = b2.to(torch.bfloat16)
    Wa[D + 1] = hi
    Wa[D + 2] = (b2 - hi.float())
    Wa[D + 3:] = 0
    R = _chunk_rows(B, F)
    buf = torch.empty(min(R, B), F, dtype=torch.bfloat16)
    idx = []
    for i in range(0, B, R):
        n = min(R, B - i)
        out = torch.mm(xa[i:i + n], Wa, out=buf[:n])
        # bf16 > 0 ⇔ its int16 bit pattern > 0 (sign bit clear, not +0); rounding never flips a sign.
        fl = _flat_nonzero(out.view(torch.int16) > 0)
        idx.append(fl.add_(i * F))
    return torch.cat(idx)


def _csr(crow, col, val, shape):
    return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Row pointer (n+1,) of sorted bucket ids ``keys``."""
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    if keys.numel():
        torch.cumsum(torch.bincount(keys, minlength=n), 0, out=ptr[1:])
    return ptr


class _FastReluL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, lam: float, use_bf16: bool):
        B, D = x.shape
        F = W_enc.shape[1]
        xbar = x - b_dec
        if use_bf16:
            fl = _candidates_bf16(xbar, W_enc, b_enc)
            rows = torch.div(fl, F, rounding_mode="floor")
            cols = fl - rows * F
            crow = _offsets(rows, B)
            vals = torch.sparse.sampled_addmm(_csr(crow, cols, b_enc.index_select(0, cols), (B, F)),
                                              xbar, W_enc).values()
            keep = vals > 0
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
            probe = W_enc.sum() + b_enc.sum()  # NaN/inf guard (the filter drops NaN entries)
        else:
            fl, vals = _active_fp32(xbar, W_enc, b_enc)
            rows = torch.div(fl, F, rounding_mode="floor")
            cols = fl - rows * F
            probe = W_enc.sum() + b_enc.sum()
        crow = _offsets(rows, B)
        x_hat = Fn.embedding_bag(cols, W_dec, crow[:-1], mode="sum", per_sample_weights=vals)
        x_hat += b_dec
        r = x_hat.sub_(x)
        mse = r.pow(2).mean()
        l1 = vals.sum() / B
        loss = mse + lam * l1 + probe * 0.0
        # transposed pattern (features → rows), shared by the backward's three sparse products
        perm = torch.argsort(cols, stable=True)
        colptr = _offsets(cols.index_select(0, perm), F)
        ctx.save_for_backward(x, W_enc, W_dec, xbar, r, rows, cols, crow, vals, perm, colptr)
        ctx.lam, ctx.shape = lam, (B, D, F)
        fired = colptr[1:] > colptr[:-1]
        l0 = torch.tensor(vals.numel() / max(B, 1), dtype=torch.float32)
        ctx.mark_non_differentiable(vals, crow, cols, l0, fired)
        return loss, mse, l1, vals, crow, cols, l0, fired

    @staticmethod
    def backward(ctx, g_loss, g_mse, g_l1, *_):
        x, W_enc, W_dec, xbar, r, rows, cols, crow, vals, perm, colptr = ctx.saved_tensors
        B, D, F = ctx.shape
        lam = ctx.lam
        zero = torch.zeros((), dtype=torch.float32)
        g_loss = zero if g_loss is None else g_loss
        gm = g_loss + (zero if g_mse is None else g_mse)
        gs = g_loss * lam + (zero if g_l1 is None else g_l1)
        need_x, need_We, need_be, need_Wd, need_bd = ctx.needs_input_grad[:5]
        dxh = r * (gm * (2.0 / (B * D)))
        # dL/df on the active entries (= dL/dpre there; ReLU passes it through, elsewhere it is 0)
        init = (gs / B).expand(vals.numel()).contiguous()
        df = torch.sparse.sampled_addmm(_csr(crow, cols, init, (B, F)), dxh, W_dec.t()).values()
        rowsT = rows.index_select(0, perm)
        offT = colptr[:-1]
        dW_dec = dW_enc = db_enc = db_dec = dx = None
        if need_Wd:
            dW_dec = Fn.embedding_bag(rowsT, dxh, offT, mode="sum", per_sample_weights=vals.index_select(0, perm))
        if need_We:
            dW_enc = Fn.embedding_bag(rowsT, xbar, offT, mode="sum",
                                      per_sample_weights=df.index_select(0, perm)).t().contiguous()
        if need_be or need_bd:
            db_enc = torch.zeros(F, dtype=torch.float32).index_add_(0, cols, df)
        if need_bd:
            db_dec = dxh.sum(0) - torch.mv(W_enc, db_enc)
        if need_x:
            dxbar = Fn.embedding_bag(cols, W_enc.t().contiguous(), crow[:-1], mode="sum", per_sample_weights=df)
            dx = dxbar - dxh
        return dx, dW_enc, (db_enc if need_be else None), dW_dec, db_dec, None, None


def fast_loss(sae, x_BD: torch.Tensor, *, bf16: bool | None = None, step: int | None = None) -> dict:
    """Sparse-aware ``ReluDictionary.loss``; see the module docstring for what is returned and the tolerances."""
    use_bf16 = bf16_default() if bf16 is None else bool(bf16)
    if use_bf16 and not _bf16_hardware() and bf16 is None:
        use_bf16 = False
    x = x_BD if x_BD.dtype == torch.float32 else x_BD.float()
    if x.ndim != 2 or x.shape[-1] != sae.W_enc_DF.shape[0]:
        sae.check_input(x)
    x = x.contiguous()
    loss, mse, l1, vals, crow, cols, l0, fired = _FastReluL1.apply(
        x, sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D, float(sae.cfg.l1_coefficient), use_bf16)
    f = _csr(crow, cols, vals, (x.shape[0], sae.W_enc_DF.shape[1]))
    return {"loss": loss, "mse": mse, "sparsity": l1, "f_BF": f, "l0": l0, "fired_F": fired, "bf16": use_bf16}


def make_adam(params, lr: float = 1e-3, betas=(0.9, 0.999), **kw) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the single-kernel CPU implementation (same update rule, one pass per tensor)."""
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
