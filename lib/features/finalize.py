"""The end of a pass: the accumulator's results become ``examples.parquet`` and ``units.parquet``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..corpus import DOMAINS, PROXY_DOMAIN
from .config import FeatureStatsConfig
from .examples import example_entries, write_examples
from .units import activation_columns, building_neurons, domain_columns, top_logit_effects, top_tokens, write_units

__all__ = ["finalize"]


def finalize(run, out: Path, source: str, cfg: FeatureStatsConfig, res: dict, ctx_idx: np.ndarray, split, model,
             sae, fingerprint: dict, progress: bool, mlp_acts=None, workers: int = 1, codes=None) -> dict:
    """Write examples.parquet and units.parquet; return the meta record (the caller writes meta.json).  ``codes``:
    the pass's kept encodings (``examples.PassCodes``), which the example windows then read."""
    U = len(res["count"])
    ex = example_entries(res, cfg)
    write_examples(out, cfg, U, ex, ctx_idx, split, model, sae, progress, mlp_acts, workers, codes)

    ultralow_threshold = run.cfg.eval.ultralow_density
    cols = {**activation_columns(res, ultralow_threshold), **domain_columns(res)}
    cols["top_tokens"] = top_tokens(res["mass"], res["count"], run.tokenizer.token_strings())
    tokens_for_scale = torch.from_numpy(split.contexts(ctx_idx[:min(len(ctx_idx), 16)])).to(model.device)
    ln_scale = model.final_ln_scale(tokens_for_scale)
    dirs_UM = sae.W_dec_FD.detach().cpu().float() if sae is not None else torch.eye(U)
    logits = top_logit_effects(model, sae, U, cfg.n_logits, ln_scale)
    neuron_ids, neuron_weights = building_neurons(dirs_UM, cfg.n_neurons, sae is not None)
    intervals = res["intervals"]
    write_units(out, cols, {
        **{f"logit_{k}": v for k, v in logits.items()},
        "neuron_ids": neuron_ids, "neuron_weights": neuron_weights,
        "hist": res["hist"].reshape(U, -1).astype(np.int32),          # (log bins + 2) × domains, row-major
        "interval_lo": intervals["lo"], "interval_hi": intervals["hi"], "interval_count": intervals["count"],
        "domain_count": res["dcount"], "domain_sum": res["dsum"],
    })
    return {
        "kind": "feature" if sae is not None else "neuron", "source": source, "n_units": U,
        "n_tokens": int(res["n_tokens"]), "domains": DOMAINS, "proxy_domain": PROXY_DOMAIN,
        "domain_tokens": {d: int(res["domain_tokens"][k]) for k, d in enumerate(DOMAINS)},
        "split": cfg.split, "contexts": int(len(ctx_idx)), "n_ctx": split.n_ctx,
        "ultralow_threshold": ultralow_threshold, "log_edges": cfg.log_edges().tolist(), "ln_scale": ln_scale,
        "config": cfg.to_dict(), "fingerprint": fingerprint, "row_group_units": cfg.row_group_units,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
