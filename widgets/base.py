"""The one widget family: the base every monosemantic widget stands on, and the cards its clicks open.

``MsWidget`` is an ``anywidget.AnyWidget`` whose front-end is ``base.js`` + ``<_js>.js`` (``html.esm_bundle``)
styled by ``widgets.css``, both hot-reloaded with ``ANYWIDGET_HMR=1``; it hands plotly.js to the front-end on request
(offline, from the plotly package) and exports itself as a self-contained page with ``to_html(path)`` — the same
front-end code, run on the synced state (``static_state``) without a kernel.

``LinkedCards`` is the card container a widget's clicks update (``WithLinkedCards``: the widget displays above
it; ``WithFeatureSelection``: a ``selected_feature`` trait opens one card).  ``default_card_factory`` builds a
``FeatureCard`` for each click, or a summary card from what the analysis knows when there is no run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import anywidget
import ipywidgets
import traitlets

from .html import escape_html, plotly_js, view_spec, widget_assets, write_static_page

# the corpus domains' colours, for every view that shows a domain (histograms, the domains table, proxy plots)
DOMAIN_COLORS = {"python": "#3b7dd8", "bible": "#b8860b", "base64": "#2e9e5b", "text": "#8c8c8c"}


def open_run(run):
    """A ``Run`` from a run directory (or the ``Run`` itself)."""
    from monosemantic.runs import as_run

    return as_run(run)


class MsWidget(anywidget.AnyWidget):
    """Base of the monosemantic widgets.  A subclass names its front-end file (``_js = "card"`` for
    ``card.js``) and may override ``static_state`` / ``page_title`` for its static page."""

    _js: ClassVar[str] = ""
    _draws_plots: ClassVar[bool] = False  # its own front-end draws plotly figures (the heatmap); cards draw SVG

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_js"):   # hot-reloading with ANYWIDGET_HMR=1 (html.widget_assets)
            cls._esm, cls._css = widget_assets(cls._js)
        super().__init_subclass__(**kwargs)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._on_custom_msg)

    def _on_custom_msg(self, _widget, content, buffers):
        if isinstance(content, dict) and content.get("type") == "need-plotly":
            self.send({"type": "plotly-js"}, [plotly_js()])
        else:
            self._handle(content)

    def _handle(self, content) -> None:  # widget-specific messages
        pass

    # ---- static export ------------------------------------------------------------------------------------------
    def static_state(self) -> dict:
        """The synced state a static page starts from: every trait this widget declares (not anywidget's own)."""
        skip = set(anywidget.AnyWidget.class_trait_names())
        return {k: getattr(self, k) for k in self.keys
                if not k.startswith("_") and k not in skip and not isinstance(getattr(self, k), ipywidgets.Widget)}

    def page_title(self) -> str:
        return type(self).__name__

    def static_view(self) -> dict:
        """This widget as one view of a static page (see ``html.static_page``)."""
        return view_spec(self._js, self.static_state())

    def _page_extras(self) -> dict:
        """Linked cards and figures that go on the page with the widget."""
        return {}

    def to_html(self, path, include_plotly: bool | None = None, **options) -> Path:
        """A self-contained static HTML page of this widget (``options`` go to ``static_state``).  plotly.js
        (4.8 MB) is inlined once when the page draws a plotly figure — the widget's own (the heatmap) or a figure
        beside it; cards draw their histograms as SVG and need none.  ``include_plotly`` forces it either way."""
        extras = self._page_extras()
        if include_plotly is None:
            include_plotly = self._draws_plots or bool(extras.get("figures"))
        return write_static_page(path, self._js, self.static_state(**options), title=self.page_title(),
                                 include_plotly=include_plotly, **extras)


# ---- every card of a static page, packed ----------------------------------------------------------------------

CARD_CHUNK = 64     # cards per pack of a static page: showing one card unpacks this many


def pack_cards(specs: dict[int, dict], chunk: int = CARD_CHUNK) -> dict:
    """Card specs (unit → ``card.card_spec``) as a static page carries them: ``{"index": {unit: pack},
    "packs": {pack: html.packed({unit: spec})}}``, units in order, ``chunk`` a pack; ``base.js`` msCardStore opens
    one pack when one of its cards is shown."""
    from .html import packed

    units = sorted(int(u) for u in specs)
    packs = {str(k // chunk): packed({str(u): specs[u] for u in units[k:k + chunk]})
             for k in range(0, len(units), chunk)}
    return {"index": {str(u): i // chunk for i, u in enumerate(units)}, "packs": packs}


def source_cards(run_dir, source: str, units, layout=None) -> dict[int, dict]:
    """The card specs of ``units`` of ``source`` ("A/1") from a run's statistics, tagged by its status rule, with
    their labels, nearest features and (where cached) ablations — for a static page: nothing is computed per card
    but the nearest features (one pass)."""
    from monosemantic.features import FeatureStats

    from .card import CardExtras, StatusRule, card_spec, table_top_tokens

    run = open_run(run_dir)
    stats = FeatureStats.load(run, source)
    rule = StatusRule.of(stats)
    units = [int(u) for u in units]
    extras = CardExtras(run, source, compute_ablation=False, editable=False)
    extras.prepare_nearest(units)
    top = table_top_tokens(stats)
    return {u: card_spec(stats.unit(u), layout, rule=rule, **extras.card_kwargs(u, top)) for u in units}


# ---- linked cards --------------------------------------------------------------------------------------------------

def summary_card(dict_id: str, idx: int, info: dict | None = None) -> ipywidgets.HTML:
    """A small card from what the analysis itself knows (when no run directory is given)."""
    rows = "".join(f"<tr><th>{escape_html(k)}</th><td>{escape_html(v)}</td></tr>" for k, v in (info or {}).items())
    return ipywidgets.HTML(
        f'<div class="ms-summarycard"><div class="ms-summarycard-title">{escape_html(dict_id)} '
        f'feature {escape_html(idx)}</div><table>{rows}</table></div>')


def default_card_factory(run_dir: str | Path | None, compact: bool = False) -> Callable[[str, int, dict], Any]:
    """``factory(dict_id, idx, info) -> widget``: ``FeatureCard.from_run(run_dir, dict_id, idx)`` (``compact``:
    its one-column layout, for cards side by side), or a summary card when there is no run.  A card that
    fails to build shows its error in its place."""

    def factory(dict_id: str, idx: int, info: dict | None = None):
        if run_dir is None:
            return summary_card(dict_id, idx, info)
        from .card import CardLayout, FeatureCard  # card.py stands on this module: imported at first use

        try:
            return FeatureCard.from_run(run_dir, dict_id, int(idx),
                                        layout=CardLayout.compact() if compact else None)
        except Exception as e:  # noqa: BLE001 - shown to the user in place of the card, never swallowed
            return ipywidgets.HTML(f'<div class="ms-error">card {escape_html(dict_id)} #{escape_html(idx)} could '
                                   f'not be built: {escape_html(type(e).__name__)}: {escape_html(e)}</div>')

    return factory


class LinkedCards:
    """The card container a widget's clicks update: ``box`` (an ipywidgets.HBox) holds one column per feature,
    each a header (``.ms-cardhead`` with ``data-feature="A/1:12"``) above the card."""

    def __init__(self, factory: Callable[[str, int, dict], Any], placeholder: str = "click to open feature cards"):
        self.factory = factory
        self.keys: list[tuple[str, int]] = []
        self.cards: list[Any] = []
        self.box = ipywidgets.HBox(layout=ipywidgets.Layout(align_items="flex-start", flex_flow="row", width="100%",
                                                            grid_gap="12px"))
        self.box.add_class("ms-cards")
        self._placeholder = ipywidgets.HTML(f'<div class="ms-placeholder">{escape_html(placeholder)}</div>')
        self.box.children = [self._placeholder]

    def show(self, items: list[tuple[str, int, dict]]) -> None:
        cols, keys, cards = [], [], []
        for dict_id, idx, info in items:
            card = self.factory(dict_id, int(idx), info)
            head = ipywidgets.HTML(f'<div class="ms-cardhead" data-feature="{escape_html(dict_id)}:{int(idx)}">'
                                   f'{escape_html(dict_id)} #{int(idx)}</div>')
            inner = getattr(card, "cards", None)     # a card's own linked cards (its nearest features) go below it
            kids = [head, card] + ([inner.box] if isinstance(inner, LinkedCards) else [])
            col = ipywidgets.VBox(kids, layout=ipywidgets.Layout(flex="1 1 0", min_width="0", overflow="hidden"))
            col.add_class("ms-cardcol")   # side by side, sharing the width
            cols.append(col)
            keys.append((dict_id, int(idx)))
            cards.append(card)
        self.keys, self.cards = keys, cards
        self.box.children = cols or [self._placeholder]

    def static_cards(self) -> list[dict]:
        """The open cards for a static page: a widget card runs its own front-end there, a summary or error
        card (HTML this module built from escaped parts) is copied."""
        out = []
        for (dict_id, idx), card in zip(self.keys, self.cards):
            c = {"head": f"{dict_id} #{idx}", "key": f"{dict_id}:{idx}"}
            if isinstance(card, MsWidget):
                c["view"] = card.static_view()
            else:
                c["html"] = card.value
            out.append(c)
        return out


class WithLinkedCards(traitlets.HasTraits):  # HasTraits so a mixin may carry @observe handlers
    """For a widget whose clicks open cards in ``self.cards`` (a :class:`LinkedCards`): in a notebook it displays
    as :meth:`panel` — the widget above its cards — built once; its static page shows the open cards below."""

    def panel(self) -> ipywidgets.VBox:
        return ipywidgets.VBox([self, self.cards.box])

    def _repr_mimebundle_(self, **kwargs):
        if not hasattr(self, "_panel"):
            self._panel = self.panel()
        return self._panel._repr_mimebundle_(**kwargs)

    def _page_extras(self) -> dict:
        return {"cards": self.cards.static_cards()}


class WithFeatureSelection(WithLinkedCards):
    """A :class:`WithLinkedCards` widget selecting one feature by a ``selected_feature`` trait [dict_id, idx]:
    a selection opens that feature's card with the lines ``feature_info(dict_id, idx)`` gives (None: not a feature
    of this widget, and the selection is cleared); an empty selection closes the cards."""

    def select(self, dict_id: str, idx: int) -> None:
        self.selected_feature = [dict_id, int(idx)]

    def feature_info(self, dict_id: str, idx: int) -> dict | None:
        raise NotImplementedError

    @traitlets.observe("selected_feature")
    def _on_select(self, change):
        if len(self.selected_feature) != 2:
            self.cards.show([])
            return
        d, i = str(self.selected_feature[0]), int(self.selected_feature[1])
        info = self.feature_info(d, i)
        if info is None:
            self.selected_feature = []
            return
        self.cards.show([(d, i, info)])
