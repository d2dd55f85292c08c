"""The analyses' settings are RunConfig sections filled by each preset; a run.json written before they existed
still opens, resumes and is not refused."""
import json

import pytest

from monosemantic import ConfigError, RunConfig, preset
from monosemantic.config import ANALYSIS_SECTIONS, PAPER_THRESHOLD, DictSpec, FeatureStatsConfig
from monosemantic.runs import Run


def _old_run_json(name: str) -> dict:
    d = preset(name).to_dict()
    for section in ANALYSIS_SECTIONS:
        del d[section]
    return d


def test_presets_carry_the_analysis_settings():
    tiny, default, paper = preset("tiny"), preset("default"), preset("paper")
    assert tiny.feature_stats == FeatureStatsConfig(n_tokens=30_000, batch_contexts=128, top_k=12,
                                                    checkpoint_seconds=30.0)
    assert default.feature_stats == FeatureStatsConfig(n_tokens=500_000)      # the 20 minutes' budget
    assert preset("quality").feature_stats == FeatureStatsConfig() and FeatureStatsConfig().n_tokens == 1_000_000
    assert paper.feature_stats.n_tokens == 10_000_000 and paper.feature_stats.batch_contexts == 256
    assert (tiny.universality.tokens, default.universality.tokens, paper.universality.tokens) == \
        (32_768, 1_048_576, 40_960_000)
    assert (tiny.splitting.tokens, default.splitting.tokens, paper.splitting.tokens) == (32_768, 524_288, 40_960_000)
    assert default.splitting.threshold == PAPER_THRESHOLD == 0.4


@pytest.mark.parametrize("name", ["tiny", "default", "paper"])
def test_a_run_json_without_the_sections_takes_its_presets(name):
    cfg = RunConfig.from_dict(_old_run_json(name))
    assert cfg == preset(name)
    assert cfg.fingerprint() == preset(name).fingerprint()


def test_sections_round_trip_and_validate():
    d = preset("tiny").to_dict()
    d["feature_stats"]["n_tokens"] = 1234
    d["splitting"]["threshold"] = 0.5
    cfg = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert cfg.feature_stats.n_tokens == 1234 and cfg.splitting.threshold == 0.5
    d["feature_stats"]["fine_bins"] = 48
    with pytest.raises(ConfigError, match="power of two"):
        RunConfig.from_dict(d)
    d = preset("tiny").to_dict()
    d["universality"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        RunConfig.from_dict(d)


def test_an_old_run_directory_opens_and_is_not_refused(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    (root / "run.json").write_text(json.dumps(_old_run_json("tiny")))
    (root / "status.json").write_text(json.dumps({"corpus": {"status": "done", "seconds": 1.0}}))
    run = Run.open(root)
    assert run.cfg.feature_stats == preset("tiny").feature_stats and run.cfg.universality.tokens == 32_768
    Run.create(root, preset("tiny"))  # same recipe: not refused, run.json left as it was
    assert "feature_stats" not in json.loads((root / "run.json").read_text())
    changed = preset("tiny")
    changed.splitting.tokens = 999
    with pytest.raises(Exception, match="splitting.tokens"):
        Run.create(root, changed)


def test_dict_spec_builds_its_dictionary_config():
    cfg = preset("default")
    spec = cfg.dictionary("A/1")
    dc = spec.dictionary_config(cfg.model.d_mlp)
    assert (dc.d_in, dc.d_sae, dc.kind, dc.l1_coefficient, dc.seed) == (512, 4096, "relu", 8e-3, 0)
    assert dc.options == {} and dc.recipe == "april2024"
    assert dc.options == spec.options and dc.options is not spec.options
    topk = DictSpec("A/1", 4096, 0.0, kind="topk", options={"k": 16}).dictionary_config(cfg.model.d_mlp)
    assert topk.options == {"k": 16} and topk.kind == "topk"


def test_a_dictionary_spec_can_override_the_runs_batch():
    """DictSpec.batch_size (like steps) overrides sae_train's for that dictionary only; it round-trips, is
    validated, and a spec written before it existed (no key) takes the run's — with an unchanged fingerprint."""
    from monosemantic.config import SAETrainConfig

    run_train = SAETrainConfig(steps=600, batch_size=4096)
    spec = DictSpec("A/2", 16384, 8e-3, steps=300, batch_size=2048, recipe="april2024")
    t = spec.train_config(run_train)
    assert (t.steps, t.batch_size, t.lr) == (300, 2048, run_train.lr)
    assert DictSpec("A/1", 4096, 8e-3).train_config(run_train) == run_train
    assert DictSpec("A/1", 4096, 8e-3, steps=10).train_config(run_train).batch_size == 4096
    d = preset("tiny").to_dict()
    d["dictionaries"][1]["batch_size"] = 128
    cfg = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert cfg.dictionaries[1].batch_size == 128 and cfg.dictionaries[0].batch_size is None
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (0, -5, 2.5):
        d["dictionaries"][1]["batch_size"] = bad
        with pytest.raises(ConfigError, match=r"dictionary A/1: batch_size must be a positive integer"):
            RunConfig.from_dict(d)
    old = preset("tiny").to_dict()["dictionaries"][1]
    old.pop("batch_size")
    spec_old = DictSpec(**old)
    assert spec_old.batch_size is None and "batch_size" not in spec_old.fingerprint()
    assert spec_old.fingerprint() == {k: v for k, v in old.items()}      # what the control's fingerprint held
    assert DictSpec(**{**old, "batch_size": 64}).fingerprint()["batch_size"] == 64


def test_the_dictionary_stage_trains_on_the_specs_batch(tiny_run, tmp_path):
    """The pipeline's dictionary stage, on a copy of the tiny run whose A/0 sets its own batch: every logged step
    saw that many rows, the checkpoint fingerprint carries it, and the summary reports the budget."""
    import dataclasses

    from monosemantic.pipeline import stage_cost, stage_fn

    for name in ("acts", "transformers", "tokens", "corpus"):
        (tmp_path / name).symlink_to(tiny_run.root / name)
    cfg = dataclasses.replace(tiny_run.cfg, dictionaries=[
        dataclasses.replace(d, batch_size=128) if d.id == "A/0" else d for d in tiny_run.cfg.dictionaries])
    run = Run.create(tmp_path, cfg)
    stage_fn("dictionary:A/0")(run, False)
    log = [r for r in map(json.loads, (run.dict_dir("A/0") / "train_log.jsonl").read_text().splitlines())
           if "event" not in r]                                      # (the tiny recipe's resampling events)
    assert [r["tokens"] for r in log] == [128 * r["step"] for r in log] and len(log) == cfg.sae_train.steps
    prog = json.loads((run.dict_dir("A/0") / "ckpt" / "progress.json").read_text())
    assert prog["fingerprint"]["train"]["batch_size"] == 128
    s = run.summary()["dictionaries"]["A/0"]
    assert (s["train_steps"], s["batch_size"], s["train_tokens"]) == (60, 128, 60 * 128)
    assert stage_cost(run, "dictionary:A/0") == pytest.approx((60 + 3 * 45) * 128 * 128 / 1e9)   # its batch
