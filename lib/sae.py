"""Dictionaries (sparse autoencoders): one small class per kind behind a shared interface.

The default kind is the paper's ReLU-L1 dictionary (Bricken et al. 2023):

    x̄  = x − b_d                         (pre-encoder bias, initialised to the geometric median)
    f  = ReLU(x̄ W_e + b_e)               (W_e: d_in × d_sae, untied from the decoder)
    x̂  = f W_d + b_d                     (W_d: d_sae × d_in, every row — the paper's "column" — unit norm)
    L  = mean_{batch, elements}(x − x̂)² + λ · mean_batch Σ_i |f_i|

Tensor names carry their shape: B batch, D d_in, F d_sae.  A kind is registered with ``@register_kind`` (the
registry is ``registry.py``) in the file that defines it — ``relu`` here, the others in ``kinds.py`` — and owns
its encode/decode/loss; the trainer only calls the interface (``loss``, ``before_optimizer_step``,
``after_optimizer_step``, ``resample``), so a kind added later touches no trainer code.

How a dictionary is trained is its *recipe* (``DictionaryConfig.recipe``; ``recipes.py``): ``tm2023``, the paper's,
is the default of every kind and what a saved config without the field means — the class above for ``relu``.
Other recipes are subclasses registered for (kind, recipe) that set the loop-level choices declared on
``Dictionary`` (``init_b_dec_to_median``, ``lr_decay_fraction``, ``grad_clip``, ``revive_target``) and override the
objective where it differs (``april2024``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import ConfigError, CorruptArtifactError
from .io import atomic_write_json, load_safetensors, read_json, save_safetensors
# the registry lives in its own module so kind modules can import this one without a circle; re-exported here
# because ``from monosemantic.sae import make_dictionary, register_kind, available_kinds`` is the documented spelling
from .registry import DEFAULT_RECIPE, available_kinds, available_recipes, kind_class, make_dictionary, register_kind

@dataclass
class DictionaryConfig:
    """Everything that defines a dictionary's shape and objective (not how long it trains)."""

    d_in: int = 512
    d_sae: int = 4096
    kind: str = "relu"
    l1_coefficient: float = 0.004  # λ; the paper's value for A/0…A/5 (its activation scale, not ours)
    seed: int = 0
    # kind-specific options (e.g. k for TopK); validated by the kind
    options: dict[str, Any] = field(default_factory=dict)
    # how it is trained (registry.py, recipes.py): "tm2023" (the paper's loop; a saved config without the field),
    # "april2024", "tm2023_lowmode"; each recipe is defined for the kinds it names
    recipe: str = DEFAULT_RECIPE

    def validate(self) -> "DictionaryConfig":
        kind = kind_class(self.kind, self.recipe)  # an unknown kind or recipe fails first, naming the known ones
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"dictionary {name} must be a positive integer, got {v!r}")
        if not (self.l1_coefficient >= 0 and math.isfinite(self.l1_coefficient)):
            raise ConfigError(f"l1_coefficient must be a finite number ≥ 0, got {self.l1_coefficient!r}")
        kind.validate_options(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DictionaryConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown dictionary config keys {sorted(unknown)}; known keys: {sorted(known)}")
        return cls(**d).validate()


class Dictionary(nn.Module):
    """Shared interface of every dictionary kind.

    Parameters: ``W_enc_DF``, ``b_enc_F``, ``W_dec_FD``, ``b_dec_D``.  Subclasses override ``encode`` (and
    ``loss`` when the objective differs).  ``forward`` returns ``(x_hat_BD, f_BF)``.
    """

    kind: ClassVar[str] = "?"
    recipe: ClassVar[str] = DEFAULT_RECIPE
    # True where a feature's firing rate is set by its encoder bias (ReLU): init_encoder_bias applies.
    bias_sets_density: ClassVar[bool] = False
    # ---- the recipe's loop-level choices, read by the trainer (train_sae._Loop); tm2023's values here ----
    init_b_dec_to_median: ClassVar[bool] = True   # b_dec ← the geometric median of a sample before step 0
    # pre = (x − b_dec) W_enc + b_enc (the paper's pre-encoder bias); False: pre = x W_enc + b_enc (april2024) —
    # what the fast step, and anything that re-implements the encoder (an export), must follow
    subtracts_b_dec: ClassVar[bool] = True
    lr_decay_fraction: ClassVar[float] = 0.0      # LR decays linearly to 0 over this last fraction of the steps
    grad_clip: ClassVar[float | None] = None      # clip the global gradient norm to this (None: no clipping)
    # which features revival resamples at SAETrainConfig.resample_at: "dead" (silent for the window: the paper),
    # "low_mode" (the dead, the low mode of the window's densities, and those under a floor: recipes.py), or None
    # (revival is not part of the recipe: the loop skips it)
    revive_target: ClassVar[str | None] = "dead"

    def __init__(self, cfg: DictionaryConfig):
        super().__init__()
        self.cfg = cfg
        D, F = cfg.d_in, cfg.d_sae
        g = torch.Generator().manual_seed(cfg.seed)
        W_enc_DF = torch.empty(D, F)
        W_dec_FD = torch.empty(F, D)
        # Kaiming-uniform (the paper), drawn from a seeded generator so a seed fixes the dictionary.
        bound_enc = math.sqrt(6.0 / D)
        bound_dec = math.sqrt(6.0 / F)
        W_enc_DF.uniform_(-bound_enc, bound_enc, generator=g)
        W_dec_FD.uniform_(-bound_dec, bound_dec, generator=g)
        self.W_enc_DF = nn.Parameter(W_enc_DF)
        self.b_enc_F = nn.Parameter(torch.zeros(F))
        self.W_dec_FD = nn.Parameter(W_dec_FD)
        self.b_dec_D = nn.Parameter(torch.zeros(D))
        self.normalize_decoder()

    # ---- kind-specific hooks -------------------------------------------------------------------------
    @classmethod
    def validate_options(cls, cfg: DictionaryConfig) -> None:
        if cfg.options:
            raise ConfigError(f"dictionary kind {cfg.kind!r} takes no options, got {sorted(cfg.options)}")

    @property
    def input_offset_D(self) -> torch.Tensor:
        """What ``pre_acts`` subtracts from the input: b_dec (the paper), or zeros for a kind that does not
        (``subtracts_b_dec = False``: april2024).  The sparse encoders and the statistics read it from here."""
        return self.b_dec_D if self.subtracts_b_dec else torch.zeros_like(self.b_dec_D)

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        if not self.subtracts_b_dec:
            return x_BD @ self.W_enc_DF + self.b_enc_F
        return (x_BD - self.b_dec_D) @ self.W_enc_DF + self.b_enc_F

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_acts(x_BD))

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        return f_BF @ self.W_dec_FD + self.b_dec_D

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_BF = self.encode(x_BD)
        return self.decode(f_BF), f_BF

    def loss(self, x_BD: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        """The training objective. Returns at least ``loss``, ``mse``, ``sparsity`` and ``f_BF``."""
        x_hat_BD, f_BF = self(x_BD)
        mse = (x_hat_BD - x_BD).pow(2).mean()
        l1 = f_BF.abs().sum(-1).mean()
        return {"loss": mse + self.cfg.l1_coefficient * l1, "mse": mse, "sparsity": l1, "f_BF": f_BF}

    def begin_training(self, steps: int, batch_size: int) -> None:
        """Called by the trainer before the first (or first resumed) step with the run's length, so a recipe can
        scale to the run what it states as a fraction of it (TopK's dead window, April 2024's λ warm-up)."""

    def finish_training(self) -> None:
        """Called by the trainer after the last step, before the dictionary is saved: a recipe may put its weights
        in the form every analysis expects here, without changing the function (see ``April2024Dictionary``)."""

    # ---- decoder geometry (the paper's constraint) ----------------------------------------------------
    @torch.no_grad()
    def init_encoder_bias(self, x_ND: torch.Tensor, density: float, chunk: int = 2048) -> None:
        """b_enc_F ← −(the (1 − density) quantile over x_ND of each feature's bias-free pre-activation), so every
        feature starts active on about ``density`` of the inputs instead of about half of them.  Call after b_dec
        is set (x̄ = x − ``input_offset_D``: b_dec, or nothing for a kind that does not subtract it)."""
        x = x_ND.to(self.W_enc_DF.dtype) - self.input_offset_D
        N = x.shape[0]
        k = min(N, max(1, int(round((1.0 - density) * N))))  # k-th smallest: about density·N rows lie above
        for s in range(0, self.d_sae, chunk):
            pre_NC = x @ self.W_enc_DF[:, s:s + chunk]
            self.b_enc_F[s:s + chunk] = -pre_NC.kthvalue(k, dim=0).values

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec_FD.div_(self.W_dec_FD.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out of each decoder row's gradient its component along the row (rows are unit norm),
        so Adam only moves rows along the sphere — better than renormalising alone (the paper)."""
        if self.W_dec_FD.grad is None:
            return
        W, G = self.W_dec_FD, self.W_dec_FD.grad
        G.addcmul_(torch.linalg.vecdot(G, W).unsqueeze(-1), W, value=-1)  # G −= (G·w) w, without a B×F temporary

    def before_optimizer_step(self) -> None:
        self.remove_parallel_decoder_grad()

    def after_optimizer_step(self) -> None:
        self.normalize_decoder()

    # ---- resampling dead features (the paper's recipe) ------------------------------------------------
    @torch.no_grad()
    def per_input_loss(self, x_BD: torch.Tensor) -> torch.Tensor:
        x_hat_BD, _ = self(x_BD)
        return (x_hat_BD - x_BD).pow(2).sum(-1)

    @torch.no_grad()
    def resample(self, dead_F: torch.Tensor, x_ND: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                 generator: torch.Generator | None = None) -> int:
        """Re-initialise the features in ``dead_F`` (bool mask) from inputs sampled with P ∝ loss².

        Decoder row ← the centred input (x − b_d, which is what the decoder must reconstruct) at unit norm;
        encoder column ← the same direction scaled to 0.2 × the mean alive encoder norm; encoder bias ← 0;
        the Adam state of every changed slice ← 0.  Returns the number of features resampled.
        """
        idx = torch.nonzero(dead_F, as_tuple=False).flatten()
        n = int(idx.numel())
        if n == 0:
            return 0
        loss_N = self.per_input_loss(x_ND).double().pow(2)
        if not torch.isfinite(loss_N).all() or loss_N.sum() <= 0:
            loss_N = torch.ones_like(loss_N)
        replace = n > int((loss_N > 0).sum())
        pick = torch.multinomial(loss_N / loss_N.sum(), n, replacement=replace, generator=generator)
        v_nD = x_ND[pick].to(self.W_dec_FD.dtype) - self.b_dec_D
        v_nD = v_nD / v_nD.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive_F = ~dead_F
        enc_norm = self.W_enc_DF[:, alive_F].norm(dim=0).mean() if alive_F.any() else torch.tensor(1.0)
        self.W_dec_FD[idx] = v_nD
        self.W_enc_DF[:, idx] = (v_nD * 0.2 * enc_norm).T
        self.b_enc_F[idx] = 0.0
        if optimizer is not None:
            for p, sl in ((self.W_dec_FD, (idx,)), (self.W_enc_DF, (slice(None), idx)), (self.b_enc_F, (idx,))):
                st = optimizer.state.get(p)
                if not st:
                    continue
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in st and torch.is_tensor(st[key]) and st[key].shape == p.shape:
                        st[key][sl] = 0.0
        return n

    # ---- persistence (safetensors + JSON; never pickle) -----------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().cpu()
                   for k, v in self.state_dict().items()}
        save_safetensors(tensors, directory / "sae.safetensors")
        atomic_write_json(directory / "cfg.json", {"dictionary": self.cfg.to_dict(), **(extra or {})})
        return directory

    @staticmethod
    def load(directory: str | Path, map_location: str | torch.device = "cpu") -> "Dictionary":
        """The dictionary saved in ``directory`` (``cfg.json`` + ``sae.safetensors``, as ``save`` writes them).

        A missing, cut-short or unreadable file, a config that is not a dictionary config, or weights that do not
        fit the config (a tensor missing or of the wrong shape) raise ``CorruptArtifactError`` naming the file and,
        inside a run directory, the stage that rebuilds it (``dictionary:T/n``, rebuilt by ``monosemantic run``).
        """
        directory = Path(directory)
        cfg_path, w_path = directory / "cfg.json", directory / "sae.safetensors"
        stage = _rebuilding_stage(directory)
        if not cfg_path.exists() and not w_path.exists():
            raise FileNotFoundError(
                f"no dictionary at {directory}: expected cfg.json and sae.safetensors "
                + (f"(run `monosemantic run --out {directory.parents[2]}` to train {stage})" if stage else
                   "(train one with monosemantic.train_dictionary or `monosemantic run`)"))
        for path, other in ((cfg_path, w_path), (w_path, cfg_path)):
            if not path.exists():
                raise CorruptArtifactError(path, f"missing, though {other.name} is beside it", stage)
        cfg = _saved_config(cfg_path, stage)
        sae = make_dictionary(cfg)
        state = load_safetensors(w_path, device=str(map_location), stage=stage)  # corrupt → CorruptArtifactError
        expected = sae.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise CorruptArtifactError(w_path, f"lacks tensors {missing} that a {cfg.kind!r} dictionary has "
                                               f"(has {sorted(state)})", stage)
        wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                 if state[k].shape != v.shape]
        if wrong:
            raise CorruptArtifactError(w_path, f"holds tensors of the wrong shape for d_in={cfg.d_in}, "
                                               f"d_sae={cfg.d_sae} in {cfg_path.name}: {', '.join(wrong)}", stage)
        sae.load_state_dict(state, strict=False)
        return sae.to(map_location)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[-1] != self.cfg.d_in:
            raise ConfigError(
                f"activation width {tuple(x.shape)} does not fit this dictionary (d_in={self.cfg.d_in}); "
                f"train a dictionary with d_in={x.shape[-1]} or pass activations of width {self.cfg.d_in}"
            )


@register_kind("relu")
class ReluDictionary(Dictionary):
    """The paper's dictionary: ReLU encoder, L1 penalty on feature activations (see module docstring)."""

    bias_sets_density = True


def _rebuilding_stage(directory: Path) -> str | None:
    """``dictionary:T/n`` when ``directory`` is a run's ``dictionaries/T/n`` (the stage that rebuilds it), else None."""
    if directory.parent.parent.name == "dictionaries" and (directory.parents[2] / "run.json").exists():
        return f"dictionary:{directory.parent.name}/{directory.name}"
    return None


def _saved_config(cfg_path: Path, stage: str | None) -> DictionaryConfig:
    """The DictionaryConfig in a dictionary's ``cfg.json``; anything else there is a corrupt artifact."""
    saved = read_json(cfg_path, stage=stage)  # not JSON at all: CorruptArtifactError from io
    d = saved.get("dictionary") if isinstance(saved, dict) else None
    if not isinstance(d, dict):
        raise CorruptArtifactError(cfg_path, "has no 'dictionary' object (Dictionary.save writes one)", stage)
    if isinstance(d.get("kind"), str) and d["kind"] not in available_kinds():
        # not corruption: the kind's module (a notebook cell, another package) has not run in this process
        raise ConfigError(f"{cfg_path} names dictionary kind {d['kind']!r}, which is not registered here "
                          f"(registered: {available_kinds()}); import the module that defines it first")
    if isinstance(d.get("recipe"), str) and d["recipe"] not in available_recipes():
        raise ConfigError(f"{cfg_path} names training recipe {d['recipe']!r}, which is not registered here "
                          f"(registered: {available_recipes()}); import the module that defines it first")
    try:
        return DictionaryConfig.from_dict(d)
    except (ConfigError, TypeError) as e:
        raise CorruptArtifactError(cfg_path, f"holds an invalid dictionary config ({e})", stage) from None


@torch.no_grad()
def geometric_median(x_ND: torch.Tensor, max_iter: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows of x."""
    x = x_ND.double()
    y = x.mean(0)
    for _ in range(max_iter):
        d = (x - y).norm(dim=-1)
        if (d < 1e-12).any():  # y sits on a data point: nudge so the weights stay finite
            d = d.clamp_min(1e-12)
        w = 1.0 / d
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.to(x_ND.dtype)

