"""What a feature does in context: the tokens whose log-likelihood it raises and lowers where it fires.

*Towards Monosemanticity*'s feature pages show, beside the logit weights, the feature's effect *in context*: run the
transformer on the contexts where the feature fires most, ablate the feature and see which next tokens lose (or
gain) probability.  Here, over the feature's top-activating contexts (the distinct contexts of its feature
statistics' top examples, whole contexts of the statistics' split, BOS at 0):

    x_t                      the MLP activation at position t (hook ``blocks.0.mlp.hook_post``)
    x'_t = x_t − f_i(x_t)·d_i  the feature ablated, the dictionary's error kept (``interventions.Intervention``
                             with ``Edit(i, "ablate")``: exact where f_i = 0)
    e_t = log p(t_{t+1} | x) − log p'(t_{t+1} | x')    the feature's effect on the actual next token (> 0: raises it)

at every position t where the feature fires (f_i(x_t) > 0) that has a next token.  One forward with the feature
ablated at every position gives all of them at once: in the one-layer subject the MLP output at t reaches only the
logits at t (its attention reads the residual stream before the MLP), so e_t is the effect of ablating at t alone —
``tests/test_ablation.py`` checks this against ablating one position at a time through the model's hooks.
The effects are grouped by next token: ``raised`` the tokens with the largest mean effect (positive), ``lowered``
the most negative, each with its count.

Results are cached in the run (``RUN/analyses/ablation/<dict>/<unit>.json``, fingerprinted by the dictionary, the
transformer and the statistics it read), so a card opens fast the second time; ``cached`` reads without computing.

    ab = ablation_effects(run, "A/1", 123)       # computed once, then read
    ab.raised[:3]                                # [TokenEffect(token=' LORD', mean=1.92, count=14), …]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .io import atomic_write_json, file_sha, json_safe, read_json, safe_name
from .runs import as_run

__all__ = ["TokenEffect", "AblationEffects", "ablation_effects", "cached", "ablation_path", "ABLATION_VERSION"]

ABLATION_VERSION = 1


@dataclass
class TokenEffect:
    """One next token: its mean effect ``e`` over the ``count`` firing positions it followed (nats)."""

    token_id: int
    token: str
    mean: float
    count: int


@dataclass
class AblationEffects:
    """The in-context ablation of one feature (module docstring)."""

    source: str
    unit: int
    contexts: list[int]              # the contexts read (indices into the statistics' split)
    split: str
    positions: int                   # firing positions with a next token
    mean_effect: float               # mean e over them (NaN: none)
    raised: list[TokenEffect] = field(default_factory=list)     # largest mean first (> 0)
    lowered: list[TokenEffect] = field(default_factory=list)    # most negative first (< 0)

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "AblationEffects":
        d = dict(d)
        d["raised"] = [TokenEffect(**t) for t in d.get("raised", [])]
        d["lowered"] = [TokenEffect(**t) for t in d.get("lowered", [])]
        d["mean_effect"] = float("nan") if d.get("mean_effect") is None else float(d["mean_effect"])
        return cls(**d)


def ablation_path(run, dict_id: str, unit: int) -> Path:
    return Path(run.root) / "analyses" / "ablation" / safe_name(dict_id) / f"{int(unit)}.json"


def _fingerprint(run, dict_id: str, stats, n_contexts: int, k: int) -> dict:
    spec = run.cfg.dictionary(dict_id)
    return {"version": ABLATION_VERSION, "dictionary": dict_id,
            "weights_sha": file_sha(run.dict_dir(dict_id) / "sae.safetensors"),
            "model_sha": file_sha(run.model_dir(spec.transformer) / "model.safetensors"),
            "stats": stats.meta.get("written_at"), "n_contexts": int(n_contexts), "k": int(k)}


def cached(run, dict_id: str, unit: int, n_contexts: int = 16, k: int = 10) -> AblationEffects | None:
    """The cached result for exactly these inputs, or None (never computes: for static exports)."""
    from .features import FeatureStats

    run = as_run(run)
    p = ablation_path(run, dict_id, unit)
    if not p.exists():
        return None
    try:
        doc = read_json(p)
        stats = FeatureStats.load(run, dict_id)
        if doc.get("fingerprint") != json_safe(_fingerprint(run, dict_id, stats, n_contexts, k)):
            return None
        return AblationEffects.from_dict(doc["result"])
    except Exception:  # noqa: BLE001 - an unreadable or stale cache entry means: not cached
        return None


def top_contexts(stats, unit: int, n_contexts: int) -> list[int]:
    """The distinct contexts of the unit's top examples, strongest first (at most ``n_contexts``)."""
    ex = stats.examples(unit)
    top = ex[ex["section"] == -1].sort_values("rank", kind="stable") if len(ex) else ex
    return [int(c) for c in dict.fromkeys(top["context"].tolist())][:int(n_contexts)] if len(top) else []


@torch.no_grad()
def ablation_effects(run, dict_id: str, unit: int, n_contexts: int = 16, k: int = 10,
                     cache: bool = True) -> AblationEffects:
    """The feature ``unit`` of ``dict_id`` ablated over its top ``n_contexts`` contexts: the ``k`` next tokens whose
    log-likelihood it most raises and lowers (module docstring).  Read from the run's cache when there, computed
    and saved otherwise (``cache=False``: neither)."""
    from .features import FeatureStats
    from .interventions import Edit, Steering

    run = as_run(run)
    if "/" not in str(dict_id):
        raise ConfigError(f"ablation is of a dictionary's features: pass a dictionary id such as 'A/1', not "
                          f"{dict_id!r}")
    if n_contexts < 1 or k < 1:
        raise ConfigError(f"n_contexts and k must be ≥ 1 (got {n_contexts}, {k})")
    stats = FeatureStats.load(run, dict_id)
    unit = stats._check(unit)
    if cache:
        hit = cached(run, dict_id, unit, n_contexts, k)
        if hit is not None:
            return hit
    split_name = str(stats.meta.get("split", "val"))
    ctx = top_contexts(stats, unit, n_contexts)
    steering = Steering.open(run, dict_id)
    res = AblationEffects(source=dict_id, unit=unit, contexts=ctx, split=split_name, positions=0,
                          mean_effect=float("nan"))
    if ctx:
        split = run.split(split_name)
        tokens_BT = torch.from_numpy(np.asarray(split.contexts(np.asarray(ctx, np.int64)), np.int64)).to(
            steering.model.device)
        f_BT = _feature_acts(steering, tokens_BT, unit)
        fires = f_BT[:, :-1] > 0                                    # positions 0 … T−2: they have a next token
        fires[:, 0] = False                                         # never the BOS
        nxt_N = tokens_BT[:, 1:][fires]                             # the actual next tokens
        # log-softmax of the firing positions' rows only (in float64, as Steering.effect): N ≪ B·T
        lp = [torch.log_softmax(lg[:, :-1][fires].double(), -1).gather(1, nxt_N[:, None])[:, 0]
              for lg in (steering.logits(tokens_BT), steering.logits(tokens_BT, [Edit(unit, "ablate")]))]
        _fill(res, (lp[0] - lp[1]).cpu().numpy(), nxt_N.cpu().numpy(), run.tokenizer.token_strings(), k)
    if cache:
        atomic_write_json(ablation_path(run, dict_id, unit),
                          {"fingerprint": json_safe(_fingerprint(run, dict_id, stats, n_contexts, k)),
                           "result": res.to_dict()})
    return res


def _feature_acts(steering, tokens_BT: torch.Tensor, unit: int) -> torch.Tensor:
    """f_i(x_t) at every position (B, T)."""
    x_BTD = steering.model.mlp_acts(tokens_BT)
    sae = steering.dictionary
    B, T, D = x_BTD.shape
    return sae.encode(x_BTD.reshape(B * T, D).to(sae.W_dec_FD.dtype))[:, unit].reshape(B, T).float().cpu()


def _fill(res: AblationEffects, e_N: np.ndarray, next_N: np.ndarray, strs: list[str], k: int) -> None:
    """Group the effects by next token: mean and count, the ``k`` most raised and lowered."""
    res.positions = int(len(e_N))
    if not len(e_N):
        return
    res.mean_effect = float(e_N.mean())
    ids, inv, counts = np.unique(next_N, return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=e_N, minlength=len(ids)) / counts
    order = np.lexsort((ids, -means))                              # largest mean first, ties by token id
    row = lambda j: TokenEffect(int(ids[j]), strs[int(ids[j])], float(means[j]), int(counts[j]))  # noqa: E731
    res.raised = [row(j) for j in order if means[j] > 0][:k]
    res.lowered = [row(j) for j in np.lexsort((ids, means)) if means[j] < 0][:k]
