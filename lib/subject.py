"""The subject model: the one place that knows TransformerLens.

Everything else asks a ``SubjectModel`` for logits, losses, MLP activations at the hook under study, losses with
that hook replaced (splicing a dictionary's reconstruction) or the MLP output zero-ablated, and the weights the
feature analyses need (``W_out``, ``W_U``, the final LayerNorm).  Moving to TransformerLens 4's TransformerBridge or
another library means rewriting this module alone.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from .config import ModelConfig
from .errors import CheckpointMismatchError, ConfigError
from .io import atomic_write_json, load_safetensors, save_safetensors

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")


def _tl():
    import transformer_lens  # noqa: F401  (imported lazily: it is slow to import)
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    return HookedTransformer, HookedTransformerConfig


class _NextTokenCE(torch.autograd.Function):
    """mean_(b, t < T-1) [logsumexp_v logits[b, t, v] − logits[b, t, tokens[b, t+1]]], in fp32 from logits of any
    float dtype, one batch row at a time, with a hand-written backward: dL/dlogits = (softmax − onehot) / N written
    straight into a gradient of the logits' dtype (0 at the last position).

    Why: at the default's 4,096 × 4,096 logits a step, autograd's log_softmax → slice → gather chain makes about
    ten full passes over them (an fp32 copy, the log-probs, two zero-filled gradients for the gather and the slice,
    a scatter, the softmax backward, a cast back to bf16): 0.23 s of the transformer's 0.29 s CPU step.  This is
    three passes (forward: logsumexp; backward: exp and the write), 0.08 s.  ``F.cross_entropy`` measured slower
    still (0.33 s).  CUDA has fused kernels for the plain form, which ``next_token_loss`` uses there."""

    @staticmethod
    def forward(ctx, logits_BTV, tokens_BT):
        B, T, _ = logits_BTV.shape
        tgt_BS = tokens_BT[:, 1:]
        lse_BS = torch.empty(B, T - 1, dtype=torch.float32, device=logits_BTV.device)
        for b in range(B):  # one (T-1, V) block at a time: its fp32 copy stays in cache
            torch.logsumexp(logits_BTV[b, :-1].float(), -1, out=lse_BS[b])
        picked_BS = logits_BTV[:, :-1].gather(2, tgt_BS.unsqueeze(-1)).squeeze(-1).float()
        ctx.save_for_backward(logits_BTV, tgt_BS, lse_BS)
        return (lse_BS - picked_BS).mean()

    @staticmethod
    def backward(ctx, g):
        logits_BTV, tgt_BS, lse_BS = ctx.saved_tensors
        B, T, _ = logits_BTV.shape
        scale = g.float() / tgt_BS.numel()
        grad_BTV = torch.empty_like(logits_BTV)
        grad_BTV[:, -1].zero_()
        pos = torch.arange(T - 1, device=logits_BTV.device)
        for b in range(B):
            p_SV = logits_BTV[b, :-1].to(torch.float32, copy=True).sub_(lse_BS[b].unsqueeze(-1)).exp_()  # softmax
            p_SV[pos, tgt_BS[b]] -= 1.0
            grad_BTV[b, :-1].copy_(p_SV.mul_(scale))
        return grad_BTV, None


def next_token_loss(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """Cross-entropy of predicting ``tokens_BT[:, 1:]`` from ``logits_BTV[:, :-1]``, computed in fp32: the mean, or
    per position (B, T-1) with ``per_token`` (TransformerLens's ``lm_cross_entropy_loss``, with fewer passes over
    the logits on the CPU; see ``_NextTokenCE``)."""
    if per_token:
        lp = logits_BTV[:, :-1].float()
        return torch.logsumexp(lp, -1) - lp.gather(2, tokens_BT[:, 1:].unsqueeze(-1)).squeeze(-1)
    if logits_BTV.is_cuda:
        V = logits_BTV.shape[-1]
        return torch.nn.functional.cross_entropy(logits_BTV[:, :-1].reshape(-1, V).float(),
                                                 tokens_BT[:, 1:].reshape(-1))
    return _NextTokenCE.apply(logits_BTV, tokens_BT)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; asking for a CUDA device this machine lacks is a ConfigError
    (torch would fail later, deep inside a stage, with an AssertionError)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"device {device!r} was asked for but this machine has no CUDA GPU that torch can use; "
                              f"use --device auto (or cpu)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device {device!r} does not exist: this machine has {n} CUDA device(s), "
                              f"cuda:0…cuda:{n - 1}")
    return dev


class SubjectModel:
    """A transformer whose MLP we study.  ``hook`` names the activations dictionaries are trained on."""

    def __init__(self, model, hook: str = "blocks.0.mlp.hook_post", layer: int = 0, tokenizer=None):
        self.model = model
        self.hook = hook
        self.layer = layer
        self.tokenizer = tokenizer
        if hook not in model.hook_dict:
            raise ConfigError(f"hook {hook!r} not in the model; available MLP hooks: "
                              f"{[k for k in model.hook_dict if 'mlp' in k]}")

    # ---- construction -----------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: ModelConfig, d_vocab: int, seed: int, device: str | torch.device = "cpu") -> "SubjectModel":
        HookedTransformer, HookedTransformerConfig = _tl()
        tl_cfg = HookedTransformerConfig(
            n_layers=cfg.n_layers, d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp,
            d_vocab=d_vocab, n_ctx=cfg.n_ctx, act_fn=cfg.act_fn, normalization_type=cfg.normalization_type,
            seed=seed, device=str(device), default_prepend_bos=False, positional_embedding_type="standard",
        )
        return cls(HookedTransformer(tl_cfg), hook=f"blocks.{cfg.n_layers - 1}.mlp.hook_post", layer=cfg.n_layers - 1)

    @classmethod
    def from_pretrained(cls, name: str, layer: int = 0, device: str | torch.device = "cpu", **kwargs) -> "SubjectModel":
        """A pretrained TransformerLens model by name (e.g. ``gelu-1l``: d_mlp 2048, GELU).  Needs the internet
        (or a populated Hugging Face cache) the first time."""
        HookedTransformer, _ = _tl()
        try:
            model = HookedTransformer.from_pretrained(name, device=str(device), **kwargs)
        except Exception as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = ("HF_HUB_OFFLINE=1 is set, so nothing can be downloaded: unset it and go online once, or build "
                    "a local model with SubjectModel.build" if offline else
                    "check the model name against transformer_lens's official model list and your connection")
            raise ConfigError(f"could not load pretrained model {name!r} ({type(e).__name__}: {e}); {hint}") from e
        from .tokenizer import Tokenizer

        tok = Tokenizer.from_hf(model.tokenizer) if getattr(model, "tokenizer", None) is not None else None
        return cls(model, hook=f"blocks.{layer}.mlp.hook_post", layer=layer, tokenizer=tok)

    def randomized(self, seed: int = 0) -> "SubjectModel":
        """The paper's control, a *randomized transformer*: a copy of this model in which each weight matrix
        (``weight_matrices``: embeddings, positions, attention, MLP and unembedding weights) has its entries
        shuffled — a seeded permutation of all its entries, so each matrix keeps its multiset of values
        (scale, sparsity) and loses its structure.  Biases and LayerNorm gains (vectors) are kept.  This model
        is left unchanged."""
        import copy

        g = torch.Generator().manual_seed(int(seed))
        clone = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, p in clone.named_parameters():
                if _is_weight_matrix(name, p):
                    flat = p.detach().reshape(-1)
                    perm = torch.randperm(flat.numel(), generator=g).to(flat.device)
                    p.copy_(flat[perm].view_as(p))
        out = SubjectModel(clone, hook=self.hook, layer=self.layer, tokenizer=self.tokenizer)
        return out

    def weight_matrices(self) -> dict[str, torch.Tensor]:
        """The weight matrices ``randomized`` shuffles, by name: parameters named ``W_*`` with ≥ 2 dimensions
        (TransformerLens's per-head biases ``b_Q/b_K/b_V`` are 2-D but are biases)."""
        return {n: p.detach() for n, p in self.model.named_parameters() if _is_weight_matrix(n, p)}

    # ---- shape ------------------------------------------------------------------------------------------
    @property
    def d_mlp(self) -> int:
        return self.model.cfg.d_mlp

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @property
    def d_vocab(self) -> int:
        return self.model.cfg.d_vocab

    @property
    def n_ctx(self) -> int:
        return self.model.cfg.n_ctx

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self):
        return self.model.parameters()

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- running ----------------------------------------------------------------------------------------
    def loss(self, tokens: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        return next_token_loss(self.model(tokens, return_type="logits"), tokens, per_token)

    @torch.no_grad()
    def mlp_acts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Activations at ``self.hook``, shape (batch, pos, d_mlp); stops before later layers and the unembed."""
        store = {}

        def grab(act, hook):
            store["a"] = act

        self.model.run_with_hooks(tokens, return_type=None, stop_at_layer=self.layer + 1,
                                  fwd_hooks=[(self.hook, grab)])
        return store["a"]

    def mlp_acts_function(self, probe_tokens: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The fastest exact way to ``mlp_acts`` here: a ``FastMLPActs`` (fused, thread-safe) when it applies and
        matches this model on ``probe_tokens``, else the hooked ``self.mlp_acts`` (not thread-safe: its hooks sit
        on shared modules)."""
        if str(self.device) != "cpu":
            return self.mlp_acts
        try:
            fast = FastMLPActs(self)
        except (ConfigError, KeyError, AttributeError):
            return self.mlp_acts
        return fast if fast.verify(self, probe_tokens) else self.mlp_acts

    @torch.no_grad()
    def loss_with_hook(self, tokens: torch.Tensor, hook: str, fn: Callable, per_token: bool = False) -> torch.Tensor:
        logits = self.model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, lambda act, hook: fn(act))])
        return next_token_loss(logits, tokens, per_token)

    @torch.no_grad()
    def loss_spliced(self, tokens: torch.Tensor, replace: Callable[[torch.Tensor], torch.Tensor], per_token=False):
        """Loss with the MLP hook's activations replaced by ``replace(acts)`` (e.g. a reconstruction)."""
        return self.loss_with_hook(tokens, self.hook, replace, per_token)

    @torch.no_grad()
    def logits_spliced(self, tokens_BT: torch.Tensor,
                       replace: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (batch, pos, d_vocab) with the MLP hook's activations replaced by ``replace(acts)`` — an
        intervention (``interventions.py``); ``replace=None``: the clean forward, with no hook at all."""
        if replace is None:
            return self.model(tokens_BT, return_type="logits")
        return self.model.run_with_hooks(tokens_BT, return_type="logits",
                                         fwd_hooks=[(self.hook, lambda act, hook: replace(act))])

    @torch.no_grad()
    def loss_mlp_zero_ablated(self, tokens: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        return self.loss_with_hook(tokens, f"blocks.{self.layer}.hook_mlp_out", torch.zeros_like, per_token)

    # ---- weights the analyses use ---------------------------------------------------------------------------
    @property
    def W_out(self) -> torch.Tensor:   # (d_mlp, d_model)
        return self.model.blocks[self.layer].mlp.W_out

    @property
    def W_U(self) -> torch.Tensor:     # (d_model, d_vocab)
        return self.model.W_U

    @property
    def ln_final_weight(self) -> torch.Tensor | None:
        ln = getattr(self.model, "ln_final", None)
        return getattr(ln, "w", None)

    @torch.no_grad()
    def final_ln_scale(self, tokens_BT: torch.Tensor) -> float:
        """The mean scale the final LayerNorm divides by, over non-BOS positions of ``tokens_BT`` (the paper's
        LayerNorm approximation freezes it); 1.0 when the model has no final LayerNorm with a scale hook."""
        hook = "ln_final.hook_scale"
        if hook not in getattr(self.model, "hook_dict", {}):
            return 1.0
        store = {}

        def grab(act, hook):
            store["s"] = act

        self.model.run_with_hooks(tokens_BT.to(self.device), return_type=None, fwd_hooks=[(hook, grab)])
        return float(store["s"][:, 1:].double().mean())

    # ---- persistence ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights by TransformerLens name (what ``model.safetensors`` holds)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.state_dict(), directory / "model.safetensors")
        atomic_write_json(directory / "config.json", {"tl_config": _tl_cfg_dict(self.model.cfg), "hook": self.hook,
                                                      "layer": self.layer, **(extra or {})})

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SubjectModel":
        HookedTransformer, HookedTransformerConfig = _tl()
        directory = Path(directory)
        if not (directory / "model.safetensors").exists():
            raise FileNotFoundError(f"no trained transformer at {directory}; run its training stage first")
        meta = json.loads((directory / "config.json").read_text())
        cfg = HookedTransformerConfig(**{**meta["tl_config"], "device": str(device)})
        model = HookedTransformer(cfg)
        model.load_state_dict(load_safetensors(directory / "model.safetensors", device=str(device)))
        return cls(model, hook=meta["hook"], layer=meta["layer"])

    def check_matches(self, cfg: ModelConfig, d_vocab: int, where: str) -> None:
        c = self.model.cfg
        mine = {"d_model": c.d_model, "d_mlp": c.d_mlp, "n_layers": c.n_layers, "n_ctx": c.n_ctx,
                "n_heads": c.n_heads, "act_fn": c.act_fn, "d_vocab": c.d_vocab}
        want = {"d_model": cfg.d_model, "d_mlp": cfg.d_mlp, "n_layers": cfg.n_layers, "n_ctx": cfg.n_ctx,
                "n_heads": cfg.n_heads, "act_fn": cfg.act_fn, "d_vocab": d_vocab}
        diff = [f"{k}: checkpoint {mine[k]!r} vs config {want[k]!r}" for k in mine if mine[k] != want[k]]
        if diff:
            raise CheckpointMismatchError(f"the transformer checkpoint at {where} was written by a different config "
                                          f"({'; '.join(diff)}); use a fresh --out directory or delete {where}")


class FastMLPActs:
    """A fused forward to the MLP activations of a one-layer attention + MLP model (LayerNorm, learned
    positions, causal attention): ``F.layer_norm`` and ``F.scaled_dot_product_attention`` instead of the hooked
    module graph — 1.6× faster single-threaded on a CPU and thread-safe (no hooks), so chunks can run in parallel.

    It reads the standard weight names of the subject model's state dict, and is trusted only after it matches
    ``model.mlp_acts`` on real tokens (:meth:`verify`); ``SubjectModel.mlp_acts_function`` falls back to
    ``model.mlp_acts`` otherwise."""

    def __init__(self, model):
        c = model.model.cfg
        supported = (c.n_layers == 1 and model.layer == 0 and model.hook == "blocks.0.mlp.hook_post"
                     and c.normalization_type == "LN" and c.positional_embedding_type == "standard"
                     and c.act_fn in ("relu", "gelu") and not getattr(c, "attn_only", False)
                     and not getattr(c, "parallel_attn_mlp", False) and not getattr(c, "gated_mlp", False)
                     and getattr(c, "attention_dir", "causal") == "causal"
                     and not getattr(c, "use_local_attn", False)
                     and (getattr(c, "attn_scores_soft_cap", -1.0) or -1.0) <= 0
                     and getattr(c, "n_key_value_heads", None) in (None, c.n_heads))
        if not supported:
            raise ConfigError("the fused forward supports one-layer LayerNorm attention + MLP models only")
        sd = {k: v.detach().float() for k, v in model.model.state_dict().items()}
        H, dh, d = c.n_heads, c.d_head, c.d_model
        self.W_E, self.W_pos = sd["embed.W_E"], sd["pos_embed.W_pos"]
        self.ln1 = (sd["blocks.0.ln1.w"], sd["blocks.0.ln1.b"])
        self.ln2 = (sd["blocks.0.ln2.w"], sd["blocks.0.ln2.b"])
        Wq, Wk, Wv = (sd[f"blocks.0.attn.W_{n}"].permute(1, 0, 2).reshape(d, H * dh) for n in "QKV")
        self.W_qkv = torch.cat([Wq, Wk, Wv], 1).contiguous()
        self.b_qkv = torch.cat([sd[f"blocks.0.attn.b_{n}"].reshape(-1) for n in "QKV"])
        self.W_O = sd["blocks.0.attn.W_O"].reshape(H * dh, d).contiguous()
        self.b_O = sd["blocks.0.attn.b_O"]
        self.W_in, self.b_in = sd["blocks.0.mlp.W_in"].contiguous(), sd["blocks.0.mlp.b_in"]
        self.eps = float(c.eps)
        self.scale = 1.0 / float(model.model.blocks[0].attn.attn_scale)
        self.H, self.dh, self.d = H, dh, d
        self.act = torch.relu if c.act_fn == "relu" else torch.nn.functional.gelu

    @torch.no_grad()
    def __call__(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as Fn

        B, T = tokens_BT.shape
        H, dh, d = self.H, self.dh, self.d
        resid = self.W_E[tokens_BT] + self.W_pos[:T]
        h = Fn.layer_norm(resid, (d,), *self.ln1, eps=self.eps)
        qkv = torch.addmm(self.b_qkv, h.view(B * T, d), self.W_qkv).view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
        z = Fn.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True, scale=self.scale)
        resid = resid + torch.addmm(self.b_O, z.transpose(1, 2).reshape(B * T, H * dh), self.W_O).view(B, T, d)
        h = Fn.layer_norm(resid, (d,), *self.ln2, eps=self.eps)
        return self.act(torch.addmm(self.b_in, h.view(B * T, d), self.W_in)).view(B, T, -1)

    def verify(self, model, tokens_BT: torch.Tensor, tol: float = 1e-4) -> bool:
        ref = model.mlp_acts(tokens_BT).float()
        got = self(tokens_BT)
        return got.shape == ref.shape and bool(((got - ref).abs().max() <= tol * (1 + ref.abs().max())).item())


def _is_weight_matrix(name: str, p: torch.Tensor) -> bool:
    return p.ndim >= 2 and name.rsplit(".", 1)[-1].startswith("W_")


_TL_KEYS = ("n_layers", "d_model", "d_head", "n_heads", "d_mlp", "d_vocab", "n_ctx", "act_fn", "normalization_type",
            "seed", "default_prepend_bos", "positional_embedding_type", "attn_only", "d_vocab_out")


def _tl_cfg_dict(cfg) -> dict:
    return {k: getattr(cfg, k) for k in _TL_KEYS if hasattr(cfg, k)}
