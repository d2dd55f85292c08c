"""Throughput of the feature-statistics pass (every card of a dictionary), against sae-dashboard.

    .venv/bin/python benchmarks/feature_stats.py --run data/runs/default --dict A/1 --tokens 1000000

prints, for our pass (``monosemantic.features.compute_feature_stats`` into a scratch folder): wall time of the
whole computation (pass + example windows + tables, imports warmed up first), tokens × features per second, peak
RSS during it, and the load time of one card; then runs sae-dashboard (PyPI, in its own venv ``.venv-saedash``:
it pins transformer-lens < 3, so it cannot co-install) on the same model, dictionary and tokens, and prints the
ratio of throughputs.  sae-dashboard re-runs the model for every batch of 256 features and is far slower, so by
default it computes ``--baseline-features`` cards over ``--baseline-tokens`` tokens (the same dictionary, the same
token set's first contexts) and the ratio compares tokens × features per second; pass ``--baseline-features 4096
--baseline-tokens 1000000`` for the full set if you have the hours.

Without a trained dictionary (``--dict`` missing, or ``--synthetic``), a *calibrated* one is built on the run's
transformer: decoder rows are centred activation samples at unit norm, the encoder their transpose, and each
feature's bias is set so its density on a calibration sample is a log-uniform draw in [1e-4, 3e-2] (mean L0 ≈ 20,
the paper's regime).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines.rss import reset_peak_rss as _reset_peak, status_kb as _status_kb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "baselines" / "saedashboard_cards.py"
BASELINE_PY = ROOT / ".venv-saedash" / "bin" / "python"






def calibrated_dictionary(run, transformer: str, d_sae: int, out_dir: Path, seed: int = 0,
                          density_range=(1e-4, 3e-2), n_contexts: int = 256):
    """A dictionary with realistic sparsity on ``transformer``'s activations (see the module docstring)."""
    from monosemantic.sae import DictionaryConfig, make_dictionary

    model = run.model(transformer)
    split = run.split("train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(split.n_contexts, size=min(n_contexts, split.n_contexts), replace=False))
    with torch.no_grad():
        x = model.mlp_acts(torch.from_numpy(split.contexts(idx)))[:, 1:].reshape(-1, model.d_mlp).float()
    mean = x.mean(0)
    g = torch.Generator().manual_seed(seed)
    dirs = x[torch.randint(0, len(x), (d_sae,), generator=g)] - mean
    noise = torch.randn(dirs.shape, generator=g) / math.sqrt(model.d_mlp)
    dirs = dirs + 0.05 * dirs.norm(dim=1, keepdim=True).clamp_min(1e-3) * noise
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-8)
    sae = make_dictionary(DictionaryConfig(d_in=model.d_mlp, d_sae=d_sae, l1_coefficient=1e-3, seed=seed))
    lo, hi = np.log10(density_range[0]), np.log10(density_range[1])
    dens = torch.from_numpy(10 ** rng.uniform(lo, hi, d_sae)).float()
    with torch.no_grad():
        sae.W_dec_FD.copy_(dirs)
        sae.W_enc_DF.copy_(dirs.T)
        sae.b_dec_D.copy_(mean)
        pre = (x - mean) @ sae.W_enc_DF
        q = torch.stack([torch.quantile(pre[:, j], 1 - float(dens[j])) for j in range(d_sae)])
        sae.b_enc_F.copy_(-q)
    sae.save(out_dir)
    return sae


def scratch_run(run, dict_id: str, root: Path, d_sae: int, seed: int):
    """A run folder sharing ``run``'s tokens and transformers, holding a calibrated dictionary ``dict_id``."""
    from monosemantic.config import DictSpec
    from monosemantic.runs import Run

    cfg = run.cfg
    if not any(d.id == dict_id for d in cfg.dictionaries):
        cfg.dictionaries = list(cfg.dictionaries) + [DictSpec(dict_id, d_sae, 1e-3)]
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("tokens", "transformers"):
        if not (root / sub).exists():
            os.symlink(run.root.resolve() / sub, root / sub)
    (root / "run.json").write_text(json.dumps(cfg.to_dict()))
    scratch = Run.open(root)
    calibrated_dictionary(scratch, dict_id.split("/")[0], d_sae, scratch.dict_dir(dict_id), seed=seed)
    return scratch


def run_ours(run, dict_id: str, n_tokens: int, out: Path, threads: int) -> dict:
    from monosemantic.features import FeatureStats, FeatureStatsConfig, compute_feature_stats

    run.model(dict_id.split("/")[0])          # warm: imports (TransformerLens) are not the statistics' cost
    run.dictionary(dict_id)
    run.tokenizer.token_strings()
    cfg = FeatureStatsConfig(n_tokens=n_tokens)
    shutil.rmtree(out, ignore_errors=True)
    exact = _reset_peak()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    st = compute_feature_stats(run, dict_id, cfg, progress=False, out_dir=out)
    secs = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    fresh = FeatureStats(out, run=run)
    t1 = time.perf_counter()
    units = rng.choice(st.n_units, 50, replace=False)
    for u in units:
        fresh.unit(int(u))
    card_ms = 1000 * (time.perf_counter() - t1) / len(units)
    t2 = time.perf_counter()
    FeatureStats(out, run=run)
    open_ms = 1000 * (time.perf_counter() - t2)
    l0 = float(st.table["count"].sum() / st.n_tokens)
    return {"tool": "monosemantic", "seconds": secs, "pass_seconds": st.meta["timing"]["pass_seconds"],
            "finalize_seconds": st.meta["timing"]["finalize_seconds"], "n_tokens": st.n_tokens,
            "n_features": st.n_units, "tokens_x_features_per_s": st.n_tokens * st.n_units / secs,
            "peak_rss_mb": round(peak / 1024, 1), "l0": round(l0, 2), "dead": int(st.table["dead"].sum()),
            "cpu_seconds": round(cpu, 1), "load_average_before": round(load0, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "open_stats_ms": round(open_ms, 1), "card_load_ms": round(card_ms, 2), "torch_threads": threads}


def write_saelens(sae, d: Path, hook: str) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": sae.W_enc_DF.detach().contiguous(), "W_dec": sae.W_dec_FD.detach().contiguous(),
               "b_enc": sae.b_enc_F.detach().contiguous(), "b_dec": sae.b_dec_D.detach().contiguous()},
              str(d / "sae_weights.safetensors"))
    (d / "cfg.json").write_text(json.dumps({
        "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none", "architecture": "standard",
        "metadata": {"hook_name": hook}}))
    return d


def run_baseline(run, dict_id: str, n_features: int, n_tokens: int, tmp: Path, threads: int, timeout: int) -> dict:
    from monosemantic.tokensets import token_set_contexts

    if not BASELINE_PY.exists() or not BASELINE.exists():
        return {"tool": "sae-dashboard", "error": f"baseline venv or script missing ({BASELINE_PY}, {BASELINE}); "
                                                  f"see the docstring of {BASELINE.name} to build .venv-saedash"}
    split = run.split("train")
    ctx = token_set_contexts(split, n_tokens)
    np.save(tmp / "tokens.npy", split.contexts(ctx).astype(np.int32))
    model_dir = run.model_dir(dict_id.split("/")[0])
    hook = json.loads((model_dir / "config.json").read_text())["hook"]
    sae_dir = write_saelens(run.dictionary(dict_id), tmp / "sae", hook)
    cmd = [str(BASELINE_PY), str(BASELINE), "run", "--sae-dir", str(sae_dir), "--model-dir", str(model_dir),
           "--tokens", str(tmp / "tokens.npy"), "--n-features", str(n_features), "--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"tool": "sae-dashboard", "error": f"timed out after {timeout}s", "cmd": " ".join(cmd)}
    if p.returncode != 0:
        return {"tool": "sae-dashboard", "error": f"rc={p.returncode}", "stderr": p.stderr[-2000:],
                "cmd": " ".join(cmd)}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["n_tokens_non_bos"] = int(len(ctx) * split.body)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "data" / "runs" / "default"))
    ap.add_argument("--dict", default="A/1")
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--synthetic", action="store_true", help="use a calibrated dictionary even if one is trained")
    ap.add_argument("--d-sae", type=int, default=4096, help="features of the calibrated dictionary")
    ap.add_argument("--baseline-features", type=int, default=256)
    ap.add_argument("--baseline-tokens", type=int, default=100_000)
    ap.add_argument("--baseline-timeout", type=int, default=3600)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, i.e. the cores)")
    ap.add_argument("--keep", default=None, help="keep the scratch folder here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from monosemantic.runs import Run

    try:
        run = Run.open(args.run)
    except FileNotFoundError as e:
        sys.exit(f"{e}\n(build it with `make demo`, or point --run at a finished run)")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="monosemantic-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        trained = any(d.id == args.dict for d in run.cfg.dictionaries) and \
            (run.dict_dir(args.dict) / "sae.safetensors").exists()
        dictionary = "trained"
        if args.synthetic or not trained:
            run = scratch_run(run, args.dict, tmp / "run", args.d_sae, seed=0)
            dictionary = "calibrated (log-uniform densities 1e-4…3e-2)"
        print(f"run {args.run} · dictionary {args.dict} ({dictionary}) · {threads} torch threads · "
              f"{os.cpu_count()} cpus", flush=True)
        ours = run_ours(run, args.dict, args.tokens, tmp / "ours", threads)
        ours["dictionary"] = dictionary
        print(f"monosemantic: {ours['n_features']} cards over {ours['n_tokens']:,} tokens in {ours['seconds']:.1f} s "
              f"(pass {ours['pass_seconds']:.1f} s + windows/tables {ours['finalize_seconds']:.1f} s) = "
              f"{ours['tokens_x_features_per_s']:.3g} tokens×features/s; peak RSS {ours['peak_rss_mb']:.0f} MB; "
              f"L0 {ours['l0']}; one card loads in {ours['card_load_ms']:.1f} ms "
              f"(opening the tables {ours['open_stats_ms']:.0f} ms)", flush=True)
        ideal = ours["cpu_seconds"] / (os.cpu_count() or 1)
        print(f"  CPU time {ours['cpu_seconds']:.0f} s (all threads) → ≈ {ideal:.0f} s of wall time on "
              f"{os.cpu_count()} idle cores; load average {ours['load_average_before']} → "
              f"{ours['load_average_after']} (other processes share these cores)", flush=True)
        out = {"ours": ours}
        if not args.no_baseline:
            base = run_baseline(run, args.dict, args.baseline_features, args.baseline_tokens, tmp, threads,
                                args.baseline_timeout)
            out["sae_dashboard"] = base
            if "error" in base:
                print(f"sae-dashboard: FAILED: {base['error']}\n{base.get('stderr', '')}", flush=True)
            else:
                ratio = ours["tokens_x_features_per_s"] / base["tokens_x_features_per_s"]
                full = ours["n_tokens"] * ours["n_features"] / base["tokens_x_features_per_s"]
                out["ratio"] = ratio
                out["sae_dashboard_extrapolated_seconds_for_all_cards"] = full
                print(f"sae-dashboard: {base['n_features']} cards over {base['n_tokens']:,} tokens in "
                      f"{base['seconds']:.1f} s = {base['tokens_x_features_per_s']:.3g} tokens×features/s; peak RSS "
                      f"{base.get('peak_rss_mb')} MB (extrapolated to {ours['n_features']} cards × "
                      f"{ours['n_tokens']:,} tokens: {full / 60:.0f} min)", flush=True)
                print(f"ratio (ours / sae-dashboard, tokens×features per second): {ratio:.1f}×", flush=True)
        target = {"all_cards_seconds_max": 30, "ratio_min": 10}
        out["target"] = target
        out["meets_target"] = bool(ours["seconds"] <= 30 and ours["n_tokens"] >= 1_000_000
                                   and out.get("ratio", 0) >= 10)
        print(json.dumps(out))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
