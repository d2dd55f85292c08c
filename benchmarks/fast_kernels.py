"""Time one dictionary training step (forward + backward + Adam + the decoder constraint + dead-feature bookkeeping,
i.e. everything ``train_sae.py`` does per step) for the dense path and for ``monosemantic.fast``.

    python benchmarks/fast_kernels.py                      # D=512, F=4096 and 16384, B=4096, L0≈30
    python benchmarks/fast_kernels.py --F 4096 --reps 3    # quicker

Variants (each on its own copy of the same dictionary, same batch, timed interleaved so background load hits all
of them alike):

    dense fp32 / adam      sae.loss + torch.optim.Adam(default)   ← what train_sae.py runs today
    dense fp32 / fused     sae.loss + Adam(fused=True)
    dense bf16 / fused     sae.loss under torch.autocast("cpu", bfloat16) + Adam(fused=True)
    fast fp32 / fused      fast_loss(bf16=False) + Adam(fused=True)
    fast bf16 / fused      fast_loss(bf16=True)  + Adam(fused=True)
    fast bf16 / adam       fast_loss(bf16=True)  + Adam(default)

The encoder bias is set so that L0 ≈ --l0 on the batch.  "roofline" is the time the dense encoder matmul alone
(2·B·D·F flops) would take at the peak rate of a plain dense matmul of the same shape measured in this run (fp32
peak for fp32 variants, bf16 peak for bf16 ones); "% roof" = roofline / step time.  Speedups are against the first
variant, on medians and (in brackets) on minima.

On a shared machine wall-clock medians swing with other people's load: two OpenMP threads on two busy cores spin
at every parallel region while the partner is descheduled — run with ``OMP_WAIT_POLICY=PASSIVE`` in the environment.
``--threads 1 --clock cpu`` measures this process's CPU time instead, which stays put within a few percent.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fast_kernels.py          # 2 threads, wall clock
    python benchmarks/fast_kernels.py --threads 1 --clock cpu          # 1 thread, CPU time
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from monosemantic.fast import fast_loss, make_adam
    from monosemantic.sae import DictionaryConfig, make_dictionary
except ImportError:  # running from a checkout without the package installed
    from lib.fast import fast_loss, make_adam  # type: ignore
    from lib.sae import DictionaryConfig, make_dictionary  # type: ignore


CLOCK = time.perf_counter


def _best(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return min(ts)


def peak_rates(B: int, D: int, F: int, reps: int) -> dict[str, float]:
    x = torch.randn(B, D)
    W = torch.randn(D, F)
    out = {}
    t = _best(lambda: torch.mm(x, W), reps)
    out["fp32"] = 2 * B * D * F / t
    xb, Wb = x.bfloat16(), W.bfloat16()
    t = _best(lambda: torch.mm(xb, Wb), reps)
    out["bf16"] = 2 * B * D * F / t
    return out


def make_step(kind: str, sae, opt):
    if kind.startswith("dense"):
        bf16 = "bf16" in kind

        def step(x):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = sae.loss(x)
            out["loss"].backward()
            sae.before_optimizer_step()
            opt.step()
            sae.after_optimizer_step()
            with torch.no_grad():  # the loop's dead-feature bookkeeping
                fired = (out["f_BF"] > 0).any(0)
                l0 = float((out["f_BF"] > 0).float().sum(-1).mean())
            return l0, fired
    else:
        bf16 = "bf16" in kind

        def step(x):
            opt.zero_grad(set_to_none=True)
            out = fast_loss(sae, x, bf16=bf16)
            out["loss"].backward()
            sae.before_optimizer_step()
            opt.step()
            sae.after_optimizer_step()
            return float(out["l0"]), out["fired_F"]
    return step


VARIANTS = ["dense fp32 / adam", "dense fp32 / fused", "dense bf16 / fused",
            "fast fp32 / fused", "fast bf16 / fused", "fast bf16 / adam"]


def bench(B: int, D: int, F: int, l0: float, reps: int, variants: list[str], peak_reps: int,
          recipe: str = "tm2023") -> None:
    torch.manual_seed(0)
    base = make_dictionary(DictionaryConfig(d_in=D, d_sae=F, l1_coefficient=1e-3, seed=0, recipe=recipe))
    x = torch.randn(B, D)
    with torch.no_grad():
        pre = (x[:1024] - base.b_dec_D) @ base.W_enc_DF
        q = torch.quantile(pre.flatten()[: 1 << 24], 1 - l0 / F)
        base.b_enc_F.fill_(-float(q))
        del pre
    peaks = peak_rates(B, D, F, peak_reps)
    flops = 2 * B * D * F
    runs = {}
    for v in variants:
        sae = copy.deepcopy(base)
        opt = (make_adam(sae.parameters(), lr=1e-5) if v.endswith("fused")
               else torch.optim.Adam(sae.parameters(), lr=1e-5))
        runs[v] = (make_step(v, sae, opt), [], [])
    for v, (step, _, _) in runs.items():  # warm-up (allocator, oneDNN primitive caches)
        step(x)
    for _ in range(reps):
        for v, (step, ts, l0s) in runs.items():
            t0 = CLOCK()
            l, _ = step(x)
            ts.append(CLOCK() - t0)
            l0s.append(l)
    ref = statistics.median(runs[variants[0]][1])
    ref_min = min(runs[variants[0]][1])
    print(f"\n{recipe}  B={B} D={D} F={F}  dense-matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s  (encoder = {flops / 1e9:.2f} GFLOP)")
    print(f"{'variant':22s} {'median ms':>10s} {'min ms':>8s} {'speedup':>8s} {'(min)':>7s} {'L0':>6s} "
          f"{'roofline ms':>12s} {'% roof':>7s} {'(min)':>6s}")
    for v, (_, ts, l0s) in runs.items():
        med, lo = statistics.median(ts), min(ts)
        roof = flops / peaks["bf16" if "bf16" in v else "fp32"]
        print(f"{v:22s} {med * 1e3:10.1f} {lo * 1e3:8.1f} {ref / med:7.2f}x {ref_min / lo:6.2f}x "
              f"{statistics.mean(l0s):6.1f} {roof * 1e3:12.1f} {100 * roof / med:6.1f}% {100 * roof / lo:5.1f}%")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=4096)
    ap.add_argument("--D", type=int, default=512)
    ap.add_argument("--F", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--l0", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=5, help="timed steps per variant (median reported)")
    ap.add_argument("--peak-reps", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS, metavar="VARIANT")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--recipe", default="tm2023", help="training recipe of the ReLU dictionary (tm2023, april2024)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (user+sys, all threads) — steadier on a "
                         "shared machine, best with --threads 1")
    a = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if a.clock == "wall" else time.process_time
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.2f}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, clock={a.clock}")
    for F in a.F:
        bench(a.B, a.D, F, a.l0, a.reps, a.variants, a.peak_reps, a.recipe)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
