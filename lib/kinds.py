"""More dictionary kinds behind the one interface of ``sae.Dictionary``: TopK, BatchTopK and JumpReLU.

Select one by config — ``DictionaryConfig(kind="topk", options={"k": 32})`` — and train it with the one loop in
``train_sae``; nothing here touches the trainer.  Each class registers itself (``registry.register_kind``) where it
is defined; the package's ``__init__`` imports this module, so the kinds exist whenever ``monosemantic`` is imported.  Everything a kind needs beyond ``loss`` lives in the kind:
its options (``validate_options``, with errors that name the fix), state that must survive a checkpoint
(registered buffers, so it travels with ``state_dict`` and ``Dictionary.save``), statistics updated once per
optimiser step (``after_optimizer_step``, which the trainer calls after every Adam step), and whether the paper's
resampling belongs to its recipe (``resample`` returns 0 when it does not).

Shared by every kind (the base class): ``pre = (x − b_dec) W_enc + b_enc``, ``x̂ = f W_dec + b_dec``, decoder rows
kept at unit norm with the parallel gradient component projected out (``before/after_optimizer_step``), and
``b_dec`` initialised by the trainer to the geometric median.  Tensor names carry their shape (B batch, D d_in,
F d_sae).  ``DictionaryConfig.l1_coefficient`` is each kind's sparsity coefficient λ where it has one (JumpReLU:
the L0 coefficient); TopK and BatchTopK fix the sparsity by k and ignore it.

References: Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (TopK, AuxK); Bussmann et al. 2024,
"BatchTopK Sparse Autoencoders"; Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
with JumpReLU Sparse Autoencoders".
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from . import distributed as D
from .errors import ConfigError
from .registry import register_kind
from .sae import Dictionary, DictionaryConfig
from .sparse import batch_topk_indices

# ---- option handling -------------------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


class _Option:
    """One kind option: its default (a value, or a function of the config), and a check that returns an error
    message (or None)."""

    def __init__(self, default: Any, check: Callable[[Any, DictionaryConfig], str | None], doc: str):
        self.default, self.check, self.doc = default, check, doc

    def resolve_default(self, cfg: DictionaryConfig):
        return self.default(cfg) if callable(self.default) else self.default


class _OptionsMixin:
    OPTIONS: dict[str, _Option] = {}

    @classmethod
    def validate_options(cls, cfg: DictionaryConfig) -> None:
        if not isinstance(cfg.options, dict):
            raise ConfigError(f"dictionary options must be a mapping, got {type(cfg.options).__name__}")
        unknown = sorted(set(cfg.options) - set(cls.OPTIONS))
        if unknown:
            known = ", ".join(f"{k} ({o.doc})" for k, o in cls.OPTIONS.items())
            raise ConfigError(f"unknown option(s) {unknown} for dictionary kind {cfg.kind!r}; it takes: {known}")
        for name, opt in cls.OPTIONS.items():
            if name in cfg.options:
                msg = opt.check(cfg.options[name], cfg)
                if msg:
                    raise ConfigError(f"dictionary kind {cfg.kind!r}: option {name}={cfg.options[name]!r} {msg}")

    @classmethod
    def resolved_options(cls, cfg: DictionaryConfig) -> dict[str, Any]:
        """The options in effect: the config's, with the kind's defaults filled in (the config is not changed)."""
        return {name: cfg.options.get(name, opt.resolve_default(cfg)) for name, opt in cls.OPTIONS.items()}


def _int_in(lo: int, hi_name: str | None = None, hi: int | None = None):
    def check(v, cfg):
        top = getattr(cfg, hi_name) if hi_name else hi
        if not _is_int(v) or v < lo or (top is not None and v > top):
            if hi_name:
                rng = f"between {lo} and {hi_name} ({top})"
            else:
                rng = f"≥ {lo}" if top is None else f"in [{lo}, {top}]"
            return f"must be an integer {rng}"
        return None
    return check


def _real(lo: float, hi: float | None = None, lo_open: bool = False):
    def check(v, cfg):
        bad = not _is_real(v) or (v <= lo if lo_open else v < lo) or (hi is not None and v > hi)
        if bad:
            left = "(" if lo_open else "["
            return f"must be a finite number in {left}{lo}, {'∞)' if hi is None else str(hi) + ']'}"
        return None
    return check


# ---- TopK (Gao et al. 2024) -------------------------------------------------------------------------------------

def topk_activation(pre_BF: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's k largest pre-activations (ReLU'd), zero the rest."""
    vals, idx = pre_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_BF).scatter(-1, idx, vals.relu())


@register_kind("topk")
class TopKDictionary(_OptionsMixin, Dictionary):
    """TopK dictionary (Gao et al. 2024), with the auxiliary dead-latent loss (AuxK).

    Forward (per token; L0 ≤ k, and = k wherever the k-th largest pre-activation is positive)::

        pre = (x − b_dec) W_enc + b_enc
        f   = ReLU(TopK_k(pre))                  # the k largest entries kept, all others 0
        x̂   = f W_dec + b_dec                    # W_dec rows unit norm (base-class hooks)

    Loss (sparsity is fixed by k, so there is no sparsity penalty)::

        e     = x − x̂                            (detached)
        dead  = latents that have not fired for `dead_tokens` training tokens
        z_aux = ReLU(TopK_{k_aux}(pre restricted to dead latents))
        ê     = z_aux W_dec                      (no bias: b_dec is already in e)
        L     = mean (x − x̂)² + aux_coefficient · mean (e − ê)²

    The k_aux dead latents that best fit the residual get gradient, so dead latents come back without
    resampling; ``resample`` is therefore not part of this recipe and returns 0.  Initialisation: W_enc = W_decᵀ
    (the paper), b_dec = the geometric median (the trainer).  The dead-latent counter
    ``tokens_since_fired_F`` is a buffer, updated once per optimiser step, so it is saved with checkpoints.

    The dead window is set in tokens.  Gao et al.'s 10M tokens is longer than a whole laptop-scale run (600 steps
    × 4096 = 2.5M tokens), so AuxK would never fire; by default the window is scaled to the run instead:
    ``dead_tokens = max(batch, dead_fraction × steps × batch)`` tokens, set by the trainer through
    ``begin_training`` (5 % of the run: 246k tokens for the default preset's A/1).  A latent counted dead is
    trained by AuxK to fit the residual, whose scale lies below the top-k threshold, so a short window keeps rare
    latents silent for good (the default's A/2, 300 steps: 11,054 of 16,384 dead at 5 %, 741 at 25 % — but those
    741 leave ~11k latents that fire a handful of times on unrelated tokens); a long one revives too late (A/1 at
    25 %: 284 dead against 30).  Until a trainer has called ``begin_training`` (``loss`` called by hand) an unset
    window is 10M tokens.

    Options: ``k`` (required), ``k_aux`` (default d_in // 2; 256 for 512 neurons), ``aux_coefficient`` (1/32),
    ``dead_tokens`` (default: scaled to the run, see above; a number fixes it; 0 turns AuxK off),
    ``dead_fraction`` (0.05: the run-scaled window's share of the run's tokens), ``lr_decay`` (0: the learning
    rate decays linearly to 0 over this last share of the steps, as Anthropic's 2024 recipes do).
    """

    OPTIONS = {
        "k": _Option(None, _int_in(1, "d_sae"), "active latents per token, required"),
        "k_aux": _Option(lambda c: min(max(1, c.d_in // 2), c.d_sae), _int_in(0, "d_sae"),
                         "dead latents in the auxiliary loss; default d_in // 2"),
        "aux_coefficient": _Option(1 / 32, _real(0.0), "weight α of the auxiliary loss; default 1/32"),
        "dead_tokens": _Option(None, _int_in(0), "tokens without firing that make a latent dead; default "
                                                 "dead_fraction of the run's tokens; 0 disables AuxK"),
        "dead_fraction": _Option(0.05, _real(0.0, 1.0, lo_open=True),
                                 "the dead window as a share of the run's training tokens, when dead_tokens is unset"),
        "lr_decay": _Option(0.0, _real(0.0, 1.0),
                            "the learning rate decays linearly to 0 over this last share of the steps; default 0"),
    }
    fast_form = {"activation": "topk"}  # the sparse-aware step (fast.py) computes this objective exactly
    revive_target = None  # AuxK revives dead latents: the loop skips the paper's resampling (and its input pool)
    UNSCALED_DEAD_TOKENS = 10_000_000  # Gao et al.'s window, used only before a trainer has said how long the run is

    @classmethod
    def validate_options(cls, cfg: DictionaryConfig) -> None:
        super().validate_options(cfg)
        if "k" not in cfg.options:
            raise ConfigError(f"dictionary kind {cfg.kind!r} needs option k (active latents per token), e.g. "
                              f"DictionaryConfig(kind={cfg.kind!r}, options={{'k': 32}})")

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.opts = self.resolved_options(cfg)
        with torch.no_grad():
            self.W_enc_DF.copy_(self.W_dec_FD.T)  # encoder initialised as the decoder's transpose (Gao et al.)
        self.register_buffer("tokens_since_fired_F", torch.zeros(cfg.d_sae, dtype=torch.long))
        self._step_stats: dict | None = None
        self.lr_decay_fraction = float(self.opts["lr_decay"])  # read by the trainer (lr_at)
        fixed = self.opts["dead_tokens"]
        self.dead_tokens: int = self.UNSCALED_DEAD_TOKENS if fixed is None else int(fixed)

    def begin_training(self, steps: int, batch_size: int) -> None:
        """Scale an unset dead window to the run: ``dead_fraction`` of its ``steps × batch_size`` tokens, at least
        one batch (a window shorter than a step would call every latent that missed one batch dead)."""
        if self.opts["dead_tokens"] is None:
            self.dead_tokens = self.scaled_dead_tokens(self.opts["dead_fraction"], steps, batch_size)

    @staticmethod
    def scaled_dead_tokens(dead_fraction: float, steps: int, batch_size: int) -> int:
        """The run-scaled window: ``dead_fraction`` of ``steps × batch_size`` tokens, at least one batch."""
        return max(int(batch_size), int(round(dead_fraction * steps * batch_size)))

    # -- encoding ------------------------------------------------------------------------------------------------
    @property
    def k(self):
        return self.opts["k"]

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return topk_activation(self.pre_acts(x_BD), self.k)

    def train_activation(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """The activation used by the training objective (TopK per token here; BatchTopK overrides)."""
        return topk_activation(pre_BF, self.k)

    # -- dead latents and the auxiliary loss --------------------------------------------------------------------
    def dead_latents(self) -> torch.Tensor:
        """Bool mask of latents silent for at least ``dead_tokens`` training tokens (all False if AuxK is off)."""
        n = self.dead_tokens
        if n <= 0:
            return torch.zeros_like(self.tokens_since_fired_F, dtype=torch.bool)
        return self.tokens_since_fired_F >= n

    def aux_loss(self, pre_BF: torch.Tensor, x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
        dead_F = self.dead_latents()
        n_dead = int(dead_F.sum())
        k_aux = min(self.opts["k_aux"], n_dead)
        if k_aux == 0 or self.opts["aux_coefficient"] == 0:
            return pre_BF.new_zeros(())
        masked = pre_BF.masked_fill(~dead_F, float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        z_BF = torch.zeros_like(pre_BF).scatter(-1, idx, vals.relu())
        e_hat_BD = z_BF @ self.W_dec_FD
        e_BD = (x_BD - x_hat_BD).detach()
        return (e_hat_BD - e_BD).pow(2).mean()

    def loss(self, x_BD: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        pre_BF = self.pre_acts(x_BD)
        f_BF = self.train_activation(pre_BF)
        x_hat_BD = self.decode(f_BF)
        mse = (x_hat_BD - x_BD).pow(2).mean()
        aux = self.aux_loss(pre_BF, x_BD, x_hat_BD)
        self._record_step(f_BF)
        with torch.no_grad():
            l0 = (f_BF > 0).float().sum(-1).mean()
        return {"loss": mse + self.opts["aux_coefficient"] * aux, "mse": mse, "sparsity": l0,
                "aux": aux.detach(), "f_BF": f_BF}

    @torch.no_grad()
    def _record_step(self, f_BF: torch.Tensor) -> None:
        self._record_sparse((f_BF > 0).any(0), f_BF.shape[0], f_BF[f_BF > 0])

    @torch.no_grad()
    def _record_sparse(self, fired_F: torch.Tensor, tokens: int, positive: torch.Tensor) -> None:
        """The step's firing record from its strictly positive activations (``positive``; the fast step calls this
        directly).  Committed in after_optimizer_step, so only real training steps move the statistics."""
        self._step_stats = {"fired_F": fired_F, "tokens": tokens}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        st, self._step_stats = self._step_stats, None
        if st is None:
            return
        t = self.tokens_since_fired_F
        fired_F, tokens = st["fired_F"].to(t.device), st["tokens"]
        if D.active():  # data parallel: every rank sees its share of the batch; count the global batch
            fired_F = D.all_reduce_(fired_F.to(torch.uint8), "max").bool()
            tokens *= D.world()
        cap = max(self.dead_tokens, 1)  # saturate: keeps the counter exact when saved as float32
        t.add_(tokens).clamp_(max=cap).masked_fill_(fired_F, 0)

    def resample(self, dead_F, x_ND, optimizer, generator=None) -> int:
        """Not part of the TopK recipe: the auxiliary loss revives dead latents instead."""
        return 0


# ---- BatchTopK (Bussmann et al. 2024) --------------------------------------------------------------------------

def batch_topk_activation(pre_BF: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the k·B largest ReLU'd pre-activations of the whole batch, zero the rest."""
    acts = pre_BF.relu()
    flat = acts.flatten()
    idx = batch_topk_indices(acts, int(k * pre_BF.shape[0]))
    return torch.zeros_like(flat).scatter(-1, idx, flat.index_select(0, idx)).reshape(acts.shape)


@register_kind("batchtopk")
class BatchTopKDictionary(TopKDictionary):
    """BatchTopK dictionary (Bussmann et al. 2024): k active latents per token on average over a batch.

    Training (``loss``; the mean L0 over the batch is k, per-token L0 varies)::

        pre = (x − b_dec) W_enc + b_enc
        f   = BatchTopK_{k·B}(ReLU(pre))        # the k·B largest entries of the whole (B, F) batch kept
        x̂   = f W_dec + b_dec
        L   = mean (x − x̂)² + aux_coefficient · AuxK        (AuxK and dead tracking as TopK)
        θ  ← (1 − threshold_lr) θ + threshold_lr · min{ f_bi : f_bi > 0 }   (once per optimiser step; the first
                                                               step sets θ to its minimum, so no bias to 0)

    Inference (``encode``, per token, so a token's features do not depend on its batch)::

        f = ReLU(pre) · 1[pre > θ]              (a JumpReLU with one threshold θ for every latent)

    Under data parallelism each rank keeps the k·B_rank largest of its own share (the usual approximation) and θ
    uses the minimum over all ranks.  ``threshold`` (θ, a scalar) and ``threshold_updates`` are buffers, saved
    with the dictionary; before any training step θ = 0 and ``encode`` is a plain ReLU.  ``encode_batch`` gives
    the training-time activation.
    Options: ``k`` (required; may be fractional), ``threshold_lr``, and TopK's ``k_aux``, ``aux_coefficient``,
    ``dead_tokens``, ``dead_fraction``, ``lr_decay``.  θ forgets earlier batches' minima at (1 − lr) per step, so
    it lags the weights by ~1/lr steps: Bussmann et al.'s and SAELens's 0.01 suits runs of ≳ 1,000 steps, but in a
    short run θ still remembers weights that activated more strongly — the default run's A/2 (300 steps, LR
    decayed over the last 60) ended with θ 0.875 against its last batches' 0.76, inference L0 11.2 for k 16 (on
    the tiny run's activations, 150 steps: L0 9.6 at 0.01, 15.1 at 0.05).  By default (``threshold_lr`` unset)
    the rate is scaled to the run, set by the trainer through ``begin_training``: max(0.01, 10 / steps), a
    running average over about the last tenth of the run and never shorter-lived than 0.01's.  Until then 0.01.
    """

    OPTIONS = {
        **TopKDictionary.OPTIONS,
        "k": _Option(None, lambda v, c: None if _is_real(v) and 0 < v <= c.d_sae else
                     f"must be a number in (0, d_sae={c.d_sae}]", "mean active latents per token, required"),
        "threshold_lr": _Option(None, lambda v, c: None if v is None else _real(0.0, 1.0, lo_open=True)(v, c),
                                "rate of the running average that estimates the inference threshold θ; default "
                                "max(0.01, 10 / steps), scaled to the run"),
    }
    fast_form = {"activation": "batchtopk"}
    THRESHOLD_LR_FLOOR: ClassVar[float] = 0.01       # Bussmann et al.'s and SAELens's rate
    THRESHOLD_WINDOW_FRACTION: ClassVar[float] = 0.1  # the scaled rate averages over about this share of the run

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))
        fixed = self.opts["threshold_lr"]
        self.threshold_lr: float = self.THRESHOLD_LR_FLOOR if fixed is None else float(fixed)

    def begin_training(self, steps: int, batch_size: int) -> None:
        super().begin_training(steps, batch_size)
        if self.opts["threshold_lr"] is None:
            self.threshold_lr = self.scaled_threshold_lr(steps)

    @classmethod
    def scaled_threshold_lr(cls, steps: int) -> float:
        """The run-scaled rate: an average over about the last ``THRESHOLD_WINDOW_FRACTION`` of ``steps``, at
        least ``THRESHOLD_LR_FLOOR``."""
        return min(1.0, max(cls.THRESHOLD_LR_FLOOR, 1.0 / max(1.0, cls.THRESHOLD_WINDOW_FRACTION * steps)))

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x_BD)
        return pre.relu() * (pre > self.threshold)

    def encode_batch(self, x_BD: torch.Tensor) -> torch.Tensor:
        return batch_topk_activation(self.pre_acts(x_BD), self.k)

    def train_activation(self, pre_BF: torch.Tensor) -> torch.Tensor:
        return batch_topk_activation(pre_BF, self.k)

    @torch.no_grad()
    def _record_sparse(self, fired_F: torch.Tensor, tokens: int, positive: torch.Tensor) -> None:
        super()._record_sparse(fired_F, tokens, positive)
        self._step_stats["min_positive"] = positive.min() if positive.numel() else None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        st = self._step_stats
        super().after_optimizer_step()
        if st is None:
            return
        m = st["min_positive"] if st["min_positive"] is not None else torch.tensor(float("inf"))
        m = m.to(self.threshold).clone()
        if D.active():  # data parallel: the minimum over the global batch, so every rank keeps the same θ
            D.all_reduce_(m, "min")
        if not torch.isfinite(m):
            return
        if int(self.threshold_updates) == 0:
            self.threshold.copy_(m)
        else:
            lr = self.threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * m)
        self.threshold_updates.add_(1)


# ---- JumpReLU (Rajamanoharan et al. 2024) ----------------------------------------------------------------------

def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLUFn(torch.autograd.Function):
    """f = z · H(z − θ).  ∂f/∂z = H(z − θ); pseudo-derivative ðf/ðθ = −(θ/ε) K((z − θ)/ε), K the rectangle."""

    @staticmethod
    def forward(ctx, z_BF, theta_F, eps):
        ctx.save_for_backward(z_BF, theta_F)
        ctx.eps = eps
        return z_BF * (z_BF > theta_F).to(z_BF.dtype)

    @staticmethod
    def backward(ctx, g_BF):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        gz = (z > theta).to(g_BF.dtype) * g_BF
        gtheta = (-(theta / eps) * _rectangle((z - theta) / eps) * g_BF).sum(0)
        return gz, gtheta, None


class _StepFn(torch.autograd.Function):
    """H(z − θ).  No gradient to z; pseudo-derivative ðH/ðθ = −(1/ε) K((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, z_BF, theta_F, eps):
        ctx.save_for_backward(z_BF, theta_F)
        ctx.eps = eps
        return (z_BF > theta_F).to(z_BF.dtype)

    @staticmethod
    def backward(ctx, g_BF):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        gtheta = (-(1.0 / eps) * _rectangle((z - theta) / eps) * g_BF).sum(0)
        return None, gtheta, None


def jumprelu(z_BF: torch.Tensor, theta_F: torch.Tensor, eps: float) -> torch.Tensor:
    return _JumpReLUFn.apply(z_BF, theta_F, eps)


def heaviside_step(z_BF: torch.Tensor, theta_F: torch.Tensor, eps: float) -> torch.Tensor:
    return _StepFn.apply(z_BF, theta_F, eps)


@register_kind("jumprelu")
class JumpReLUDictionary(_OptionsMixin, Dictionary):
    """JumpReLU dictionary (Rajamanoharan et al. 2024) with a per-latent learned threshold and an L0 penalty.

    Forward::

        pre = (x − b_dec) W_enc + b_enc
        θ   = exp(log_threshold)                 (per latent, > 0)
        f   = pre · H(pre − θ)                    # JumpReLU: 0 below θ, the pre-activation itself above
        x̂   = f W_dec + b_dec

    Loss, with λ = ``DictionaryConfig.l1_coefficient`` (here the L0 coefficient), linearly warmed up over
    ``sparsity_warmup_steps``::

        L = mean (x − x̂)² + λ · mean_batch Σ_i H(pre_i − θ_i)

    H has zero gradient almost everywhere, so θ is trained with straight-through estimators (the paper's
    pseudo-derivatives, rectangle kernel K(u) = 1[|u| < ½], bandwidth ε)::

        ð f_i / ð θ_i = −(θ_i / ε) K((pre_i − θ_i) / ε)        ð H(pre_i − θ_i) / ð θ_i = −(1/ε) K((pre_i − θ_i) / ε)

    and H passes no gradient to the pre-activations (the paper).  The paper feeds ``pre = x W_enc + b_enc``;
    subtracting b_dec first, as every kind here does, is the reparametrisation b_enc → b_enc − b_dec W_enc.
    Initialisation: W_enc = W_decᵀ, θ = ``threshold_init``.  Options ``threshold_init`` (0.001) and
    ``bandwidth`` (ε, 0.001) are the paper's values for activations normalised to unit mean squared norm: they
    are in activation units, so scale them to your data (our MLP activations, ~0.4 per neuron: about 0.5 each).
    Adam moves log θ by about lr per step, so θ travels little from its initial value in a short run.
    Resampling is not part of the recipe (returns 0).
    """

    OPTIONS = {
        "threshold_init": _Option(0.001, _real(0.0, lo_open=True), "initial threshold θ, in activation units"),
        "bandwidth": _Option(0.001, _real(0.0, lo_open=True), "ε of the straight-through estimator's kernel"),
        "sparsity_warmup_steps": _Option(0, _int_in(0), "steps over which λ rises linearly from 0"),
    }

    revive_target = None  # resampling is not part of the recipe: the loop skips it

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.opts = self.resolved_options(cfg)
        with torch.no_grad():
            self.W_enc_DF.copy_(self.W_dec_FD.T)
        self.log_threshold_F = nn.Parameter(torch.full((cfg.d_sae,), math.log(self.opts["threshold_init"])))

    @property
    def threshold_F(self) -> torch.Tensor:
        return self.log_threshold_F.exp()

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x_BD)
        return pre * (pre > self.threshold_F).to(pre.dtype)

    def sparsity_coefficient(self, step: int | None) -> float:
        w = self.opts["sparsity_warmup_steps"]
        if step is None or w <= 0:
            return self.cfg.l1_coefficient
        return self.cfg.l1_coefficient * min(1.0, (step + 1) / w)

    def loss(self, x_BD: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        eps = self.opts["bandwidth"]
        pre_BF = self.pre_acts(x_BD)
        theta_F = self.threshold_F
        f_BF = jumprelu(pre_BF, theta_F, eps)
        x_hat_BD = self.decode(f_BF)
        mse = (x_hat_BD - x_BD).pow(2).mean()
        l0 = heaviside_step(pre_BF, theta_F, eps).sum(-1).mean()
        return {"loss": mse + self.sparsity_coefficient(step) * l0, "mse": mse, "sparsity": l0.detach(),
                "f_BF": f_BF}

    def resample(self, dead_F, x_ND, optimizer, generator=None) -> int:
        """Not part of the JumpReLU recipe."""
        return 0
