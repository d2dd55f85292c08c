"""Token sets: which contexts of a run an evaluation or an analysis reads — the one module that chooses them.

Three selections, each fixed for a run (so every dictionary of a run is measured on the same tokens):

- ``eval_contexts(split, n)``: ``n`` evenly spread context indices of a split (dictionary evaluation);
- ``token_set_contexts(split, n_tokens)``: evenly spaced contexts holding about ``n_tokens`` non-BOS tokens (the
  statistics pass: every domain is sampled);
- ``token_set(run, n_tokens)``: a ``TokenSet`` of validation contexts, then train contexts in a seeded order,
  until ``n_tokens`` (universality and splitting; the sizes are the run config's ``universality.tokens`` and
  ``splitting.tokens``).

Every selection counts non-BOS positions only: dictionaries never see the BOS position in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["eval_contexts", "token_set_contexts", "TokenSet", "token_set", "default_tokens"]



def eval_contexts(split, n: int) -> np.ndarray:
    """A fixed, evenly spread set of context indices (the same for every dictionary of a run)."""
    n = min(n, split.n_contexts)
    return np.linspace(0, split.n_contexts - 1, n).astype(np.int64)



def token_set_contexts(split, n_tokens: int) -> np.ndarray:
    """Evenly spaced context indices of ``split`` holding about ``n_tokens`` non-BOS tokens (all if fewer)."""
    n = min(split.n_contexts, max(1, -(-int(n_tokens) // split.body)))
    return np.unique(np.linspace(0, split.n_contexts - 1, n).round().astype(np.int64))


def default_tokens(cfg) -> int:
    """The size of universality's shared token set for a ``RunConfig`` (its ``universality.tokens``)."""
    return int(cfg.universality.tokens)


@dataclass
class TokenSet:
    """Fixed contexts of a run (validation first, then train in a seeded order); every non-BOS position counts."""

    parts: list[tuple[str, np.ndarray]]     # (split name, context indices)
    n_ctx: int

    @property
    def contexts(self) -> int:
        return int(sum(len(i) for _, i in self.parts))

    @property
    def tokens(self) -> int:
        return self.contexts * (self.n_ctx - 1)

    def describe(self) -> dict:
        return {"tokens": self.tokens, "contexts": {s: int(len(i)) for s, i in self.parts}, "n_ctx": self.n_ctx}

    def batches(self, run, batch_tokens: int = 32_768, with_domains: bool = False) -> Iterator:
        """int64 arrays (b, n_ctx) of contexts, BOS at position 0 (with ``with_domains``: pairs (contexts,
        uint8 domain codes (b, n_ctx), 255 at BOS))."""
        per = max(1, batch_tokens // (self.n_ctx - 1))
        for split_name, idx in self.parts:
            split = run.split(split_name)
            for i in range(0, len(idx), per):
                sel = idx[i:i + per]
                yield (split.contexts(sel), split.domains(sel)) if with_domains else split.contexts(sel)


def token_set(run, n_tokens: int | None = None, seed: int = 0, splits: Sequence[str] = ("val", "train")) -> TokenSet:
    """The first ``n_tokens`` non-BOS tokens (rounded up to whole contexts) of ``splits`` in turn; contexts of each
    split in a seeded order.  Uses every context there is if the splits hold fewer tokens (see ``.tokens``)."""
    n_tokens = int(n_tokens or default_tokens(run.cfg))
    if n_tokens <= 0:
        raise ConfigError(f"n_tokens must be positive, got {n_tokens}")
    body = run.cfg.model.n_ctx - 1
    need = -(-n_tokens // body)
    parts = []
    for k, s in enumerate(splits):
        if need <= 0:
            break
        sp_ = run.split(s)
        order = np.random.default_rng([seed, 4242, k]).permutation(sp_.n_contexts)[:need]
        parts.append((s, np.sort(order)))   # sorted: sequential reads of the memory-mapped arrays
        need -= len(order)
    return TokenSet(parts, run.cfg.model.n_ctx)
