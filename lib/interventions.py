"""Interventions: run the subject model with a dictionary spliced in at its MLP hook (``SubjectModel.hook``,
``blocks.0.mlp.hook_post``) and edit features — or neurons, for contrast — on the way (*Towards Monosemanticity*,
"Interventions"; SAELens' steering).

The math, at one position (x ∈ R^D the MLP activation, f = encode(x) ∈ R^F, d_i = W_dec[i] of unit norm)::

    x̂ = f W_dec + b_dec,   ε = x − x̂                   the dictionary's reconstruction and its error
    f' = edit(f)            per edited feature i, at the chosen positions:
                            ablate: f'_i = 0    scale c: f'_i = c·f_i    clamp c: f'_i = c    add c: f'_i = f_i + c
    x' = f' W_dec + b_dec + ε  =  x + Σ_i (f'_i − f_i)·d_i      keep_error=True (default): exact where unedited
    x' = f' W_dec + b_dec                                       keep_error=False: the reconstruction spliced in

So ablating feature i with the error kept moves x by exactly −f_i(x)·d_i (the paper's ablation) and adding c
moves it by c·d_i (steering by ``+ c·W_dec[i]``).  With the error kept x' is computed as x + Δf W_dec — nothing
unedited goes through an encode/decode round trip, so an empty (or zero) edit reproduces the clean logits bit for
bit.  Neurons (``dictionary=None``) are edited in place, x'_n = edit(x_n), with the same four operations.

Positions count the text's tokens (0 = the first token after BOS); a negative position counts from the end of the
sequence at each forward (−1 is the newest token, also while sampling); ``positions=None`` is every token (never
the BOS).  From the two runs (clean, edited) of a prompt of T tokens t_1…t_T:

    Δlog p_T[k] = log p'(t_k | t_<k) − log p(t_k | t_<k)          the change of each token's log-likelihood
    next-token change: p, p' at the last position; KL(p ‖ p') = Σ_v p_v (log p_v − log p'_v); the tokens whose
    probability rises / falls most
    sampling: t_{n+1} ~ softmax(logits_n / temperature) over the top_k logits (temperature 0: argmax), drawn from a
    ``torch.Generator`` seeded with ``seed``, so a seed gives the same text; the clean and the edited continuation
    use the same seed.  Past the context the window slides (BOS + the last n_ctx − 1 tokens).

API: ``Steering.open(run, "A/1")`` (or ``"A"``: the neurons), then ``.effect(prompt, edits)``,
``.sample(prompt, edits, n_tokens, temperature, top_k, seed)``, ``.steer(...)`` (both, the clean side cached: what a
slider move recomputes), ``.edited_acts(tokens, edits)``; an edit is ``Edit(unit, op, value, positions)`` or a
string ``parse_edit("123=+5")``.  Tensor names carry shapes: B batch, T positions, D d_mlp, F features, E edited
units, V vocabulary.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["Edit", "parse_edit", "Intervention", "Steering", "Effect", "NextTokenChange", "TokenChange",
           "Continuation", "SteerResult", "OPS"]

OPS = ("ablate", "scale", "clamp", "add")


@dataclass(frozen=True)
class Edit:
    """One edit of one unit: ``op`` in ``OPS`` with ``value`` (ignored by ablate), at ``positions`` (None: all)."""

    unit: int
    op: str = "add"
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ConfigError(f"unknown edit {self.op!r} of unit {self.unit}; use one of {list(OPS)}")
        if not np.isfinite(self.value):
            raise ConfigError(f"edit of unit {self.unit} has value {self.value!r}; give a finite number")

    def apply(self, a: torch.Tensor) -> torch.Tensor:
        """The edited activation(s) ``a`` (any shape)."""
        if self.op == "ablate":
            return torch.zeros_like(a)
        if self.op == "scale":
            return a * self.value
        if self.op == "clamp":
            return torch.full_like(a, self.value)
        return a + self.value


_EDIT = re.compile(r"^\s*(\d+)\s*=\s*(ablate|[x*][^@]+|[+-][^@]+|[^@]+?)\s*(?:@\s*([-\d,\s]+))?$")


def parse_edit(spec: str) -> Edit:
    """``"123=+5"`` add 5, ``"123=-2"`` add −2, ``"7=x0"`` (or ``7=*0.5``) scale, ``"7=3"`` clamp to 3,
    ``"7=ablate"``; a suffix ``@p,q`` limits it to those positions (``@-1``: the newest token)."""
    m = _EDIT.match(spec)
    if not m:
        raise ConfigError(f"cannot read the edit {spec!r}; write UNIT=+C (add), UNIT=xC (scale), UNIT=C (clamp) or "
                          f"UNIT=ablate, optionally @POS,POS (e.g. 123=+5, 7=x0, 42=3@-1)")
    unit, what, pos = int(m.group(1)), m.group(2).strip(), m.group(3)
    positions = tuple(int(p) for p in pos.split(",") if p.strip()) if pos else None
    try:
        if what == "ablate":
            return Edit(unit, "ablate", 0.0, positions)
        if what[0] in "x*":
            return Edit(unit, "scale", float(what[1:]), positions)
        return Edit(unit, "add" if what[0] in "+-" else "clamp", float(what), positions)
    except ValueError:
        raise ConfigError(f"cannot read the number in the edit {spec!r}; write e.g. 123=+5, 7=x0 or 42=3") from None


class Intervention:
    """The function the MLP hook applies: acts_BTD → edited acts_BTD (see the module docstring).

    ``dictionary=None`` edits neurons.  ``offset`` is the absolute index (0 = first token after BOS) of the
    window's first token after BOS, so non-negative positions stay on their token when the sampling window
    slides."""

    def __init__(self, dictionary, edits: Sequence[Edit] = (), keep_error: bool = True, offset: int = 0,
                 reuse_prefix: bool = False):
        self.dictionary, self.edits, self.keep_error, self.offset = dictionary, list(edits), keep_error, offset
        # The sampler calls one Intervention on windows that grow by a token: the MLP input at the hook (layer 0)
        # depends only on the tokens up to its position, never on an MLP output, so the window's earlier rows
        # are the previous call's and only the new rows need the encoder (half a sampling step's time on the
        # default run).  The reuse is checked: same offset and batch, and the rows equal the remembered ones.
        self.reuse_prefix, self._memo = reuse_prefix, None

    def mask_T(self, edit: Edit, T: int, device) -> torch.Tensor:
        """Which of the window's T positions (BOS at 0) ``edit`` touches."""
        m = torch.zeros(T, dtype=torch.bool, device=device)
        if edit.positions is None:
            m[1:] = True
            return m
        for p in edit.positions:
            t = T + p if p < 0 else p + 1 - self.offset
            if 1 <= t < T:
                m[t] = True
        return m

    def _edited(self, cur_BTE: torch.Tensor, T: int) -> torch.Tensor:
        new = cur_BTE.clone()
        for edit in self.edits:
            col = self._col[edit.unit]
            m = self.mask_T(edit, T, cur_BTE.device)
            new[:, m, col] = edit.apply(new[:, m, col])
        return new

    def __call__(self, x_BTD: torch.Tensor) -> torch.Tensor:
        T = x_BTD.shape[1]
        units = sorted({e.unit for e in self.edits})
        self._col = {u: k for k, u in enumerate(units)}
        if self.dictionary is None:                              # neurons: in place
            if not units:
                return x_BTD
            x = x_BTD.clone()
            x[..., units] = self._edited(x_BTD[..., units], T).to(x.dtype)
            return x
        sae = self.dictionary
        if self.keep_error and not units:
            return x_BTD
        B, _, D = x_BTD.shape
        if self.keep_error:
            f_BTE = self._unit_acts(x_BTD, units)
            df_BTE = self._edited(f_BTE, T) - f_BTE
            return x_BTD + (df_BTE @ sae.W_dec_FD[units]).to(x_BTD.dtype)
        f_BTF = sae.encode(x_BTD.reshape(B * T, D).to(sae.W_dec_FD.dtype)).reshape(B, T, -1).clone()
        if units:                                                # the reconstruction alone, edited
            f_BTF[..., units] = self._edited(f_BTF[..., units], T)
        return sae.decode(f_BTF).to(x_BTD.dtype)

    def _unit_acts(self, x_BTD: torch.Tensor, units: list[int]) -> torch.Tensor:
        """The edited units' clean activations f_BTE (with ``reuse_prefix``, the remembered rows reused)."""
        sae = self.dictionary
        B, T, D = x_BTD.shape

        def enc(x):
            n = x.shape[1]
            return sae.encode(x.reshape(B * n, D).to(sae.W_dec_FD.dtype)).reshape(B, n, -1)[..., units]

        m = self._memo
        if (m is not None and m[0] == (self.offset, B, tuple(units)) and m[1].shape[1] <= T
                and torch.allclose(x_BTD[:, :m[1].shape[1]], m[1], rtol=1e-5, atol=1e-6)):
            n0 = m[1].shape[1]
            f_BTE = torch.cat([m[2], enc(x_BTD[:, n0:])], 1) if T > n0 else m[2]
        else:
            f_BTE = enc(x_BTD)
        if self.reuse_prefix:
            self._memo = ((self.offset, B, tuple(units)), x_BTD.detach().clone(), f_BTE)
        return f_BTE


@dataclass
class TokenChange:
    token_id: int
    token: str
    p_clean: float
    p_edited: float

    @property
    def delta(self) -> float:
        return self.p_edited - self.p_clean


@dataclass
class NextTokenChange:
    """The next-token distribution after the prompt, clean and edited."""

    p_clean_V: np.ndarray
    p_edited_V: np.ndarray
    kl: float                       # KL(clean ‖ edited), nats
    raised: list[TokenChange]       # largest p_edited − p_clean first
    lowered: list[TokenChange]      # most negative first


@dataclass
class Effect:
    """What an edit does to a prompt: each token's Δ log-likelihood and the next-token change."""

    token_ids: list[int]
    tokens: list[str]
    loglik_clean_T: np.ndarray      # log p(t_k | t_<k), one per prompt token
    delta_loglik_T: np.ndarray      # edited − clean
    next: NextTokenChange


@dataclass
class Continuation:
    token_ids: list[int]
    tokens: list[str]
    text: str


@dataclass
class SteerResult:
    effect: Effect
    clean: Continuation
    edited: Continuation


class Steering:
    """Interventions on one source: a dictionary's features (``dictionary`` given) or the model's neurons.

    ``Steering.open(run, "A/1")`` loads (and caches, ``prompt.loaded``) the model and dictionary; a widget keeps
    one and calls :meth:`steer` on every slider move — the clean run and continuation of a prompt are cached."""

    def __init__(self, model, tokenizer, dictionary=None, source: str = ""):
        self.model, self.tokenizer, self.dictionary = model, tokenizer, dictionary
        self.source = source or ("features" if dictionary is not None else "neurons")
        self.kind = "feature" if dictionary is not None else "neuron"
        self.n_units = int(dictionary.d_sae if dictionary is not None else model.d_mlp)
        self._clean: dict = {}

    @classmethod
    def open(cls, run, source: str) -> "Steering":
        """``source``: a dictionary id ("A/1") for its features, a transformer name ("A") for its neurons."""
        from .prompt import loaded

        run, model, sae = loaded(run, source)
        return cls(model, run.tokenizer, sae, source)

    # ---- checks ---------------------------------------------------------------------------------------------
    def check_edits(self, edits: Sequence[Edit | str]) -> list[Edit]:
        out = [parse_edit(e) if isinstance(e, str) else e for e in edits]
        for e in out:
            if not 0 <= int(e.unit) < self.n_units:
                raise ConfigError(f"{self.kind} {e.unit} does not exist: {self.source} has {self.n_units} "
                                  f"{self.kind}s (0 … {self.n_units - 1}); pick an id in that range")
        return out

    def tokens(self, prompt: str, room: int = 0) -> torch.Tensor:
        """``[BOS] + tokens(prompt)`` as a (1, T+1) tensor; the prompt must be non-empty and fit the context."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("the prompt is empty; give some text to continue (e.g. --prompt 'And the LORD said')")
        ids = self.tokenizer.encode(prompt)
        body = self.model.n_ctx - 1
        if not ids:
            raise ConfigError(f"the prompt {prompt!r} encodes to no tokens; give some text to continue")
        if len(ids) > body:
            raise ConfigError(f"the prompt is {len(ids)} tokens but the model's context holds {body} after BOS; "
                              f"shorten the prompt to at most {body} tokens")
        return torch.tensor([[self.tokenizer.bos_id] + list(ids)], dtype=torch.long, device=self.model.device)

    # ---- forward passes -------------------------------------------------------------------------------------
    def logits(self, tokens_BT: torch.Tensor, edits: Sequence[Edit] = (), keep_error: bool = True,
               offset: int = 0) -> torch.Tensor:
        """Logits (B, T, V) with ``edits`` applied (none and ``keep_error``: the clean forward, no hook)."""
        edits = self.check_edits(edits)
        if not edits and (keep_error or self.dictionary is None):
            return self.model.logits_spliced(tokens_BT)
        return self.model.logits_spliced(tokens_BT, Intervention(self.dictionary, edits, keep_error, offset))

    @torch.no_grad()
    def edited_acts(self, tokens_BT: torch.Tensor, edits: Sequence[Edit] = (), keep_error: bool = True):
        """(x, x') at the hook: the clean MLP activations (B, T, D) and what the intervention replaces them with."""
        x_BTD = self.model.mlp_acts(tokens_BT)
        return x_BTD, Intervention(self.dictionary, self.check_edits(edits), keep_error)(x_BTD)

    @torch.no_grad()
    def unit_acts(self, prompt: str) -> np.ndarray:
        """(T, U) activations of the steered units — the dictionary's features, or the neurons — on the prompt's
        tokens (BOS dropped), float32: which units a prompt engages (the steering panel's picker)."""
        x_TD = self.model.mlp_acts(self.tokens(prompt))[0, 1:]
        if self.dictionary is not None:
            x_TD = self.dictionary.encode(x_TD.to(self.dictionary.W_dec_FD.dtype))
        return x_TD.float().numpy()

    # ---- measurements ---------------------------------------------------------------------------------------
    def effect(self, prompt: str, edits: Sequence[Edit | str] = (), k: int = 10, keep_error: bool = True) -> Effect:
        """Δ log-likelihood of each prompt token and the next-token change (top ``k`` raised / lowered)."""
        edits = self.check_edits(edits)
        tok_1T = self.tokens(prompt)
        clean = self._cached(("logits", prompt), lambda: torch.log_softmax(self.logits(tok_1T).double(), -1)[0])
        edited = torch.log_softmax(self.logits(tok_1T, edits, keep_error).double(), -1)[0]
        ids = tok_1T[0, 1:]
        ll_c = clean[:-1].gather(1, ids[:, None])[:, 0]
        ll_e = edited[:-1].gather(1, ids[:, None])[:, 0]
        return Effect(token_ids=ids.tolist(), tokens=self._strs(ids.tolist()), loglik_clean_T=ll_c.numpy(),
                      delta_loglik_T=(ll_e - ll_c).numpy(), next=self._next_change(clean[-1], edited[-1], k))

    def _next_change(self, lp_c_V: torch.Tensor, lp_e_V: torch.Tensor, k: int) -> NextTokenChange:
        p_c, p_e = lp_c_V.exp(), lp_e_V.exp()
        kl = float((p_c * (lp_c_V - lp_e_V)).sum().clamp_min(0.0))
        d = p_e - p_c
        strs = self.tokenizer.token_strings()
        k = min(int(k), d.numel())

        def rows(idx):
            return [TokenChange(int(v), strs[int(v)], float(p_c[v]), float(p_e[v])) for v in idx]

        return NextTokenChange(p_c.float().numpy(), p_e.float().numpy(), kl, rows(d.topk(k).indices),
                               rows((-d).topk(k).indices))

    @torch.no_grad()
    def sample(self, prompt: str, edits: Sequence[Edit | str] = (), n_tokens: int = 20, temperature: float = 1.0,
               top_k: int | None = None, seed: int = 0, keep_error: bool = True) -> Continuation:
        """``n_tokens`` sampled after ``prompt`` with ``edits`` applied at every step (a feature pinned: ``clamp``)."""
        edits = self.check_edits(edits)
        if temperature < 0 or not np.isfinite(temperature):
            raise ConfigError(f"temperature must be ≥ 0 (0: greedy), got {temperature!r}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be ≥ 1 (or None: the whole vocabulary), got {top_k!r}")
        if n_tokens < 0:
            raise ConfigError(f"n_tokens must be ≥ 0, got {n_tokens!r}")
        seq = self.tokens(prompt)[0].tolist()
        g = torch.Generator().manual_seed(int(seed))
        body, out = self.model.n_ctx - 1, []
        hook = None
        if edits or not (keep_error or self.dictionary is None):
            hook = Intervention(self.dictionary, edits, keep_error, reuse_prefix=True)
        for _ in range(int(n_tokens)):
            start = max(1, len(seq) - body)
            window = torch.tensor([[seq[0]] + seq[start:]], dtype=torch.long, device=self.model.device)
            if hook is not None:
                hook.offset = start - 1
            logits_V = self.model.logits_spliced(window, hook)[0, -1].float().cpu()
            nxt = _draw(logits_V, temperature, top_k, g)
            seq.append(nxt)
            out.append(nxt)
        return Continuation(out, self._strs(out), self.tokenizer.decode(out))

    def steer(self, prompt: str, edits: Sequence[Edit | str], n_tokens: int = 20, temperature: float = 1.0,
              top_k: int | None = None, seed: int = 0, k: int = 10, keep_error: bool = True) -> SteerResult:
        """Everything a slider move shows: the effect and the clean and edited continuations (the clean one cached
        per prompt and sampling settings)."""
        effect = self.effect(prompt, edits, k, keep_error)
        clean = self._cached(("sample", prompt, n_tokens, temperature, top_k, seed),
                             lambda: self.sample(prompt, (), n_tokens, temperature, top_k, seed))
        return SteerResult(effect, clean, self.sample(prompt, edits, n_tokens, temperature, top_k, seed, keep_error))

    def _cached(self, key, make: Callable):
        if key not in self._clean:
            if len(self._clean) > 64:
                self._clean.clear()
            self._clean[key] = make()
        return self._clean[key]

    def _strs(self, ids: list[int]) -> list[str]:
        strs = self.tokenizer.token_strings()
        return [strs[int(i)] for i in ids]


def _draw(logits_V: torch.Tensor, temperature: float, top_k: int | None, g: torch.Generator) -> int:
    """One token from ``logits_V``: argmax at temperature 0, else softmax(logits / T) over the top ``top_k``."""
    if temperature == 0:
        return int(logits_V.argmax())
    lg = logits_V.double() / temperature
    if top_k is not None and top_k < lg.numel():
        kth = lg.topk(int(top_k)).values[-1]
        lg = lg.masked_fill(lg < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(lg, -1), 1, generator=g))
