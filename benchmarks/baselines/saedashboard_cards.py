"""Peer baseline: feature-centric dashboards ("cards") computed by sae-dashboard.

Runs ONLY in the separate venv ``.venv-saedash`` (sae-dashboard 0.8.0 pins
``transformer-lens<3``, ``transformers<4.57``, ``safetensors<0.5``,
``datasets<4``, ``jaxtyping<0.3``, ``rich<14``, ``typer<0.13``; our ``.venv``
has transformer-lens 3.9 / transformers 5.x, so the two cannot co-install).
Build that venv with::

    python3 -m venv .venv-saedash
    .venv-saedash/bin/pip install torch==2.13.0          # local CPU wheel first
    printf 'torch==2.13.0\\npyarrow<21\\n' > /tmp/c.txt
    .venv-saedash/bin/pip install -c /tmp/c.txt sae-dashboard==0.8.0
    .venv-saedash/bin/pip uninstall -y torchvision torchaudio

(``torch==2.13.0`` as a constraint stops pip from swapping in a multi-GB CUDA
torch 2.14.1 that ``decode-clt -> torchvision`` would otherwise pull;
``pyarrow<21`` because transformer-lens 2.17 forces numpy<2 and pyarrow 26
needs numpy>=2; the PyPI torchvision wheel does not load against the CPU torch
and breaks ``import transformers``, and only ``decode-clt`` (CLT support, unused
here) needs torchvision/torchaudio, so they are removed.)

Usage
-----
::

    # self-contained smoke test: random tiny model + random SAE + random tokens
    .venv-saedash/bin/python benchmarks/baselines/saedashboard_cards.py selftest

    # real run
    .venv-saedash/bin/python benchmarks/baselines/saedashboard_cards.py run \\
        --sae-dir SAE_DIR --model-dir MODEL_DIR --tokens tokens.npy --n-features 64

``SAE_DIR`` is SAELens format (``cfg.json`` + ``sae_weights.safetensors``, as
written by ``sae.save_model``).  The model is either ``--model-dir`` holding
``config.json`` + ``model.safetensors`` (the layout ``lib/subject.py``'s
``SubjectModel.save`` writes: ``{"tl_config": {...}, "hook": ..., "layer": ...}``)
or ``--model-config X.json --model-weights Y.safetensors`` where the JSON is
either that layout or a flat ``HookedTransformerConfig`` dict.  The model is
built offline with ``HookedTransformer(HookedTransformerConfig(...))`` and
``load_state_dict`` (strict, no weight processing/folding); ``tokenizer_name``
is forced to None, so nothing is ever downloaded.  ``--tokens`` is an integer
``.npy`` of shape (n_seqs, seq_len).  The last stdout line is JSON with
``seconds`` and ``tokens_x_features_per_s``.

No tokenizer is needed to compute the cards (they hold token ids).  Rendering
the HTML (``--html out.html``, timed separately) needs ``model.tokenizer.vocab``
(a str->id dict); pass ``--tokenizer-json`` (a HF ``tokenizers`` JSON file) or
we attach a stub vocabulary ``{"<id>": id}``.

What sae-dashboard computes per card (SaeVisRunner.run, default
feature-centric layout; all statistics over ALL n_seqs x seq_len tokens)
--------------------------------------------------------------------------
0. Pre-processing, in place on the SAE: ``encoder.fold_W_dec_norm()`` -- decoder
   rows rescaled to unit norm, ``W_enc`` columns and ``b_enc`` multiplied by the
   old norms, so every activation below is ``f_i * ||W_dec_i||``.  Activations
   come from one model forward per (feature batch x token minibatch):
   ``run_with_hooks(tokens, stop_at_layer=layer+1)`` caching the hook (here
   ``blocks.0.mlp.hook_post``), then ``sae.encode`` restricted to the feature
   batch (``W_enc[:, feats]``, ``b_enc[feats]``; ``x - b_dec`` still applied).
   The model forward is re-run for every batch of ``minibatch_size_features``
   (default 256) features.
1. Feature tables (n_rows=3 each):
   a. neuron alignment: top-3 largest (signed) entries of the unit decoder row
      ``W_dec[f]`` (= MLP-neuron space), their indices and ``|value| / ||W_dec[f]||_1``;
   b. correlated neurons: top-3 of the 512 input neurons by Pearson correlation
      between the feature's activation and the neuron's activation over all
      tokens, plus their (uncentred) cosine similarity;
   c. correlated features: top-3 other features by Pearson correlation (+ cosine
      sim), but only among the features of the same feature batch (<=256),
      self excluded.
2. Activation histogram: 50 equal-width bins over [min, max] of the NONZERO
   activations; title reports density = fraction of tokens with act > 0.
3. Logit effects: ``logits = W_dec[f] @ W_out[layer] @ W_U`` (direct path;
   no ln_final scale, no b_U); top-10 and bottom-10 tokens (ids + values) and a
   50-bin histogram over all d_vocab values.
4. Sequences ("top activations" + "intervals"), buffer (5, 5):
   a. TOP ACTIVATIONS: the 20 largest activations over all (seq, pos) with
      6 <= pos < seq_len-5; each shown as an 11-token window (5 before, the
      token, 5 after) with per-token feature activations (rounded to 4 dp), the
      token ids and, per shown token, the feature's logit effect on that token id.
   b. INTERVALS: 10 equal-width intervals of [0, max act] (``linspace(0, max,
      11)``, inclusive bounds, so the lowest interval also contains the
      non-firing tokens); for each, 5 tokens sampled uniformly at random
      (Python ``random.sample``, seed 0) from those with activation in it, same
      11-token windows, and the fraction of all tokens inside the interval.
5. Feature statistics (stored once per feature, used by the prompt-centric
   view): max activation, fraction nonzero (>1e-6), and ``torch.quantile`` at
   2,351 quantile levels (0..0.95 step 1e-3, 0.95..0.99 step 1e-4, 0.99..1
   step 1e-5, plus 1.0).  skew/kurtosis are left empty.
Cost caveat (sae-dashboard 0.8.0 bug): ``HistogramData.from_data`` picks tick
spacing ``0.1 * int(max_abs / 0.3) + 1e-6``; when |max| and |min| are both below
0.3 that is 1e-6 and it builds a Python list of ``int(-min / 1e-6)`` ticks
(e.g. 100k for min=-0.1) per histogram.  Logit vectors of an untrained model
hit this and the whole run becomes ~10x slower; trained models (logit effects
O(1)) do not.  The self-test fixture rescales W_U so it does not either.
Not computed by default: loss/ablation effects (``perform_ablation_experiments``
raises NotImplementedError in 0.8.0), DFA (attention ``hook_z`` only), prompt
-centric data, decoder-weights-per-head plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

try:  # as part of the benchmarks package, or as a script from this folder
    from .rss import reset_peak_rss as _reset_peak_rss, status_kb as _status_kb
except ImportError:
    from rss import reset_peak_rss as _reset_peak_rss, status_kb as _status_kb

DEFAULT_HOOK = "blocks.0.mlp.hook_post"

# ----------------------------------------------------------------------------
# memory (same technique as saelens_train.py: reset the kernel high-water mark)
# ----------------------------------------------------------------------------






# ----------------------------------------------------------------------------
# loading (offline)
# ----------------------------------------------------------------------------


def _tl_config_from_dict(d: dict[str, Any], device: str = "cpu"):
    from transformer_lens import HookedTransformerConfig

    init_fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    kept = {k: v for k, v in d.items() if k in init_fields}
    dropped = sorted(set(d) - set(kept))
    if dropped:
        print(f"[saedash] ignoring config keys unknown to this transformer-lens: {dropped}",
              file=sys.stderr)
    # never let the model fetch a tokenizer, and derived/non-JSON fields are recomputed
    for k in ("tokenizer_name", "n_params", "initializer_range"):
        kept.pop(k, None)
    if isinstance(kept.get("dtype"), str):
        kept["dtype"] = getattr(torch, kept["dtype"].replace("torch.", ""))
    kept["device"] = device
    return HookedTransformerConfig(**kept)


def load_model(
    model_dir: str | Path | None = None,
    *,
    config_path: str | Path | None = None,
    weights_path: str | Path | None = None,
    device: str = "cpu",
):
    """Build a HookedTransformer from a config JSON + safetensors state dict, offline.

    Returns ``(model, meta)`` where ``meta`` has ``hook``/``layer`` when the JSON
    is in ``lib/subject.py`` layout (``{"tl_config": ..., "hook": ..., "layer": ...}``).
    """
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer

    if model_dir is not None:
        config_path = config_path or Path(model_dir) / "config.json"
        weights_path = weights_path or Path(model_dir) / "model.safetensors"
    if config_path is None or weights_path is None:
        raise ValueError("give model_dir, or both config_path and weights_path")
    raw = json.loads(Path(config_path).read_text())
    meta = {k: raw[k] for k in ("hook", "layer") if k in raw}
    cfg = _tl_config_from_dict(raw.get("tl_config", raw), device=device)
    model = HookedTransformer(cfg)
    state = load_file(str(weights_path), device=device)
    # Constant buffers (causal masks, IGNORE) are rebuilt by the model; versions
    # differ in how they store them (transformer-lens 3.x saves a lazy (0, 0)
    # attn.mask), so keep the freshly built ones.
    state = {k: v for k, v in state.items() if not k.endswith((".mask", ".IGNORE"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # attention masks / IGNORE buffers may be absent from, or extra in, a state
    # dict written by another transformer-lens version; parameters may not be.
    param_names = {n for n, _ in model.named_parameters()}
    bad = [k for k in missing if k in param_names]
    if bad or [k for k in unexpected if not k.endswith(("mask", "IGNORE"))]:
        raise RuntimeError(f"state dict mismatch: missing params {bad}, unexpected {unexpected}")
    model.eval()
    return model, meta


def load_sae(sae_dir: str | Path, device: str = "cpu"):
    """SAELens-format SAE (cfg.json + sae_weights.safetensors) as an inference SAE."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(sae_dir), device=device)


def load_tokens(path: str | Path) -> torch.Tensor:
    arr = np.load(str(path))
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be an integer (n_seqs, seq_len) array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


class _StubTokenizer:
    """Minimal object for sae-dashboard's HTML decode: only ``.vocab`` is used."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab


def attach_tokenizer(model, tokenizer_json: str | Path | None = None) -> None:
    if tokenizer_json is not None:
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab()
    else:
        vocab = {f"<{i}>": i for i in range(model.cfg.d_vocab)}
    model.tokenizer = _StubTokenizer(vocab)


# ----------------------------------------------------------------------------
# the cards
# ----------------------------------------------------------------------------


def compute_cards(
    sae,
    model,
    tokens: torch.Tensor,
    features: Iterable[int],
    *,
    hook_point: str = DEFAULT_HOOK,
    minibatch_size_features: int = 256,
    minibatch_size_tokens: int = 64,
    seed: int = 0,
    verbose: bool = False,
):
    """Compute sae-dashboard's feature-centric data for ``features``.

    Returns ``(sae_vis_data, stats)``; ``stats`` has ``seconds`` (wall time of
    ``SaeVisRunner.run`` alone), ``n_tokens``, ``n_features``,
    ``tokens_x_features_per_s`` and ``peak_rss_mb`` (during the run).
    NOTE: mutates ``sae`` (``fold_W_dec_norm``), as sae-dashboard does.
    """
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    features = list(features)
    cfg = SaeVisConfig(
        hook_point=hook_point,
        features=features,
        minibatch_size_features=minibatch_size_features,
        minibatch_size_tokens=minibatch_size_tokens,
        device="cpu",
        dtype="float32",
        seed=seed,
        verbose=verbose,
    )
    exact = _reset_peak_rss()
    t0 = time.perf_counter()
    data = SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=tokens)
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if exact else None
    n_tokens = int(tokens.numel())
    return data, {
        "seconds": seconds,
        "n_tokens": n_tokens,
        "n_features": len(features),
        "tokens_x_features_per_s": n_tokens * len(features) / seconds,
        "peak_rss_mb": None if peak_kb is None else round(peak_kb / 1024, 1),
    }


def card_summary(sae_vis_data, feature: int) -> dict[str, Any]:
    """A small, JSON-able digest of one card (for eyeballing / cross-checking)."""
    fd = sae_vis_data.feature_data_dict[feature]
    seq_groups = fd.sequence_data.seq_group_data
    top = seq_groups[0]
    return {
        "feature": feature,
        "top_act_title": top.title,
        "top_act_max": max((max(s.feat_acts) for s in top.seq_data), default=0.0),
        "n_interval_groups": len(seq_groups) - 1,
        "acts_hist_title": fd.acts_histogram_data.title,
        "acts_hist_bins": len(fd.acts_histogram_data.bar_heights),
        "top_logit_token_ids": fd.logits_table_data.top_token_ids[:3],
        "neuron_alignment_indices": fd.feature_tables_data.neuron_alignment_indices,
        "correlated_neurons_indices": fd.feature_tables_data.correlated_neurons_indices,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sae-dashboard", "sae-lens", "transformer-lens", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="eindex")
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_load = time.perf_counter()
    model, meta = load_model(args.model_dir, config_path=args.model_config,
                             weights_path=args.model_weights)
    sae = load_sae(args.sae_dir)
    tokens = load_tokens(args.tokens)
    load_seconds = time.perf_counter() - t_load
    if tokens.max() >= model.cfg.d_vocab or tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError("tokens out of the model's vocab or context")
    if args.max_seqs:
        tokens = tokens[: args.max_seqs]
    hook = (args.hook or getattr(sae.cfg.metadata, "hook_name", None)
            or meta.get("hook") or DEFAULT_HOOK)
    if args.features:
        features = [int(x) for x in args.features.split(",")]
    else:
        features = list(range(args.features_start, args.features_start + args.n_features))

    data, stats = compute_cards(
        sae, model, tokens, features, hook_point=hook,
        minibatch_size_features=args.minibatch_size_features,
        minibatch_size_tokens=args.minibatch_size_tokens,
        seed=args.seed, verbose=args.verbose,
    )
    out = {
        "tool": "sae-dashboard",
        "hook": hook,
        "tokens_shape": list(tokens.shape),
        "d_sae": sae.cfg.d_sae,
        **stats,
        "load_seconds": round(load_seconds, 3),
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
    }
    if args.summary:
        for f in features[: args.summary]:
            print(json.dumps(card_summary(data, f)), file=sys.stderr)
    if args.json_out:
        t = time.perf_counter()
        data.save_json(args.json_out)
        out["json_seconds"] = time.perf_counter() - t
    if args.html:
        from sae_dashboard.data_writing_fns import save_feature_centric_vis

        attach_tokenizer(model, args.tokenizer_json)
        t = time.perf_counter()
        save_feature_centric_vis(sae_vis_data=data, filename=args.html)
        out["html_seconds"] = time.perf_counter() - t
    return out


# ----------------------------------------------------------------------------
# fixture for the self-test (works with transformer-lens 2.x or 3.x)
# ----------------------------------------------------------------------------


def make_fixture(
    out_dir: str | Path,
    *,
    n_seqs: int = 64,
    seq_len: int = 128,
    d_model: int = 128,
    d_mlp: int = 512,
    d_vocab: int = 4096,
    n_ctx: int = 128,
    d_sae: int = 4096,
    seed: int = 0,
) -> dict[str, str]:
    """Random 1-layer relu HookedTransformer + random SAELens standard SAE + tokens."""
    from safetensors.torch import save_file
    from sae_lens import StandardSAE, StandardSAEConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    out = Path(out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tl_config = dict(n_layers=1, d_model=d_model, d_head=32, n_heads=d_model // 32, d_mlp=d_mlp,
                     d_vocab=d_vocab, n_ctx=n_ctx, act_fn="relu", normalization_type="LN",
                     seed=seed, default_prepend_bos=False, positional_embedding_type="standard")
    model = HookedTransformer(HookedTransformerConfig(**tl_config, device="cpu"))
    with torch.no_grad():
        # Give feature logit effects (unit W_dec row @ W_out @ W_U) a trained-like
        # scale (std 1) instead of the ~0.01 of a fresh init: sae-dashboard's
        # histogram tick code degenerates on tiny-range data (see docstring).
        u = torch.nn.functional.normalize(torch.randn(256, d_mlp), dim=-1)
        model.W_U.mul_(1.0 / (u @ model.W_out[0] @ model.W_U).std())

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, d_vocab, size=(n_seqs, seq_len), dtype=np.int32)
    np.save(out / "tokens.npy", tokens)

    sae = StandardSAE(StandardSAEConfig(d_in=d_mlp, d_sae=d_sae, dtype="float32", device="cpu"))
    with torch.no_grad():  # trained-looking sparsity: unit decoder, each feature fires ~2%
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_sae, d_mlp), dim=-1))
        sae.W_enc.copy_(sae.W_dec.T)
        store = {}
        model.run_with_hooks(torch.from_numpy(tokens[:16].astype(np.int64)), stop_at_layer=1,
                             fwd_hooks=[(DEFAULT_HOOK, lambda a, hook: store.update(a=a))])
        acts = store["a"].reshape(-1, d_mlp)
        sae.b_dec.copy_(acts.mean(0))
        pre = (acts - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-torch.quantile(pre, 0.98, dim=0))
    sae.cfg.metadata.hook_name = DEFAULT_HOOK
    sae.save_model(str(out / "sae"))

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / "model" / "model.safetensors"))
    (out / "model" / "config.json").write_text(
        json.dumps({"tl_config": tl_config, "hook": DEFAULT_HOOK, "layer": 0}))
    return {"model_dir": str(out / "model"), "sae_dir": str(out / "sae"),
            "tokens": str(out / "tokens.npy")}


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------


def _add_run_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--sae-dir", required=required)
    p.add_argument("--model-dir")
    p.add_argument("--model-config")
    p.add_argument("--model-weights")
    p.add_argument("--tokens", required=required)
    p.add_argument("--hook", default=None)
    p.add_argument("--n-features", type=int, default=32)
    p.add_argument("--features-start", type=int, default=0)
    p.add_argument("--features", default=None, help="comma-separated list; overrides n/start")
    p.add_argument("--max-seqs", type=int, default=0)
    p.add_argument("--minibatch-size-features", type=int, default=256)
    p.add_argument("--minibatch-size-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--html", default=None, help="also render the HTML (timed separately)")
    p.add_argument("--tokenizer-json", default=None)
    p.add_argument("--json-out", default=None, help="also save sae-dashboard's JSON data")
    p.add_argument("--summary", type=int, default=0, help="print N card digests to stderr")
    p.add_argument("--verbose", action="store_true")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="sae-dashboard feature cards (peer baseline)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_run_args(sub.add_parser("run", help="compute cards for a saved SAE + model + tokens"), True)
    fx = sub.add_parser("fixture", help="write a random tiny model/SAE/tokens fixture")
    fx.add_argument("out_dir")
    fx.add_argument("--n-seqs", type=int, default=64)
    fx.add_argument("--seq-len", type=int, default=128)
    st = sub.add_parser("selftest", help="fixture in a temp dir, then run on it")
    _add_run_args(st, False)
    st.add_argument("--n-seqs", type=int, default=64)
    st.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args(argv)

    if args.cmd == "fixture":
        print(json.dumps(make_fixture(args.out_dir, n_seqs=args.n_seqs, seq_len=args.seq_len)))
        return
    if args.cmd == "selftest":
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_fixture(tmp, n_seqs=args.n_seqs, seq_len=args.seq_len)
            args.sae_dir, args.model_dir, args.tokens = paths["sae_dir"], paths["model_dir"], paths["tokens"]
            if args.html == "auto":
                args.html = os.path.join(tmp, "cards.html")
            res = run(args)
    else:
        if not (args.model_dir or (args.model_config and args.model_weights)):
            ap.error("give --model-dir, or --model-config and --model-weights")
        res = run(args)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
