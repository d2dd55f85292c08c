"""FeatureBrowser: every feature (or neuron) of a source in a sortable, searchable table; the selected row's card
below it; one click steps to the previous / next unit of the current view.

Model state is the truth: ``query``, ``sort_by``, ``descending``, ``filter`` (alive | all | dead | ultralow |
low-mode), ``page`` and ``selected`` are synced traits; the kernel answers with ``rows`` (the current page) and
``card``.  Units are tagged by ``card.StatusRule`` (the library's dead / ultralow, and the low-density mode); the
default filter ``alive`` hides the tagged ones.  A query ranks by relevance (``sort_by="relevance"``, what typing a
query selects): the unit of that id, then units whose top tokens equal the query, start with it, then those whose
label (``interpret.labels``: the unit's explanation, or the user's edit) and top tokens hold every word of the query,
then top tokens containing it (an earlier top token first), then the domain; ties by density, most common first.
The label column follows edits made in any view (a card's header edits a label in place, ``set_label`` too).

    b = FeatureBrowser.from_run("data/runs/default", "A/1")
    b.query = "LORD"; b.sort_by = "proxy_corr"
    b.next(); b.select(123)
    b.to_html("browser.html")     # static: every unit, searchable and sortable, each card opened on demand
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import traitlets

from .base import CARD_CHUNK, MsWidget, open_run, pack_cards
from monosemantic.interpret.labels import words

from .card import (STATUSES, CardExtras, CardLayout, StatusRule, card_spec, default_dictionary, handle_label_message,
                   neuron_features, table_top_tokens)
from .html import display_token, packed

COLUMNS = [
    {"key": "unit", "label": "id", "fmt": "int"},
    {"key": "status", "label": "status", "fmt": "status"},
    {"key": "density", "label": "density", "fmt": "pct"},
    {"key": "max_act", "label": "max act", "fmt": "num"},
    {"key": "top_tokens", "label": "top tokens", "fmt": "tokens"},
    {"key": "label", "label": "label", "fmt": "label"},
    {"key": "top_domain", "label": "domain", "fmt": "text"},
    {"key": "proxy_specificity", "label": "proxy spec.", "fmt": "pct"},
    {"key": "proxy_sensitivity", "label": "proxy sens.", "fmt": "pct"},
    {"key": "proxy_corr", "label": "proxy corr", "fmt": "num"},
]
FILTERS = ("alive", "all", "dead", "ultralow", "low-mode")
SORTS = ["relevance"] + [c["key"] for c in COLUMNS]


def relevance(query: str, tokens_lower: list[list[str]], domains: list[str], units,
              labels: list[str] | None = None) -> np.ndarray:
    """Each row's relevance rank for ``query`` (lower is better; inf: no match): 0 the unit of that id; 1, 2 a top
    token equal to the query (spaces stripped), starting with it; 2.5 every word of the query starts a word of the
    unit's label or top tokens (``labels.words``, case-insensitive: "god name" finds the label "the name of God");
    3 a top token containing the query — 1 to 3 plus the token's position among the top tokens / 100; 4 the
    domain.  ``browser.js`` msRelevance ranks the same way on a static page."""
    q = query.strip().lower()
    out = np.full(len(units), np.inf)
    if not q:
        return out
    qw = words(q)
    for i, (toks, dom, u) in enumerate(zip(tokens_lower, domains, units)):
        if q.isdigit() and int(q) == int(u):
            out[i] = 0.0
            continue
        best = np.inf
        for k, t in enumerate(toks):
            ts = t.strip()
            r = 1 if ts == q or t == q else 2 if ts.startswith(q) else 3 if q in t else None
            if r is not None:
                best = min(best, r + k / 100)
        if best > 2.5 and qw:
            hay = words(labels[i]) if labels is not None else []
            hay += [w for t in toks for w in words(t)]
            if all(any(w.startswith(x) for w in hay) for x in qw):
                best = 2.5
        if best == np.inf and q in str(dom).lower():
            best = 4.0
        out[i] = best
    return out


class FeatureBrowser(MsWidget):
    _js = "browser"
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    n_total = traitlets.Int(0).tag(sync=True)
    n_matching = traitlets.Int(0).tag(sync=True)
    n_pages = traitlets.Int(1).tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(25).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("density").tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)
    status_counts = traitlets.Dict().tag(sync=True)       # {status: units}, and the token set's size
    descending = traitlets.Bool(True).tag(sync=True)
    filter = traitlets.Unicode("alive").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    card = traitlets.Dict().tag(sync=True)
    unit_kind = traitlets.Unicode("feature").tag(sync=True)

    def __init__(self, stats, layout: CardLayout | None = None, features_from: str | None = None, **kwargs):
        self._stats = stats
        self._layout = layout or CardLayout()
        self._features_from = features_from
        self._rule = StatusRule.of(stats)
        t = stats.table
        strs = t["top_tokens"].map(lambda ts: [display_token(s) for s in ts])
        status = self._rule.column(t)
        self._table = t.rename_axis(None).assign(unit=t.index.to_numpy(), top_tokens=strs, status=status,
                               _search=[" ".join(ts).lower() + " " + str(d) for ts, d in zip(strs, t["top_domain"])],
                               _tokens_key=strs.map(" ".join), _status_key=status.map(STATUSES.index))
        self._tokens_lower = [[x.lower() for x in ts] for ts in strs]
        self._extras = CardExtras(stats.run, stats.source) if stats.run is not None else None
        self._labels_at = None
        self._sync_labels()
        counts = {k: int((status == k).sum()) for k in STATUSES}
        counts.update(n_tokens=self._rule.n_tokens, ultralow_threshold=self._rule.ultralow_threshold,
                      low_threshold=self._rule.low_threshold)
        super().__init__(columns=COLUMNS, n_total=len(t), unit_kind=stats.kind, source=stats.source,
                         status_counts=counts, **kwargs)
        self._refresh()
        view = self.view()
        if len(view):
            self.selected = int(view.index[0])

    @classmethod
    def from_run(cls, run, source: str, layout: CardLayout | None = None, **traits) -> "FeatureBrowser":
        """``source`` "A/1" (features) or "A" (neurons); ``traits`` e.g. ``sort_by="proxy_corr"``."""
        from monosemantic.features import FeatureStats

        run = open_run(run)
        features_from = default_dictionary(run, source) if "/" not in source else None
        return cls(FeatureStats.load(run, source), layout=layout, features_from=features_from, **traits)

    @property
    def stats(self):
        return self._stats

    # ---- the view (Python is the truth; the front-end only renders) ----------------------------------------
    @traitlets.validate("filter")
    def _check_filter(self, proposal):
        if proposal["value"] not in FILTERS:
            raise traitlets.TraitError(f"filter must be one of {FILTERS}, got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("sort_by")
    def _check_sort(self, proposal):
        if proposal["value"] not in SORTS:
            raise traitlets.TraitError(f"sort_by must be one of {SORTS}, got {proposal['value']!r}")
        return proposal["value"]

    def _sync_labels(self) -> bool:
        """Rebuild the label column when a label changed since it was built (an edit in any view); True if so."""
        if self._extras is None:
            if "label" not in self._table:
                self._table["label"] = ""
            return False
        at = self._extras.labels.version
        if at == self._labels_at:
            return False
        texts = self._extras.labels.texts()
        self._table["label"] = [texts[int(u)] if 0 <= int(u) < len(texts) else "" for u in self._table.index]
        self._labels_at = at
        return True

    def view(self):
        """The rows matching ``query`` and ``filter``, sorted: a DataFrame indexed by unit."""
        self._sync_labels()
        t = self._table
        if self.filter != "all":
            t = t[t["status"] == self.filter]
        q = self.query.strip().lower()
        if q:
            pos = self._table.index.get_indexer(t.index)
            rank = relevance(q, [self._tokens_lower[i] for i in pos], list(t["top_domain"]), t["unit"],
                             list(t["label"]))
            t = t.assign(_relevance=rank)[np.isfinite(rank)]
        if self.sort_by == "relevance":
            if not q:
                return t.sort_values(["density", "unit"], ascending=[False, True], kind="stable")
            return t.sort_values(["_relevance", "density", "unit"], ascending=[True, False, True], kind="stable")
        key = {"top_tokens": "_tokens_key", "status": "_status_key"}.get(self.sort_by, self.sort_by)
        return t.sort_values([key, "unit"], ascending=[not self.descending, True], kind="stable")

    @traitlets.observe("query", "sort_by", "descending", "filter", "page", "page_size")
    def _on_view(self, change):
        if change["name"] != "page" and self.page != 0:
            self.page = 0  # re-enters through the observer
            return
        self._refresh()

    def _refresh(self) -> None:
        view = self.view()
        n = len(view)
        n_pages = max(1, -(-n // self.page_size))
        if self.page >= n_pages:
            self.page = n_pages - 1
            return
        page = view.iloc[self.page * self.page_size:(self.page + 1) * self.page_size]
        with self.hold_sync():
            self.n_matching = n
            self.n_pages = n_pages
            self.rows = self._records(page)

    @staticmethod
    def _records(df) -> list[dict]:
        out = []
        for u, r in zip(df.index, df.itertuples(index=False)):
            out.append({"unit": int(u), "status": r.status, "density": float(f"{r.density:.4g}"),
                        "max_act": float(f"{r.max_act:.4g}"), "top_tokens": list(r.top_tokens), "label": r.label,
                        "top_domain": str(r.top_domain), "proxy_specificity": float(f"{r.proxy_specificity:.3g}"),
                        "proxy_sensitivity": float(f"{r.proxy_sensitivity:.3g}"),
                        "proxy_corr": float(f"{r.proxy_corr:.3g}"), "dead": bool(r.dead),
                        "ultralow": bool(r.ultralow)})
        return out

    # ---- selection -------------------------------------------------------------------------------------------
    # validated, not checked in the observer: anywidget swallows an error raised inside an @observe, while a
    # TraitError from a validator reaches the caller and leaves the selection as it was (as FeatureCard.unit)
    @traitlets.validate("selected")
    def _check_selected(self, proposal):
        u = int(proposal["value"])
        if u >= self._stats.n_units:
            raise traitlets.TraitError(f"{self._stats.kind} {u} out of range: {self._stats.source} has "
                                       f"{self._stats.n_units} (0 … {self._stats.n_units - 1}; -1 for none)")
        return max(u, -1)

    @traitlets.observe("selected")
    def _on_selected(self, change):
        u = int(change["new"])
        self.card = self._card(u) if u >= 0 else {}

    def _card(self, u: int, layout: CardLayout | None = None, extras: CardExtras | None = None) -> dict:
        feats = None
        if self._stats.kind == "neuron" and self._features_from and self._stats.run is not None:
            feats = neuron_features(self._stats.run, self._features_from, u)
        extras = extras or self._extras
        more = extras.card_kwargs(u, table_top_tokens(self._stats)) if extras is not None else {}
        return card_spec(self._stats.unit(u), layout or self._layout, features_of_neuron=feats,
                         features_source=self._features_from, rule=self._rule, **more)

    def select(self, unit: int) -> None:
        """Show ``unit``'s card (and turn to its page if it is in the current view)."""
        unit = int(unit)
        order = self.view().index.to_numpy()
        pos = np.nonzero(order == unit)[0]
        if len(pos):
            self.page = int(pos[0]) // self.page_size
        self.selected = unit

    def step(self, delta: int) -> int:
        """Move the selection ``delta`` rows through the current view (clamped at its ends); return the unit."""
        order = self.view().index.to_numpy()
        if not len(order):
            return self.selected
        pos = np.nonzero(order == self.selected)[0]
        i = int(pos[0]) + int(delta) if len(pos) else 0
        self.select(int(order[max(0, min(len(order) - 1, i))]))
        return self.selected

    def next(self) -> int:
        return self.step(1)

    def prev(self) -> int:
        return self.step(-1)

    def set_label(self, unit: int, text: str) -> None:
        """Save ``text`` as ``unit``'s label (empty: back to the automatic one), as an edit on its card."""
        self._handle({"type": "label", "unit": int(unit), "text": text})

    def _handle(self, content) -> None:
        if isinstance(content, dict) and content.get("type") == "step":
            self.step(int(content.get("delta", 1)))
        elif isinstance(content, dict) and content.get("type") == "open":     # a nearest feature clicked on the card
            self.select(int(content["unit"]))
        elif self._stats.run is not None and handle_label_message(self._stats.run, self.source, content):
            self._refresh()
            if self.selected >= 0:
                self.card = self._card(self.selected)

    # ---- static export ------------------------------------------------------------------------------------------
    def static_state(self, max_rows: int | None = None, layout: CardLayout | None = None,
                     chunk: int = CARD_CHUNK) -> dict:
        """Every unit (or the first ``max_rows`` of the current view) and every one's card, for a page without a
        kernel: the rows and the cards travel packed (``html.packed``; cards ``chunk`` units a pack, opened when
        one of them is shown), the query, sort, filter and selection as they are here.  ``layout``: the cards'
        (default ``CardLayout.export()``: 10 top examples, 2 samples per interval)."""
        layout = layout or CardLayout.export()
        self._sync_labels()
        df = self._table if max_rows is None else self.view().head(int(max_rows))
        rows = self._records(df)
        # a page of thousands of cards: ablations only where cached, nearest features in one pass, no editing
        extras = None
        if self._stats.run is not None:
            extras = CardExtras(self._stats.run, self.source, compute_ablation=False, editable=False)
            extras.prepare_nearest([r["unit"] for r in rows])
        cards = pack_cards({r["unit"]: self._card(r["unit"], layout, extras) for r in rows}, chunk)
        index = cards["index"]
        sel = self.selected if str(self.selected) in index else (rows[0]["unit"] if rows else -1)
        return {"columns": self.columns, "rows": [], "static_rows": packed(rows),
                "static_cards": {self.source: cards}, "n_total": len(rows), "n_matching": len(rows),
                "n_pages": 1, "page": 0, "page_size": self.page_size, "query": self.query if max_rows is None else "",
                "sort_by": self.sort_by, "descending": self.descending,
                "filter": self.filter if max_rows is None else "all", "selected": sel,
                "card": self._card(sel, layout, extras) if sel >= 0 else {}, "unit_kind": self.unit_kind,
                "source": self.source, "status_counts": self.status_counts}

    def page_title(self) -> str:
        return f"{self._stats.source} {self.unit_kind} browser"

    def to_html(self, path, max_rows: int | None = None, include_plotly: bool | None = None,
                layout: CardLayout | None = None) -> Path:
        """A self-contained page of every unit (``max_rows``: only the first rows of the current view), each card
        opened on demand; it opens at ``page.html#A/1/2318`` on that unit, and the address follows the selection."""
        return super().to_html(path, include_plotly, max_rows=max_rows, layout=layout)
