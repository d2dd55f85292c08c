"""Dead latents of a TopK dictionary under variants of its AuxK setting (issue 10: why A/2 lost two thirds of them).

    python benchmarks/dead_latents.py --run data/runs/default --dict A/2 window5 window25 noaux

Each variant trains the run's dictionary ``--dict`` (its own config and schedule, on its transformer's store) with
one option changed, then counts the latents that never fire on ``--rows`` store rows (the dead), the ones that fire
once or twice there (ultralow) and the mean active latents per row there (L0, at inference), and prints the final
training MSE, the training time and, every 30 steps, how many latents had been silent for the loop's window (the
training log's ``dead_window``).  Dictionaries are written to ``--out`` (default ``RUN/scratch/dead_latents``); a
variant already trained there is reused.

Variants: ``window5`` (AuxK's dead window 5 % of the run: the kind's default), ``window25`` (25 %: the default
preset's once), ``noaux`` (AuxK off), ``aux1`` (AuxK weight 1 and k_aux 512, about Gao et al.'s
normalised weight here), ``batchtopk`` (the run's options on the BatchTopK kind), ``nodecay`` and
``batchtopk_nodecay`` (the learning rate kept to the end instead of decayed over the last 20 %).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monosemantic.runs import Run  # noqa: E402
from monosemantic.sparse import SparseEncoder  # noqa: E402
from monosemantic.train_sae import train_dictionary  # noqa: E402

VARIANTS = {
    "window5": {"dead_fraction": 0.05},
    "window25": {"dead_fraction": 0.25},
    "noaux": {"aux_coefficient": 0.0},
    "aux1": {"aux_coefficient": 1.0, "k_aux": 512},
    # the same options on the BatchTopK kind: k·B per batch, so a rare latent can win on the tokens it is large on
    "batchtopk": {"kind": "batchtopk"},
    # no LR decay: does the decay phase (the last 20 %) freeze rare latents out before AuxK can bring them back?
    "nodecay": {"lr_decay": 0.0},
    "batchtopk_nodecay": {"kind": "batchtopk", "lr_decay": 0.0},
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--run", default="data/runs/default")
    ap.add_argument("--dict", default="A/2")
    ap.add_argument("--rows", type=int, default=262_144, help="store rows the dead are counted on")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = Run.open(args.run)
    spec = run.cfg.dictionary(args.dict)
    if spec.kind not in ("topk", "batchtopk"):
        raise SystemExit(f"{args.dict} is a {spec.kind!r} dictionary; this study varies AuxK, which TopK kinds have")
    store = run.store(spec.transformer)
    out = Path(args.out or Path(args.run) / "scratch" / "dead_latents")
    train = spec.train_config(run.cfg.sae_train)
    x = store.sample(args.rows, seed=7)
    for name in args.variants:
        change = dict(VARIANTS[name])
        kind = change.pop("kind", spec.kind)
        cfg = replace(spec.dictionary_config(run.cfg.model.d_mlp), kind=kind,
                      options={**spec.options, **change}).validate()
        t = time.time()
        where = out / args.dict.replace("/", "-") / name
        sae = train_dictionary(store, cfg, train, out_dir=where, seed=spec.seed, progress=False)
        secs = time.time() - t
        enc, fired = SparseEncoder(sae), torch.zeros(sae.d_sae, dtype=torch.long)
        for i in range(0, x.shape[0], 8192):
            fired += torch.bincount(enc(x[i:i + 8192])[1], minlength=sae.d_sae)
        l0 = float(fired.sum()) / x.shape[0]   # inference L0 (BatchTopK: its threshold θ, not the batch's k·B)
        log = [json.loads(line) for line in (where / "train_log.jsonl").read_text().splitlines() if line.strip()]
        steps = [r for r in log if "mse" in r]   # the whole log (sae.train_log holds only the last rows)
        print(json.dumps({"variant": name, "options": VARIANTS[name], "d_sae": sae.d_sae,
                          "dead": int((fired == 0).sum()), "ultralow": int(((fired > 0) & (fired < 3)).sum()),
                          "l0": round(l0, 2), "final_mse": round(steps[-1]["mse"], 5), "train_seconds": round(secs),
                          "dead_window": [(r["step"], r.get("dead_window")) for r in steps][::30]}), flush=True)


if __name__ == "__main__":
    main()
