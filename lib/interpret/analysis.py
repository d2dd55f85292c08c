"""The ``interpret:T/n`` analysis: every feature of a dictionary, every neuron of its transformer, and the
randomized control (its dictionary's features and its neurons), explained and scored; saved, fingerprinted,
reused and resumable.

    RUN/analyses/interpret/A-1/
        features.parquet  neurons.parquet  control.parquet  control_neurons.parquet   one row per unit
        <group>_heldout.parquet   the held-out windows each group was scored on (for another explainer)
        <group>.done.json         a group's fingerprint (written after its tables: the group is resumable)
        summary.json              the medians (also in RUN/analyses.json under ``interpretability``)
        fingerprint.json          written last: its presence (with the same inputs) means finished
        control/                  the randomized transformer, its activations and dictionary (``control``)

A killed run resumes at the first group without its ``.done.json`` (the control's build resumes on its own).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import InterpretConfig
from ..io import (atomic_parquet, atomic_write_json, file_sha, finished_with, json_safe, mark_finished, read_json,
                  safe_name)
from ..tokensets import token_set_contexts
from .control import build_control, control_fingerprint
from .passes import Subject, TokenSetRef, score_units

__all__ = ["INTERPRET_VERSION", "GROUPS", "interpret", "interpret_dir", "summarize", "PAPER"]

INTERPRET_VERSION = 2   # 2: the logit test's testable flag and shuffled reference
GROUPS = ("features", "neurons", "control", "control_neurons")
METRICS = ("spearman", "detection", "logit_auc", "logit_auc_shuffled")
# the paper's medians (Towards Monosemanticity 2023): the logit test; the rubric (human, out of 14)
PAPER = {"logit_auc": {"features": 0.74, "neurons": 0.53, "control": 0.50},
         "rubric_median": {"features": 12, "neurons": 0}}

# Test hook, not API: stop with ``Interrupted`` after this many groups were saved, as a kill would.
_STOP_AFTER_GROUPS: int | None = None


class Interrupted(Exception):
    """Stopped by the test hook ``_STOP_AFTER_GROUPS`` (the finished groups are saved, as after a kill)."""


def interpret_dir(run, dict_id: str) -> Path:
    run.cfg.dictionary(dict_id)  # validates the id
    return run.root / "analyses" / "interpret" / safe_name(dict_id)


def _config(run, cfg) -> InterpretConfig:
    if cfg is None:
        cfg = run.cfg.interpret
    if isinstance(cfg, dict):
        cfg = InterpretConfig(**cfg)
    return dataclasses.replace(cfg).validate()


def _check_trained(run, dict_id: str) -> None:
    spec = run.cfg.dictionary(dict_id)
    for path, stage in ((run.model_dir(spec.transformer) / "model.safetensors", f"transformer:{spec.transformer}"),
                        (run.dict_dir(dict_id) / "sae.safetensors", f"dictionary:{dict_id}")):
        if not path.exists():
            raise FileNotFoundError(f"{stage} is not trained yet ({path} missing); run "
                                    f"`monosemantic run --out {run.root} --stages {stage}` first")


def _token_sets(run, cfg: InterpretConfig) -> tuple[TokenSetRef, TokenSetRef]:
    """The explanation set (train split) and the held-out set (validation split): ``tokensets``' evenly spaced
    contexts."""
    train, val = run.split("train"), run.split("val")
    return (TokenSetRef(train, token_set_contexts(train, cfg.explain_tokens)),
            TokenSetRef(val, token_set_contexts(val, cfg.holdout_tokens)))


def _fingerprint(run, dict_id: str, cfg: InterpretConfig, explain: TokenSetRef, holdout: TokenSetRef) -> dict:
    spec = run.cfg.dictionary(dict_id)
    return {"version": INTERPRET_VERSION, "dictionary": dict_id,
            "weights_sha": file_sha(run.dict_dir(dict_id) / "sae.safetensors"),
            "model_sha": file_sha(run.model_dir(spec.transformer) / "model.safetensors"),
            "explain_tokens": explain.n_tokens, "holdout_tokens": holdout.n_tokens,
            "cfg": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "batch_contexts"},
            "control": control_fingerprint(run, dict_id, cfg)}


def _subject(run, dict_id: str, group: str, cfg: InterpretConfig, out: Path, progress: bool) -> Subject:
    spec = run.cfg.dictionary(dict_id)
    if group in ("features", "neurons"):
        model = run.model(spec.transformer)
        sae = run.dictionary(dict_id).eval() if group == "features" else None
        return Subject(model.eval(), sae, f"{dict_id} features" if sae is not None else f"{spec.transformer} neurons")
    model, sae = build_control(run, dict_id, cfg, out / "control", progress)
    return Subject(model, sae if group == "control" else None, f"control {group}")


def interpret(run, dict_id: str, cfg: InterpretConfig | dict | None = None, progress: bool = True,
              out_dir: str | Path | None = None, record: bool | None = None):
    """Explain and score the features of ``dict_id``, its transformer's neurons and the randomized control
    (module docstring); a finished result with the same inputs is loaded, a killed one resumed.  ``out_dir``
    writes elsewhere than the run (then the run is only read); ``record`` (default: when writing into the run)
    adds the medians to ``RUN/analyses.json`` under ``interpretability``.  Returns an ``Interpretation``."""
    import torch

    from ..runs import update_analyses
    from .results import Interpretation

    from ..runs import as_run

    run = as_run(run)
    cfg = _config(run, cfg)
    out = Path(out_dir) if out_dir is not None else interpret_dir(run, dict_id)
    _check_trained(run, dict_id)
    explain, holdout = _token_sets(run, cfg)
    fp = _fingerprint(run, dict_id, cfg, explain, holdout)
    if finished_with(out / "fingerprint.json", fp):
        return Interpretation(out, run)
    (out / "fingerprint.json").unlink(missing_ok=True)   # a stale result must never pass for the new one
    out.mkdir(parents=True, exist_ok=True)
    vocab, bos = run.tokenizer.vocab_size, explain.split.bos_id
    seconds = dict((read_json(out / "seconds.json") or {}))
    saved = 0
    for group in GROUPS:
        gfp = {**fp, "group": group}
        if finished_with(out / f"{group}.done.json", gfp):
            continue
        t0 = time.time()
        subject = _subject(run, dict_id, group, cfg, out, progress)   # the control trains: not in inference mode
        t1 = time.time()
        with torch.inference_mode():
            table, windows = score_units(subject, explain, holdout, cfg, vocab, bos, progress)
        atomic_parquet(table, out / f"{group}.parquet")
        atomic_parquet(windows, out / f"{group}_heldout.parquet")
        seconds[group] = {"build": round(t1 - t0, 2), "score": round(time.time() - t1, 2),
                          "units": int(subject.n_units)}
        atomic_write_json(out / "seconds.json", seconds)
        mark_finished(out / f"{group}.done.json", gfp)
        saved += 1
        if _STOP_AFTER_GROUPS is not None and saved >= _STOP_AFTER_GROUPS:
            raise Interrupted(f"stopped after {saved} groups (test hook)")
    summary = summarize({g: pd.read_parquet(out / f"{g}.parquet") for g in GROUPS})
    summary.update({"dictionary": dict_id, "explain_tokens": explain.n_tokens, "holdout_tokens": holdout.n_tokens,
                    "seconds": seconds, "paper": PAPER})
    atomic_write_json(out / "summary.json", json_safe(summary))
    if record if record is not None else out_dir is None:
        update_analyses(run.root, "interpretability", lambda d: {**d, dict_id: json_safe(summary)})
    mark_finished(out / "fingerprint.json", fp)
    return Interpretation(out, run)


def _median(v) -> tuple[float | None, int]:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(np.median(v)) if len(v) else None), int(len(v))


def _medians(t: pd.DataFrame) -> dict:
    """Each metric's median over the units where it is defined (``<metric>_units`` of them); for the logit test
    also over its testable units (``scoring``: where the explanation's prediction is not the same on every
    compared token — elsewhere the AUC is 0.5 by construction), with the count of the untestable ones."""
    out = {"units": int(len(t))}
    for m in METRICS:
        if m in t:
            out[m], out[f"{m}_units"] = _median(t[m])
    if "logit_testable" in t:
        ok = t["logit_testable"].to_numpy(bool)
        out["logit_auc_testable"], out["logit_auc_testable_units"] = _median(t["logit_auc"].to_numpy()[ok])
        out["logit_untestable"] = int((~ok).sum())
    return out


def summarize(tables: dict[str, pd.DataFrame]) -> dict:
    """Per group: medians of each score over the scored units (those firing ≥ min_count times on the
    explanation set) — all of them, the single-token explanations, and the rest — with their counts.  The logit
    test (``scoring``) gives every unit an AUC, as the paper does: ``logit_auc`` is the all-unit median;
    ``logit_auc_testable`` the median over the ``logit_auc_testable_units`` units whose explanation predicts
    anything on the compared tokens (``logit_untestable`` units score 0.5 by construction and can pin the
    all-unit median to exactly 0.5); ``logit_auc_shuffled`` the median against other units' most-raised tokens —
    the level the test gives with no link between explanation and logit effect (token frequency alone), so a
    group's unit-specific signal is ``logit_auc_testable`` − ``logit_auc_shuffled``.  And the
    same over two subsets that leave out rarely-firing units, as the paper left out its ultralow features:

    - ``high_mode``: the group's own high-density mode (``metrics.density_modes`` of its units' densities on
      the explanation set; a short dictionary run leaves a low-density mode of features that fire rarely and on
      no consistent tokens); every scored unit when the densities are not two modes;
    - ``dense``: units denser than the *features'* low-mode threshold — one cut for every group, so the control
      and the neurons are compared with the features at the same density (every scored unit when the features'
      densities are not two modes)."""
    from ..metrics import density_modes

    def cut(s):
        modes = density_modes(s["density"].to_numpy())
        return modes["threshold"] if modes and modes["bimodal"] else None

    scored = {g: t[t["scored"]] for g, t in tables.items()}
    floor = cut(scored["features"]) if "features" in scored else None
    out = {}
    for g, s in scored.items():
        own = cut(s)
        h = s[s["density"] > own] if own is not None else s
        d = s[s["density"] > floor] if floor is not None else s
        out[g] = {**_split(s), "not_scored": int((~tables[g]["scored"]).sum()),
                  "no_rule": int((s["named"] == 0).sum()),
                  "median_explained": float(s["explained"].median()) if len(s) else None,
                  "high_mode": {**_split(h), "density_threshold": own, "left_out": int(len(s) - len(h))},
                  "dense": {**_split(d), "density_threshold": floor, "left_out": int(len(s) - len(d))}}
    return out


def _split(s: pd.DataFrame) -> dict:
    return {"all": _medians(s), "single_token": _medians(s[s["single_token"]]),
            "rest": _medians(s[~s["single_token"]])}
