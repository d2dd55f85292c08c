"""``CorrelationMatrix``: the cross-run feature correlation matrix (universality), with linked feature cards.

The matrix of a ``monosemantic.universality.Comparison`` (every feature of dictionary a vs every feature of b),
rows and columns reordered so the one-to-one matches lie on the diagonal, strongest first.  The front end draws a
canvas of at most ``max_pixels``² cells: when the view holds more rows or columns, each pixel shows the *maximum*
correlation of its block (a match anywhere in the block stays visible).  Drag a rectangle to zoom (the kernel
re-pools the new window), double-click or "reset" to zoom out.  Clicking a pixel that is a single cell selects
that pair; clicking a pooled pixel sends the block and the kernel selects the block's strongest pair.  Hovering a
cell names both features by their labels (``interpret.labels``; with a run directory).  The
selection (``selected_pair``) opens both features' cards side by side below the matrix.  Next to the matrix: the
distribution of best-match correlations for features and for neurons (plotly), with the paper's medians.

Units that are not alive on the comparison's token set (the library's status rule: dead, ultralow, undefined) are
left out of the matrix while ``hide_flagged`` (default; the toolbar's toggle) — the stats line says how many, on
how many tokens.  Present mode steps through the one-to-one matches (←/→); a static page (``to_html``) carries
every feature's card of both dictionaries, so a click there opens the two cards too, and its address follows the
selection (``matrix.html#A/1/12`` opens feature 12 of A/1 with its match).

Synced state is the truth: ``view`` (window in matrix order), ``image`` (uint8 codes of the pooled window: 0..250
↦ r ∈ [−1, 1], 255 = undefined), ``pick`` (a block clicked), ``selected_pair`` ([a feature, b feature] or []).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import ipywidgets
import numpy as np
import traitlets

from .base import (LinkedCards, MsWidget, WithLinkedCards, default_card_factory, open_run, pack_cards,
                   source_cards)

__all__ = ["CorrelationMatrix", "best_match_distribution_figure", "encode_image"]


# ---- the matrix ------------------------------------------------------------------------------------------

def encode_image(values: np.ndarray) -> bytes:
    """uint8 codes of correlations: round((r + 1) / 2 · 250) for r in [−1, 1]; 255 for NaN."""
    v = np.asarray(values, dtype=np.float64)
    q = np.full(v.shape, 255, np.uint8)
    ok = ~np.isnan(v)
    q[ok] = np.rint((np.clip(v[ok], -1, 1) + 1) / 2 * 250).astype(np.uint8)
    return q.tobytes()


def best_match_distribution_figure(comparison, height: int = 340):
    """Histograms of best-match correlations, features and neurons side by side, with medians and the paper's."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from monosemantic.universality import HIST_EDGES, PAPER

    parts = [("features", comparison.features, PAPER["feature_median"])]
    if comparison.neurons is not None:
        parts.append(("neurons", comparison.neurons, PAPER["neuron_median"]))
    fig = make_subplots(rows=1, cols=len(parts), shared_yaxes=False,
                        subplot_titles=[f"{name}: {p.a} → {p.b}" for name, p, _ in parts])
    centers = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2
    colors = {"features": "#2c7fb8", "neurons": "#d95f0e"}
    for col, (name, pr, paper) in enumerate(parts, start=1):
        v = pr.best_values("ab")
        counts = np.histogram(v, bins=HIST_EDGES)[0]
        fig.add_trace(go.Bar(x=centers, y=counts, width=HIST_EDGES[1] - HIST_EDGES[0], name=name,
                             marker_color=colors[name], showlegend=False), row=1, col=col)
        med = float(np.median(v)) if len(v) else float("nan")
        if np.isfinite(med):
            fig.add_vline(x=med, line=dict(color="black", width=2), row=1, col=col,
                          annotation_text=f"median {med:.2f}", annotation_position="top left")
        fig.add_vline(x=paper, line=dict(color="gray", dash="dash"), row=1, col=col,
                      annotation_text=f"paper {paper:.2f}", annotation_position="top right")
        fig.update_xaxes(title_text="best-match correlation", range=[-0.2, 1.02], row=1, col=col)
        fig.update_yaxes(title_text="count" if col == 1 else None, row=1, col=col)
    fig.update_layout(height=height, width=230 * len(parts) + 40, margin=dict(l=45, r=10, t=40, b=45),
                      bargap=0.02, font=dict(size=11))
    fig.update_annotations(font_size=11)
    return fig


class CorrelationMatrix(WithLinkedCards, MsWidget):
    """See the module docstring.  ``CorrelationMatrix(comparison, run_dir=run.root)`` or
    ``CorrelationMatrix.from_run(run_dir, "A/1", "B/1")`` (a comparison saved by ``monosemantic compare``)."""

    _js = "correlation"

    title = traitlets.Unicode("").tag(sync=True)
    a_label = traitlets.Unicode("").tag(sync=True)
    b_label = traitlets.Unicode("").tag(sync=True)
    shape = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    row_order = traitlets.List(traitlets.Int()).tag(sync=True)     # matrix row k ↦ feature of a
    col_order = traitlets.List(traitlets.Int()).tag(sync=True)
    view = traitlets.List(traitlets.Int(), default_value=[0, 0, 0, 0]).tag(sync=True)   # r0, r1, c0, c1
    image = traitlets.Bytes(b"").tag(sync=True)
    image_shape = traitlets.List(traitlets.Int(), default_value=[0, 0]).tag(sync=True)
    image_view = traitlets.List(traitlets.Int(), default_value=[0, 0, 0, 0]).tag(sync=True)
    max_pixels = traitlets.Int(160).tag(sync=True)
    pick = traitlets.List(traitlets.Int()).tag(sync=True)          # a pooled block clicked: r0, r1, c0, c1
    selected_pair = traitlets.List(traitlets.Int()).tag(sync=True)  # [feature of a, feature of b] or []
    selected_value = traitlets.Float(None, allow_none=True).tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)                         # medians (ours, the paper's)
    hide_flagged = traitlets.Bool(True).tag(sync=True)             # leave units that are not alive out
    flagged = traitlets.Dict().tag(sync=True)                       # {"a": n, "b": n, "tokens": n}
    a_names = traitlets.List(traitlets.Unicode()).tag(sync=True)    # each feature's label (interpret.labels), "" none
    b_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    n_matches = traitlets.Int(0).tag(sync=True)                     # the first n of the orders are matched pairs
    match_values = traitlets.List(traitlets.Float()).tag(sync=True)  # their correlations

    def __init__(self, comparison, run_dir: str | Path | None = None, max_pixels: int = 160,
                 card_factory: Callable | None = None, figure: bool = True, **kw):
        pr = comparison.features
        self._cmp = comparison
        self._corr = pr.corr
        ro, co = pr.order()
        self._ro_all, self._co_all = np.asarray(ro), np.asarray(co)
        self._alive_a, self._alive_b = np.asarray(pr.status_a) == "alive", np.asarray(pr.status_b) == "alive"
        self._ro, self._co = self._orders(kw.get("hide_flagged", True))
        _, _, mvals = pr.assignment()
        s = comparison.summary()
        stats = {"feature_median": s.get("feature_median"), "neuron_median": s.get("neuron_median"),
                 "paper": s.get("paper"), "tokens": s.get("tokens"), "dead_a": s["features"]["dead_a"],
                 "dead_b": s["features"]["dead_b"]}
        flagged = {"a": int((~self._alive_a).sum()), "b": int((~self._alive_b).sum()), "tokens": int(pr.tokens)}
        super().__init__(title=f"{pr.a} vs {pr.b}: feature activation correlation", a_label=pr.a, b_label=pr.b,
                         shape=[len(self._ro), len(self._co)], row_order=self._ro.tolist(),
                         col_order=self._co.tolist(), max_pixels=max_pixels, stats=stats, flagged=flagged,
                         n_matches=int(len(mvals)),
                         match_values=[float(v) for v in np.sort(np.asarray(mvals, float))[::-1]], **kw)
        self.run_dir = None if run_dir is None else Path(run_dir)
        if self.run_dir is not None:     # the tooltips name each feature by its label
            from monosemantic.interpret.labels import Labels

            run = open_run(self.run_dir)
            self.a_names, self.b_names = Labels.open(run, pr.a).texts(), Labels.open(run, pr.b).texts()
        self.cards = LinkedCards(card_factory or default_card_factory(self.run_dir, compact=True),
                                 "click a cell to open the two features' cards")
        self.distribution = None
        if figure:
            import plotly.graph_objects as go

            self.distribution = go.FigureWidget(best_match_distribution_figure(comparison))
        self.view = [0, self.shape[0], 0, self.shape[1]]
        if self.image_view != self.view:   # the observer did not fire (same value)
            self._render(None)

    def _orders(self, hide: bool) -> tuple[np.ndarray, np.ndarray]:
        """The matrix orders, without the units that are not alive when ``hide`` (matches stay on the diagonal:
        only alive pairs are matched)."""
        if not hide:
            return self._ro_all, self._co_all
        return self._ro_all[self._alive_a[self._ro_all]], self._co_all[self._alive_b[self._co_all]]

    @traitlets.observe("hide_flagged")
    def _on_hide(self, change):
        self._ro, self._co = self._orders(self.hide_flagged)
        with self.hold_sync():
            self.row_order, self.col_order = self._ro.tolist(), self._co.tolist()
            self.shape = [len(self._ro), len(self._co)]
        self.view = [0, self.shape[0], 0, self.shape[1]]
        if self.image_view != self.view:
            self._render(None)

    @classmethod
    def from_run(cls, run_dir: str | Path, a: str = "A/1", b: str = "B/1", **kw) -> "CorrelationMatrix":
        from monosemantic.universality import load_comparison

        run = open_run(run_dir)
        return cls(load_comparison(run, a, b), run_dir=run.root, **kw)

    # ---- kernel side ----
    image_row_edges = traitlets.List(traitlets.Int()).tag(sync=True)   # image row k = matrix rows [e[k], e[k+1])
    image_col_edges = traitlets.List(traitlets.Int()).tag(sync=True)

    def _clamp(self, v) -> list[int]:
        P, Q = self.shape
        if len(v) < 4:
            return [0, P, 0, Q]
        r0, r1, c0, c1 = (int(x) for x in v[:4])
        r0, c0 = max(0, min(r0, P - 1)), max(0, min(c0, Q - 1))
        r1, c1 = max(r0 + 1, min(r1, P)), max(c0 + 1, min(c1, Q))
        return [r0, r1, c0, c1]

    @traitlets.validate("view")
    def _valid_view(self, proposal):
        return self._clamp(list(proposal["value"]))

    @traitlets.observe("view", "max_pixels")
    def _render(self, change):
        r0, r1, c0, c1 = self.view
        W = self.window()
        h, w = min(r1 - r0, self.max_pixels), min(c1 - c0, self.max_pixels)
        re = np.linspace(0, r1 - r0, h + 1).astype(np.int64)
        ce = np.linspace(0, c1 - c0, w + 1).astype(np.int64)
        with np.errstate(invalid="ignore"):
            pooled = np.fmax.reduceat(np.fmax.reduceat(W, re[:-1], axis=0), ce[:-1], axis=1)
        self.image_row_edges = (re + r0).tolist()
        self.image_col_edges = (ce + c0).tolist()
        self.image = encode_image(pooled)
        self.image_shape = [h, w]
        self.image_view = list(self.view)

    def window(self, view: list[int] | None = None) -> np.ndarray:
        """The correlations of the view (matrix order), float32 (NaN = undefined)."""
        r0, r1, c0, c1 = view or self.view
        return self._corr[np.ix_(self._ro[r0:r1], self._co[c0:c1])]

    @traitlets.observe("pick")
    def _on_pick(self, change):
        """A pooled block was clicked ([r0, r1, c0, c1, nonce] in matrix order): select its strongest pair."""
        if len(self.pick) < 4:
            return
        r0, r1, c0, c1 = self._clamp(self.pick)
        W = self.window([r0, r1, c0, c1])
        if np.isnan(W).all():
            return
        i, j = np.unravel_index(np.nanargmax(W), W.shape)
        self.select(int(self._ro[r0 + i]), int(self._co[c0 + j]))

    def select(self, a_idx: int, b_idx: int) -> None:
        """Select the pair (feature a_idx of a, feature b_idx of b): as a click on its cell."""
        self.selected_pair = [int(a_idx), int(b_idx)]

    @traitlets.observe("selected_pair")
    def _on_select(self, change):
        if len(self.selected_pair) != 2:
            self.selected_value = None
            self.cards.show([])
            return
        i, j = self.selected_pair
        P, Q = self._corr.shape
        if not (0 <= i < P and 0 <= j < Q):
            self.selected_pair = []
            return
        r = float(self._corr[i, j])
        self.selected_value = None if np.isnan(r) else r
        pr = self._cmp.features
        bi, bv = pr.best("ab")
        bj, bw = pr.best("ba")
        fmt = (lambda x: "undefined" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}")
        info_a = {"correlation with " + f"{pr.b} #{j}": fmt(self.selected_value),
                  "best match": f"{pr.b} #{bi[i]} (r = {fmt(bv[i])})" if bi[i] >= 0 else "none",
                  "fires on": f"{int(pr.fires_a[i])} of {pr.tokens} tokens"}
        info_b = {"correlation with " + f"{pr.a} #{i}": fmt(self.selected_value),
                  "best match": f"{pr.a} #{bj[j]} (r = {fmt(bw[j])})" if bj[j] >= 0 else "none",
                  "fires on": f"{int(pr.fires_b[j])} of {pr.tokens} tokens"}
        self.cards.show([(pr.a, i, info_a), (pr.b, j, info_b)])

    # ---- display / export ----
    def panel(self) -> ipywidgets.VBox:
        top = [self] + ([self.distribution] if self.distribution is not None else [])
        row = ipywidgets.HBox(top, layout=ipywidgets.Layout(align_items="flex-start", grid_gap="16px",
                                                            flex_flow="row wrap"))
        return ipywidgets.VBox([row, self.cards.box])

    def page_title(self) -> str:
        return self.title

    def static_state(self, cards: bool = True) -> dict:
        """The synced state, and (``cards``, with a run directory) every feature's compact card of both
        dictionaries, packed, so a click on the page opens them as in the notebook."""
        # the kernel-side bookkeeping of the last pooled click is not needed without a kernel
        st = {k: v for k, v in super().static_state().items() if k != "pick"}
        st["static_cards"] = {}
        if not cards:
            return st
        from .card import CardLayout

        pr = self._cmp.features
        for d, n in ((pr.a, self._corr.shape[0]), (pr.b, self._corr.shape[1])):
            if self.run_dir is not None:
                specs = source_cards(self.run_dir, d, range(n), CardLayout.compact_export())
            else:   # no run: what the card factory builds, when it builds cards (FeatureCard), else none
                specs = {}
                for i in range(n):
                    c = self.cards.factory(d, i, {})
                    if not isinstance(getattr(c, "card", None), dict):
                        break
                    specs[i] = c.card
            if specs:
                st["static_cards"][d] = pack_cards(specs)
        return st

    def to_html(self, path, include_plotly: bool | None = None, cards: bool = True) -> Path:
        """A self-contained page: the matrix, the distributions beside it, the open cards below and (``cards``)
        every feature's card for the page's own clicks; ``matrix.html#A/1/12`` opens on feature 12's match."""
        return super().to_html(path, include_plotly, cards=cards)

    def _page_extras(self) -> dict:
        """The open cards below, and the distributions beside the matrix (drawn by the page's one plotly.js)."""
        extras = super()._page_extras()
        if self.distribution is not None:
            extras["figures"] = [self.distribution.to_plotly_json()]
        return extras
