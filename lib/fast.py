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

The same kernels compute the april2024 recipe (``recipes.April2024Dictionary``; ``fast_form`` says which), whose
forward is this ReLU shape with two differences: pre = x W_enc + b_enc (no b_dec subtraction, so db_dec = Σ_b dx̂_b)
and the penalty λ Σ_j f_bj n_j with n_j = ‖W_dec[j]‖, so df_bj gets λ n_j / B instead of λ/B and
dW_dec[j] gains (λ/B) (Σ_b f_bj) W_dec[j] / n_j.  λ is the recipe's ``sparsity_coefficient(step)``.

TopK and BatchTopK (``kinds.py``): the selection needs every pre-activation, so the encoder matmul and the top-k
over it stay dense — in bf16 where the hardware has it, with an exact fp32 check and recompute
(``sparse.topk_entries``: the same entries as the fp32 top-k; BatchTopK takes each row's top 2k that way, then
the batch's threshold, ``sparse.batch_topk_entries``), else in fp32 with the dense path's ops.  The
decoder, the MSE's backward and the encoder's gradient then touch only the k selected entries per row (k·B per
batch):

    forward   pre = x̄ W_enc + b_enc; S = TopK_k per row (BatchTopK: the k·B largest ReLU(pre) of the batch)
              x̂ = Σ_(b,j)∈S ReLU(pre_bj) W_dec[j] + b_dec       embedding_bag
    backward  df_bj = 1[pre_bj > 0] dx̂_b · W_dec[j]  on S         sampled_addmm, row-major
              dW_dec, dW_enc, db_enc, db_dec, dx                as above, over S
    AuxK      on the dead latents' columns only: (x − b_dec) W_enc[:, dead] + b_enc[dead] and its top-k_aux per
              row (the same exact selection; in bf16 from the main product's columns, ``topk_entries``' subset),
              ê = z W_dec[dead] and its backward over the k_aux selected entries

The step's firing record goes to the kind (``_record_sparse``) as its dense ``loss`` would.  ``"bf16"`` says
whether the selection took the bf16 product.

API
---
``fast_supported(sae) -> bool``
    True when ``sae`` is a ReLU-L1 dictionary — its class overrides none of ``pre_acts/encode/decode/forward/
    loss`` (so ``ReluDictionary``, not e.g. a JumpReLU kind), or declares a ``fast_form`` (april2024, topk,
    batchtopk) — with float32 parameters on the CPU.  Call ``fast_loss`` only when this is True (it raises ConfigError for other kinds).

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

``make_adam(params, lr, betas, **kw)``
    ``torch.optim.Adam(..., fused=True)`` (falls back to the default where unsupported): the same update in one
    kernel per tensor.  Measured here, 1 thread: 12 ms vs 93 ms per step at F=16384 (2.5 vs 9 ms at F=4096).

``bf16_default(d_sae=None) -> bool`` (from ``monosemantic.sparse``)
    What ``bf16=None`` resolves to: True when the CPU has native bf16 dot products (``sparse.bf16_available``:
    AVX512-BF16 or AMX) and F ≥ 1024 (below that the fp32 recompute of the candidates costs more than the bf16
    matmul saves).  The environment variable ``MONOSEMANTIC_FAST_BF16=0/1`` forces it off/on.

``plan_step(density, d_sae, bf16=None) -> (use_fast, use_bf16)``
    The cheaper of the two exact paths for the next step of the training loop (see its docstring).

The kernels that find the active entries (``active_fp32``, the bf16 filter ``candidates_bf16``) and their work
buffers (one set per thread; up to ≈ 70 MiB at F=16384) live in ``monosemantic.sparse``, shared with the
statistics and the analyses.

Precision
---------
fp32 mode (``bf16=False``): the dense encoder is an fp32 ``addmm``; every sparse kernel is fp32.  Results equal
the dense path up to fp32 summation order: measured at B=4096, D=512, F=4096 and 16384, L0≈30 — loss/mse
exact, sparsity ≤ 1.5e-7, gradients ‖Δ‖/‖g‖ ≤ 3.2e-7.  Tests assert < 1e-5 (losses) and < 1e-4 (gradients),
l0/fired_F exact.

bf16 mode (``bf16=True``): the bf16 matmul is only a *filter* that provably keeps every fp32-positive entry (see
``sparse.candidates_bf16``: a rank-2 Cauchy–Schwarz bound on the rounding of x̄ and W_enc, plus the fp32 accumulation
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

import torch
import torch.nn.functional as Fn
from torch.autograd.function import once_differentiable

from .errors import ConfigError
from .sparse import (active_fp32, batch_topk_entries, bf16_default, bf16_operand, bf16_operand_rows,
                     candidates_bf16, csr_tensor, linear_encoder, offsets, sampled_dots, scratch, topk_entries,
                     TOPK_SLACK)

__all__ = ["fast_supported", "fast_loss", "make_adam", "bf16_default", "plan_step"]


# Where each path wins, by the active fraction L0/F of the previous step (benchmarks/fast_kernels.py, B 4096,
# D 512, F 4096, 2 threads, ms per step; dense fp32 ≈ 770 throughout):
#   L0 100 (2.4 %): fast fp32 177, fast bf16 150   L0 300 (7.3 %): 283 / 308   L0 800 (19.5 %): 548 / 736
# A fresh Kaiming-initialised dictionary fires on about half its features until the L1 term has pushed the
# encoder biases down, so the first tens of steps are dense whatever the kind of step.
DENSE_ABOVE = 0.25   # active fraction above which the plain dense step is the faster one
BF16_BELOW = 0.05    # the bf16 filter's candidates are recomputed in fp32: it pays only while they are few
# SAETrainConfig.mixed_dense: the kind's loss under bf16 autocast above this active fraction.  One step of the
# default A/2 (B 4096, F 16,384, one thread, a loaded machine): at 15 % active 3.6 s against 5.9 (dense fp32) and
# 5.7 (exact sparse fp32); at 7 % 3.5 against 3.0 for the exact sparse step, which wins from there down.
MIXED_DENSE_ABOVE = 0.1


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


TM2023_FORM = {"subtract_b_dec": True, "decoder_norm_l1": False}


def fast_form(sae) -> dict | None:
    """Which ReLU-L1-shaped objective ``sae`` trains, as the fast step's two switches, or None if none is.

    ``subtract_b_dec``: pre = (x − b_dec) W_enc + b_enc (tm2023), else x W_enc + b_enc; ``decoder_norm_l1``: the
    penalty is Σ_i f_i ‖W_dec,i‖ (april2024), else Σ_i f_i.  tm2023's ReLU-L1 is a kind that overrides none of the
    forward/loss hooks; a recipe class whose objective is one of the others declares it as ``fast_form`` (and its
    λ schedule as ``sparsity_coefficient(step)``).  TopK and BatchTopK declare ``{"activation": "topk"}`` /
    ``{"activation": "batchtopk"}`` (their step is ``_fast_topk_loss``)."""
    from .sae import Dictionary

    declared = getattr(type(sae), "fast_form", None)
    if declared is not None:
        if not isinstance(sae, Dictionary):
            return None
        return {"subtract_b_dec": sae.subtracts_b_dec, "decoder_norm_l1": False, **declared}
    if not linear_encoder(sae):
        return None
    cls = type(sae)
    for name in ("decode", "forward", "loss"):
        if getattr(cls, name) is not getattr(Dictionary, name):
            return None
    return dict(TM2023_FORM)


def fast_supported(sae) -> bool:
    """True for an objective the fast step computes (``fast_form``: tm2023's and april2024's ReLU-L1, TopK,
    BatchTopK) with fp32 parameters on the CPU."""
    if fast_form(sae) is None:
        return False
    ps = (sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D)
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in ps)


# ---- the autograd function ---------------------------------------------------------------------------------------

def _sparse_pattern(x, W_enc, b_enc, use_bf16: bool):
    """The active set of ReLU(x̄ W_enc + b_enc) in both orders.

    Returns (rows, cols, vals) in row-major order, (rowsT, colsT, valsT, colptr) in feature-major order, a
    permutation linking the two — ``("to_rows", p)``: rows = rowsT[p], or ``("to_cols", p)``: rowsT = rows[p] —
    and a scalar that is NaN/inf iff W_enc or b_enc holds a NaN/inf.
    """
    F = W_enc.shape[1]
    if use_bf16:
        Wa_KF = scratch("Wa16", (bf16_operand_rows(x.shape[1]), F), torch.bfloat16)
        Wa, probe = bf16_operand(W_enc, b_enc, out=Wa_KF)
        fl = candidates_bf16(x, Wa)
        rows = torch.div(fl, F, rounding_mode="floor")
        cols = fl - rows * F
        perm = torch.argsort(cols, stable=True)
        colsT, rowsT = cols.index_select(0, perm), rows.index_select(0, perm)
        # fp32 recompute of the candidates, feature-major (each encoder column is read once, from cache)
        valsT = sampled_dots(offsets(colsT, F), rowsT, b_enc.index_select(0, colsT), W_enc.t(), x.t())
        keep = (valsT > 0).nonzero().view(-1)
        rowsT, colsT, valsT = rowsT.index_select(0, keep), colsT.index_select(0, keep), valsT.index_select(0, keep)
        to_rows = torch.argsort(rowsT, stable=True)  # stable: columns stay ascending within a row
        rows, cols, vals = (t.index_select(0, to_rows) for t in (rowsT, colsT, valsT))
        link = ("to_rows", to_rows)
    else:
        fl, vals = active_fp32(x, W_enc, b_enc)
        rows = torch.div(fl, F, rounding_mode="floor")
        cols = fl - rows * F
        perm = torch.argsort(cols, stable=True)
        rowsT, colsT, valsT = rows.index_select(0, perm), cols.index_select(0, perm), vals.index_select(0, perm)
        link = ("to_cols", perm)
        probe = torch.mv(W_enc, torch.ones(F, dtype=W_enc.dtype)).sum()
    return rows, cols, vals, rowsT, colsT, valsT, offsets(colsT, F), link, probe + b_enc.sum()


class _FastReluL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, lam: float, use_bf16: bool, subtract_b_dec: bool = True,
                decoder_norm_l1: bool = False):
        B, D = x.shape
        F = W_enc.shape[1]
        xbar = x - b_dec if subtract_b_dec else x
        rows, cols, vals, rowsT, colsT, valsT, colptr, (link, perm), probe = _sparse_pattern(
            xbar, W_enc, b_enc, use_bf16)
        crow = offsets(rows, B)
        x_hat = Fn.embedding_bag(cols, W_dec, crow[:-1], mode="sum", per_sample_weights=vals)
        x_hat += b_dec
        r = x_hat.sub_(x)
        mse = r.pow(2).mean()
        # april2024: each active entry's penalty weight is its feature's decoder norm n_j (tm2023: 1)
        norm_F = torch.linalg.vector_norm(W_dec, dim=-1) if decoder_norm_l1 else None
        l1 = (torch.dot(vals, norm_F.index_select(0, cols)) if decoder_norm_l1 else vals.sum()) / B
        # NaN/inf guard: the filters drop NaN pre-activations, the dense path would propagate them into the loss
        loss = mse + lam * l1 + probe * 0.0
        ctx.save_for_backward(W_enc, W_dec, xbar, r, rowsT, colsT, valsT, colptr, cols, crow, perm, norm_F)
        ctx.link = link
        ctx.subtract_b_dec = subtract_b_dec
        ctx.lam, ctx.shape = lam, (B, D, F)
        fired = colptr[1:] > colptr[:-1]
        l0 = torch.tensor(vals.numel() / max(B, 1), dtype=torch.float32)
        ctx.mark_non_differentiable(vals, crow, cols, l0, fired)
        return loss, mse, l1, vals, crow, cols, l0, fired

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_mse, g_l1, *_):
        W_enc, W_dec, xbar, r, rowsT, colsT, valsT, colptr, cols, crow, perm, norm_F = ctx.saved_tensors
        B, D, F = ctx.shape
        zero = torch.zeros((), dtype=torch.float32)
        g_loss = zero if g_loss is None else g_loss
        gm = g_loss + (zero if g_mse is None else g_mse)
        gs = g_loss * ctx.lam + (zero if g_l1 is None else g_l1)
        need_x, need_We, need_be, need_Wd, need_bd = ctx.needs_input_grad[:5]
        dxh = r * (gm * (2.0 / (B * D)))
        # dL/df on the active entries, feature-major (= dL/dpre there; ReLU passes it, elsewhere it is 0)
        # (april2024: + λ n_j / B, the weighted penalty's slope)
        pen = ((gs / B) * norm_F.index_select(0, colsT) if norm_F is not None
               else (gs / B).expand(valsT.numel()).contiguous())
        dfT = sampled_dots(colptr, rowsT, pen, W_dec, dxh.t())
        off = colptr[:-1]
        dW_dec = dW_enc = db_enc = db_dec = dx = None
        if need_Wd:
            dW_dec = Fn.embedding_bag(rowsT, dxh, off, mode="sum", per_sample_weights=valsT)
            if norm_F is not None:  # ∂/∂W_dec,j of (λ/B) n_j Σ_b f_bj = (λ/B) (Σ_b f_bj) W_dec,j / n_j  (0 at n_j = 0)
                colsum_F = torch.zeros(F, dtype=torch.float32).index_add_(0, colsT, valsT)
                scale_F = torch.where(norm_F > 0, colsum_F * (gs / B) / norm_F.clamp_min(1e-30),
                                      torch.zeros((), dtype=torch.float32))
                dW_dec.addcmul_(scale_F.unsqueeze(-1), W_dec)
        if need_We:
            dW_enc = torch.empty(D, F, dtype=torch.float32)
            dW_enc.copy_(Fn.embedding_bag(rowsT, xbar, off, mode="sum", per_sample_weights=dfT).t())
        if need_be or need_bd:
            db_enc = torch.zeros(F, dtype=torch.float32).index_add_(0, colsT, dfT)
        if need_bd:
            db_dec = dxh.sum(0) - torch.mv(W_enc, db_enc) if ctx.subtract_b_dec else dxh.sum(0)
        if need_x:
            if ctx.link == "to_rows":
                df = dfT.index_select(0, perm)
            else:
                df = torch.empty_like(dfT)
                df[perm] = dfT
            dxbar = Fn.embedding_bag(cols, W_enc.t().contiguous(), crow[:-1], mode="sum", per_sample_weights=df)
            dx = dxbar - dxh
        return dx, dW_enc, (db_enc if need_be else None), dW_dec, db_dec, None, None, None, None


# ---- TopK / BatchTopK: the selection is dense (the encoder matmul and a top-k over it), the rest is k of F ------

class _FastTopKDecode(torch.autograd.Function):
    """x̂ = Σ_(b,j) f_bj W_dec[j] + b_dec over a fixed selected pattern, f = ReLU(pre) there; returns the MSE.

    The selection (which k entries per row, or k·B per batch) carries no gradient, as in the dense path's
    ``topk``/``scatter``; gradients flow through the selected pre-activations into W_enc, b_enc, b_dec and x.
    ``decoder_bias=False`` (AuxK: ê = z W_dec) leaves b_dec out of x̂; it still gets the encoder path's gradient
    (pre = (x − b_dec) W_enc + b_enc)."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, xbar, rows, cols, pre_sel, decoder_bias=True):
        B, D = x.shape
        F = W_enc.shape[1]
        crow = offsets(rows, B)
        act = pre_sel.clamp_min(0.0)
        x_hat = Fn.embedding_bag(cols, W_dec, crow[:-1], mode="sum", per_sample_weights=act)
        if decoder_bias:
            x_hat += b_dec
        r = x_hat.sub_(x)
        ctx.save_for_backward(W_enc, W_dec, xbar, r, rows, cols, crow, act, pre_sel)
        ctx.shape = (B, D, F)
        ctx.decoder_bias = decoder_bias
        ctx.mark_non_differentiable(r)
        return r.pow(2).mean(), r

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mse, _g_r):
        W_enc, W_dec, xbar, r, rows, cols, crow, act, pre_sel = ctx.saved_tensors
        B, D, F = ctx.shape
        dxh = r * (g_mse * (2.0 / (B * D)))
        # dL/dpre on the selected entries (row-major): dx̂_b · W_dec[j] where pre > 0 (ReLU), else 0
        df = sampled_dots(crow, cols, torch.zeros(cols.numel()), dxh, W_dec.t())
        df = torch.where(pre_sel > 0, df, torch.zeros((), dtype=df.dtype))
        perm = torch.argsort(cols, stable=True)
        colsT, rowsT = cols.index_select(0, perm), rows.index_select(0, perm)
        off = offsets(colsT, F)[:-1]
        dW_dec = Fn.embedding_bag(rowsT, dxh, off, mode="sum", per_sample_weights=act.index_select(0, perm))
        dW_enc = torch.empty(D, F, dtype=torch.float32)
        dW_enc.copy_(Fn.embedding_bag(rowsT, xbar, off, mode="sum",
                                      per_sample_weights=df.index_select(0, perm)).t())
        db_enc = torch.zeros(F, dtype=torch.float32).index_add_(0, cols, df)
        db_dec = -torch.mv(W_enc, db_enc)
        if ctx.decoder_bias:
            db_dec += dxh.sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = Fn.embedding_bag(cols, W_enc.t().contiguous(), crow[:-1], mode="sum", per_sample_weights=df) - dxh
        return dx, dW_enc, db_enc, dW_dec, db_dec, None, None, None, None, None


def _fast_topk_loss(sae, x: torch.Tensor, per_batch: bool, use_bf16: bool = False) -> dict:
    """Sparse-aware ``TopKDictionary.loss`` / ``BatchTopKDictionary.loss`` (``kinds.py``): the same pre-activations
    and the same selection as the dense path, then a k-of-F decoder and backward; AuxK on the dead latents' columns
    only.  Records the step's firing statistics in the kind, as its ``loss`` does."""
    B, F = x.shape[0], sae.d_sae
    k = min(int(sae.k), F)
    aux_sel = None
    with torch.no_grad():
        xbar = x - sae.b_dec_D
        Wa = None
        if use_bf16:
            Wa_KF = scratch("Wa16", (bf16_operand_rows(x.shape[1]), F), torch.bfloat16)
            Wa, _ = bf16_operand(sae.W_enc_DF.detach(), sae.b_enc_F.detach(), out=Wa_KF)
        if per_batch:  # the batch's top k·B (sparse.batch_topk_entries): per-row bf16 candidates, then a threshold
            fl, pre_sel = batch_topk_entries(xbar, sae.W_enc_DF.detach(), sae.b_enc_F.detach(), int(sae.k * B), Wa)
        else:  # the per-row top k, exact in both modes (sparse.topk_entries): bf16 finds it ~4x faster at F 16384
            dead, k_aux = _aux_latents(sae)
            if Wa is not None and k_aux and dead.numel() >= AUX_SHARED_MIN_DEAD and k + TOPK_SLACK < F:
                # AuxK's selection from the same bf16 product
                (fl, pre_sel, _), aux_sel = topk_entries(xbar, sae.W_enc_DF.detach(), sae.b_enc_F.detach(), sae.k,
                                                         Wa, subset=(dead, k_aux))
            else:
                fl, pre_sel, _ = topk_entries(xbar, sae.W_enc_DF.detach(), sae.b_enc_F.detach(), sae.k, Wa)
        rows = torch.div(fl, F, rounding_mode="floor")
        cols = fl - rows * F
    mse, r = _FastTopKDecode.apply(x, sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D, xbar, rows, cols,
                                   pre_sel)
    aux = _sparse_aux(sae, x, xbar, -r, aux_sel)
    with torch.no_grad():
        vals = pre_sel.detach().clamp_min(0.0)
        on = vals > 0
        fired = torch.zeros(F, dtype=torch.bool)
        fired[cols[on]] = True
        l0 = torch.tensor(float(on.sum()) / max(B, 1), dtype=torch.float32)
        sae._record_sparse(fired, B, vals[on])
        keep = on.nonzero().view(-1)
        f = csr_tensor(offsets(rows.index_select(0, keep), B), cols.index_select(0, keep), vals.index_select(0, keep),
                       (B, F))
    return {"loss": mse + sae.opts["aux_coefficient"] * aux, "mse": mse, "sparsity": l0.clone(), "aux": aux.detach(),
            "f_BF": f, "l0": l0, "fired_F": fired, "bf16": use_bf16}


# AuxK selects from the main bf16 product (``topk_entries``' subset) from this many dead latents up: its fixed cost
# (permuting the operand, a top k_aux + k_aux/2 per row, their fp32 recompute) beats an fp32 product over the dead
# columns only when they are many.  The default run's A/2 logs: 300–2,000 dead, 0.70 → 0.91 s a step with the
# shared selection; 10–11k dead, 1.47 → 1.13 s.
AUX_SHARED_MIN_DEAD = 4096


def _aux_latents(sae) -> tuple[torch.Tensor, int]:
    """(ascending indices of the latents AuxK trains, k_aux); k_aux 0 when AuxK is off or nothing is dead."""
    dead = sae.dead_latents().nonzero().view(-1)
    k_aux = min(int(sae.opts["k_aux"]), dead.numel()) if sae.opts["aux_coefficient"] else 0
    return dead, k_aux


def _sparse_aux(sae, x: torch.Tensor, xbar: torch.Tensor, e_BD: torch.Tensor, sel=None) -> torch.Tensor:
    """TopK's AuxK term (``TopKDictionary.aux_loss``) on the dead latents' columns only: their pre-activations'
    top k_aux per row, then the k_aux-of-n_dead decoder and backward of ``_FastTopKDecode`` without the decoder
    bias — the dense path's other B × n_dead products (the scattered z, ê = z W_dec, their backward) become
    B × k_aux ones.  The selection is ``sel`` when the main bf16 product gave it (``topk_entries``' ``subset``:
    on the default run's A/2, with ~11k dead latents, an fp32 product over their columns cost 0.44 s a step),
    else ``sparse.topk_entries`` in fp32."""
    dead, k_aux = _aux_latents(sae)
    if k_aux == 0:
        return x.new_zeros(())
    n_dead = dead.numel()
    W_enc, b_enc = sae.W_enc_DF.index_select(1, dead), sae.b_enc_F.index_select(0, dead)
    W_dec = sae.W_dec_FD.index_select(0, dead)
    with torch.no_grad():
        fl, pre_sel, _ = sel if sel is not None else topk_entries(xbar, W_enc.detach(), b_enc.detach(), k_aux)
        rows = torch.div(fl, n_dead, rounding_mode="floor")
        cols = fl - rows * n_dead
    aux, _ = _FastTopKDecode.apply(e_BD.detach(), W_enc, b_enc, W_dec, sae.b_dec_D, xbar, rows, cols, pre_sel,
                                   False)
    return aux


def fast_loss(sae, x_BD: torch.Tensor, *, bf16: bool | None = None, step: int | None = None) -> dict:
    """Sparse-aware ``sae.loss(x_BD, step=step)`` for a ReLU-L1-shaped objective or a TopK/BatchTopK dictionary
    (``fast_form``); see the module docstring for what is returned and the tolerances."""
    form = fast_form(sae)
    if form is None:
        raise ConfigError(f"the fast step computes only ReLU-L1-shaped and TopK objectives, not a "
                          f"{type(sae).__name__}; check fast_supported(sae) first")
    if form.get("activation") in ("topk", "batchtopk"):
        x = x_BD.float().contiguous()
        sae.check_input(x)
        per_batch = form["activation"] == "batchtopk"
        use_bf16 = bf16_default(sae.d_sae) if bf16 is None else bool(bf16)
        return _fast_topk_loss(sae, x, per_batch=per_batch, use_bf16=use_bf16)
    lam = sae.sparsity_coefficient(step) if hasattr(sae, "sparsity_coefficient") else sae.cfg.l1_coefficient
    use_bf16 = bf16_default(sae.W_enc_DF.shape[1]) if bf16 is None else bool(bf16)
    x = x_BD if x_BD.dtype == torch.float32 else x_BD.float()
    if x.ndim != 2 or x.shape[-1] != sae.W_enc_DF.shape[0]:
        sae.check_input(x)
    x = x.contiguous()
    if x.shape[0] == 0:  # nothing to be sparse about; the dense path defines the (NaN) result
        out = sae.loss(x, step=step)
        F = sae.W_enc_DF.shape[1]
        empty = torch.zeros(0, dtype=torch.int64)
        f = csr_tensor(torch.zeros(1, dtype=torch.int64), empty, torch.zeros(0), (0, F))
        return {**out, "f_BF": f, "l0": torch.tensor(float("nan")),
                "fired_F": torch.zeros(F, dtype=torch.bool), "bf16": False}
    loss, mse, l1, vals, crow, cols, l0, fired = _FastReluL1.apply(
        x, sae.W_enc_DF, sae.b_enc_F, sae.W_dec_FD, sae.b_dec_D, float(lam), use_bf16, form["subtract_b_dec"],
        form["decoder_norm_l1"])
    f = csr_tensor(crow, cols, vals, (x.shape[0], sae.W_enc_DF.shape[1]))
    return {"loss": loss, "mse": mse, "sparsity": l1, "f_BF": f, "l0": l0, "fired_F": fired, "bf16": use_bf16}


def make_adam(params, lr: float = 1e-3, betas=(0.9, 0.999), **kw) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the single-kernel CPU implementation (same update rule, one pass per tensor)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **kw)

