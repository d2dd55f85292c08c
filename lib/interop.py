"""SAELens interop: write our dictionaries in SAELens's on-disk format, and read SAELens's into ours.

    export_saelens(sae, "out/sae_lens")            # cfg.json + sae_weights.safetensors
    sae_lens.SAE.load_from_disk("out/sae_lens")    # SAELens ≥ 6 reads it: same encode / decode as ours
    d = import_saelens("some/saelens/dir")         # → a monosemantic Dictionary (works with metrics, runs, …)

The format (SAELens 6.x, ``SAE.save_model`` / ``SAE.load_from_disk``): a folder with ``cfg.json`` — ``architecture``,
``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
``reshape_activations``, architecture fields (``k``, ``rescale_acts_by_decoder_norm`` for topk) and ``metadata``
(``sae_lens_version`` ≥ 6 — without it SAELens applies its pre-6.0 config conversion —, ``hook_name``,
``model_name``, …) — and ``sae_weights.safetensors`` with ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec``
(d_sae, d_in), ``b_dec`` (d_in,) and, for jumprelu, ``threshold`` (d_sae,).  SAELens computes, for these
architectures::

    s = x − apply_b_dec_to_input · b_dec;   h = s W_enc + b_enc
    standard: f = ReLU(h)      topk: f = ReLU(TopK_k(h))  (h·‖W_dec‖ and f/‖W_dec‖ if rescale_acts_by_decoder_norm)
    jumprelu: f = ReLU(h) · 1[h > threshold]
    x̂ = f W_dec + b_dec

Kinds map as: relu → ``standard``; topk → ``topk`` (rescale off: our decoder rows are unit norm); jumprelu →
``jumprelu`` (threshold = exp(log_threshold)); batchtopk → ``jumprelu`` with every threshold = θ, exactly what
SAELens itself saves a BatchTopK SAE as for inference.  Our kind, config and options travel in
``metadata["monosemantic"]``, so an exported BatchTopK imports back as BatchTopK.

Import maps the other way, exactly (up to float rounding): ``apply_b_dec_to_input = False`` is folded as
b_enc ← b_enc + b_dec W_enc (our kinds always subtract b_dec first); topk with ``rescale_acts_by_decoder_norm``
has the decoder norms folded into the encoder (as SAELens does when it saves for inference); SAELens's
``batchtopk`` training checkpoints (``topk_threshold``) become our batchtopk.  ``normalize_activations``:
``"none"`` is plain; ``"expected_average_only_in"`` needs its scaling factor (from ``activation_scaler.json`` in the
folder, or ``scaling_factor=``), which is folded into the weights as SAELens's
``fold_activation_norm_scaling_factor`` does; the per-input normalisations (``layer_norm``,
``constant_norm_rescale``) cannot be expressed by a Dictionary and are refused, as are unfolded
``covariance_whitening`` and fine-tuning scaling factors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .io import atomic_write_json, load_safetensors, save_safetensors
from .sae import Dictionary, DictionaryConfig, make_dictionary

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_SCALER = "activation_scaler.json"
EXPORTABLE_KINDS = ("relu", "topk", "batchtopk", "jumprelu")
IMPORTABLE_ARCHITECTURES = ("standard", "topk", "jumprelu", "batchtopk")


def _sae_lens_version() -> str:
    try:
        from importlib.metadata import version

        return version("sae-lens")
    except Exception:  # not installed: any 6.x version string selects SAELens's current config handling
        return "6.0.0"


# ---- export ----------------------------------------------------------------------------------------------------

def saelens_state(sae: Dictionary) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """(architecture, architecture-specific cfg fields, tensors) of ``sae`` in SAELens's terms."""
    kind = sae.cfg.kind
    t = {"W_enc": sae.W_enc_DF, "b_enc": sae.b_enc_F, "W_dec": sae.W_dec_FD, "b_dec": sae.b_dec_D}
    if kind == "relu":  # a recipe that does not subtract b_dec from the input (april2024) says so to SAELens
        return "standard", ({} if sae.subtracts_b_dec else {"apply_b_dec_to_input": False}), t
    if kind == "topk":
        return "topk", {"k": int(sae.opts["k"]), "rescale_acts_by_decoder_norm": False}, t
    if kind == "batchtopk":
        return "jumprelu", {}, {**t, "threshold": sae.threshold.expand(sae.d_sae)}
    if kind == "jumprelu":
        return "jumprelu", {}, {**t, "threshold": sae.threshold_F}
    raise ConfigError(f"dictionary kind {kind!r} has no SAELens equivalent here; exportable kinds: "
                      f"{list(EXPORTABLE_KINDS)}")


def export_saelens(sae: Dictionary, directory: str | Path, *, hook_name: str = "blocks.0.mlp.hook_post",
                   model_name: str | None = None, context_size: int | None = None, prepend_bos: bool = True,
                   dtype: str = "float32", metadata: dict | None = None) -> Path:
    """Write ``sae`` as a SAELens SAE (``cfg.json`` + ``sae_weights.safetensors``) that ``SAE.load_from_disk``
    reads with the same feature activations and reconstructions as ``sae``.

    ``hook_name`` / ``model_name`` / ``context_size`` / ``prepend_bos`` go to SAELens's metadata (they say where the
    SAE attaches: our dictionaries read ``blocks.0.mlp.hook_post`` of the run's transformer; ``model_name`` is
    None unless the model is a TransformerLens pretrained one).  ``metadata`` adds further keys.
    """
    directory = Path(directory)
    cfg_path = directory / SAELENS_CFG
    if cfg_path.exists():
        try:
            existing = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            existing = {}
        if "dictionary" in existing:
            raise ConfigError(f"{directory} holds a monosemantic dictionary (its cfg.json); export to another folder "
                              f"— SAELens's format also names its config cfg.json")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                   "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ConfigError(f"dtype must be float32, float64, float16 or bfloat16, got {dtype!r}")
    architecture, extra, tensors = saelens_state(sae)
    version = _sae_lens_version()
    meta = {"sae_lens_version": version, "sae_lens_training_version": version, "model_name": model_name,
            "hook_name": hook_name, "hook_head_index": None, "context_size": context_size,
            "prepend_bos": prepend_bos,
            "monosemantic": {"dictionary": sae.cfg.to_dict(), "exported_as": architecture}}
    meta.update(metadata or {})
    cfg = {"architecture": architecture, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": dtype, "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           **extra, "metadata": meta}
    save_safetensors({k: v.detach().to("cpu", torch_dtype).contiguous() for k, v in tensors.items()},
                     directory / SAELENS_WEIGHTS)
    atomic_write_json(cfg_path, cfg)
    return directory


# ---- import ----------------------------------------------------------------------------------------------------

def _pre_6_defaults(cfg: dict) -> dict:
    """The bits of SAELens's pre-6.0 config conversion that matter here."""
    cfg = dict(cfg)
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    try:
        major = int(str(version).split(".")[0]) if version else 0
    except ValueError:
        major = 0
    if major >= 6:
        return cfg
    cfg.setdefault("apply_b_dec_to_input", True)
    cfg.setdefault("architecture", "standard")
    kw = cfg.get("activation_fn_kwargs") or {}
    if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" and kw.get("k") is not None:
        cfg["architecture"], cfg["k"] = "topk", kw["k"]
    if isinstance(cfg.get("normalize_activations"), bool):
        cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    return cfg


def _scaling_factor(directory: Path, given: float | None) -> float:
    if given is not None:
        return float(given)
    p = directory / SAELENS_SCALER
    if p.exists():
        s = json.loads(p.read_text()).get("scaling_factor")
        if s is not None:
            return float(s)
    raise ConfigError(
        f"the SAELens SAE in {directory} has normalize_activations='expected_average_only_in' with its scaling "
        f"factor not folded in, and no {SAELENS_SCALER} beside it; pass import_saelens(..., scaling_factor=s) "
        f"(the factor SAELens multiplied activations by), or fold it in SAELens "
        f"(sae.fold_activation_norm_scaling_factor(s)) and save again")


def import_saelens(directory: str | Path, *, scaling_factor: float | None = None, fold_decoder_norm: bool = False,
                   expect_hook_name: str | None = None, device: str | torch.device = "cpu") -> Dictionary:
    """Read a SAE saved by SAELens (``save_model``, ``save_inference_model``, or our ``export_saelens``) into a
    monosemantic ``Dictionary`` with the same ``encode`` (feature activations) and reconstructions.

    Architectures: standard → relu, topk → topk, jumprelu → jumprelu (or batchtopk when the metadata says it is an
    exported/trained BatchTopK with one shared threshold), batchtopk (a SAELens training checkpoint) → batchtopk.
    ``fold_decoder_norm=True`` (standard and jumprelu only) rescales so decoder rows are unit norm, as our
    training hooks assume — reconstructions are unchanged but feature activations are multiplied by the old
    norms; without it a dictionary whose rows are not unit norm would be renormalised by further training.
    ``expect_hook_name`` refuses an SAE trained on another hook.  The SAELens metadata is kept on the result as
    ``.saelens_metadata``.
    """
    directory = Path(directory)
    cfg, st = _read_saelens(directory, expect_hook_name)
    meta = cfg.get("metadata") or {}
    w = _fold_input_convention(cfg, st, directory, scaling_factor)
    kind, options, threshold = _our_kind(cfg, st, w, directory / SAELENS_WEIGHTS)
    our_cfg = (meta.get("monosemantic") or {}).get("dictionary") or {}
    if kind == "batchtopk" and float(threshold) < 0:
        threshold = torch.zeros(())  # SAELens: ReLU(h)·1[h > θ] is the same for every θ ≤ 0
    if our_cfg.get("kind") == kind:  # our own export: restore the original options and coefficients
        options = {**options, **(our_cfg.get("options") or {})}
    l1 = our_cfg.get("l1_coefficient", cfg.get("l1_coefficient", cfg.get("l0_coefficient", 0.0)))
    dcfg = DictionaryConfig(d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), kind=kind, l1_coefficient=float(l1 or 0.0),
                            seed=int(our_cfg.get("seed", 0)), options=options)
    sae = make_dictionary(dcfg)

    if fold_decoder_norm:
        if kind not in ("relu", "jumprelu"):
            raise ConfigError(f"fold_decoder_norm changes which latents win a top-k, so it is refused for {kind}")
        n = w["W_dec"].norm(dim=-1).clamp_min(1e-8)
        w["W_enc"], w["b_enc"], w["W_dec"] = w["W_enc"] * n, w["b_enc"] * n, w["W_dec"] / n[:, None]
        if kind == "jumprelu":
            threshold = threshold * n

    with torch.no_grad():
        sae.W_enc_DF.copy_(w["W_enc"])
        sae.b_enc_F.copy_(w["b_enc"])
        sae.W_dec_FD.copy_(w["W_dec"])
        sae.b_dec_D.copy_(w["b_dec"])
        if kind == "jumprelu":
            # θ ≤ 0 acts as θ = 0 in SAELens (ReLU first); the smallest positive float keeps log finite
            tiny = torch.finfo(torch.float32).tiny
            sae.log_threshold_F.copy_(threshold.clamp_min(tiny).log())
        elif kind == "batchtopk":
            sae.threshold.copy_(threshold)
            sae.threshold_updates.fill_(max(1, int(sae.threshold_updates)))  # θ is an estimate, not unset
    sae.saelens_metadata = meta
    return sae.to(device).eval()


def _read_saelens(directory: Path, expect_hook_name: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """The SAELens config (pre-6.0 conventions converted) and its tensors in float64, after checking that this is
    an SAE we can import: a known architecture and reshape, no fine-tuning scale, W_enc/b_enc/W_dec/b_dec of the
    config's shape."""
    cfg_path, w_path = directory / SAELENS_CFG, directory / SAELENS_WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"no SAELens SAE at {directory}: expected {SAELENS_CFG} and {SAELENS_WEIGHTS} "
                                f"(written by SAELens's save_model / save_inference_model, or export_saelens)")
    cfg = _pre_6_defaults(json.loads(cfg_path.read_text()))
    if "dictionary" in cfg and "architecture" not in cfg:
        raise ConfigError(f"{directory} holds a monosemantic dictionary, not a SAELens SAE: use Dictionary.load")
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name", cfg.get("hook_name"))
    if expect_hook_name is not None and hook != expect_hook_name:
        raise ConfigError(f"the SAELens SAE in {directory} was trained on hook {hook!r}, not {expect_hook_name!r}")
    arch = cfg.get("architecture", "standard")
    if arch not in IMPORTABLE_ARCHITECTURES:
        raise ConfigError(f"SAELens architecture {arch!r} (in {cfg_path}) cannot be imported; supported: "
                          f"{list(IMPORTABLE_ARCHITECTURES)}")
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise ConfigError(f"unsupported reshape_activations={cfg['reshape_activations']!r} in {cfg_path}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])

    st = {k: v.double() for k, v in load_safetensors(w_path).items()}
    if "scaling_factor" in st or "finetuning_scaling_factor" in st:
        s = st.pop("scaling_factor", st.pop("finetuning_scaling_factor", None))
        if not torch.allclose(s, torch.ones_like(s)):
            raise ConfigError(f"{w_path} has a fine-tuning scaling factor (scales features before decoding); a "
                              f"Dictionary cannot express it — fold it into W_dec in SAELens and save again")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if name not in st:
            raise ConfigError(f"{w_path} lacks tensor {name!r} (has {sorted(st)}); "
                              f"not a {arch} SAE as SAELens saves it")
    if tuple(st["W_enc"].shape) != (d_in, d_sae) or tuple(st["W_dec"].shape) != (d_sae, d_in):
        raise ConfigError(f"{w_path}: W_enc {tuple(st['W_enc'].shape)} / W_dec {tuple(st['W_dec'].shape)} do not "
                          f"match d_in={d_in}, d_sae={d_sae} in {cfg_path}")
    return cfg, st


def _fold_input_convention(cfg: dict, st: dict[str, torch.Tensor], directory: Path,
                           scaling_factor: float | None) -> dict[str, torch.Tensor]:
    """W_enc, b_enc, W_dec, b_dec rewritten for our input convention: a constant activation scale folded in (as
    SAELens's ``fold_activation_norm_scaling_factor``), and b_dec always subtracted before the encoder."""
    W_enc, b_enc, W_dec, b_dec = st["W_enc"], st["b_enc"], st["W_dec"], st["b_dec"]
    # activation normalisation: only a constant input scale is expressible (folded like SAELens does)
    norm = cfg.get("normalize_activations", "none")
    if norm == "expected_average_only_in":
        s = _scaling_factor(directory, scaling_factor)
        W_enc, W_dec, b_dec = W_enc * s, W_dec / s, b_dec / s
        # the threshold / b_enc live in pre-activation space, which the fold leaves unchanged
    elif norm != "none":
        raise ConfigError(
            f"SAELens normalize_activations={norm!r} (in {directory / SAELENS_CFG}) normalises each input by its own "
            f"statistics (or whitens it unfolded), which a Dictionary cannot express; only 'none' and "
            f"'expected_average_only_in' (a constant scale) can be imported")

    # our kinds always compute pre = (x − b_dec) W_enc + b_enc
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}


def _our_kind(cfg: dict, st: dict[str, torch.Tensor], w: dict[str, torch.Tensor], w_path: Path):
    """``(kind, options, threshold)`` for the SAELens architecture; a topk SAE that rescales by decoder norm gets the
    norms folded into ``w`` (in place)."""
    arch = cfg.get("architecture", "standard")
    meta = cfg.get("metadata") or {}
    our_cfg = (meta.get("monosemantic") or {}).get("dictionary") or {}
    options: dict[str, Any] = {}
    threshold = None
    if arch == "standard":
        return "relu", options, threshold
    if arch in ("topk", "batchtopk"):
        options["k"] = int(cfg["k"]) if arch == "topk" else cfg["k"]
        if cfg.get("rescale_acts_by_decoder_norm", False):
            n = w["W_dec"].norm(dim=-1).clamp_min(1e-8)
            w["W_enc"], w["b_enc"], w["W_dec"] = w["W_enc"] * n, w["b_enc"] * n, w["W_dec"] / n[:, None]
        if arch == "batchtopk":
            if "topk_threshold" not in st:
                raise ConfigError(f"{w_path} lacks 'topk_threshold'; not a SAELens batchtopk checkpoint")
            threshold = st["topk_threshold"].reshape(())
            if cfg.get("topk_threshold_lr") is not None:
                options["threshold_lr"] = float(cfg["topk_threshold_lr"])
        return arch, options, threshold
    # jumprelu
    if "threshold" not in st:
        raise ConfigError(f"{w_path} lacks 'threshold'; not a SAELens jumprelu SAE")
    thr = st["threshold"]
    train_arch = meta.get("training_architecture")
    details = meta.get("training_architecture_details") or {}
    shared = bool((thr == thr[0]).all())
    if shared and our_cfg.get("kind") == "batchtopk":
        return "batchtopk", dict(our_cfg.get("options") or {}), thr[0]
    if shared and train_arch == "batchtopk" and details.get("k") is not None:
        options["k"] = details["k"]
        if details.get("topk_threshold_lr") is not None:
            options["threshold_lr"] = float(details["topk_threshold_lr"])
        return "batchtopk", options, thr[0]
    return "jumprelu", options, thr


def same_function(a: Dictionary, b: Dictionary, x_ND: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether two dictionaries give the same features and reconstructions on ``x`` (a check for conversions)."""
    with torch.no_grad():
        fa, fb = a.encode(x_ND), b.encode(x_ND)
        return bool(torch.allclose(fa, fb, atol=atol) and torch.allclose(a.decode(fa), b.decode(fb), atol=atol))


__all__ = ["export_saelens", "import_saelens", "saelens_state", "same_function", "EXPORTABLE_KINDS",
           "IMPORTABLE_ARCHITECTURES"]
