"""Peer baseline: train a standard ReLU + L1 SAE with SAELens's own trainer.

This module drives ``sae_lens.SAETrainer`` (``sae_lens/training/sae_trainer.py``,
SAELens 6.54.x) directly, with an in-memory iterator of activation batches as
its ``data_provider``.  No model, dataset, ``ActivationsStore`` or
``LanguageModelSAETrainingRunner`` is involved; the optimisation loop, loss,
gradient clipping, Adam, LR scheduler, L1-coefficient scheduler and the
dead-feature bookkeeping are all SAELens's own code.

How the trainer is driven
-------------------------
* SAE:      ``sae_lens.StandardTrainingSAE(StandardTrainingSAEConfig(d_in, d_sae,
            l1_coefficient=..., dtype="float32", device="cpu"))`` -- every other
            field left at its SAELens default (listed below).
* Trainer:  ``sae_lens.SAETrainer(cfg=SAETrainerConfig(...), sae=sae,
            data_provider=<iterator of (batch_size, d_in) float32 tensors>)`` then
            ``trainer.fit()``.  ``SAETrainerConfig`` fields set here:
            ``total_training_samples = steps * batch_size``,
            ``train_batch_size_samples = batch_size``, ``lr``, ``lr_end = lr``
            (required non-None by the trainer; ignored by the "constant"
            scheduler), ``device="cpu"``, ``autocast``,
            ``logger=LoggingConfig(log_to_wandb=False)``, ``n_checkpoints=0``,
            ``save_final_checkpoint=False``, ``checkpoint_path=None``.  Left at
            defaults: ``lr_scheduler_name="constant"``, ``lr_warm_up_steps=0``,
            ``lr_decay_steps=0``, ``adam_beta1=0.9``, ``adam_beta2=0.999``,
            ``dead_feature_window=1000``, ``feature_sampling_window=2000``.
            ``fit()`` loops ``while n_training_samples < total_training_samples``,
            so it runs exactly ``steps`` steps.
* The only non-algorithmic change: ``sae_trainer.tqdm`` is temporarily swapped
  for a disabled tqdm so the progress bar does not spam benchmark output.

What one SAELens training step does (``SAETrainer._train_step``)
---------------------------------------------------------------
1. ``sae.train()``; under ``torch.autocast("cpu", dtype=torch.bfloat16)`` when
   ``autocast=True`` (SAELens hard-codes bf16 for autocast; params, grads and Adam
   state stay fp32):
   ``sae.training_forward_pass(TrainStepInput(sae_in, coefficients={"l1": c}, ...))``.
2. Still inside autocast, under no_grad: firing bookkeeping over the full dense
   (batch, d_sae) activation matrix (``feature_acts.bool().float()``, sum over
   batch -> ``n_forward_passes_since_fired``, ``act_freq_scores``).  This is
   pure overhead for the standard SAE (its loss ignores the dead mask) but it is
   part of SAELens's trainer, so it is included in the timing.
3. ``loss.backward()``; ``torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)``
   (unconditional, not configurable); ``Adam.step()`` (torch default
   implementation choice, no weight decay, eps=1e-8); ``zero_grad()``;
   LR-scheduler step (constant); L1-coefficient scheduler step (constant when
   ``l1_warm_up_steps=0``, the default).
There is NO dead-feature resampling, NO ghost grads, NO decoder-norm
projection/renormalisation and NO gradient projection in SAELens 6.x training
for the standard architecture; nothing to disable there.  With
``normalize_activations="none"`` (the default) no activation scaling is
estimated or folded in.  Every 2000 steps (``feature_sampling_window``) the
trainer builds a sparsity log dict (cheap) even with wandb off.

What SAELens's "standard" SAE is, precisely (sae_lens/saes/sae.py, standard_sae.py)
---------------------------------------------------------------------------------
* Parameters: ``W_enc (d_in, d_sae)``, ``b_enc (d_sae)``, ``W_dec (d_sae, d_in)``,
  ``b_dec (d_in)``.  Untied weights.
* Init (``SAE.initialize_weights`` + ``TrainingSAE.initialize_weights`` +
  ``_init_weights_standard``): ``W_dec`` ~ ``nn.init.kaiming_uniform_`` on a
  (d_sae, d_in) tensor, then every decoder row rescaled to L2 norm
  ``decoder_init_norm = 0.1`` (default; "Anthropic April 2024 update"
  heuristic); ``W_enc = W_dec.T`` (clone, so encoder columns also have norm 0.1);
  ``b_enc = 0``; ``b_dec = 0`` (no geometric-median / mean init in 6.x).
* Encode: ``x' = x - b_dec`` (``apply_b_dec_to_input=True`` by default, in
  ``process_sae_in``); ``f = ReLU(x' @ W_enc + b_enc)``.
* Decode: ``x_hat = f @ W_dec + b_dec``.
* Loss (``TrainingSAE.training_forward_pass`` + ``StandardTrainingSAE.calculate_aux_loss``):
  ``mse_loss = ((x_hat - x)**2).sum(-1).mean()`` -- summed over the d_in
  dimension, averaged over tokens; NOT divided by d_in and NOT normalised by the
  input variance/norm.
  ``l1_loss = l1_coefficient * mean_over_tokens( || f * ||W_dec[i]||_2 ||_p )``
  with ``p = lp_norm = 1.0``, i.e. ``l1 * mean_t sum_i f_ti * ||W_dec,i||``:
  YES, the L1 penalty is weighted by the (unconstrained, learned) decoder row
  norms, which is what makes the decoder norms free (Anthropic April 2024
  style) rather than projected to unit norm.  Total = mse_loss + l1_loss.
* Input normalisation: ``normalize_activations="none"`` by default (options
  exist: "expected_average_only_in", "layer_norm", "constant_norm_rescale",
  "covariance_whitening"; none used here).
* Because decoder norms are free, to compare feature magnitudes with a
  unit-norm-decoder SAE call ``sae.fold_W_dec_norm()`` (rescales W_dec rows to
  unit norm and W_enc/b_enc to match; the reconstruction is unchanged).

Public API
----------
``train_saelens(acts, *, d_sae, l1_coefficient, lr, batch_size, steps,
autocast=False, seed=0, shuffle=True) -> dict``
``saelens_encode(sae, acts, chunk_size=65536) -> Tensor (N, d_sae)``
``saelens_reconstruct(sae, acts, chunk_size=65536) -> Tensor (N, d_in)``

Run ``python benchmarks/baselines/saelens_train.py`` for the throughput demo.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

try:  # as part of the benchmarks package, or as a script from this folder
    from .rss import reset_peak_rss as _reset_peak_rss, status_kb as _read_status_kb
except ImportError:
    from rss import reset_peak_rss as _reset_peak_rss, status_kb as _read_status_kb

__all__ = ["train_saelens", "saelens_encode", "saelens_reconstruct"]


# ----------------------------------------------------------------------------
# memory helpers
# ----------------------------------------------------------------------------






class _PeakRSS:
    """Peak resident set size over a block of code, in MiB.

    Uses the kernel's exact high-water mark (VmHWM after resetting it through
    /proc/self/clear_refs) when possible, otherwise a 5 ms polling thread.
    """

    def __enter__(self) -> "_PeakRSS":
        self.exact = _reset_peak_rss() and _read_status_kb("VmHWM") is not None
        self._peak_kb = _read_status_kb("VmRSS") or 0
        self._stop = threading.Event()
        self._thread = None
        if not self.exact:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self._peak_kb = max(self._peak_kb, _read_status_kb("VmRSS") or 0)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self.exact:
            self._peak_kb = max(self._peak_kb, _read_status_kb("VmHWM") or 0)
        else:
            # ru_maxrss is the process-lifetime peak: a last resort only.
            self._peak_kb = max(
                self._peak_kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            )

    @property
    def mb(self) -> float:
        return self._peak_kb / 1024.0


# ----------------------------------------------------------------------------
# data provider
# ----------------------------------------------------------------------------


def _batch_iterator(data: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Endless iterator of (batch_size, d_in) batches cycling through ``data``.

    Batches are contiguous slices (views, no copy) of ``data``; a batch that
    runs past the end wraps around to the start (one small cat).
    """
    n = data.shape[0]
    start = 0
    while True:
        end = start + batch_size
        if end <= n:
            yield data[start:end]
            start = end % n
        else:
            idx = torch.arange(start, end) % n
            yield data[idx]
            start = end % n


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    from sae_lens.training import sae_trainer

    original = sae_trainer.tqdm
    sae_trainer.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sae_trainer.tqdm = original


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------


def train_saelens(
    acts: torch.Tensor,
    *,
    d_sae: int,
    l1_coefficient: float,
    lr: float,
    batch_size: int,
    steps: int,
    autocast: bool = False,
    seed: int = 0,
    shuffle: bool = True,
    k: float | None = None,
    batch_topk: bool = False,
    l1_warm_up_steps: int = 0,
    lr_decay_steps: int = 0,
) -> dict[str, Any]:
    """Train a SAELens "standard" (ReLU + decoder-norm-weighted L1) SAE, or with ``k`` its TopK SAE
    (``TopKTrainingSAE``: k active latents per token, its own AuxK loss and dead-latent bookkeeping; every other
    field at its SAELens default) — the peer of our default preset's recipe — or with ``k`` and ``batch_topk``
    its BatchTopK SAE (``BatchTopKTrainingSAE``: k·B per batch, its running threshold; SAELens defaults).

    Args:
        acts: (N, d_in) activations (any float dtype; converted to float32 CPU).
        d_sae: dictionary size.
        l1_coefficient: SAELens ``l1_coefficient`` (multiplies
            ``mean_t sum_i f_ti * ||W_dec_i||``; the MSE term is a per-token
            *sum* over d_in, so scale accordingly when comparing coefficients).
        lr: Adam learning rate (constant schedule, no warm-up; linear decay to 0 over the last
            ``lr_decay_steps``, SAELens's ``lr_decay_steps``).
        batch_size: tokens per step.
        steps: exact number of optimiser steps.
        autocast: use SAELens's ``autocast`` option (bf16 autocast on CPU).
        l1_warm_up_steps: the standard SAE's ``l1_warm_up_steps`` (λ ramped linearly from 0), as april2024's
            λ warm-up.
        seed: seeds torch before SAE init and the one-off shuffle.
        shuffle: shuffle the rows of ``acts`` once (seeded) during setup; the
            batches are then contiguous slices, cycled if steps*batch_size > N.

    Returns:
        dict with ``sae`` (trained ``sae_lens.StandardTrainingSAE``),
        ``seconds`` (wall time of ``trainer.fit()`` only), ``tokens_per_s``,
        ``peak_rss_mb`` (peak RSS of the process during ``fit()``),
        ``peak_rss_exact`` (True when measured with the kernel high-water mark),
        ``setup_seconds``, ``steps``, ``tokens``, ``final_losses``
        (mse_loss / l1_loss / loss of the last step), ``l0`` and
        ``num_dead_features`` (SAELens end-of-training metadata: mean L0 and
        dead count over its last sparsity window), ``autocast``,
        ``torch_threads`` and ``sae_lens_version``.
    """
    if acts.ndim != 2:
        raise ValueError(f"acts must be (N, d_in), got shape {tuple(acts.shape)}")
    if steps <= 0 or batch_size <= 0:
        raise ValueError("steps and batch_size must be positive")

    t_setup = time.perf_counter()
    import sae_lens
    from sae_lens import (
        LoggingConfig,
        SAETrainer,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(seed)
    data = acts.detach().to(device="cpu", dtype=torch.float32)
    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        data = data[torch.randperm(data.shape[0], generator=gen)]
    data = data.contiguous()
    d_in = data.shape[1]

    if k is None:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1_coefficient,
                                                            l1_warm_up_steps=l1_warm_up_steps, dtype="float32",
                                                            device="cpu"))
    elif batch_topk:
        from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=float(k), dtype="float32",
                                                              device="cpu"))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=int(k), dtype="float32", device="cpu"))

    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr,  # must be non-None; unused by the constant scheduler
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        lr_decay_steps=lr_decay_steps,
        device="cpu",
        autocast=autocast,
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(
        cfg=trainer_cfg,
        sae=sae,
        data_provider=_batch_iterator(data, batch_size),
    )
    last: dict[str, float] = {}
    orig_step = trainer.step

    def _step(batch: torch.Tensor):  # record the last step's losses (cheap)
        out = orig_step(batch)
        if trainer.n_training_samples >= trainer_cfg.total_training_samples:
            last.update({k: v.detach().item() for k, v in out.losses.items()})
            last["loss"] = out.loss.detach().item()
        return out

    trainer.step = _step  # type: ignore[method-assign]
    setup_seconds = time.perf_counter() - t_setup

    with _quiet_tqdm(), _PeakRSS() as mem:
        t0 = time.perf_counter()
        trained = trainer.fit()
        seconds = time.perf_counter() - t0

    assert trainer.n_training_steps == steps, (trainer.n_training_steps, steps)
    tokens = steps * batch_size
    return {
        "sae": trained,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mb": mem.mb,
        "peak_rss_exact": mem.exact,
        "setup_seconds": setup_seconds,
        "steps": steps,
        "tokens": tokens,
        "final_losses": last,
        "l0": trained.cfg.metadata.l0,
        "num_dead_features": trained.cfg.metadata.num_dead_features,
        "autocast": autocast,
        "torch_threads": torch.get_num_threads(),
        "sae_lens_version": getattr(sae_lens, "__version__", "unknown"),
    }


# ----------------------------------------------------------------------------
# inference helpers
# ----------------------------------------------------------------------------


@torch.no_grad()
def saelens_encode(sae, acts: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
    """Feature activations ``ReLU((x - b_dec) @ W_enc + b_enc)`` via ``sae.encode``.

    Works for a ``StandardTrainingSAE`` or an inference ``StandardSAE``.
    Returns a float32 (N, d_sae) tensor on CPU.
    """
    was_training = sae.training
    sae.eval()
    try:
        outs = [
            sae.encode(acts[i : i + chunk_size].to(sae.device)).float().cpu()
            for i in range(0, acts.shape[0], chunk_size)
        ]
    finally:
        sae.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, sae.cfg.d_sae)


@torch.no_grad()
def saelens_reconstruct(
    sae, acts: torch.Tensor, chunk_size: int = 65536
) -> torch.Tensor:
    """Reconstruction ``sae.decode(sae.encode(x)) = f @ W_dec + b_dec`` (N, d_in)."""
    was_training = sae.training
    sae.eval()
    try:
        outs = [
            sae.decode(sae.encode(acts[i : i + chunk_size].to(sae.device)))
            .float()
            .cpu()
            for i in range(0, acts.shape[0], chunk_size)
        ]
    finally:
        sae.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, sae.cfg.d_in)


# ----------------------------------------------------------------------------
# demo / throughput check
# ----------------------------------------------------------------------------


def _synthetic_mlp_acts(n: int, d: int = 512, seed: int = 0) -> torch.Tensor:
    """Sparse-ish, non-negative, correlated activations resembling post-ReLU MLP
    neurons: relu(z @ M + b) with a negative bias so ~25% of entries are > 0."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    bias = -0.7 * torch.ones(d) + 0.3 * torch.randn(d, generator=g)
    z = torch.randn(n, d, generator=g)
    return torch.relu(z @ mix + bias)


def _matmul_gflops(reps: int = 5) -> float:
    """Reference CPU throughput: fp32 (4096x512)@(512x4096) GFLOP/s right now.
    Printed next to tokens/s because this shared machine's speed drifts."""
    a, b = torch.randn(4096, 512), torch.randn(512, 4096)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 4096 * 512 * 4096 * reps / (time.perf_counter() - t) / 1e9


def _main() -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n-tokens", type=int, default=65536)
    p.add_argument("--l1", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--modes", default="fp32,autocast")
    args = p.parse_args()

    acts = _synthetic_mlp_acts(args.n_tokens)
    print(
        f"acts {tuple(acts.shape)} frac>0={float((acts > 0).float().mean()):.3f} "
        f"torch {torch.__version__} threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()}"
    )
    results = {}
    for mode in args.modes.split(","):
        ac = mode == "autocast"
        if args.warmup_steps:  # warm up kernels / allocator, untimed
            train_saelens(acts, d_sae=args.d_sae, l1_coefficient=args.l1, lr=args.lr,
                          batch_size=args.batch_size, steps=args.warmup_steps,
                          autocast=ac)
        gflops_before = _matmul_gflops()
        r = train_saelens(acts, d_sae=args.d_sae, l1_coefficient=args.l1, lr=args.lr,
                          batch_size=args.batch_size, steps=args.steps, autocast=ac)
        gflops_after = _matmul_gflops()
        x = acts[:8192]
        xh = saelens_reconstruct(r["sae"], x)
        f = saelens_encode(r["sae"], x)
        fvu = float(((xh - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
        results[mode] = {
            "tokens_per_s": round(r["tokens_per_s"], 1),
            "seconds": round(r["seconds"], 3),
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "peak_rss_exact": r["peak_rss_exact"],
            "final_losses": {k: round(v, 4) for k, v in r["final_losses"].items()},
            "l0_eval": round(float((f > 0).float().sum(-1).mean()), 1),
            "fvu_eval": round(fvu, 4),
            "ref_matmul_gflops": round((gflops_before + gflops_after) / 2, 1),
        }
        print(f"{mode}: {results[mode]}")
    print(json.dumps({"d_in": acts.shape[1], "d_sae": args.d_sae,
                      "batch_size": args.batch_size, "steps": args.steps,
                      "results": results}))


if __name__ == "__main__":
    _main()
