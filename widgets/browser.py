"""FeatureBrowser: every feature (or neuron) of a source in a sortable, searchable table; the selected row's card
below it; one click steps to the previous / next unit of the current view.

Model state is the truth: ``query``, ``sort_by``, ``descending``, ``filter`` (alive | all | dead | ultralow),
``page`` and ``selected`` are synced traits; the kernel answers with ``rows`` (the current page) and ``card``.

    b = FeatureBrowser.from_run("data/runs/default", "A/1")
    b.query = "LORD"; b.sort_by = "proxy_corr"
    b.next(); b.select(123)
    b.to_html("browser.html", max_rows=50)        # static: the first 50 rows of the view and their cards
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import traitlets

from .base import MsWidget, open_run
from .card import CardLayout, card_spec, default_dictionary, neuron_features
from .html import display_token

COLUMNS = [
    {"key": "unit", "label": "id", "fmt": "int"},
    {"key": "density", "label": "density", "fmt": "pct"},
    {"key": "max_act", "label": "max act", "fmt": "num"},
    {"key": "top_tokens", "label": "top tokens", "fmt": "tokens"},
    {"key": "top_domain", "label": "domain", "fmt": "text"},
    {"key": "proxy_specificity", "label": "proxy spec.", "fmt": "pct"},
    {"key": "proxy_sensitivity", "label": "proxy sens.", "fmt": "pct"},
    {"key": "proxy_corr", "label": "proxy corr", "fmt": "num"},
]
FILTERS = ("alive", "all", "dead", "ultralow")


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
    descending = traitlets.Bool(True).tag(sync=True)
    filter = traitlets.Unicode("alive").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    card = traitlets.Dict().tag(sync=True)
    unit_kind = traitlets.Unicode("feature").tag(sync=True)

    def __init__(self, stats, layout: CardLayout | None = None, features_from: str | None = None, **kwargs):
        self._stats = stats
        self._layout = layout or CardLayout()
        self._features_from = features_from
        t = stats.table
        strs = t["top_tokens"].map(lambda ts: [display_token(s) for s in ts])
        self._table = t.rename_axis(None).assign(unit=t.index.to_numpy(), top_tokens=strs,
                               _search=[" ".join(ts).lower() + " " + str(d) for ts, d in zip(strs, t["top_domain"])],
                               _tokens_key=strs.map(" ".join))
        super().__init__(columns=COLUMNS, n_total=len(t), unit_kind=stats.kind, **kwargs)
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
        keys = [c["key"] for c in COLUMNS]
        if proposal["value"] not in keys:
            raise traitlets.TraitError(f"sort_by must be one of {keys}, got {proposal['value']!r}")
        return proposal["value"]

    def view(self):
        """The rows matching ``query`` and ``filter``, sorted: a DataFrame indexed by unit."""
        t = self._table
        f = self.filter
        if f == "alive":
            t = t[~t["dead"]]
        elif f == "dead":
            t = t[t["dead"]]
        elif f == "ultralow":
            t = t[t["ultralow"]]
        q = self.query.strip().lower()
        if q:
            hit = t["_search"].str.contains(q, regex=False)
            if q.isdigit():
                hit = hit | (t["unit"] == int(q))
            t = t[hit]
        key = "_tokens_key" if self.sort_by == "top_tokens" else self.sort_by
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
        for u, r in df.iterrows():
            out.append({"unit": int(u), "density": float(r["density"]), "max_act": float(r["max_act"]),
                        "top_tokens": list(r["top_tokens"]), "top_domain": str(r["top_domain"]),
                        "proxy_specificity": float(r["proxy_specificity"]),
                        "proxy_sensitivity": float(r["proxy_sensitivity"]), "proxy_corr": float(r["proxy_corr"]),
                        "dead": bool(r["dead"]), "ultralow": bool(r["ultralow"]), "search": r["_search"]})
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

    def _card(self, u: int) -> dict:
        feats = None
        if self._stats.kind == "neuron" and self._features_from and self._stats.run is not None:
            feats = neuron_features(self._stats.run, self._features_from, u)
        return card_spec(self._stats.unit(u), self._layout, features_of_neuron=feats,
                         features_source=self._features_from)

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

    def _handle(self, content) -> None:
        if isinstance(content, dict) and content.get("type") == "step":
            self.step(int(content.get("delta", 1)))

    # ---- static export ------------------------------------------------------------------------------------------
    def static_state(self, max_rows: int = 50) -> dict:
        """The first ``max_rows`` rows of the current view, each with its card (rows can be sorted, searched and
        clicked on the static page without a kernel)."""
        rows = self._records(self.view().head(int(max_rows)))
        cards = {str(r["unit"]): self._card(r["unit"]) for r in rows}
        sel = self.selected if str(self.selected) in cards else (rows[0]["unit"] if rows else -1)
        return {"columns": self.columns, "rows": rows, "static_rows": rows, "static_cards": cards,
                "n_total": len(rows), "n_matching": len(rows), "n_pages": 1, "page": 0, "page_size": self.page_size,
                "query": "", "sort_by": self.sort_by, "descending": self.descending, "filter": "all",
                "selected": sel, "card": cards.get(str(sel), {}), "unit_kind": self.unit_kind}

    def page_title(self) -> str:
        return f"{self._stats.source} {self.unit_kind} browser"

    def to_html(self, path, max_rows: int = 50, include_plotly: bool | None = None) -> Path:
        """A self-contained page: the first ``max_rows`` rows of the current view, each with its card."""
        return super().to_html(path, include_plotly, max_rows=max_rows)
