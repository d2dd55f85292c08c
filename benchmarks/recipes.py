"""The recipe study (issue 10): A and B dictionaries with each training recipe, on a run's activation stores, at the
run's dictionary budget and at multiples of it.

    python benchmarks/recipes.py                                    # data/runs/default, 4096 features, ×1 ×2 ×4
    python benchmarks/recipes.py --run /tmp/x --d-sae 512 --scales 1 --recipes tm2023 april2024   # a tiny run

Per recipe and budget, printed as one table row (and, with ``--json PATH``, written as JSON):
L0, FVU and loss recovered of A (``metrics.evaluate_dictionary``, the pipeline's own evaluation: the run's eval
contexts, density over ``eval.density_rows`` store rows), dead features and the low-density mode's size
(``metrics.density_modes``; 0 when the densities are not bimodal) for A and B, the universality median A~B over all
alive features with the neuron median beside it (``universality.compare`` with two custom sides, as notebook 04's
"two seeds" cell), training tokens/s and wall time (A and B training).  Dictionaries are trained resumably into
``--out`` (default ``RUN/scratch/recipes``), so an interrupted study continues where it stopped.

The budget ×1 is the run's A/1 tokens: its steps (``DictSpec.steps`` or ``sae_train.steps``) × its batch
(``DictSpec.batch_size`` or ``sae_train.batch_size``); ×n trains n times the tokens, at ``--batch`` rows a step
(default A/1's, so n times the steps; the store is re-read for several epochs where it is shorter).  λ for the L1
recipes is A/1's unless ``--l1`` sets it; TopK/BatchTopK use ``--k``.

Recipes (``--recipes``): ``tm2023``, ``tm2023_lowmode``, ``april2024`` (ReLU dictionaries: the recipe names of
``lib/recipes.py``), ``topk`` and ``batchtopk`` (those kinds under tm2023, AuxK with the run-scaled dead window),
``topk_decay`` and ``batchtopk_decay`` (the same with the learning rate decayed to 0 over the last 20 % of steps).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monosemantic import DictionaryConfig, train_dictionary  # noqa: E402
from monosemantic.crossstats import Side  # noqa: E402
from monosemantic.metrics import evaluate_dictionary  # noqa: E402
from monosemantic.runs import Run  # noqa: E402
from monosemantic.universality import compare  # noqa: E402

RECIPES = ("tm2023", "tm2023_lowmode", "april2024", "topk", "batchtopk", "topk_decay", "batchtopk_decay")


def dictionary_config(name: str, d_in: int, d_sae: int, l1: float, k: float, seed: int) -> DictionaryConfig:
    if name.startswith(("topk", "batchtopk")):   # *_decay: the LR decayed to 0 over the last 20 % of the steps
        kind = name.split("_")[0]
        opts = {"k": int(k) if kind == "topk" else k, **({"lr_decay": 0.2} if name.endswith("_decay") else {})}
        return DictionaryConfig(d_in=d_in, d_sae=d_sae, kind=kind, l1_coefficient=0.0, seed=seed, options=opts)
    return DictionaryConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1, seed=seed, recipe=name)


def low_mode(metrics: dict) -> int:
    modes = metrics.get("density_modes") or {}
    return int(modes["low"]) if modes.get("bimodal") else 0


def run_dictionaries(run: Run, dcfg: DictionaryConfig, train) -> dict | None:
    """The run's own finished A/1 and B/1 with their training seconds, when they are exactly this row's
    dictionaries (same kind, recipe, size, λ, options, seed, steps and batch); else None."""
    out, status = {}, run.status()
    for t in ("A", "B"):
        did = f"{t}/1"
        if not any(d.id == did for d in run.cfg.dictionaries) or not run.is_done(f"dictionary:{did}"):
            return None
        spec = run.cfg.dictionary(did)
        mine = spec.dictionary_config(run.cfg.model.d_mlp)
        if (mine.kind, mine.recipe, mine.d_sae, mine.l1_coefficient, mine.options, mine.seed) != (
                dcfg.kind, dcfg.recipe, dcfg.d_sae, dcfg.l1_coefficient, dcfg.options, dcfg.seed):
            return None
        mine_t = spec.train_config(run.cfg.sae_train)
        if (mine_t.steps, mine_t.batch_size) != (train.steps, train.batch_size):
            return None
        out[t] = (run.dictionary(did), float(status[f"dictionary:{did}"].get("seconds", float("nan"))))
    return out


def study(run: Run, name: str, scale: float, args) -> dict:
    cfg = run.cfg
    spec = cfg.dictionary("A/1") if any(d.id == "A/1" for d in cfg.dictionaries) else cfg.dictionaries[0]
    base = spec.train_config(cfg.sae_train)
    batch = args.batch or base.batch_size   # ×scale is in tokens: a smaller batch takes proportionally more steps
    train = replace(base, batch_size=batch, steps=max(1, int(round(base.steps * base.batch_size * scale / batch))))
    l1 = spec.l1_coefficient if args.l1 is None else args.l1
    if l1 <= 0 and not name.startswith(("topk", "batchtopk")):
        raise SystemExit(f"recipe {name} is an L1 recipe, but the run's A/1 has λ = {l1} (it is a {spec.kind} "
                         f"dictionary); pass --l1, e.g. --l1 4e-3 (the tm2023 default before TopK)")
    dcfg = dictionary_config(name, cfg.model.d_mlp, args.d_sae, l1, args.k, spec.seed)
    row = {"recipe": name, "scale": scale, "steps": train.steps, "batch_size": train.batch_size,
           "d_sae": args.d_sae, "l1_coefficient": dcfg.l1_coefficient, "options": dcfg.options}
    saes, train_s = {}, 0.0
    own = run_dictionaries(run, dcfg, train) if scale == 1 else None
    for t in ("A", "B"):
        if own:   # the run's own A/1 and B/1 are this row: reuse them (and the stage times the run recorded)
            saes[t], secs = own[t]
            train_s += secs
            continue
        out = Path(args.out) / (f"{name}-x{scale:g}-{args.d_sae}" + (f"-b{batch}" if batch != base.batch_size else "")) / t
        t0 = time.time()
        saes[t] = train_dictionary(run.store(t), dcfg, train, out_dir=out, seed=spec.seed, progress=args.progress)
        train_s += time.time() - t0
    row["train_seconds"] = round(train_s, 1)
    row["reused_run_dictionaries"] = bool(own)
    row["tokens_per_second"] = round(2 * train.steps * train.batch_size / max(train_s, 1e-9))
    for t in ("A", "B"):
        m = evaluate_dictionary(saes[t], run.model(t), run.split("val"), cfg.eval, progress=False,
                                store=run.store(t))
        row[t] = {"l0": m["l0"], "fvu": m["fvu"], "loss_recovered": m["loss_recovered"], "dead": m["dead"],
                  "low_mode": low_mode(m)}
    comp = compare(run, Side(f"A {name}", "A", saes["A"]), Side(f"B {name}", "B", saes["B"]), write=False,
                   n_tokens=args.tokens)
    s = comp.summary()
    row["universality"] = {"feature_median": s["feature_median"],
                           "feature_median_with_ultralow": s["features"].get("median_with_ultralow"),
                           "neuron_median": s["neuron_median"]}
    return row


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/default")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--scales", nargs="+", type=float, default=[1, 2, 4], help="multiples of the run's budget")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--l1", type=float, default=None, help="λ of the L1 recipes (default: the run's A/1 λ)")
    ap.add_argument("--k", type=float, default=16, help="k of topk / batchtopk")
    ap.add_argument("--batch", type=int, default=None,
                    help="training batch (default: the run's A/1 batch); --scales stay multiples of its tokens, so a "
                         "smaller batch trains more steps on the same tokens")
    ap.add_argument("--tokens", type=int, default=None, help="universality token set size (default: the run's)")
    ap.add_argument("--out", default=None, help="where dictionaries are trained (default RUN/scratch/recipes)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run.open(args.run)
    args.out = args.out or str(Path(args.run) / "scratch" / "recipes")
    print(f"run {args.run} ({run.cfg.preset}), d_sae {args.d_sae}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    head = (f"{'recipe':15s} {'×':>3s} {'steps':>6s} {'L0 A':>6s} {'FVU A':>6s} {'LR A':>6s} {'dead A/B':>10s} "
            f"{'low A/B':>11s} {'univ':>6s} {'+ultra':>6s} {'neur':>6s} {'tok/s':>7s} {'wall s':>7s}")
    print(head)
    rows = []
    for scale in args.scales:
        for name in args.recipes:
            r = study(run, name, scale, args)
            rows.append(r)
            a, b, u = r["A"], r["B"], r["universality"]
            print(f"{name:15s} {scale:3g} {r['steps']:6d} {a['l0']:6.1f} {a['fvu']:6.3f} "
                  f"{fmt(a['loss_recovered'], '6.3f')} {a['dead']:>4d}/{b['dead']:<5d} {a['low_mode']:>5d}/{b['low_mode']:<5d} "
                  f"{fmt(u['feature_median'], '6.3f')} {fmt(u['feature_median_with_ultralow'], '6.3f')} "
                  f"{fmt(u['neuron_median'], '6.3f')} {r['tokens_per_second']:7d} {r['train_seconds']:7.0f}",
                  flush=True)
            if args.json:   # after every row: a long study stopped half-way keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=2, default=lambda o: o.item()
                                                      if isinstance(o, np.generic) else str(o)))


if __name__ == "__main__":
    main()
