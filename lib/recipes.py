"""Training recipes beyond the paper's: how a dictionary of a kind is initialised, what exactly it minimises, on
what schedule, and which features revival aims at.  Select one per dictionary by config::

    DictionaryConfig(kind="relu", recipe="april2024", l1_coefficient=4e-3)
    DictSpec("A/1", 4096, 4e-3, recipe="april2024")               # in a run's config

The recipes (``registry.available_recipes()``):

``tm2023`` — *Towards Monosemanticity* (2023), every kind's default and what a config without ``recipe`` means:
    the kind's own class (``sae.ReluDictionary`` for ``relu``, the classes in ``kinds.py``); b_dec at the
    geometric median, unit-norm decoder rows, constant LR after warm-up, the paper's resampling of features
    silent for a window (``SAETrainConfig.resample_at``).  TopK/BatchTopK under it revive by AuxK, whose dead
    window is scaled to the run (``kinds.TopKDictionary``).

``april2024`` (kind ``relu``) — Anthropic's April 2024 update, ``April2024Dictionary`` below.

``tm2023_lowmode`` (kind ``relu``) — tm2023 with revival aimed at the low-density mode, ``ReluLowModeDictionary``.

A recipe is a subclass registered with ``@register_kind(kind, recipe=name)``: its objective is its ``loss``
(the fast step, ``fast.py``, computes it where the class declares ``fast_form``), its loop-level choices are the
class attributes the trainer reads (``sae.Dictionary``: ``init_b_dec_to_median``, ``bias_sets_density``,
``lr_decay_fraction``, ``grad_clip``, ``revive_target``), and anything it states as a share of the run is set in
``begin_training``.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch

from .kinds import _Option, _OptionsMixin
from .registry import register_kind
from .sae import Dictionary, DictionaryConfig, ReluDictionary


@register_kind("relu", recipe="april2024")
class April2024Dictionary(_OptionsMixin, Dictionary):
    """ReLU dictionary trained by Anthropic's April 2024 recipe ("Update on how we train SAEs").

    Forward — no pre-encoder bias subtraction (the February 2024 update: with ReLU MLP inputs, all ≥ 0, x − b_dec
    acts as a large negative bias that the L1 term uses to silence features before they find a direction)::

        f  = ReLU(x W_e + b_e)
        x̂  = f W_d + b_d                    (rows of W_d free in norm: no projection, no renormalisation)

    Objective, with the decoder norm inside the penalty (so shrinking W_d,i cannot buy a smaller L1)::

        L   = mean_{batch, elements}(x − x̂)² + λ_t · mean_batch Σ_i f_i ‖W_d,i‖
        λ_t = λ · min(1, (t + 1) / W),   W = max(⌈0.05 T⌉, min(60, ⌊T / 4⌋))      (T steps in the run)

    The update warms λ up over the first 5 % of the steps; a run of its length spends thousands of steps there.
    Ours are a few hundred, and Adam needs a number of *steps*, not a share of the run, to move the tied encoder
    off its random start before the full penalty arrives: every input is ≥ 0 (ReLU MLP activations), so the L1
    gradient of every encoder weight of a firing feature has one sign and Adam's normalised steps lower its
    pre-activation on all inputs at once.  Hence a floor of 60 steps (a quarter of the run at most).  Measured on
    the default run's A/2 (16,384 features, 300 steps, λ 8e-3; dead = silent on 262k store rows): W = 15 (the bare
    5 %) left 9,821 dead in the demo, 9,248 of them silent already by step 51; W = 45: 646 dead, L0 130, FVU 0.327;
    W = 60: 216, L0 142, FVU 0.330; W = 90: 48, L0 156, FVU 0.337 (W = 15: L0 62, FVU 0.338 on the 40 % alive).
    A/1 (1,200 steps) has W = 60 either way.

    Schedule and initialisation: W_d,i = 0.1 · u_i with u_i uniform random unit directions, W_e = W_dᵀ,
    b_e = 0 (no starting density), b_d at the geometric median of a sample (option ``b_dec_init``, below);
    learning rate linearly to 0 over the last 20 % of
    the steps (after the loop's warm-up); global gradient norm clipped at 1; no resampling (the recipe reports
    < 1 % dead without it).  λ = ``DictionaryConfig.l1_coefficient``.  The MSE here is the project's mean over
    elements (the update sums over them), so λ is on tm2023's scale, not the update's (λ 5 there).  Adam β as
    ``SAETrainConfig.betas``.

    One measured departure from the update's text, an option: ``b_dec_init`` = ``"median"`` (default) starts the
    output bias b_d at the geometric median of the data (it is still not subtracted from the input); ``"zero"``
    is the update's b_d = 0.  The update centres its inputs (it normalises them); our ReLU MLP activations are all
    ≥ 0 with a large mean, so with b_d = 0 the features must first rebuild that mean, and a random direction whose
    projection of the mean is negative never fires: on the tiny run's activations (512 features, λ 3e-3, 240
    steps) b_d = 0 left 183 of 512 dead, L0 193, FVU 0.19; the median 14 dead, L0 82, FVU 0.09 (tm2023: 2 dead,
    L0 30, FVU 0.11).

    The forward is the ReLU shape, so the sparse-aware step (``fast.py``) computes it exactly (``fast_form``), and
    the base class's ``pre_acts``/``encode`` (``subtracts_b_dec = False``) with the ReLU kernels of ``sparse.py``
    encode it everywhere the analyses do.

    After the last step (``finish_training``) the decoder norms are folded into the features, as the update does
    before analysis: with n_i = ‖W_d,i‖, W_e[:, i] ← n_i W_e[:, i], b_e,i ← n_i b_e,i, W_d,i ← W_d,i / n_i.  ReLU is
    positively homogeneous, so f_i becomes n_i f_i, x̂ is unchanged and so is the penalty (Σ f_i n_i = Σ f'_i · 1);
    the saved dictionary has unit-norm decoder rows like every other, and its activations are in the units the
    analyses read.  Checkpoints hold the unfolded weights, so a resumed run continues the same optimisation.
    """

    fast_form: ClassVar[dict] = {"decoder_norm_l1": True}
    subtracts_b_dec = False
    bias_sets_density = False     # biases start at 0: no starting density
    lr_decay_fraction = 0.2
    grad_clip = 1.0
    revive_target = None          # no resampling
    SPARSITY_WARMUP_FRACTION: ClassVar[float] = 0.05
    SPARSITY_WARMUP_MIN_STEPS: ClassVar[int] = 60
    INIT_DECODER_NORM: ClassVar[float] = 0.1

    OPTIONS = {
        "b_dec_init": _Option("median", lambda v, c: None if v in ("median", "zero") else "must be 'median' or 'zero'",
                              "where b_dec starts: 'median' (the geometric median of the data) or 'zero' (the "
                              "update's text)"),
    }

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.opts = self.resolved_options(cfg)
        self.init_b_dec_to_median = self.opts["b_dec_init"] == "median"  # read by the trainer
        g = torch.Generator().manual_seed(cfg.seed)
        u_FD = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        with torch.no_grad():
            self.W_dec_FD.copy_(u_FD / u_FD.norm(dim=-1, keepdim=True).clamp_min(1e-8) * self.INIT_DECODER_NORM)
            self.W_enc_DF.copy_(self.W_dec_FD.T)
            self.b_enc_F.zero_()
            self.b_dec_D.zero_()
        self.sparsity_warmup_steps = 0  # set from the run's length by begin_training; 0: λ at full strength

    def begin_training(self, steps: int, batch_size: int) -> None:
        self.sparsity_warmup_steps = max(1, math.ceil(self.SPARSITY_WARMUP_FRACTION * steps),
                                         min(self.SPARSITY_WARMUP_MIN_STEPS, steps // 4))

    def sparsity_coefficient(self, step: int | None) -> float:
        """λ_t (see the class docstring); ``step=None`` (evaluation) is the full λ."""
        w = self.sparsity_warmup_steps
        if step is None or w <= 0:
            return self.cfg.l1_coefficient
        return self.cfg.l1_coefficient * min(1.0, (step + 1) / w)

    def loss(self, x_BD: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        x_hat_BD, f_BF = self(x_BD)
        mse = (x_hat_BD - x_BD).pow(2).mean()
        weighted_l1 = (f_BF * self.W_dec_FD.norm(dim=-1)).sum(-1).mean()
        return {"loss": mse + self.sparsity_coefficient(step) * weighted_l1, "mse": mse, "sparsity": weighted_l1,
                "f_BF": f_BF}

    @torch.no_grad()
    def finish_training(self) -> None:
        """Fold the decoder norms into the encoder (class docstring): the same function, unit-norm decoder rows."""
        n_F = self.W_dec_FD.norm(dim=-1)
        s_F = torch.where(n_F > 0, n_F, torch.ones_like(n_F))  # a zero row stays as it is
        self.W_enc_DF.mul_(s_F)
        self.b_enc_F.mul_(s_F)
        self.W_dec_FD.div_(s_F.unsqueeze(-1))

    # the decoder is unconstrained: neither the paper's projected gradient nor renormalisation
    def before_optimizer_step(self) -> None:
        pass

    def after_optimizer_step(self) -> None:
        pass

    def resample(self, dead_F, x_ND, optimizer, generator=None) -> int:
        """Not part of the April 2024 recipe."""
        return 0


@register_kind("relu", recipe="tm2023_lowmode")
class ReluLowModeDictionary(ReluDictionary):
    """The paper's ReLU-L1 dictionary and loop (``tm2023``), with revival aimed at the low-density mode.

    A short tm2023 run leaves most features in a low-density mode (~1e-4, no consistent tokens) that the paper's
    resampling never touches: they fire, so they are not dead.  Here, at each of ``SAETrainConfig.resample_at``,
    the loop counts each feature's firings since the previous revival (window of W tokens, density d_i =
    firings_i / W) and resamples, with the paper's loss²-weighted inputs (``Dictionary.resample``)::

        revive_i  ⇔  firings_i < floor_firings                              (dead, or nearly: a run-scaled floor)
                  or (the window's log-densities are bimodal — metrics.density_modes —
                      and d_i lies below the split between the modes)

    ``floor_firings`` = 3 (a density floor of 3 / W, so it scales with the run).  Objective, constraint and
    everything else are tm2023's (``sae`` module docstring); so is the fast step.
    """

    revive_target = "low_mode"
    FLOOR_FIRINGS: ClassVar[int] = 3


def low_mode_revival(fired_count_F: torch.Tensor, window_tokens: int, floor_firings: int) -> tuple[torch.Tensor, dict]:
    """The features ``ReluLowModeDictionary`` revives after a window of ``window_tokens`` tokens in which feature
    i fired ``fired_count_F[i]`` times (bool mask), and what decided it (for the training log)."""
    from .metrics import density_modes  # metrics is heavy to import (the subject model); only revival needs it

    count_F = fired_count_F.cpu()
    revive_F = count_F < floor_firings
    density = count_F.double().numpy() / max(1, window_tokens)
    modes = density_modes(density)
    info = {"window_tokens": int(window_tokens), "below_floor": int(revive_F.sum()), "low_mode": 0,
            "mode_threshold": None}
    if modes and modes["bimodal"]:
        low_F = torch.from_numpy((density > 0) & (density < modes["threshold"]))
        info.update(low_mode=int(low_F.sum()), mode_threshold=modes["threshold"])
        revive_F |= low_F
    return revive_F, info
