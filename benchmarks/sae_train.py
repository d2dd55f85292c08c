"""Dictionary-training speed against SAELens, in one run, on identical activations.

    python benchmarks/sae_train.py [--run data/runs/default] [--steps 150] [--d-sae 4096] [--batch 4096] [--recipe relu]

``--recipe default`` (the default): the default preset's A/1 recipe — april2024 at its λ (``config.DEFAULT_L1``) —
against SAELens's standard SAE (ReLU, decoder-norm-weighted L1: the same objective) with matched λ.
``--recipe topk``: TopK k 16 (``config.DEFAULT_TOPK``, the default before april2024) against SAELens's
``TopKTrainingSAE`` with the same k; ``--recipe batchtopk``: the same options on our BatchTopK kind against
SAELens's ``BatchTopKTrainingSAE``.  ``--recipe relu``: the paper's ReLU + L1 (tm2023) against SAELens's standard
SAE with matched λ (below).

Trains the same config (d_in 512, d_sae 4096, batch 4096, same steps, matched λ, same learning rate) with SAELens
6.54's own trainer (fp32 and its bf16 autocast) and with ours (the default sparse-aware fast path, and the plain
dense path), on the same activations — transformer A's store of a run when ``--run`` is given (then loss
recovered is measured by splicing into the model), else realistic synthetic post-ReLU activations.  Prints per
trainer: tokens/s, peak RSS, final MSE, L0, FVU, loss recovered; the speed ratio against SAELens fp32; and our
fraction of the dense-encoder roofline (2·B·D·F flop per step at the peak matmul rate measured in this run).

``--recipe default`` gives SAELens april2024's schedule too: λ warmed up over the same steps
(``l1_warm_up_steps``) and the learning rate decayed to 0 over the last 20 % (``lr_decay_steps``).  The λ warm-up
matters to the comparison: a tied april2024 start fires half its features, so ours runs dense until λ has pushed
them down — a quarter of a 60-step run (the warm-up floor, ``recipes.April2024Dictionary``), 5 % of the default's
1,200.  So the table also gives ours' tokens/s after the warm-up.  SAELens's step is dense at any density, so its
tokens/s does not depend on the run's length: ``--peer-steps N`` times it on N steps while ours runs ``--steps``
(its quality columns are then from its N-step run, marked so).

Matched λ: our loss is mean_elements(x − x̂)² + λ Σ f (unit-norm decoder); SAELens's is Σ_elements(x − x̂)² +
λ_s Σ f‖W_d‖.  Multiplying ours by D gives SAELens's form with λ_s = D·λ, so SAELens gets λ_s = 512·λ.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines.saelens_train import _PeakRSS, saelens_encode, saelens_reconstruct, train_saelens  # noqa: E402

from monosemantic import DictionaryConfig, SAETrainConfig, train_dictionary  # noqa: E402
from monosemantic.sae import make_dictionary  # noqa: E402


def peak_matmul_gflops(dtype=torch.float32, B=4096, D=512, F=4096, reps=6) -> float:
    a, w = torch.randn(B, D, dtype=dtype), torch.randn(D, F, dtype=dtype)
    a @ w
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - t)
    return 2 * B * D * F / best / 1e9


def synthetic(n: int, d: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5
    bias = -0.7 + 0.3 * torch.randn(d, generator=g)
    return torch.relu(torch.randn(n, d, generator=g) @ mix + bias)


def metrics(encode, reconstruct, x_eval: torch.Tensor) -> dict:
    with torch.no_grad():
        f, xh = encode(x_eval), reconstruct(x_eval)
    return {"mse": float((xh - x_eval).pow(2).mean()), "l0": float((f > 0).float().sum(-1).mean()),
            "fvu": float((xh - x_eval).pow(2).sum() / (x_eval - x_eval.mean(0)).pow(2).sum())}


def loss_recovered(run, sae_like) -> float | None:
    if run is None:
        return None
    from monosemantic.config import EvalConfig
    from monosemantic.metrics import evaluate_dictionary

    return evaluate_dictionary(sae_like, run.model("A"), run.split("val"), EvalConfig(contexts=128),
                               progress=False)["loss_recovered"]


def saelens_as_ours(sae, k: int | None = None):
    """Copy a SAELens standard (or, with ``k``, TopK) SAE into our dictionary object of that kind (same
    encode/decode formulas: b_dec subtracted from the input, decoder norms kept as trained) so both are evaluated by
    the same code."""
    assert sae.cfg.apply_b_dec_to_input, "our kinds subtract b_dec from the input"
    kind = dict(kind="topk", options={"k": k}, l1_coefficient=0.0) if k else {}
    ours = make_dictionary(DictionaryConfig(d_in=sae.W_enc.shape[0], d_sae=sae.W_enc.shape[1], **kind))
    with torch.no_grad():
        ours.W_enc_DF.copy_(sae.W_enc)
        ours.b_enc_F.copy_(sae.b_enc)
        ours.W_dec_FD.copy_(sae.W_dec)
        ours.b_dec_D.copy_(sae.b_dec)
    return ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a finished run directory (uses transformer A's activation store)")
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--peer-steps", type=int, default=None,
                   help="SAELens's steps (default: --steps); its dense step's time does not depend on the run's "
                        "length, so a shorter timed peer gives its tokens/s for a long --steps of ours")
    p.add_argument("--l1", type=float, default=None,
                   help="our λ (SAELens gets 512·λ); default: the default preset's A/1 λ for --recipe default, else 4e-3")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--trainers", default="saelens-fp32,saelens-autocast,ours-fast,ours-dense")
    p.add_argument("--recipe", choices=("default", "topk", "batchtopk", "relu"), default="default",
                   help="default: the default preset's A/1 recipe (april2024) against SAELens's standard SAE with "
                        "matched λ; topk / batchtopk: TopK k 16 against SAELens's TopK / BatchTopK SAE; relu: the "
                        "paper's ReLU + L1 (tm2023) against SAELens's standard SAE with matched λ")
    args = p.parse_args()
    if args.recipe != "relu":
        from monosemantic.config import DEFAULT_TOPK, fixed_dead_window, preset

        # AuxK's dead window as long in tokens as the default run's A/1 would have it (a share of this short
        # benchmark would be a few steps, calling most latents dead, which the real run never does)
        cfg = preset("default")
        spec = cfg.dictionary("A/1")
        if args.recipe in ("topk", "batchtopk"):
            spec = replace(spec, kind=args.recipe, recipe="tm2023", l1_coefficient=0.0, options=dict(DEFAULT_TOPK))
        elif args.l1 is None:
            args.l1 = spec.l1_coefficient
        spec = replace(spec, options=fixed_dead_window(spec, cfg.sae_train))
        ours_cfg = lambda D, F: replace(spec.dictionary_config(D), d_sae=F)  # noqa: E731
    else:
        ours_cfg = lambda D, F: DictionaryConfig(d_in=D, d_sae=F, l1_coefficient=args.l1)  # noqa: E731
    if args.l1 is None:
        args.l1 = 4e-3

    run = None
    if args.run:
        from monosemantic.runs import Run

        run = Run.open(args.run)
        store = run.store("A")
        n = min(len(store), args.steps * args.batch + 32_768)
        acts = store.sample(n, seed=0)
        src = f"run {args.run} (transformer A store)"
    else:
        acts = synthetic(args.steps * args.batch + 32_768)
        src = "synthetic post-ReLU activations"
    x_train, x_eval = acts[:-32_768], acts[-32_768:]
    D, F, B = acts.shape[1], args.d_sae, args.batch
    print(f"{src}: {len(x_train):,} training rows × {D}; eval {len(x_eval):,}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    peak32, peak16 = peak_matmul_gflops(torch.float32), peak_matmul_gflops(torch.bfloat16)
    print(f"measured peak matmul: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")

    k = ours_cfg(D, F).options.get("k")
    batch_topk = args.recipe == "batchtopk"
    peer = ("BatchTopK" if batch_topk else "TopK") + f" k={k}" if k else "standard"
    print(f"recipe: ours {ours_cfg(D, F)}; SAELens {peer}")
    peer_steps = args.peer_steps or args.steps
    sched = {}
    if args.recipe == "default":  # april2024's λ warm-up and LR decay, at the peer's own length
        probe = make_dictionary(ours_cfg(D, F))
        probe.begin_training(peer_steps, B)
        sched = {"l1_warm_up_steps": probe.sparsity_warmup_steps,
                 "lr_decay_steps": int(probe.lr_decay_fraction * peer_steps)}
        print(f"SAELens schedule (april2024's at {peer_steps} steps): {sched}")
    rows = {}
    for name in args.trainers.split(","):
        if name.startswith("saelens"):
            r = train_saelens(x_train, d_sae=F, l1_coefficient=args.l1 * D, lr=args.lr, batch_size=B,
                              steps=peer_steps, autocast=name.endswith("autocast"), k=k, batch_topk=batch_topk,
                              **sched)
            sae = r["sae"]
            m = metrics(lambda x: saelens_encode(sae, x), lambda x: saelens_reconstruct(sae, x), x_eval)
            m.update(tokens_per_s=r["tokens_per_s"], peak_rss_mb=r["peak_rss_mb"], steps=peer_steps,
                     loss_recovered=None if batch_topk else loss_recovered(run, saelens_as_ours(sae, k)))
        else:
            fast = name == "ours-fast"
            cfg = SAETrainConfig(steps=args.steps, batch_size=B, lr=args.lr, warmup_steps=0, fast=fast,
                                 resample_at=(), checkpoint_every=10**9)
            with _PeakRSS() as rss:
                t0 = time.perf_counter()
                sae = train_dictionary(x_train, ours_cfg(D, F), cfg, progress=False)
                secs = time.perf_counter() - t0
            m = metrics(sae.encode, lambda x: sae(x)[0], x_eval)
            m.update(tokens_per_s=args.steps * B / secs, peak_rss_mb=rss.mb, steps=args.steps,
                     loss_recovered=loss_recovered(run, sae))
            w = getattr(sae, "sparsity_warmup_steps", 0)
            log = [r for r in sae.train_log if "seconds" in r]
            if 0 < w < args.steps and len(log) == args.steps:  # the steps after λ reached full strength
                m["tokens_per_s_after_warmup"] = (args.steps - w) * B / (log[-1]["seconds"] - log[w - 1]["seconds"])
                m["warmup_steps"] = w
        rows[name] = m
        print(f"{name:18s} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))

    base = rows.get("saelens-fp32", {}).get("tokens_per_s")
    print()
    print(f"| trainer | steps | tokens/s | × SAELens fp32 | after the λ warm-up | peak RSS MB | MSE | L0 | FVU | "
          f"loss recovered | roofline |")
    print(f"| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in rows.items():
        enc_flops = 2 * D * F * m["tokens_per_s"] / 1e9
        roof = enc_flops / (peak16 if name in ("ours-fast", "saelens-autocast") else peak32)
        lr_ = "—" if m["loss_recovered"] is None else f"{m['loss_recovered']:.3f}"
        after = m.get("tokens_per_s_after_warmup")
        after = f"{after:,.0f} ({after / base:.2f}×)" if after and base else "—"
        print(f"| {name} | {m['steps']} | {m['tokens_per_s']:,.0f} | {m['tokens_per_s'] / base:.2f}× | {after} | "
              f"{m['peak_rss_mb']:,.0f} | {m['mse']:.4g} | {m['l0']:.1f} | {m['fvu']:.3f} | {lr_} | {roof:.0%} |"
              if base else name)
    if peer_steps != args.steps:
        print(f"(SAELens timed on {peer_steps} steps, ours on {args.steps}: its rate is per dense step; its quality "
              f"columns are from its {peer_steps}-step run)")
    print(json.dumps({"config": vars(args), "peak_gflops": {"fp32": peak32, "bf16": peak16}, "results": rows}))


if __name__ == "__main__":
    main()
