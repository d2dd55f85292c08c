"""The per-unit table (``units.parquet``): density and status, per-domain proxy scores, top tokens, logit
effects and building neurons, and the histogram/interval lists."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..corpus import DOMAINS, PROXY_DOMAIN
from ..io import atomic_path
from ..metrics import feature_status
from .logits import logit_weights

__all__ = ["activation_columns", "domain_columns", "top_tokens", "top_logit_effects", "building_neurons",
           "write_units"]


def activation_columns(res: dict, ultralow_threshold: float) -> dict[str, Any]:
    """Density, count, max/mean/sum/sum² of the activation, and the status columns ``dead`` and ``ultralow``."""
    count, sum_act = res["count"], res["sum"]
    U, n_tok = len(count), res["n_tokens"]
    density = count / max(n_tok, 1)
    status = feature_status(density, ultralow_threshold)
    return {"unit": np.arange(U, dtype=np.int32), "density": density, "count": count, "max_act": res["max"],
            "mean_act": np.where(count > 0, sum_act / np.maximum(count, 1), 0.0), "sum_act": sum_act,
            "sumsq_act": res["sumsq"], "dead": status == "dead", "ultralow": status == "ultralow"}


def domain_columns(res: dict) -> dict[str, Any]:
    """Per domain d: ``act_share_d`` (specificity: share of the unit's activation on d), ``fire_share_d``,
    ``sensitivity_d`` (share of d's tokens on which it fires) and ``corr_d`` (Pearson correlation of the
    activation with the domain indicator); the proxy domain's three as ``proxy_*``; ``top_domain``."""
    count, sum_act, sumsq_act = res["count"], res["sum"], res["sumsq"]
    domain_count, domain_sum, domain_tokens = res["dcount"], res["dsum"], res["domain_tokens"]
    U, n_tok = len(count), res["n_tokens"]
    mean_all = sum_act / max(n_tok, 1)
    var_all = np.maximum(sumsq_act / max(n_tok, 1) - mean_all ** 2, 0.0)
    cols: dict[str, Any] = {}
    for k, name in enumerate(DOMAINS):
        n_domain = int(domain_tokens[k])
        cols[f"act_share_{name}"] = np.where(sum_act > 0, domain_sum[:, k] / np.where(sum_act > 0, sum_act, 1), 0.0)
        cols[f"fire_share_{name}"] = np.where(count > 0, domain_count[:, k] / np.maximum(count, 1), 0.0)
        cols[f"sensitivity_{name}"] = domain_count[:, k] / n_domain if n_domain else np.zeros(U)
        p = n_domain / max(n_tok, 1)
        cov = domain_sum[:, k] / max(n_tok, 1) - mean_all * p
        denom = np.sqrt(var_all * p * (1 - p))
        cols[f"corr_{name}"] = np.where(denom > 0, cov / np.where(denom > 0, denom, 1), 0.0)
    cols["proxy_specificity"] = cols[f"act_share_{PROXY_DOMAIN}"]
    cols["proxy_sensitivity"] = cols[f"sensitivity_{PROXY_DOMAIN}"]
    cols["proxy_corr"] = cols[f"corr_{PROXY_DOMAIN}"]
    share = np.stack([cols[f"act_share_{d}"] for d in DOMAINS], 1)
    cols["top_domain"] = np.where(count > 0, np.array(DOMAINS, dtype=object)[share.argmax(1)], "")
    return cols


def top_tokens(mass, count: np.ndarray, strs: list[str], n: int = 5) -> np.ndarray:
    """Each unit's top tokens (``sparse.TokenMass.top``: highest mean activation among tokens seen ≥ 3 times), as
    a JSON list of ``n`` token strings ("" for a unit that never fired)."""
    top = mass.top(n)
    return np.array([json.dumps([strs[int(t)] for t in top[u]], ensure_ascii=False) if count[u] else ""
                     for u in range(len(count))], dtype=object)


def top_logit_effects(model, dictionary, n_units: int, n_logits: int, ln_scale: float) -> dict[str, np.ndarray]:
    """The ``n_logits`` most positive and most negative logit effects (``logit_weights``) of each feature of
    ``dictionary`` (None: of each neuron): ``top_ids/top_vals/bottom_ids/bottom_vals`` (U, n), in blocks of ≤ 16M
    logits."""
    V = model.W_U.shape[1]
    U, nl = n_units, min(n_logits, V)
    out = {"top_ids": np.zeros((U, nl), np.int32), "top_vals": np.zeros((U, nl), np.float32),
           "bottom_ids": np.zeros((U, nl), np.int32), "bottom_vals": np.zeros((U, nl), np.float32)}
    step = max(1, (1 << 24) // max(V, 1))
    for a in range(0, U, step):
        lg = logit_weights(model, dictionary, np.arange(a, min(a + step, U)), ln_scale)
        top, bottom = lg.topk(nl, dim=-1), (-lg).topk(nl, dim=-1)
        out["top_ids"][a:a + step], out["top_vals"][a:a + step] = top.indices.numpy(), top.values.numpy()
        out["bottom_ids"][a:a + step], out["bottom_vals"][a:a + step] = bottom.indices.numpy(), -bottom.values.numpy()
    return out


def building_neurons(dirs_UM: torch.Tensor, n_neurons: int, is_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ids, weights) of the neurons each feature is built from: its ``n_neurons`` largest |decoder weights|.  A
    neuron is built from itself (weight 1)."""
    if not is_feature:
        return np.arange(dirs_UM.shape[0], dtype=np.int32)[:, None], np.ones((dirs_UM.shape[0], 1), np.float32)
    ids = dirs_UM.abs().topk(min(n_neurons, dirs_UM.shape[1]), dim=-1).indices
    return ids.numpy().astype(np.int32), dirs_UM.gather(1, ids).numpy().astype(np.float32)


def write_units(out: Path, scalar_cols: dict[str, Any], lists: dict[str, np.ndarray]) -> None:
    """Write ``units.parquet``: the scalar columns, then each (U, n) array of ``lists`` as a fixed-size list."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        **{k: pa.array(v) for k, v in scalar_cols.items()},
        **{k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]) for k, v in lists.items()},
    })
    with atomic_path(out / "units.parquet", suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
