"""The statistics pass's settings (``FeatureStatsConfig``) and each preset's values."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

STATS_VERSION = 1


@dataclass
class FeatureStatsConfig:
    """The statistics pass.  ``n_tokens`` is the token budget (non-BOS positions; the paper's browser used
    far more, ≥ 1M is the default); the split is read as evenly spaced contexts, so every domain is sampled."""

    n_tokens: int = 1_000_000
    split: str = "train"
    batch_contexts: int = 128          # contexts per chunk (memory ≈ 6 × batch_contexts × n_ctx × d_mlp × 4 B)
    top_k: int = 20                    # top activating examples kept per unit
    n_intervals: int = 11              # the paper: 11 intervals evenly spaced between 0 and the max activation
    per_interval: int = 5              # examples sampled per interval
    fine_bins: int = 64                # linear sub-bins per unit behind the interval sampler (a power of two)
    log10_min: float = -4.0            # activation histogram: log-spaced bins from 10^min to 10^max,
    log10_max: float = 3.0             # plus one underflow and one overflow bin
    bins_per_decade: int = 20
    window_before: int = 10            # surrounding tokens stored with each example
    window_after: int = 5
    n_logits: int = 10                 # top and bottom tokens of the logit effects
    n_neurons: int = 8                 # neurons a feature is built from (largest |decoder weight|)
    seed: int = 0
    checkpoint_seconds: float = 60.0
    row_group_units: int = 32          # units per parquet row group of examples.parquet
    bf16: bool | None = None           # bf16 encoder filter (exact: see SparseEncoder); None = sparse.bf16_default()
    workers: int | None = None         # worker threads (one per core by default; results do not depend on it)

    def validate(self) -> "FeatureStatsConfig":
        if self.n_tokens < 1:
            raise ConfigError(f"feature_stats.n_tokens must be ≥ 1, got {self.n_tokens}")
        if self.fine_bins < 16 or self.fine_bins & (self.fine_bins - 1):
            raise ConfigError(f"feature_stats.fine_bins must be a power of two ≥ 16, got {self.fine_bins}")
        if not 1 <= self.n_intervals <= self.fine_bins // 2:
            raise ConfigError(f"feature_stats.n_intervals must be in [1, fine_bins/2 = {self.fine_bins // 2}], "
                              f"got {self.n_intervals}; raise fine_bins or use fewer intervals")
        for name in ("top_k", "per_interval", "batch_contexts", "bins_per_decade", "row_group_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"feature_stats.{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.log10_max > self.log10_min:
            raise ConfigError("feature_stats.log10_max must exceed log10_min")
        if self.window_before < 0 or self.window_after < 0:
            raise ConfigError("feature_stats.window_before/window_after must be ≥ 0")
        return self

    @property
    def log_bins(self) -> int:
        """Number of finite log-spaced bins (the histogram has two more: underflow and overflow)."""
        return int(round((self.log10_max - self.log10_min) * self.bins_per_decade))

    def log_edges(self) -> np.ndarray:
        return 10.0 ** np.linspace(self.log10_min, self.log10_max, self.log_bins + 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset_config(preset: str) -> FeatureStatsConfig:
    """The statistics pass of each preset: ``tiny`` small enough for tests and notebooks, ``default`` ≥ 1M
    tokens (the issue's target), ``paper`` 10M."""
    if preset == "tiny":
        return FeatureStatsConfig(n_tokens=30_000, batch_contexts=128, top_k=12, checkpoint_seconds=30.0)
    if preset == "paper":
        return FeatureStatsConfig(n_tokens=10_000_000, batch_contexts=256)
    return FeatureStatsConfig()


def stats_config(run, cfg: FeatureStatsConfig | None) -> FeatureStatsConfig:
    if cfg is None:  # the run config's knob (RunConfig.feature_stats) when it has one, else the preset's
        cfg = getattr(run.cfg, "feature_stats", None) or preset_config(run.cfg.preset)
    if isinstance(cfg, dict):
        cfg = FeatureStatsConfig(**cfg)
    return dataclasses.replace(cfg).validate()
