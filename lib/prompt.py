"""Prompt-centric queries: for any text, which features (or neurons) fire on which tokens.

    acts = prompt_activations(run, "A/1", "And the LORD said unto Moses")
    acts.tokens            # ['And', ' the', ' LORD', …]  (BOS not included)
    acts.acts_TU           # (tokens, units) activations of every feature of A/1
    acts.top_units(5)      # the 5 features with the largest activation anywhere in the text
    acts.frame(units)      # long-form DataFrame: token index, token, unit, activation

The text is tokenised with the run's tokenizer, a BOS is prepended (as in training), and texts longer than the
context are cut into consecutive pieces of ``n_ctx − 1`` tokens, each behind its own BOS (``pieces`` says how
many).  ``source`` is a dictionary id ("A/1": its features) or a transformer name ("A": its MLP neurons).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["PromptActivations", "prompt_activations", "loaded"]


@dataclass
class PromptActivations:
    text: str
    source: str
    kind: str                        # "feature" | "neuron"
    token_ids: list[int]
    tokens: list[str]
    acts_TU: np.ndarray              # (len(tokens), n_units) float32
    pieces: int = 1

    @property
    def n_units(self) -> int:
        return int(self.acts_TU.shape[1])

    def top_units(self, k: int = 10, by: str = "max") -> list[int]:
        """Units with the largest ``max`` (or ``sum``) activation over the text, active ones only."""
        score = self.acts_TU.max(0) if by == "max" else self.acts_TU.sum(0)
        order = np.argsort(-score, kind="stable")[:k]
        return [int(u) for u in order if score[u] > 0]

    def token_top_units(self, t: int, k: int = 5) -> list[tuple[int, float]]:
        """The units most active on token ``t``."""
        a = self.acts_TU[t]
        order = np.argsort(-a, kind="stable")[:k]
        return [(int(u), float(a[u])) for u in order if a[u] > 0]

    def units_on(self, token: str, k: int = 5) -> list[int]:
        """Units ranked by their largest activation on the tokens that spell ``token`` (its first occurrence in
        the text, e.g. ``units_on("LORD")`` whether the tokenizer has " LORD" or " L" + "ORD")."""
        want = token.strip()
        joined = "".join(self.tokens)
        start = joined.find(want) if want else -1
        if start < 0:
            raise ConfigError(f"{token!r} does not occur in {self.text!r}; its tokens are {self.tokens}")
        ends = np.cumsum([len(t) for t in self.tokens])
        starts = ends - np.array([len(t) for t in self.tokens])
        hits = np.nonzero((starts < start + len(want)) & (ends > start))[0]
        score = self.acts_TU[hits].max(0)
        order = np.argsort(-score, kind="stable")[:k]
        return [int(u) for u in order if score[u] > 0]

    def frame(self, units: list[int] | None = None):
        """Long-form DataFrame (token_index, token, unit, act) of the given units (default: the top 10)."""
        import pandas as pd

        units = self.top_units(10) if units is None else [int(u) for u in units]
        rows = [{"token_index": t, "token": self.tokens[t], "unit": u, "act": float(self.acts_TU[t, u])}
                for u in units for t in range(len(self.tokens))]
        return pd.DataFrame(rows, columns=["token_index", "token", "unit", "act"])


@lru_cache(maxsize=8)
def _loaded(root: str, source: str, mtime: float):
    from .runs import Run

    run = Run.open(root)
    transformer = source.split("/")[0]
    model = run.model(transformer)
    model.eval()
    sae = None
    if "/" in source:
        sae = run.dictionary(source)
        sae.eval()
    return run, model, sae


def loaded(run, source: str):
    """(run, model, dictionary or None) for ``source``, cached per run directory and weights file."""
    from .runs import as_run

    run = as_run(run)
    if "/" in source:
        w = run.dict_dir(source) / "sae.safetensors"
    else:
        if source not in run.cfg.transformers:
            raise ConfigError(f"no transformer {source!r} in this run (it has {sorted(run.cfg.transformers)}); "
                              f"for features pass a dictionary id such as 'A/1'")
        w = run.model_dir(source) / "model.safetensors"
    if not w.exists():
        raise FileNotFoundError(f"{w} missing: train {source} first (`monosemantic run --out {run.root}`)")
    return _loaded(str(Path(run.root).resolve()), source, w.stat().st_mtime)


@torch.no_grad()
def prompt_activations(run, source: str, texts: str | list[str]):
    """Activations of every unit of ``source`` on every token of ``texts`` (one text → one result; a list →
    a list)."""
    single = isinstance(texts, str)
    if single:
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ConfigError("texts must be a string or a list of strings")
    run, model, sae = loaded(run, source)
    tok = run.tokenizer
    strs = tok.token_strings()
    body = model.n_ctx - 1
    out = []
    for text in texts:
        ids = tok.encode(text)
        pieces = [ids[i:i + body] for i in range(0, len(ids), body)] or [[]]
        acts = []
        for p in pieces:
            if not p:
                continue
            x = model.mlp_acts(torch.tensor([[tok.bos_id] + list(p)], dtype=torch.long))[0, 1:].float()
            acts.append((sae.encode(x) if sae is not None else x).float().numpy())
        U = sae.d_sae if sae is not None else model.d_mlp
        a = np.concatenate(acts, 0) if acts else np.zeros((0, U), np.float32)
        out.append(PromptActivations(text=text, source=source, kind="feature" if sae is not None else "neuron",
                                     token_ids=[int(i) for i in ids], tokens=[strs[int(i)] for i in ids],
                                     acts_TU=a.astype(np.float32), pieces=max(1, len(acts))))
    return out[0] if single else out
