"""Command line: ``monosemantic run``, ``monosemantic summary``.

    monosemantic run --preset {tiny,kernels,default,quality,paper} [--corpus SPEC] --out DIR [--stages S ...] [--device D]
    monosemantic summary DIR [--json]
    monosemantic compare DIR A/1 B/1 [--tokens N] [--json]
    monosemantic interpret DIR A/1 [--out OUT] [--json]
    monosemantic steer DIR A/1 --feature 123=+5 [--feature 7=x0 ...] --prompt TEXT [--tokens 20] [--seed 0]

Errors are one line on stderr (exit 2); ``--debug`` (or MONOSEMANTIC_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .config import PRESETS, preset
from .errors import MonosemanticError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monosemantic", description="Dictionary learning on a one-layer transformer.")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also: MONOSEMANTIC_DEBUG=1)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) every stage of a preset into a run directory")
    r.add_argument("--preset", default="default", help=f"one of {sorted(PRESETS)} (default: default)")
    r.add_argument("--corpus", default=None, help="'default', a local file/folder, or hf:NAME?split=…&column=…")
    r.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    r.add_argument("--stages", nargs="*", default=None, help="only these stages (e.g. dictionary:A/1)")
    r.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (default: the preset's, auto)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--jobs", default="auto", help="stages run at once, each in its own process on its share of the "
                   "cores (default auto: 2 on a CPU with ≥ 2 cores, 1 on a GPU; 1: one after another, with "
                   "progress bars)")
    t = sub.add_parser("train-dictionary", help="train + evaluate one dictionary of a run (works under torchrun)")
    t.add_argument("dir")
    t.add_argument("dict_id", help="e.g. A/1")
    t.add_argument("--device", default=None, help="auto | cpu | cuda (under torchrun each rank takes LOCAL_RANK)")
    t.add_argument("--quiet", action="store_true")
    s = sub.add_parser("summary", help="stage status and every metric of a run")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="print JSON (keys documented in the README)")
    c = sub.add_parser("compare", help="universality: correlate the features of two dictionaries (and, across "
                                       "transformers, their neurons) over a shared token set")
    c.add_argument("dir", help="run directory")
    c.add_argument("a", help="dictionary id (e.g. A/1) or T/neurons")
    c.add_argument("b", help="dictionary id (e.g. B/1) or T/neurons")
    c.add_argument("--tokens", type=int, default=None, help="tokens in the shared set (default: the preset's, "
                                                            "1,048,576 for default)")
    c.add_argument("--seed", type=int, default=0, help="seed of the context order")
    c.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    c.add_argument("--json", action="store_true", help="print the comparison summary as JSON")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    i = sub.add_parser("interpret", help="automated interpretability: explain and score every feature of a "
                                         "dictionary, every neuron of its transformer and a randomized control")
    i.add_argument("dir", help="run directory")
    i.add_argument("dict_id", help="dictionary id (e.g. A/1)")
    i.add_argument("--out", default=None, help="write the results here instead of into the run (the run is "
                                               "then only read)")
    i.add_argument("--json", action="store_true", help="print the medians as JSON")
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    st = sub.add_parser("steer", help="edit features (or neurons) while the transformer runs: the clean and the "
                                      "steered continuation of a prompt and the top next-token changes")
    st.add_argument("dir", help="run directory")
    st.add_argument("source", help="dictionary id (e.g. A/1) for its features, or a transformer (A) for its neurons")
    st.add_argument("--feature", action="append", default=[], metavar="EDIT",
                    help="UNIT=+C add C·d_i, UNIT=xC scale, UNIT=C clamp (pin), UNIT=ablate; @POS,POS limits it to "
                         "those token positions (-1: the newest); repeatable")
    st.add_argument("--prompt", required=True, help="the text to continue")
    st.add_argument("--tokens", type=int, default=20, help="tokens to sample (default 20)")
    st.add_argument("--seed", type=int, default=0, help="sampling seed (the clean and steered runs share it)")
    st.add_argument("--temperature", type=float, default=1.0, help="0: greedy (default 1)")
    st.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    st.add_argument("--top", type=int, default=5, help="next-token changes to list (default 5)")
    st.add_argument("--no-error", action="store_true", help="splice the reconstruction alone (drop the "
                                                            "dictionary's error term)")
    st.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"monosemantic: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("MONOSEMANTIC_DEBUG", "") not in ("", "0")
    import warnings

    shown = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _warning_line
    try:
        return _dispatch(args)
    except (MonosemanticError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"monosemantic: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("monosemantic: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, with the way to the traceback
        if debug:
            raise
        print(f"monosemantic: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback, "
              f"and please report it)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = shown


def _dispatch(args) -> int:
    if args.cmd == "run":
        from .pipeline import run_pipeline

        cfg = preset(args.preset)
        if args.corpus:
            cfg.corpus.spec = args.corpus
        if args.device:
            cfg.device = args.device
        cfg.validate()
        run = run_pipeline(args.out, cfg, stages=args.stages, progress=not args.quiet, jobs=args.jobs)
        print(json.dumps(run.summary(), indent=2))
        return 0
    if args.cmd == "train-dictionary":
        from .pipeline import train_dictionary_stage

        run = train_dictionary_stage(args.dir, args.dict_id, device=args.device, progress=not args.quiet)
        from . import distributed as D

        if D.is_main():
            print(json.dumps(run.summary()["dictionaries"].get(args.dict_id, {}), indent=2))
        return 0
    if args.cmd == "summary":
        from .runs import Run

        summ = Run.open(args.dir).summary()
        if args.json:
            print(json.dumps(summ, indent=2))
        else:
            print(f"run {summ['run']} (preset {summ['preset']})")
            for k, v in summ["stages"].items():
                print(f"  {k:24s} {v['status']:8s} {_fmt(v.get('seconds', ''))}")
            for t, v in summ["transformers"].items():
                print(f"  transformer {t}: eval loss {_fmt(v['eval_loss'])}")
            for d, v in summ["dictionaries"].items():
                print(f"  dictionary {d}: " + ", ".join(f"{k} {_fmt(v[k])}" for k in
                      ("d_sae", "l0", "fvu", "loss_recovered", "dead", "ultralow") if k in v))
        return 0
    if args.cmd == "compare":
        return _compare(args)
    if args.cmd == "interpret":
        return _interpret(args)
    if args.cmd == "steer":
        return _steer(args)
    return 1


def _compare(args) -> int:
    from .runs import Run
    from .universality import comparison_dir, compare

    run = Run.open(args.dir)
    with run.lock():
        comp = compare(run, args.a, args.b, n_tokens=args.tokens, seed=args.seed, device=args.device, write=True,
                       progress=not (args.quiet or args.json))
    s = comp.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    f = s["features"]
    print(f"{comp.key}: {s['tokens']:,} tokens, written to {comparison_dir(run, f['a'], f['b'])}")
    print(f"  features  median best-match correlation {_fmt(s['feature_median'])} "
          f"(paper A/1~B/1: {s['paper']['feature_median']}); {f['alive_a']} alive, {f['dead_a']} dead, "
          f"{f['ultralow_a']} ultralow of {f['units_a']}")
    if s.get("neurons"):
        print(f"  neurons   median best-match correlation {_fmt(s['neuron_median'])} "
              f"(paper: {s['paper']['neuron_median']})")
    for k in ("assignment_mean", "logit_corr_median", "decoder_mmcs"):
        if f.get(k) is not None:
            print(f"  {k:9s} {_fmt(f[k])}")
    return 0



def _interpret(args) -> int:
    from .interpret import interpret
    from .runs import Run

    run = Run.open(args.dir)
    if args.out is None:
        with run.lock():
            it = interpret(run, args.dict_id, progress=not (args.quiet or args.json))
    else:
        it = interpret(run, args.dict_id, progress=not (args.quiet or args.json), out_dir=args.out)
    s = it.summary
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"interpretability of {args.dict_id}: {s['explain_tokens']:,} explanation tokens (train), "
          f"{s['holdout_tokens']:,} held-out tokens (val), written to {it.dir}")
    cut = s["features"]["dense"]["density_threshold"]
    keys = ("spearman", "detection", "logit_auc", "logit_auc_testable", "logit_auc_shuffled")
    widths = (9, 8, 7, 9, 9)
    print(f"  medians: every scored unit | units denser than "
          + (f"the features' low-density mode ({cut:.2g})" if cut else "- (the features have no low-density mode)"))
    head = "".join(f"{h:>{w}s}" for h, w in zip(("spearman", "detect", "logit", "testable", "shuffled"), widths))
    print(f"  {'':28s}{head}{'units':>6s} |{head}{'units':>6s}")
    for g in ("features", "neurons", "control", "control_neurons"):
        for part in ("all", "single_token", "rest"):
            cells = []
            for m in (s[g][part], s[g]["dense"][part]):
                cells.append("".join(f"{_fmt(round(m[k], 3)) if m.get(k) is not None else '-':>{w}s}"
                                     for k, w in zip(keys, widths)) + f"{m['units']:6d}")
            print(f"  {g + ' ' + part:28s}" + " |".join(cells))
    print("  logit: every unit (0.5 where the explanation predicts no compared token); testable: the others; "
          "shuffled: the test against another unit's tokens (token frequency alone)")
    print("  paper's logit-test medians: features 0.74, neurons 0.53, randomized control 0.50")
    return 0


def _steer(args) -> int:
    from .errors import ConfigError
    from .interventions import Steering

    if not args.feature:
        raise ConfigError("no edit given; add at least one --feature UNIT=+C (e.g. --feature 123=+5)")
    s = Steering.open(args.dir, args.source)
    edits = s.check_edits(args.feature)
    r = s.steer(args.prompt, edits, n_tokens=args.tokens, temperature=args.temperature, top_k=args.top_k,
                seed=args.seed, k=args.top, keep_error=not args.no_error)
    nxt = r.effect.next
    if args.json:
        ch = lambda c: {"token": c.token, "p_clean": c.p_clean, "p_steered": c.p_edited}  # noqa: E731
        print(json.dumps({"source": args.source, "edits": args.feature, "prompt": args.prompt,
                          "clean": r.clean.text, "steered": r.edited.text, "kl": nxt.kl,
                          "raised": [ch(c) for c in nxt.raised], "lowered": [ch(c) for c in nxt.lowered],
                          "delta_loglik": [float(v) for v in r.effect.delta_loglik_T]}, indent=2))
        return 0
    print(f"{args.source} {s.kind}s, edits {', '.join(args.feature)}"
          + (" (reconstruction only, no error term)" if args.no_error else "")
          + f"; {len(r.effect.tokens)} prompt tokens, {args.tokens} sampled (seed {args.seed})")
    print(f"  prompt:  {args.prompt!r}")
    print(f"  clean:   {r.clean.text!r}")
    print(f"  steered: {r.edited.text!r}")
    print(f"  next token: KL(clean ‖ steered) = {nxt.kl:.4g} nats")
    for name, rows in (("raised", nxt.raised), ("lowered", nxt.lowered)):
        print(f"  {name}: " + ", ".join(f"{c.token!r} {c.p_clean:.3f}→{c.p_edited:.3f}" for c in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
