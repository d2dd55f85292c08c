"""Time of automated interpretability (``monosemantic.interpret``): every feature of a dictionary, every neuron of
its transformer, and the randomized control, explained and scored.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/interpret.py --run /work/runs/base --dict A/1 --out /tmp/interp

The run is only read; everything is written under ``--out``.  The control (the randomized transformer, its
harvest and its dictionary's training) is built first, or reused from ``--out`` when it was built there before —
a one-off cost printed apart.  Then each group is scored from scratch (``passes.score_units``: the two passes over
the explanation set, the held-out pass and windows, simulation, detection and the logit test) and its wall time
and time per unit are printed, with the total against the target (≤ 5 min for 4096 features + 512 neurons + the
control on 2 cores).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="/work/runs/base")
    ap.add_argument("--dict", default="A/1")
    ap.add_argument("--out", default="/tmp/monosemantic-interpret-bench")
    ap.add_argument("--groups", nargs="*", default=None, help="groups to time (default: all four)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from monosemantic.interpret.analysis import GROUPS, _config, _subject, _token_sets
    from monosemantic.interpret.passes import score_units
    from monosemantic.runs import Run

    run = Run.open(args.run)
    cfg = _config(run, None)
    out = Path(args.out)
    explain, holdout = _token_sets(run, cfg)
    print(f"{args.run} {args.dict}: explanation set {explain.n_tokens:,} tokens (train), held-out "
          f"{holdout.n_tokens:,} tokens (val); {torch.get_num_threads()} threads", flush=True)
    t0 = time.time()
    _subject(run, args.dict, "control", cfg, out, progress=True)           # build or reuse the control
    control_s = time.time() - t0
    print(f"control (randomized transformer, harvest {cfg.control_rows:,} rows, {cfg.control_steps} training "
          f"steps; reused if built before in {out}): {control_s:.1f} s", flush=True)
    rows, total, units = {}, 0.0, 0
    for g in args.groups or GROUPS:
        subject = _subject(run, args.dict, g, cfg, out, progress=False)
        t = time.time()
        with torch.inference_mode():
            table, _ = score_units(subject, explain, holdout, cfg, run.tokenizer.vocab_size, explain.split.bos_id,
                                   progress=False)
        s = time.time() - t
        total, units = total + s, units + len(table)
        rows[g] = {"units": len(table), "seconds": round(s, 2), "ms_per_unit": round(1000 * s / len(table), 2)}
        print(f"  {g:16s} {len(table):6d} units  {s:7.1f} s  {1000 * s / len(table):7.2f} ms/unit", flush=True)
    print(f"  {'total':16s} {units:6d} units  {total:7.1f} s  {1000 * total / max(units, 1):7.2f} ms/unit  "
          f"(target ≤ 300 s: {'met' if total <= 300 else 'MISSED'})")
    print(json.dumps({"run": args.run, "dict": args.dict, "groups": rows, "score_seconds": round(total, 2),
                      "units": units, "control_build_seconds": round(control_s, 2),
                      "explain_tokens": explain.n_tokens, "holdout_tokens": holdout.n_tokens}))


if __name__ == "__main__":
    main()
