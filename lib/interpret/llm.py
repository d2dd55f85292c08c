"""Pluggable explainers: the ``Explainer`` protocol, the offline ``TokenPatternExplainer``, and
``OpenAIExplainer`` for any OpenAI-compatible chat endpoint — scored the same way (``score_explainer``).

The paper's procedure, per unit: the explainer sees examples from the explanation set (token windows with the
unit's activation on every token, quantised 0–9 relative to the largest) and writes an explanation; then, given
only the explanation, it predicts the activation of every token of held-out windows; the score is the Spearman
correlation of predicted and true activations (and detection, ``scoring``).  The explainer never sees the
held-out activations: ``score_explainer`` hands it the windows with their activations removed.

``OpenAIExplainer`` reads its endpoint from the environment: ``MONOSEMANTIC_LLM_BASE_URL`` (e.g.
``http://localhost:8000/v1``; ``/chat/completions`` is appended), ``MONOSEMANTIC_LLM_MODEL`` and, if the server
wants one, ``MONOSEMANTIC_LLM_API_KEY``.  The prompts (``explain_prompt``, ``simulate_prompt``) follow the paper
and Bills et al. 2023: one ``token<TAB>activation`` line per token between ``<start>`` and ``<end>``; the
simulation asks for JSON ``{"activations": [[one integer 0–9 per token], …]}``.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import InterpretConfig
from ..errors import ConfigError, MonosemanticError

__all__ = ["Window", "Explainer", "TokenPatternExplainer", "OpenAIExplainer", "LLMEndpointError", "quantise",
           "explain_prompt", "simulate_prompt", "parse_simulation", "score_explainer", "train_examples",
           "heldout_examples", "ENV_BASE_URL", "ENV_MODEL", "ENV_API_KEY"]

ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = ("MONOSEMANTIC_LLM_BASE_URL", "MONOSEMANTIC_LLM_MODEL",
                                        "MONOSEMANTIC_LLM_API_KEY")


class LLMEndpointError(MonosemanticError):
    """The LLM endpoint could not be reached or answered something that is not the protocol's shape."""


@dataclass
class Window:
    """A few consecutive tokens: their strings and ids, the unit's activation on each (None when hidden), and
    the id of the token before the first (−1 unknown)."""

    tokens: list[str]
    token_ids: list[int]
    acts: list[float] | None = None
    prev_id: int = -1

    def hidden(self) -> "Window":
        return replace(self, acts=None)


@runtime_checkable
class Explainer(Protocol):
    """Writes an explanation from examples, and predicts activations from an explanation alone."""

    name: str

    def explain(self, examples: list[Window]) -> str: ...

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]: ...


def quantise(acts: list[float], top: float) -> list[int]:
    """Activations as integers 0–9: round(9·a/top), the paper's scale (``top`` the largest of the examples)."""
    if top <= 0:
        return [0] * len(acts)
    return [int(min(9, max(0, round(9 * float(a) / top)))) for a in acts]


# ---- the offline explainer, behind the same protocol -----------------------------------------------------------

class TokenPatternExplainer:
    """The token-in-context trie (``rules``) fitted to the example windows themselves; its explanation is JSON
    (``{"rules": [[prev, token, value, count], …], "text": …}``) that ``simulate`` reads back."""

    name = "token-pattern"

    def __init__(self, cfg: InterpretConfig | None = None, vocab: int | None = None, token_strings=None):
        self.cfg = cfg or InterpretConfig(min_count=2)
        self.vocab, self.strs = vocab, token_strings

    def _vocab(self, windows: list[Window]) -> int:
        return self.vocab or 1 + max([max(w.token_ids + [w.prev_id, 0]) for w in windows] + [0])

    def explain(self, examples: list[Window]) -> str:
        from .rules import RuleFitter, explanation_text, pair_codes

        V = self._vocab(examples)
        ctx = _as_contexts(examples)
        pair_ids, codes = pair_codes(ctx, V)
        acts = _padded([w.acts or [] for w in examples], ctx.shape[1] - 1, 0.0)
        tok = ctx[:, 1:].reshape(-1)
        real = tok >= 0
        rows = np.flatnonzero((acts.reshape(-1) > 0) & real)
        vals = acts.reshape(-1)[rows]
        fitter = RuleFitter(1, V, codes, self.cfg)
        safe = np.where(real, tok, 0)
        fitter.update_tokens(safe, rows, np.zeros(len(rows), np.int64), vals)
        fitter.choose_candidates()
        fitter.update_pairs(safe, pair_ids.reshape(-1), rows, np.zeros(len(rows), np.int64), vals)
        r = fitter.rules()
        rules = r.of_unit(0)
        text = explanation_text(rules, self.strs) if self.strs is not None else ""
        return json.dumps({"rules": [[x["prev"], x["token"], x["value"], x["count"]] for x in rules], "text": text})

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        from .rules import Rules, simulate

        rules = Rules.from_json([json.dumps(json.loads(explanation)["rules"])], self._vocab(windows))
        ctx = _as_contexts(windows)
        pred = simulate(rules, np.zeros(len(windows), np.int64), ctx[:, 1:], ctx[:, :-1])
        return [pred[i, :len(w.token_ids)].astype(float).tolist() for i, w in enumerate(windows)]


def _padded(rows: list[list], width: int, fill) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype=np.float64 if isinstance(fill, float) else np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _as_contexts(windows: list[Window]) -> np.ndarray:
    """Windows as rows ``[prev, tokens…]`` (−1 padded): the layout ``rules`` reads (column 0 = context)."""
    W = max([len(w.token_ids) for w in windows] + [1])
    ctx = _padded([[w.prev_id] + list(w.token_ids) for w in windows], W + 1, -1)
    return ctx


# ---- an OpenAI-compatible chat endpoint ---------------------------------------------------------------------------

EXPLAIN_SYSTEM = ("We're studying neurons in a neural network. Each neuron looks for some particular thing in a "
                  "short document. Look at the parts of the document the neuron activates for and summarize in a "
                  "single sentence what the neuron is looking for. Don't list examples of words.")
SIMULATE_SYSTEM = ("We're studying neurons in a neural network. Each neuron looks for some particular thing in a "
                   "short document. Given an explanation of what a neuron looks for, predict its activation, an "
                   "integer from 0 (none) to 9 (strongest), on every token of each example.")


def _block(tokens: list[str], values: list[int] | None) -> str:
    lines = [f"{t}\t{v}" for t, v in zip(tokens, values)] if values is not None else list(tokens)
    return "<start>\n" + "\n".join(lines) + "\n<end>"


def explain_prompt(examples: list[Window]) -> list[dict]:
    """The explanation request: every example with its activations quantised 0–9 (relative to the largest)."""
    top = max([max(w.acts or [0.0]) for w in examples] + [0.0])
    blocks = "\n\n".join(_block([_tok(t) for t in w.tokens], quantise(w.acts or [0.0] * len(w.tokens), top))
                         for w in examples)
    user = (f"Activations (token<TAB>activation from 0 to 9):\n{blocks}\n\n"
            "Explanation of the neuron's behavior: the main thing this neuron does is find")
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def simulate_prompt(explanation: str, windows: list[Window]) -> list[dict]:
    """The simulation request: the explanation and the held-out tokens, never their activations."""
    blocks = "\n\n".join(f"Example {i + 1}:\n" + _block([_tok(t) for t in w.tokens], None)
                         for i, w in enumerate(windows))
    user = (f"Neuron explanation: the main thing this neuron does is find {explanation}\n\n{blocks}\n\n"
            'Answer with JSON only: {"activations": [[one integer per token of example 1], [example 2], …]}')
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


def _tok(t: str) -> str:
    return t.replace("\t", "\\t").replace("\n", "\\n")


def parse_explanation(content: str) -> str:
    text = content.strip().splitlines()[0] if content.strip() else ""
    return re.sub(r"^(explanation\s*:\s*)", "", text, flags=re.I).strip()


def parse_simulation(content: str, windows: list[Window]) -> list[list[float]]:
    """The ``{"activations": [[…], …]}`` answer as one list per window (a short list is padded with 0, a long one
    cut); anything else raises ``LLMEndpointError`` quoting the answer."""
    m = re.search(r"\{.*\}", content, flags=re.S)
    try:
        rows = json.loads(m.group(0))["activations"] if m else None
        if not isinstance(rows, list):
            raise ValueError
        out = []
        for i, w in enumerate(windows):
            r = [float(x) for x in (rows[i] if i < len(rows) else [])][:len(w.token_ids)]
            out.append(r + [0.0] * (len(w.token_ids) - len(r)))
        return out
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        raise LLMEndpointError(f"the LLM's simulation is not the protocol's shape "
                               f'{{"activations": [[…], …]}}: {content[:200]!r}') from None


class OpenAIExplainer:
    """An ``Explainer`` backed by an OpenAI-compatible ``/chat/completions`` endpoint (module docstring)."""

    name = "openai-chat"

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, temperature: float = 0.0):
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL, "")).rstrip("/")
        self.model = model or os.environ.get(ENV_MODEL, "")
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")
        if not self.base_url:
            raise ConfigError(f"no LLM endpoint: set {ENV_BASE_URL} to an OpenAI-compatible base URL (e.g. "
                              f"http://localhost:8000/v1) or pass base_url=")
        if not self.model:
            raise ConfigError(f"no LLM model: set {ENV_MODEL} to the model name the endpoint serves, or pass model=")
        self.timeout, self.temperature = float(timeout), float(temperature)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def chat(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:200]
            hint = f"check {ENV_API_KEY}" if e.code in (401, 403) else f"check {ENV_MODEL} ({self.model!r})"
            raise LLMEndpointError(f"the LLM endpoint {self.url} answered HTTP {e.code} ({detail}); {hint}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LLMEndpointError(f"cannot reach the LLM endpoint {self.url} ({reason}); check {ENV_BASE_URL} "
                                   f"(now {self.base_url!r}): an OpenAI-compatible server must listen there") from None
        except json.JSONDecodeError:
            raise LLMEndpointError(f"the LLM endpoint {self.url} did not answer JSON; is {ENV_BASE_URL} an "
                                   f"OpenAI-compatible API (…/v1)?") from None
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMEndpointError(f"the LLM endpoint {self.url} answered without choices[0].message.content: "
                                   f"{str(answer)[:200]}") from None

    def explain(self, examples: list[Window]) -> str:
        return parse_explanation(self.chat(explain_prompt(examples)))

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        return parse_simulation(self.chat(simulate_prompt(explanation, windows)), windows)


# ---- scoring one explainer on one unit --------------------------------------------------------------------------

def score_explainer(explainer: Explainer, train: list[Window], heldout: list[Window]) -> dict:
    """Explain from ``train``, simulate ``heldout`` (activations hidden), score: {explanation, spearman,
    detection, n_tokens}."""
    from .scoring import balanced_accuracy, group_spearman

    if not train or not heldout:
        raise ConfigError("score_explainer needs explanation examples and held-out windows (got "
                          f"{len(train)} and {len(heldout)})")
    explanation = explainer.explain(train)
    pred = explainer.simulate(explanation, [w.hidden() for w in heldout])
    if len(pred) != len(heldout) or any(len(p) != len(w.token_ids) for p, w in zip(pred, heldout)):
        raise ConfigError(f"explainer {explainer.name!r} returned predictions of the wrong shape")
    true = np.concatenate([np.asarray(w.acts, np.float64) for w in heldout])
    p = np.concatenate([np.asarray(x, np.float64) for x in pred])
    g = np.zeros(len(true), np.int64)
    return {"explanation": explanation, "spearman": float(group_spearman(g, true, p, 1)[0]),
            "detection": float(balanced_accuracy(g, true > 0, p > 0, 1)[0]), "n_tokens": int(len(true))}


def heldout_examples(tokens_nW: np.ndarray, acts_nW: np.ndarray, strs: list[str], bos_id: int) -> list[Window]:
    """Saved held-out windows (column 0 context only, −1 pads) as ``Window``s."""
    out = []
    for t, a in zip(np.asarray(tokens_nW), np.asarray(acts_nW)):
        keep = np.flatnonzero(t[1:] >= 0) + 1
        prev = int(t[keep[0] - 1]) if len(keep) else -1
        prev = bos_id if prev < 0 and len(keep) else prev
        out.append(Window([strs[int(i)] for i in t[keep]], [int(i) for i in t[keep]], [float(x) for x in a[keep]],
                          prev))
    return out


def train_examples(run, dict_id: str, u: int, group: str = "features") -> list[Window]:
    """The explanation examples of a unit: its feature page's top activations and interval samples
    (``features.FeatureStats``, the train-split statistics), with their windows."""
    from ..features import FeatureStats

    if group not in ("features", "neurons"):
        raise ConfigError(f"no feature pages for the {group!r} group; pass the explanation examples as train=")
    source = dict_id if group == "features" else run.cfg.dictionary(dict_id).transformer
    page = FeatureStats.load(run, source).unit(u)
    exs = page.top + [e for iv in page.intervals for e in iv["examples"]]
    bos = run.split("train").bos_id
    return [Window(e.tokens, e.token_ids, e.acts, bos if e.pos - e.center <= 1 else -1) for e in exs]
