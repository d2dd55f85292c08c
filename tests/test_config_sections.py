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
    assert default.feature_stats == FeatureStatsConfig() and default.feature_stats.n_tokens == 1_000_000
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
