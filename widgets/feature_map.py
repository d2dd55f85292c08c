"""``FeatureMap``: the UMAP of decoder vectors across dictionary sizes, coloured by size or by HDBSCAN cluster.

The points come from ``monosemantic.splitting.feature_map`` (one row per feature: dict_id, idx, x, y, cluster,
top_tokens).  The front end draws them on a canvas (tens of thousands of points stay fluid), hovering shows a
feature's top tokens, clicking opens its card below (``selected_feature``).  ``color_by`` ("dict" | "cluster") is
a synced trait, switched by the buttons.  ``feature_map_figure(df)`` draws the same map as a plotly figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import traitlets

from .base import LinkedCards, MsWidget, WithFeatureSelection, default_card_factory, open_run
from .html import escape_html, token_label

__all__ = ["FeatureMap", "feature_map_figure"]


def _tok_label(toks) -> str:
    """A point's label: its first five top tokens, each at most 20 characters."""
    return token_label(toks, 5, max_chars=20)


class FeatureMap(WithFeatureSelection, MsWidget):
    """``FeatureMap(df, run_dir=run.root)`` or ``FeatureMap.from_run(run_dir)`` (the saved ``feature_map``)."""

    _js = "feature_map"

    dict_ids = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sizes = traitlets.List(traitlets.Int()).tag(sync=True)
    xs = traitlets.Bytes(b"").tag(sync=True)          # float32 per point
    ys = traitlets.Bytes(b"").tag(sync=True)
    which = traitlets.Bytes(b"").tag(sync=True)       # uint8: index into dict_ids
    idx = traitlets.Bytes(b"").tag(sync=True)         # int32: feature index
    cluster = traitlets.Bytes(b"").tag(sync=True)     # int32: HDBSCAN label (−1 noise)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)   # top tokens per point
    n_clusters = traitlets.Int(0).tag(sync=True)
    color_by = traitlets.Unicode("dict").tag(sync=True)
    selected_feature = traitlets.List().tag(sync=True)   # [dict_id, idx] or []

    def __init__(self, df, run_dir: str | Path | None = None, color_by: str = "dict",
                 card_factory: Callable | None = None, **kw):
        df = df.reset_index(drop=True)
        order = sorted(df["dict_id"].unique(), key=lambda d: (int(df.loc[df["dict_id"] == d, "d_sae"].iloc[0]), d))
        code = {d: i for i, d in enumerate(order)}
        self._df = df
        self._key = {(d, int(i)): k for k, (d, i) in enumerate(zip(df["dict_id"], df["idx"]))}
        toks = df["top_tokens"] if "top_tokens" in df else [[] for _ in range(len(df))]
        super().__init__(
            dict_ids=list(order), sizes=[int(df.loc[df["dict_id"] == d, "d_sae"].iloc[0]) for d in order],
            xs=df["x"].to_numpy(np.float32).tobytes(), ys=df["y"].to_numpy(np.float32).tobytes(),
            which=np.array([code[d] for d in df["dict_id"]], np.uint8).tobytes(),
            idx=df["idx"].to_numpy(np.int32).tobytes(), cluster=df["cluster"].to_numpy(np.int32).tobytes(),
            labels=[_tok_label(t) for t in toks], n_clusters=int(df["cluster"].max() + 1) if len(df) else 0,
            color_by=color_by, **kw)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.cards = LinkedCards(card_factory or default_card_factory(self.run_dir), "click a point to open its card")

    @classmethod
    def from_run(cls, run_dir: str | Path, transformer: str = "A", **kw) -> "FeatureMap":
        from monosemantic.splitting import load_feature_map

        run = open_run(run_dir)
        return cls(load_feature_map(run, transformer), run_dir=run.root, **kw)

    @traitlets.validate("color_by")
    def _valid_color(self, proposal):
        v = proposal["value"]
        if v not in ("dict", "cluster"):
            raise traitlets.TraitError(f"color_by must be 'dict' or 'cluster', got {v!r}")
        return v

    def feature_info(self, d: str, i: int) -> dict | None:
        k = self._key.get((d, i))
        if k is None:
            return None
        r = self._df.iloc[k]
        info = {"cluster": "noise" if int(r["cluster"]) < 0 else int(r["cluster"]),
                "top tokens": self.labels[k], "map position": f"({float(r['x']):.2f}, {float(r['y']):.2f})"}
        if "density" in r and np.isfinite(r["density"]):
            info["density"] = f"{float(r['density']):.2g}"
        return info

    def page_title(self) -> str:
        return "feature map"


def feature_map_figure(df, color_by: str = "dict", height: int = 560):
    """The map as a plotly scatter (WebGL), hover with top tokens."""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = (sorted(df["dict_id"].unique(), key=lambda d: int(df.loc[df["dict_id"] == d, "d_sae"].iloc[0]))
              if color_by == "dict" else sorted(df["cluster"].unique()))
    for g in groups:
        sub = df[df["dict_id"] == g] if color_by == "dict" else df[df["cluster"] == g]
        name = f"{g} ({int(sub['d_sae'].iloc[0])})" if color_by == "dict" else ("noise" if g < 0 else f"cluster {g}")
        toks = sub["top_tokens"] if "top_tokens" in sub else [[]] * len(sub)
        text = ["<br>".join(escape_html(x) for x in (f"{d} #{i}", f"cluster {c}", _tok_label(t)))
                for d, i, c, t in zip(sub["dict_id"], sub["idx"], sub["cluster"], toks)]
        fig.add_trace(go.Scattergl(x=sub["x"], y=sub["y"], mode="markers", name=name, text=text,
                                   hoverinfo="text", marker=dict(size=6 if color_by == "dict" else 5, opacity=0.75)))
    fig.update_layout(title="decoder vectors across dictionary sizes (UMAP, cosine)", height=height,
                      xaxis=dict(showticklabels=False, title="UMAP 1"), yaxis=dict(showticklabels=False, title="UMAP 2"),
                      legend=dict(itemsizing="constant"))
    return fig
