"""``RatingSession``: the paper's blind rating, keyboard-driven, for one rater or a reading group on one screen.

Each unit of a session (``monosemantic.interpret.ratings``: features and neurons drawn, shuffled, ids and kinds
hidden) is shown as the paper's rater saw it — samples from the 11 equal-width activation intervals, highest
first, each token in context with its activation, and the top positive / negative logit effects — beside the
rubric (confidence 0–3, activation consistency 0–5, logit consistency 0–3, effect-size separation 0/1,
specificity 0–3: ``ratings.MAX_TOTAL`` in all; the paper says 14) and a one-line explanation.

Keys (with the widget focused — click it — or in present mode): a digit scores the focused criterion and moves
to the next; ↑/↓ or Tab/Shift+Tab move between criteria; ``e`` opens the explanation box (Enter there saves, Esc
leaves it); Enter saves the answer and goes to the next unit not yet rated; ←/→ go to the previous / next unit
without saving.  Every answer is written to the run when it is saved (a killed kernel loses nothing; building
the widget again resumes at the first unit not rated).  ``reveal()`` (or the reveal button) shows the kinds and
ids, features against neurons — per-criterion distributions, medians, agreement between raters — and
``to_html(path)`` exports that reveal as a static page.

    rs = RatingSession.from_run(run, "A/1", rater="reading-group", n_features=10, n_neurons=10)
    rs                      # rate with the keyboard
    rs.reveal()             # then look
"""
from __future__ import annotations

import dataclasses

import traitlets

from monosemantic.errors import ConfigError
from monosemantic.interpret.ratings import CRITERIA, MAX_TOTAL

from .base import MsWidget, open_run
from .html import display_token

__all__ = ["RatingSession", "item_spec", "results_spec"]

CONTEXT_CHARS = 80      # characters of context around each sample (whole tokens, about 3/5 before it)


def item_spec(item, context_chars: int = CONTEXT_CHARS) -> dict:
    """What the front-end draws of one unit (a ``ratings.RatingItem``): an examples panel (one group per interval,
    highest first) and a logits panel, in the card's panel shapes (``base.js`` draws both).  No id, no kind:
    nothing here says what the unit is.  Every token string goes through ``display_token``."""
    from .card import CardLayout, ExamplesPanel, LogitsPanel, _seq

    layout = CardLayout(context_chars=context_chars)
    n = len(item.intervals)
    groups = [{"title": f"Interval {iv['index'] + 1} of {n}: {iv['lo']:.3g} – {iv['hi']:.3g}",
               "subtitle": f"{iv['count']:,} tokens, {len(iv['examples'])} sampled",
               "seqs": [_seq(e, layout) for e in iv["examples"]]}
              for iv in item.intervals if iv["count"] or iv["examples"]]
    examples = ExamplesPanel(title="Activation intervals",
                             subtitle="equal-width intervals from 0 to the max, sampled uniformly within each",
                             groups=groups, max_act=float(item.max_act) or 1.0, empty="never fires")
    logits = LogitsPanel(positive=[(display_token(t), float(v)) for t, v in item.logits_top],
                         negative=[(display_token(t), float(v)) for t, v in item.logits_bottom])
    return {"position": int(item.position), "n_units": int(item.n_units),
            "panels": {"examples": dataclasses.asdict(examples), "logits": dataclasses.asdict(logits)}}


def results_spec(reveal) -> dict:
    """A ``ratings.Reveal`` as the reveal view draws it (explanations made visible like tokens)."""
    d = reveal.to_dict()
    d["rows"] = [{**r, "explanation": display_token(r.get("explanation") or "")} for r in d["rows"]]
    return d


class RatingSession(MsWidget):
    """``RatingSession(session, rater)`` on a ``ratings.Session``, or ``RatingSession.from_run(run, dict_id, rater,
    n_features, n_neurons, seed, name)`` (draws the session, or resumes it)."""

    _js = "rating"

    rater = traitlets.Unicode("").tag(sync=True)
    raters = traitlets.List(traitlets.Unicode()).tag(sync=True)
    criteria = traitlets.List().tag(sync=True)                # [{name, max, label, question}]
    n_units = traitlets.Int(0).tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    item = traitlets.Dict().tag(sync=True)                    # item_spec of the unit at `position`
    answers = traitlets.Dict().tag(sync=True)                 # the rater's answers: {position: {scores, explanation}}
    revealed = traitlets.Bool(False).tag(sync=True)
    results = traitlets.Dict().tag(sync=True)                 # results_spec once revealed
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, session, rater: str = "rater", **kw):
        if session.run is None:
            raise ConfigError("the session was opened without its run; open it with ratings.open_session(run, dict_id) "
                              "or RatingSession.from_run")
        self.session = session
        session.add_rater(rater)
        start = session.next_position(rater)
        super().__init__(criteria=[dataclasses.asdict(c) for c in CRITERIA], n_units=len(session),
                         raters=session.raters(), **kw)
        self.rater = rater
        self.position = 0 if start is None else start
        self._load_item()

    @classmethod
    def from_run(cls, run, dict_id: str, rater: str = "rater", n_features: int = 10, n_neurons: int = 10,
                 seed: int = 0, name: str = "blind", low_mode: bool = False, **kw) -> "RatingSession":
        from monosemantic.interpret.ratings import open_session

        return cls(open_session(open_run(run), dict_id, n_features=n_features, n_neurons=n_neurons, seed=seed,
                                name=name, low_mode=low_mode), rater=rater, **kw)

    # ---- state ------------------------------------------------------------------------------------------------
    def _load_answers(self) -> None:
        self.answers = {str(p): {"scores": a.scores, "explanation": a.explanation, "total": a.total}
                        for p, a in self.session.answers(self.rater).items()}

    def _load_item(self) -> None:
        self.item = item_spec(self.session.item(self.position))

    @traitlets.validate("position")
    def _check_position(self, proposal):
        p = int(proposal["value"])
        if not 0 <= p < max(1, self.n_units):
            raise traitlets.TraitError(f"position {p} is not in this session (0 … {self.n_units - 1})")
        return p

    @traitlets.observe("position")
    def _on_position(self, change):
        if getattr(self, "session", None) is not None and self.item:
            self._load_item()

    @traitlets.validate("rater")
    def _check_rater(self, proposal):
        try:
            return self.session.add_rater(str(proposal["value"]).strip())
        except ConfigError as e:
            raise traitlets.TraitError(str(e)) from None

    @traitlets.observe("rater")
    def _on_rater(self, change):
        self.raters = self.session.raters()
        self._load_answers()
        self.error = ""
        self.status = f"rating as {self.rater}: {len(self.answers)} of {self.n_units} rated"

    # ---- actions (the front-end's messages, and the same from Python) --------------------------------------------
    def rate(self, scores: dict, explanation: str = "", position: int | None = None) -> None:
        """Save the rater's answer on ``position`` (default: the unit shown) and go to the next unit not rated."""
        p = self.position if position is None else int(position)
        a = self.session.rate(self.rater, p, scores, explanation)
        self._load_answers()
        nxt = self.session.next_position(self.rater, after=p)
        done = len(self.answers)
        self.status = (f"saved unit {p + 1} (total {a.total} of {MAX_TOTAL}) · {done} of {self.n_units} rated"
                       + ("" if nxt is not None else " · all rated: reveal when everyone is done"))
        self.error = ""
        if nxt is not None:
            self.position = nxt

    def reveal(self):
        """Show the kinds and ids, features against neurons, agreement; returns the library's ``Reveal``."""
        r = self.session.reveal()
        self.results = results_spec(r)
        self.revealed = True
        return r

    def _handle(self, content) -> None:
        if not isinstance(content, dict):
            return
        try:
            if content.get("type") == "save":
                self.rate(content.get("scores") or {}, content.get("explanation") or "", content.get("position"))
            elif content.get("type") == "reveal":
                self.reveal()
            elif content.get("type") == "rater":
                self.rater = str(content.get("name") or "")
        except (ConfigError, traitlets.TraitError) as e:   # shown in the widget: the rater fixes it and goes on
            self.error = str(e)

    # ---- static export: the reveal ------------------------------------------------------------------------------
    def static_state(self) -> dict:
        """The reveal (a static page is for after the session: it carries kinds and ids)."""
        if not self.revealed:
            self.reveal()
        st = super().static_state()
        st["item"] = {}
        return st

    def page_title(self) -> str:
        return f"blind rating of {self.session.dict_id} features and {self.session.transformer} neurons: revealed"
