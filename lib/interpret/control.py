"""The paper's control: a randomized transformer and a dictionary trained on its activations.

The transformer of the dictionary under test with each weight matrix's entries shuffled
(``SubjectModel.randomized``, seeded by ``interpret.control_seed``); its MLP activations harvested into an activation
store (``activations.harvest``, ``interpret.control_rows`` rows, the run's harvest settings otherwise); a dictionary
of the same kind, size, λ and recipe trained on them (``train_sae.train_dictionary``, ``interpret.control_steps``
steps, the run's training settings otherwise).  Every step resumes after a kill: the model is saved before the
harvest, the harvest resumes at its next shard, the training at its last checkpoint.

    OUT/control/   transformer/ (model.safetensors, config.json)   acts/   dictionary/   fingerprint.json

``fingerprint.json`` (written last) records what the control was built from; a control built from other
settings is deleted and rebuilt.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from ..config import InterpretConfig
from ..io import file_sha, finished_with, mark_finished, read_json

__all__ = ["control_fingerprint", "build_control"]


def control_fingerprint(run, dict_id: str, cfg: InterpretConfig) -> dict:
    spec = run.cfg.dictionary(dict_id)
    return {"model_sha": file_sha(run.model_dir(spec.transformer) / "model.safetensors"),
            "seed": cfg.control_seed, "rows": cfg.control_rows, "steps": cfg.control_steps,
            "dictionary": spec.fingerprint(), "harvest": dataclasses.asdict(run.cfg.harvest),
            "sae_train": run.cfg.sae_train.fingerprint(), "corpus_seed": run.cfg.corpus.seed}


def build_control(run, dict_id: str, cfg: InterpretConfig, out: Path, progress: bool = True):
    """(randomized SubjectModel, its trained Dictionary), built into ``out`` or loaded from a finished build."""
    from ..activations import ActivationStore, harvest
    from ..sae import Dictionary
    from ..subject import SubjectModel
    from ..train_sae import train_dictionary

    spec = run.cfg.dictionary(dict_id)
    fp = control_fingerprint(run, dict_id, cfg)
    done = out / "fingerprint.json"
    if finished_with(done, fp):
        return (SubjectModel.load(out / "transformer"), Dictionary.load(out / "dictionary"))
    started = read_json(out / "building.json") if out.exists() else None
    if out.exists() and (started is None or not finished_with(out / "building.json", fp)):
        shutil.rmtree(out)                       # built from other settings (or unknown): start again
    out.mkdir(parents=True, exist_ok=True)
    mark_finished(out / "building.json", fp)
    if (out / "transformer" / "model.safetensors").exists():
        model = SubjectModel.load(out / "transformer")
    else:
        model = run.model(spec.transformer).randomized(cfg.control_seed)
        model.save(out / "transformer", extra={"randomized_from": spec.transformer, "seed": cfg.control_seed})
    model.eval()
    split = run.split("train")
    hcfg = dataclasses.replace(run.cfg.harvest, rows=min(cfg.control_rows, split.n_contexts *
                                                         run.cfg.harvest.positions_per_context))
    harvest(model, split, out / "acts", hcfg, seed=run.cfg.corpus.seed, progress=progress)
    # the dictionary's own training settings (its batch) but the control's steps
    train = dataclasses.replace(spec.train_config(run.cfg.sae_train), steps=cfg.control_steps)
    sae = train_dictionary(ActivationStore(out / "acts"), spec.dictionary_config(model.d_mlp), train,
                           out_dir=out / "dictionary", seed=spec.seed, progress=progress)
    mark_finished(done, fp)
    return model, sae.cpu().eval()
