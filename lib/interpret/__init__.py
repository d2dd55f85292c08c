"""Automated interpretability: are a dictionary's features more interpretable than its transformer's neurons?

*Towards Monosemanticity* (2023) answers with a blind human rubric and with an automated test: a large model
writes an explanation of a unit from its examples (top activations, the 11 equal-width activation intervals,
random tokens; activations quantised 0–9), then predicts the unit's activations on held-out examples from that
explanation alone; the score is the Spearman correlation of predicted and true activations.  A logit test asks
whether the explanation predicts which output tokens the unit's logit effect raises.  A randomized transformer
(each weight matrix's entries shuffled) with its own dictionary is the control: it yields single-token features
that score high, so single-token explanations are reported apart.

Here, without a large model (``rules``, ``scoring``):

- **explainer**: a token-in-context pattern trie (N2G-style, Gao et al. 2024) fitted to the unit's activations on
  the *explanation set* (train-split tokens): which tokens, after which preceding tokens, with what activation;
- **simulator**: the trie's lookup, predicting every token's activation;
- **scores on the held-out set** (validation-split tokens): Spearman over the top, interval-sampled and random
  held-out examples (9-token windows, 60 per unit); detection = balanced accuracy of telling firing from
  non-firing tokens in context; the logit test's AUC (top logit-effect tokens against random ones; every unit
  scored, and apart the median over the units where the test can tell anything — an explanation that predicts
  the same for every compared token scores 0.5 by construction — and the same test against shuffled units'
  tokens, the level token frequency alone gives: ``scoring``);
- **single-token**: explanations that name exactly one token, reported apart.

``analysis.interpret(run, "A/1")`` (the ``interpret:A/1`` stage, ``monosemantic interpret RUN A/1``) scores every
feature of A/1, every neuron of A, and the control (``control``: A randomized, its own dictionary of A/1's size,
λ and recipe; its features are the paper's control, its neurons are reported too); the medians go to
``summary --json`` under ``interpretability``.  ``results.Interpretation`` reads a unit's explanation and scores.

With a large model (``llm``): the ``Explainer`` protocol, the offline ``TokenPatternExplainer`` and
``OpenAIExplainer`` (any OpenAI-compatible chat endpoint: ``MONOSEMANTIC_LLM_BASE_URL``, ``_MODEL``, ``_API_KEY``)
with the paper's prompt; ``Interpretation.rescore(unit, explainer)`` scores one on the same held-out examples.

A unit's label in every view (``labels``): ``Labels.open(run, "A/1").get(u)`` — the user's edit, else the LLM's scored
explanation (``Labels.explain(u, OpenAIExplainer())`` records one), else the offline explainer's, with its score.

Blind rating with the paper's rubric (``ratings``): ``open_session(run, "A/1", n_features=10, n_neurons=10)`` draws
(or resumes) a ``Session`` of features and neurons, shuffled, ids and kinds hidden; ``Session.rate`` saves each
answer atomically in the run (several raters, resumable); ``Session.reveal()`` gives features vs neurons and the
agreement between raters.

The package, along its seams: ``rules`` (fit, simulate), ``scoring`` (the three scores), ``passes`` (the streams
over the token sets for one set of units), ``control`` (the randomized transformer and its dictionary),
``analysis`` (groups, fingerprints, checkpoints, summary), ``results`` (loading), ``llm`` (explainers),
``labels`` (a unit's label and its edits), ``ratings`` (blind rating).
Tensor names carry shapes: U units, V vocabulary, n windows, W tokens per window, E active entries.
"""
from __future__ import annotations

from .analysis import GROUPS, interpret, interpret_dir, summarize
from .labels import Label, Labels
from .ratings import Session, open_session
from .results import Interpretation, UnitInterpretation
from .rules import Rules, RuleFitter, simulate

__all__ = ["interpret", "interpret_dir", "summarize", "GROUPS", "Interpretation", "UnitInterpretation", "Rules",
           "RuleFitter", "simulate", "Label", "Labels", "Session", "open_session"]
