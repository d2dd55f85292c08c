"""Run configuration: one dataclass per stage, and the three presets (tiny, default, paper).

A run is fully described by a ``RunConfig``; it is written to ``run.json`` when a run directory is created, and
any later invocation on the same directory must carry the same config (or the run refuses, naming the keys
that differ), so a checkpoint can never be resumed under a different recipe.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError


@dataclass
class CorpusConfig:
    spec: str = "default"          # "default" | a local path (txt/jsonl/parquet file or folder) | "hf:NAME?..."
    max_bytes: int = 12_000_000    # cap on the text kept (after the proxy domain is added)
    bible_fraction: float = 0.4    # default corpus: share of bytes from the King James Bible (rest: stdlib code)
    base64_fraction: float = 0.03  # default corpus: share of bytes of base64-encoded held-out text (exact proxy)
    val_fraction: float = 0.02
    seed: int = 0


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    min_frequency: int = 2


@dataclass
class ModelConfig:
    n_layers: int = 1
    d_model: int = 128
    d_mlp: int = 512
    n_heads: int = 4
    d_head: int = 32
    n_ctx: int = 128
    act_fn: str = "relu"
    normalization_type: str = "LN"


@dataclass
class LMTrainConfig:
    steps: int = 1500
    batch_size: int = 32           # contexts per step
    lr: float = 2e-3
    min_lr_fraction: float = 0.1   # cosine decay to lr × this
    warmup_steps: int = 75
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 8
    checkpoint_every: int = 250
    # bf16 autocast for the forward/backward (master weights and optimizer stay fp32): "auto" uses it on CUDA
    # and on CPUs with bf16 matrix units (AMX / AVX512-BF16; ~1.8× here), "bf16" forces it, "off" never.
    autocast: str = "auto"


@dataclass
class HarvestConfig:
    positions_per_context: int = 48   # the paper samples 250 of each context; we never take the BOS position
    rows: int = 2_500_000             # activation rows harvested per transformer
    shard_rows: int = 131_072
    batch_contexts: int = 64
    dtype: str = "float16"


def later_fields_fingerprint(obj) -> dict:
    """A config dataclass's fields for a fingerprint, less its ``LATER_FIELDS`` — fields added after runs,
    checkpoints and cached analyses were first written — where they hold the value that reproduces the behaviour
    before them, so that those artifacts still match."""
    return {k: v for k, v in dataclasses.asdict(obj).items()
            if not (k in obj.LATER_FIELDS and v == obj.LATER_FIELDS[k])}


@dataclass
class SAETrainConfig:
    steps: int = 600
    batch_size: int = 4096
    lr: float = 1e-3
    warmup_steps: int = 20
    betas: tuple[float, float] = (0.9, 0.999)
    # Resampling: the paper resamples at 25k/50k/75k/100k of 1M steps, each time over features silent for the
    # previous 12.5k steps.  Short runs need the same shape at a larger scale: fractions of the run below,
    # each with a silence window of half the gap between resamples.
    resample_at: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    resample_inputs: int = 65_536     # the paper: 819,200 inputs scored by loss²
    geometric_median_rows: int = 16_384
    # Initial encoder bias (the paper does not state one).  b_e = 0 with a Kaiming encoder fires about half the
    # features on every token until the L1 term has pushed them down: ~65 dense steps at 4096 features, 100+ at
    # 16384, most of a short run's time.  A number sets each b_e so its feature starts active on that fraction
    # of a sample (Dictionary.init_encoder_bias); None keeps b_e = 0.  Kinds whose sparsity does not come from
    # the bias (TopK, BatchTopK, JumpReLU) ignore it.  Measured on the default run's A/1 (600 steps, λ 3e-3,
    # density over 262k store rows): b_e = 0 → L0 13.5, FVU 0.41, loss recovered 76 %, 0 dead, 140 s;
    # 0.01 → L0 27, FVU 0.23, but 2111 dead (features born nearly silent die before they find a direction);
    # 0.1 → L0 24.8, FVU 0.24, 92 %, 0 dead, 1 ultralow, 104 s.
    init_density: float | None = 0.1
    checkpoint_every: int = 100
    log_every: int = 1
    shuffle_buffer_shards: int = 4
    # The sparse-aware step (lib/fast.py) for kinds that support it: same objective, same gradients, several
    # times faster.  bf16=None uses the CPU's bf16 matrix units when present (as an exact filter, see fast.py).
    fast: bool = True
    bf16: bool | None = None
    # The high-density steps on bf16 products (approximate; off by default).  A tied april2024 start fires half of
    # its features on every input, so a dictionary's first 40-60 steps are dense or at 5-25 % density, where the
    # exact paths run fp32 products: 182 s of the default A/2's 464.  mixed_dense=True runs the steps above 10 %
    # active (fast.MIXED_DENSE_ABOVE) as the kind's own loss under bf16 autocast — bf16 products with fp32
    # accumulation, parameters, optimizer and loss in fp32 — where the CPU has bf16 dot products and the kind an
    # exact sparse step, which takes every step below that.  Log path "dense-bf16".
    mixed_dense: bool = False

    LATER_FIELDS: ClassVar[dict] = {"mixed_dense": False}   # see later_fields_fingerprint

    def fingerprint(self) -> dict:
        """The fields that say what training does, for checkpoint and analysis fingerprints."""
        return later_fields_fingerprint(self)


@dataclass
class DictSpec:
    """One dictionary of a run: id ``T/n`` (the paper's names), on transformer ``T``."""

    id: str
    d_sae: int
    l1_coefficient: float
    steps: int | None = None          # overrides SAETrainConfig.steps
    kind: str = "relu"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    # the training recipe (lib/recipes.py): "tm2023" (the paper's; a run.json without the field), "april2024",
    # "tm2023_lowmode"; validated with the kind by DictionaryConfig
    recipe: str = "tm2023"
    batch_size: int | None = None     # overrides SAETrainConfig.batch_size (a run.json without it: the run's)
    LATER_FIELDS: ClassVar[dict] = {"batch_size": None}   # see later_fields_fingerprint

    def fingerprint(self) -> dict:
        """The spec's fields for analysis fingerprints."""
        return later_fields_fingerprint(self)

    @property
    def transformer(self) -> str:
        return self.id.split("/")[0]

    def train_config(self, train: "SAETrainConfig") -> "SAETrainConfig":
        """The run's ``sae_train`` with this dictionary's overrides (``steps``, ``batch_size``): the one way every
        stage, variant and benchmark gets a dictionary's training settings."""
        over = {k: v for k, v in (("steps", self.steps), ("batch_size", self.batch_size)) if v is not None}
        return dataclasses.replace(train, **over) if over else train

    def dictionary_config(self, d_in: int):
        """The ``DictionaryConfig`` of this dictionary on activations of width ``d_in`` (the run's d_mlp)."""
        from .sae import DictionaryConfig

        return DictionaryConfig(d_in=d_in, d_sae=self.d_sae, kind=self.kind, l1_coefficient=self.l1_coefficient,
                                seed=self.seed, options=dict(self.options), recipe=self.recipe)


@dataclass
class EvalConfig:
    contexts: int = 256               # validation contexts for loss recovered / FVU / density
    batch_contexts: int = 32
    ultralow_density: float = 1e-5   # the paper: < 1e-6 over billions of tokens; ours sees ~1e5-1e6 tokens
    density_rows: int = 262_144       # activation-store rows for density / dead / ultralow (0: the eval tokens)
    histogram_bins: int = 40


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
    # surrounding tokens stored with each example: 23 tokens ≈ 90+ characters, so a full card's context (≥ 80
    # characters, trimmed at token boundaries by the widgets) is filled from the stored window
    window_before: int = 16
    window_after: int = 6
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


@dataclass
class UniversalityConfig:
    """``compare:`` stages: the shared token set (validation contexts first, then train)."""

    tokens: int = 1_048_576           # per preset; the paper used 40.96M in one example


PAPER_THRESHOLD = 0.4  # feature splitting: the paper draws an edge above a masked cosine similarity of ≈ 0.4
PARENT_RULES = ("best", "all")  # feature splitting: which links above the threshold make families (SplittingConfig)


@dataclass
class SplittingConfig:
    """``splitting:`` stages."""

    # feature splitting encodes every size (A/2 = 16,384 features costs 4× A/1): a smaller set than compare's
    tokens: int = 524_288
    threshold: float = PAPER_THRESHOLD
    # which links above the threshold make families: "best" — each child under its strongest parent only, so a
    # family is a tree (on TopK dictionaries, where k features fire on every token, a child's masked cosine clears
    # 0.4 with ~18 parents at once: 144 children per A/0 feature on the default run); "all" — every link, the
    # paper's graph.  Read when the links are read: changing it recomputes nothing.
    parents: str = "best"


@dataclass
class InterpretConfig:
    """``interpret:`` stages (``lib/interpret``): automated interpretability of a dictionary's features, its
    transformer's neurons and a randomized-transformer control.  The explainer reads ``explain_tokens`` of the
    train split, the scores are measured on ``holdout_tokens`` of the validation split."""

    explain_tokens: int = 262_144     # train-split tokens the explainer reads (every token, firing or not)
    holdout_tokens: int = 131_072     # validation-split tokens the explanations are scored on
    top_examples: int = 10            # held-out examples per unit: top activations,
    per_interval: int = 2             # … per each of the 11 equal-width activation intervals,
    random_examples: int = 28         # … and random tokens (10 + 22 + 28 = the paper's 60)
    window_before: int = 6            # an example is 9 tokens: 6 before the chosen token, it, 2 after
    window_after: int = 2
    max_tokens: int = 8               # tokens an explanation may name
    max_context: int = 4              # preceding-token patterns per named token
    min_count: int = 3                # a pattern must occur this often in the explanation set
    min_gain: float = 0.01            # a rule must explain this share of the unit's squared activation
    logit_tokens: int = 10            # logit test: top positive-logit tokens against as many random ones
    control_rows: int = 400_000       # activation rows harvested from the randomized transformer
    control_steps: int = 300          # training steps of the control's dictionary (same size and λ)
    control_seed: int = 0             # seed of the weight shuffle
    batch_contexts: int = 64
    seed: int = 0

    def validate(self) -> "InterpretConfig":
        for name in ("explain_tokens", "holdout_tokens", "top_examples", "max_tokens", "min_count",
                     "logit_tokens", "control_rows", "control_steps", "batch_contexts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"interpret.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("per_interval", "random_examples", "window_before", "window_after", "max_context"):
            if getattr(self, name) < 0:
                raise ConfigError(f"interpret.{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 <= self.min_gain < 1:
            raise ConfigError(f"interpret.min_gain must be in [0, 1), got {self.min_gain}")
        return self


@dataclass
class RunConfig:
    preset: str = "default"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lm_train: LMTrainConfig = field(default_factory=LMTrainConfig)
    transformers: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 1})  # name → init seed
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    sae_train: SAETrainConfig = field(default_factory=SAETrainConfig)
    dictionaries: list[DictSpec] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # analysis stages run after the dictionaries: "features:A/1" (feature statistics), "neurons:A" (the same for
    # the MLP neurons), "compare:A/1~B/1" (universality; adds `universality` to the summary), "splitting:A"
    # (links and families across A's dictionary sizes, and the UMAP feature map), "interpret:A/1" (automated
    # interpretability of A/1's features, A's neurons and a randomized control; adds `interpretability`)
    analyses: list[str] = field(default_factory=list)
    # the analyses' settings; a run.json written before these sections existed takes its preset's (from_dict)
    feature_stats: FeatureStatsConfig = field(default_factory=FeatureStatsConfig)
    universality: UniversalityConfig = field(default_factory=UniversalityConfig)
    splitting: SplittingConfig = field(default_factory=SplittingConfig)
    interpret: InterpretConfig = field(default_factory=InterpretConfig)
    device: str = "auto"

    # ---- (de)serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = copy.deepcopy(d)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d.pop(f.name)
            sub = _SUB.get(f.name)
            if f.name == "analyses":
                v = list(v)
            elif f.name == "dictionaries":
                v = [_build(DictSpec, x, "dictionaries[]") for x in v]
            elif sub is not None:
                v = _build(sub, v, f.name)
            kw[f.name] = v
        if d:
            raise ConfigError(f"unknown run config keys {sorted(d)}; known: {[f.name for f in dataclasses.fields(cls)]}")
        missing = [name for name in ANALYSIS_SECTIONS if name not in kw]
        if missing and kw.get("preset", "default") in PRESETS:  # an older run.json: its preset's values then
            base = PRESETS[kw.get("preset", "default")]()
            kw.update({name: getattr(base, name) for name in missing})
        return cls(**kw).validate()

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def dictionary(self, dict_id: str) -> DictSpec:
        for d in self.dictionaries:
            if d.id == dict_id:
                return d
        raise ConfigError(f"no dictionary {dict_id!r} in this run; it has {[d.id for d in self.dictionaries]}")

    # ---- validation -------------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        m = self.model
        if m.n_heads * m.d_head != m.d_model:
            raise ConfigError(f"model n_heads × d_head must equal d_model ({m.n_heads}×{m.d_head} ≠ {m.d_model})")
        if m.act_fn not in ("relu", "gelu", "solu_ln", "gelu_new"):
            raise ConfigError(f"model act_fn {m.act_fn!r} unsupported; use 'relu' (the paper) or 'gelu'")
        if m.n_ctx < 4:
            raise ConfigError(f"model n_ctx must be ≥ 4, got {m.n_ctx}")
        if self.harvest.positions_per_context > m.n_ctx - 1:
            raise ConfigError(
                f"harvest.positions_per_context={self.harvest.positions_per_context} exceeds the "
                f"{m.n_ctx - 1} non-BOS positions of a context; lower it or raise model.n_ctx"
            )
        if self.tokenizer.vocab_size < 300:
            raise ConfigError(f"tokenizer.vocab_size must be ≥ 300 (256 bytes + merges), got {self.tokenizer.vocab_size}")
        if self.lm_train.autocast not in ("auto", "bf16", "off"):
            raise ConfigError(f"lm_train.autocast must be 'auto', 'bf16' or 'off', got {self.lm_train.autocast!r}")
        if not 0 < self.corpus.val_fraction < 0.5:
            raise ConfigError(f"corpus.val_fraction must be in (0, 0.5), got {self.corpus.val_fraction}")
        if not self.transformers:
            raise ConfigError("a run needs at least one transformer (e.g. transformers={'A': 0})")
        seen = set()
        for d in self.dictionaries:
            parts = d.id.split("/")
            if len(parts) != 2 or not parts[1]:
                raise ConfigError(f"dictionary id {d.id!r} must look like 'A/1' (transformer/name)")
            if d.transformer not in self.transformers:
                raise ConfigError(
                    f"dictionary {d.id} is on transformer {d.transformer!r}, which this run does not train "
                    f"(it trains {sorted(self.transformers)})"
                )
            if d.id in seen:
                raise ConfigError(f"dictionary id {d.id} appears twice")
            seen.add(d.id)
            for name in ("steps", "batch_size"):
                v = getattr(d, name)
                if v is not None and (not isinstance(v, int) or v < 1):
                    raise ConfigError(f"dictionary {d.id}: {name} must be a positive integer or null (the run's "
                                      f"sae_train.{name}), got {v!r}")
            d.dictionary_config(m.d_mlp).validate()
        ids = {d.id for d in self.dictionaries}
        for a in self.analyses:
            kind, _, arg = a.partition(":")
            parts = arg.split("~") if kind == "compare" else [arg]
            ok = kind in ("features", "neurons", "compare", "splitting", "interpret") and all(
                (p in self.transformers if kind in ("neurons", "splitting") else p in ids or p.endswith("/neurons"))
                for p in parts)
            if not ok or (kind == "compare" and len(parts) != 2):
                raise ConfigError(f"analysis {a!r} is not one of features:<dict id>, neurons:<transformer>, "
                                  f"compare:<dict id>~<dict id>, splitting:<transformer>, interpret:<dict id> over "
                                  f"this run's dictionaries {sorted(ids)}")
        d0 = self.sae_train.init_density
        if d0 is not None and not 0 < d0 < 1:
            raise ConfigError(f"sae_train.init_density must be in (0, 1) or null (b_e = 0), got {d0}")
        self.feature_stats.validate()
        self.interpret.validate()
        if self.universality.tokens < 1 or self.splitting.tokens < 1:
            raise ConfigError(f"universality.tokens and splitting.tokens must be ≥ 1, got {self.universality.tokens} "
                              f"and {self.splitting.tokens}")
        if not 0 < self.splitting.threshold <= 1:
            raise ConfigError(f"splitting.threshold must be in (0, 1], got {self.splitting.threshold}")
        if self.splitting.parents not in PARENT_RULES:
            raise ConfigError(f"splitting.parents must be one of {PARENT_RULES}, got {self.splitting.parents!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self


_SUB = {"corpus": CorpusConfig, "tokenizer": TokenizerConfig, "model": ModelConfig, "lm_train": LMTrainConfig,
        "harvest": HarvestConfig, "sae_train": SAETrainConfig, "eval": EvalConfig,
        "feature_stats": FeatureStatsConfig, "universality": UniversalityConfig, "splitting": SplittingConfig,
        "interpret": InterpretConfig}
ANALYSIS_SECTIONS = ("feature_stats", "universality", "splitting", "interpret")


def _build(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in config section {where}; known: {sorted(known)}")
    kw = {}
    for k, v in d.items():
        if isinstance(v, list) and k != "options":
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


# ---- presets ---------------------------------------------------------------------------------------------

def _tiny() -> RunConfig:
    return RunConfig(
        preset="tiny",
        corpus=CorpusConfig(max_bytes=400_000, val_fraction=0.05),
        tokenizer=TokenizerConfig(vocab_size=512),
        model=ModelConfig(d_model=32, d_mlp=128, n_heads=2, d_head=16, n_ctx=32),
        lm_train=LMTrainConfig(steps=60, batch_size=16, lr=5e-3, warmup_steps=5, eval_every=30, eval_batches=2,
                               checkpoint_every=20),
        harvest=HarvestConfig(positions_per_context=16, rows=40_000, shard_rows=8_192, batch_contexts=64),
        sae_train=SAETrainConfig(steps=60, batch_size=512, lr=2e-3, warmup_steps=3, resample_inputs=4096,
                                 geometric_median_rows=2048, checkpoint_every=20, shuffle_buffer_shards=2),
        dictionaries=[DictSpec("A/0", 128, 3e-3), DictSpec("A/1", 512, 3e-3), DictSpec("B/1", 512, 3e-3)],
        eval=EvalConfig(contexts=64, batch_contexts=32, ultralow_density=1e-3),
        # small enough for tests and notebooks
        feature_stats=FeatureStatsConfig(n_tokens=30_000, batch_contexts=128, top_k=12, checkpoint_seconds=30.0),
        universality=UniversalityConfig(tokens=32_768),
        splitting=SplittingConfig(tokens=32_768),
        interpret=InterpretConfig(explain_tokens=24_576, holdout_tokens=8_192, control_rows=20_480,
                                  control_steps=40),
    )


# The default preset's dictionaries (issue 10's recipe study: benchmarks/recipes.py, README): Anthropic's April 2024
# recipe (recipes.April2024Dictionary) at λ 8e-3, chosen on the default run's stores at A/1's 1,200 steps: L0 17.9,
# loss recovered 89.4 %, 8 / 8 dead, no low mode, all-feature universality A~B 0.652 against the neurons' 0.411 —
# where TopK k 16 (the previous default) gave 97.8 % but 0.422, and BatchTopK 98.0 % and 0.462.
DEFAULT_RECIPE = "april2024"
DEFAULT_L1 = 8e-3
# TopK's options in the recipe study (the default before april2024; benchmarks/recipes.py's topk_decay)
DEFAULT_TOPK = {"k": 16, "lr_decay": 0.2}


def default_dictionary(dict_id: str, d_sae: int, steps: int | None = None, l1: float = DEFAULT_L1,
                       batch_size: int | None = None) -> DictSpec:
    """A dictionary of the default preset's recipe (``DEFAULT_RECIPE``, at ``DEFAULT_L1`` unless ``l1`` says)."""
    return DictSpec(dict_id, d_sae, l1, steps=steps, recipe=DEFAULT_RECIPE, batch_size=batch_size)


def _kernels() -> RunConfig:
    """``tiny`` with the default's dictionaries (its april2024 recipe) as wide as the default's A/1 (2048 and 4096
    features): the sizes at which the default run takes the sparse training step and the sparse-encoder
    statistics paths, and the default's analyses — so the tests execute the notebooks on the code paths users' runs
    take, in about a minute."""
    cfg = _tiny()
    cfg.preset = "kernels"
    cfg.dictionaries = [default_dictionary(i, n) for i, n in (("A/0", 512), ("A/1", 2048), ("A/2", 4096), ("B/1", 2048))]
    cfg.analyses = list(_default().analyses)
    return cfg


def _default() -> RunConfig:
    # The paper's subject-model shape on 2 CPU cores in < 20 minutes, all stages together.
    return RunConfig(
        preset="default",
        corpus=CorpusConfig(max_bytes=24_000_000, bible_fraction=0.2),  # all of the KJV (4.3 MB) + stdlib code
        lm_train=LMTrainConfig(steps=1000, batch_size=32, lr=2e-3, warmup_steps=50, eval_every=250,
                               checkpoint_every=100),
        harvest=HarvestConfig(positions_per_context=64, rows=1_600_000),
        # The recipe study (issue 10, benchmarks/recipes.py, README): the paper's tm2023 trained this briefly leaves
        # 85 % of A/1 in a low-density mode that means nothing (all-feature universality 0.05 against the neurons'
        # 0.41).  Anthropic's April 2024 recipe (no pre-encoder bias, decoder-norm-weighted L1, λ warm-up, LR
        # decay) at λ 8e-3 has no low mode and matches across A and B at 0.652 (DEFAULT_RECIPE above); TopK
        # reconstructs better (loss recovered 97.8 against 89.4 %) but matches at 0.42, and its AuxK lost two
        # thirds of A/2 (benchmarks/dead_latents.py, README).  The ReLU forward also trains on the sparse step at
        # about twice TopK's tokens/s.  A/1 and B/1 get twice the tokens of the other sizes: universality is what
        # grows with training.  A/0 takes half the λ: at 8e-3 its 512 features settled at L0 10 and loss recovered
        # 73.8 %; at 4e-3 L0 17.6 (A/1's 17.9) and FVU 0.30 against 0.41 (a 500-step probe on A's store).  A/2 keeps
        # A/1's.  Its 300 steps with the bare 5 % λ warm-up (15 steps) left 60 % dead at every λ tried (4e-3 … 1.4e-2):
        # the features died in the first 50 steps, before the encoder had moved.  april2024's warm-up floor of 60
        # steps (recipes.py) keeps them: 216 dead, L0 142, FVU 0.330 (probe on A's store; 1.2e-2 with the floor:
        # 1,294 dead, L0 87, FVU 0.42).
        # Budget (issue 10's 20 minutes): at these lengths Adam steps, not tokens, are what a dictionary is short
        # of.  A/1 and B/1 at batch 2048 for the same 1,200 steps — half the tokens and half the time — matched at
        # 0.656 (L0 18.6, loss recovered 88.9 %, 8 / 9 dead; benchmarks/recipes.py --scales 0.5 --batch 2048)
        # against 0.652 at 4096.  A/2 at batch 1024 for 600 steps (0.6M tokens) ends sparser and closer than 300
        # steps at 4096 (1.2M): L0 80 against 144, FVU 0.298 against 0.333, 436 dead (2.7 %) against 211, for
        # about half the time (probes on A's store, dead over 262k rows).
        dictionaries=[
            default_dictionary("A/0", 512, steps=500, l1=4e-3),
            default_dictionary("A/1", 4096, steps=1200, batch_size=2048),
            default_dictionary("A/2", 16384, steps=600, batch_size=1024),
            default_dictionary("B/1", 4096, steps=1200, batch_size=2048),
        ],
        # the first 20-60 steps of an april2024 start are dense (tied init: half the features fire): bf16 products
        # there, the exact sparse step after (SAETrainConfig.mixed_dense; same dictionary on A/2's probe)
        sae_train=SAETrainConfig(mixed_dense=True),
        # the browser's statistics over 500k tokens (the paper's browser used more; ours is a laptop's 20 minutes):
        # half of the 375 s the five passes took over 1M
        feature_stats=FeatureStatsConfig(n_tokens=500_000),
        # every view of notebooks 03-05 reads these, so a finished run opens in seconds (issue 11)
        # interpret:A/1 last: automated interpretability of A/1, A's neurons and a randomized control (issue 13)
        analyses=["compare:A/1~B/1", "features:A/1", "neurons:A", "splitting:A", "features:B/1", "features:A/0",
                  "features:A/2", "interpret:A/1"],
    )


def fixed_dead_window(d: DictSpec, train: SAETrainConfig) -> dict:
    """A TopK spec's options with its run-scaled AuxK window (``dead_fraction`` of its steps × batch, as
    ``TopKDictionary.begin_training`` sets it) written out as ``dead_tokens``."""
    from .kinds import TopKDictionary
    from .registry import kind_class

    opts = dict(d.options)
    cls = kind_class(d.kind, d.recipe)
    if issubclass(cls, TopKDictionary) and opts.get("dead_tokens") is None:   # any kind with TopK's AuxK window
        frac = opts.pop("dead_fraction", cls.OPTIONS["dead_fraction"].default)
        t = d.train_config(train)
        opts["dead_tokens"] = cls.scaled_dead_tokens(frac, t.steps, t.batch_size)
    return opts


def _quality() -> RunConfig:
    """The default preset's transformers and recipe, with A/1 and B/1 trained on 9,600 steps × 4096 = 39.3M tokens
    (8× the default's at batch 4096, 16× its 2048 now) and A/0, A/2 on 4× / 8×, from a store twice as large: where
    the recipe study's april2024 trend points (README; ``benchmarks/recipes.py --recipes april2024 --scales 2 4``:
    all-feature universality A/1~B/1 0.652 → 0.656 → 0.695 at 1×, 2×, 4×; the neurons 0.411).  Run end to end from
    a fresh clone of b0d45a4 (2026-12-04): 0.743 (the paper's 0.72), B → A 0.742, 55 % of A/1's features matched
    above 0.7; A/1 L0 6.3, FVU 0.255, loss recovered 93.4 %, no dead in A/1 or B/1.  1 h 33 min of running on 2
    cores, install included, with probes, a test suite and a benchmark beside it for about an hour of that (README)."""
    # (With the TopK recipe, the default's until april2024 replaced it, the same budget gave 0.647 in 1 h 49 min.)
    cfg = _default()
    cfg.preset = "quality"
    cfg.harvest = HarvestConfig(positions_per_context=64, rows=3_200_000)
    steps = {"A/0": 2000, "A/1": 9600, "A/2": 1200, "B/1": 9600}
    # a TopK-kind dictionary's AuxK window stays the default's in tokens (what makes it right is how often a rare
    # live latent fires, not the run's length): a share of 8× the steps would be 8× as long; no-op for april2024
    cfg.dictionaries = [dataclasses.replace(d, steps=steps[d.id], batch_size=None,
                                            options=fixed_dead_window(d, cfg.sae_train)) for d in cfg.dictionaries]
    # exact steps throughout, the batch of 4096 and 1M tokens of statistics: the default's settings before it was
    # fitted into 20 minutes, which this preset does not need to be
    cfg.sae_train = SAETrainConfig()
    cfg.feature_stats = FeatureStatsConfig()
    return cfg


def _paper() -> RunConfig:
    # The paper's sizes and schedule, for a GPU.  Context length and tokenizer are not stated by the paper.
    sizes = [512, 4096, 16384, 32768, 65536, 131072]
    return RunConfig(
        preset="paper",
        corpus=CorpusConfig(max_bytes=2_000_000_000),
        tokenizer=TokenizerConfig(vocab_size=50_000),
        model=ModelConfig(n_ctx=256),
        lm_train=LMTrainConfig(steps=200_000, batch_size=256, lr=1e-3, warmup_steps=2000, eval_every=2000,
                               checkpoint_every=2000),
        harvest=HarvestConfig(positions_per_context=250, rows=8_192_000_000 // 1000, shard_rows=1_048_576,
                              batch_contexts=256),
        sae_train=SAETrainConfig(steps=1_000_000, batch_size=8192, lr=1e-4, warmup_steps=1000,
                                 resample_at=(0.025, 0.05, 0.075, 0.1), resample_inputs=819_200,
                                 geometric_median_rows=65_536, checkpoint_every=10_000, log_every=100,
                                 shuffle_buffer_shards=8),
        dictionaries=[DictSpec(f"A/{i}", s, 0.004) for i, s in enumerate(sizes)] + [DictSpec("B/1", 4096, 0.004)],
        eval=EvalConfig(contexts=8192, batch_contexts=128, ultralow_density=1e-6, density_rows=20_000_000),
        feature_stats=FeatureStatsConfig(n_tokens=10_000_000, batch_contexts=256),
        universality=UniversalityConfig(tokens=40_960_000),
        splitting=SplittingConfig(tokens=40_960_000),
        device="auto",
    )


PRESETS = {"tiny": _tiny, "kernels": _kernels, "default": _default, "quality": _quality, "paper": _paper}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]().validate()


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable list of keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} → {vb!r}")
    return out
