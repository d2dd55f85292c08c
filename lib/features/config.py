"""The statistics pass's settings: ``FeatureStatsConfig`` is the run config's ``feature_stats`` section
(``lib/config.py``, filled by each preset); ``stats_config`` picks the one a pass uses."""
from __future__ import annotations

import dataclasses

from ..config import PRESETS, FeatureStatsConfig

__all__ = ["STATS_VERSION", "FeatureStatsConfig", "preset_config", "stats_config"]

STATS_VERSION = 2   # 2: top tokens by mean activation per token (sparse.TokenMass), as in splitting


def preset_config(preset: str) -> FeatureStatsConfig:
    """The statistics pass of a preset (its ``feature_stats`` section): ``tiny`` small enough for tests and
    notebooks, ``default`` ≥ 1M tokens, ``paper`` 10M; an unknown preset name gets the defaults."""
    return PRESETS[preset]().feature_stats if preset in PRESETS else FeatureStatsConfig()


def stats_config(run, cfg: FeatureStatsConfig | dict | None) -> FeatureStatsConfig:
    """``cfg`` (a dict is read as one), else the run config's ``feature_stats``; validated, as a copy."""
    if cfg is None:
        cfg = run.cfg.feature_stats
    if isinstance(cfg, dict):
        cfg = FeatureStatsConfig(**cfg)
    return dataclasses.replace(cfg).validate()
