"""Latency of a steering-panel slider move (``monosemantic.interventions.Steering``): for a prompt of
``--prompt-tokens`` tokens, each move sets a feature to a new value and recomputes the next-token distribution
against the clean run (``Steering.effect``) and a ``--tokens``-token sampled continuation (``Steering.sample``);
``Steering.steer`` is both, the clean side cached, which is what the panel calls.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steer.py            # a tiny run, built in a temp dir and removed
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steer.py --run /work/runs/base --dict A/1

The last row is the whole move as the notebook sees it: ``SteeringPanel`` (widgets/steering.py) given a new slider
value — ``Steering.steer``, the chart and continuation laid out as the synced ``result``, and that state serialised
as JSON (what goes to the front-end), the front-end's debounce (120 ms after the last move) not included.

Prints the median and the fastest of ``--moves`` moves per step, and the total against the target (≤ 300 ms on 2
cores for a 64-token prompt and a 20-token continuation: ``--threads 2``).  The prompt is cut to the context when the
model's is shorter (the tiny preset's is 32).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch


def _prompt(run, n_tokens: int) -> str:
    """The first ``n_tokens`` tokens of a validation context, as text (re-encoding may shift the count by one)."""
    ids = run.split("val").contexts(np.array([0]))[0, 1:1 + n_tokens]
    return run.tokenizer.decode(ids.tolist())


def _timed(fn, moves: int) -> tuple[list[float], object]:
    times, out = [], None
    for m in range(moves):
        t = time.perf_counter()
        out = fn(m)
        times.append(1000 * (time.perf_counter() - t))
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="run directory (default: build the tiny preset in a temp dir)")
    ap.add_argument("--dict", default="A/1")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=20, help="sampled continuation length")
    ap.add_argument("--moves", type=int, default=15, help="slider moves timed")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from monosemantic import preset, run_pipeline
    from monosemantic.interventions import Edit, Steering
    from monosemantic.runs import Run

    tmp = None
    if args.run is None:
        tmp = tempfile.mkdtemp(prefix="ms-steer-")
        root = os.path.join(tmp, "run")
        print(f"building the tiny preset in {root} …", flush=True)
        run = run_pipeline(root, preset("tiny"), progress=False, log=lambda s: None)
    else:
        run = Run.open(args.run)
    s = Steering.open(run, args.dict)
    prompt = _prompt(run, min(args.prompt_tokens, s.model.n_ctx - 1))
    tok = s.tokens(prompt)
    with torch.no_grad():
        f_TF = s.dictionary.encode(s.model.mlp_acts(tok)[0, 1:])
    unit = int(f_TF.max(0).values.argmax())
    top = float(f_TF[:, unit].max())
    values = np.linspace(-2 * top, 2 * top, args.moves)          # each move a new slider value: nothing cached
    print(f"{run.root} {args.dict}: {s.n_units} features, n_ctx {s.model.n_ctx}; prompt of {tok.shape[1] - 1} "
          f"tokens, feature {unit} (max {top:.3g} on the prompt) clamped from {values[0]:.3g} to {values[-1]:.3g}; "
          f"{args.tokens}-token continuation; {torch.get_num_threads()} torch threads", flush=True)

    def edit(m):
        return [Edit(unit, "clamp", float(values[m]))]

    s.steer(prompt, edit(0), n_tokens=args.tokens)                 # warm-up, and the clean side cached
    rows = {}
    rows["encode prompt (tokens, MLP, features)"], _ = _timed(
        lambda m: s.dictionary.encode(s.model.mlp_acts(s.tokens(prompt))[0]), args.moves)
    rows["intervention + next-token change"], _ = _timed(lambda m: s.effect(prompt, edit(m)), args.moves)
    rows[f"{args.tokens}-token sampled continuation"], _ = _timed(
        lambda m: s.sample(prompt, edit(m), n_tokens=args.tokens, seed=m), args.moves)
    rows["slider move (Steering.steer)"], r = _timed(
        lambda m: s.steer(prompt, edit(m), n_tokens=args.tokens, seed=0), args.moves)
    from monosemantic.widgets.steering import SteeringPanel

    # the same Steering (its clean cache), on the threads of the rows above (the panel's own default is 1)
    panel = SteeringPanel(s, prompt=prompt, n_tokens=args.tokens, seed=0, threads=None)
    panel.add(unit, mode="set", value=float(values[0]))

    def panel_move(m):
        panel.set_value(unit, float(values[m]) * 0.999)                       # a value not seen before
        return json.dumps(panel.result)

    rows["panel slider move (SteeringPanel → synced state)"], _ = _timed(panel_move, args.moves)
    assert panel.error == "", panel.error
    out = {}
    for name, t in rows.items():
        out[name] = {"median_ms": round(statistics.median(t), 1), "min_ms": round(min(t), 1)}
        print(f"  {name:42s} median {statistics.median(t):7.1f} ms   fastest {min(t):7.1f} ms")
    total = out["panel slider move (SteeringPanel → synced state)"]["median_ms"]
    print(f"  slider move median {total:.1f} ms (target ≤ 300 ms: {'met' if total <= 300 else 'MISSED'})")
    print(f"  last move: KL {r.effect.next.kl:.3g} nats; steered {r.edited.text!r}")
    print(json.dumps({"run": str(run.root), "dict": args.dict, "prompt_tokens": int(tok.shape[1] - 1),
                      "continuation_tokens": args.tokens, "threads": torch.get_num_threads(), "steps": out}))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
