"""``FeatureMap``: the UMAP of decoder vectors across dictionary sizes, coloured by HDBSCAN cluster, density or size.

The points come from ``monosemantic.splitting.feature_map`` (one row per feature: dict_id, idx, x, y, cluster,
density, top_tokens).  The front end draws them on a canvas as wide as the output (tens of thousands of points
stay fluid), zooms (wheel, +/−) and pans (drag), labels each cluster with its most common top tokens
(``cluster_labels``), and finds features by id ("A/1 123", "123") or token (the search box rings the matches;
present mode steps through them).  Hovering shows a feature's top tokens and its label (``interpret.labels``; the search box finds labels too),
clicking opens its card below
(``selected_feature``).  ``color_by`` ("cluster" | "density" | "dict") is a synced trait, switched by the
buttons.  ``feature_map_figure(df)`` draws the same map as a plotly figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import traitlets

from .base import LinkedCards, MsWidget, WithFeatureSelection, default_card_factory, open_run
from .html import density_text, display_token, escape_html, token_label

__all__ = ["FeatureMap", "feature_map_figure"]


COLOR_BY = ("cluster", "density", "dict")


def _tok_label(toks) -> str:
    """A point's label: its first five top tokens, each at most 20 characters."""
    return token_label(toks, 5, max_chars=20)


def cluster_labels(df, k: int = 3) -> list[dict]:
    """Each HDBSCAN cluster's label: the ``k`` most common first top tokens of its features (as shown, spaces
    stripped; ties by first appearance), placed at the members' median position."""
    from collections import Counter

    out = []
    if not len(df):
        return out
    toks = df["top_tokens"] if "top_tokens" in df else [[] for _ in range(len(df))]
    firsts = np.array([display_token(t[0]).strip() if len(t) else "" for t in toks], dtype=object)
    cl = df["cluster"].to_numpy()
    for c in sorted(set(cl[cl >= 0].tolist())):
        m = cl == c
        common = [t for t, _ in Counter(x for x in firsts[m] if x).most_common(k)]
        out.append({"cluster": int(c), "n": int(m.sum()), "x": float(np.median(df["x"].to_numpy()[m])),
                    "y": float(np.median(df["y"].to_numpy()[m])),
                    "label": " ".join(f"‹{t[:16]}›" for t in common)})
    return out


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
    density = traitlets.Bytes(b"").tag(sync=True)     # float32: fraction of tokens it fires on (NaN: unknown)
    cluster_labels = traitlets.List(traitlets.Dict()).tag(sync=True)   # {cluster, n, x, y, label}
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)   # top tokens per point
    explanations = traitlets.List(traitlets.Unicode()).tag(sync=True)   # each point's label (interpret.labels)
    n_clusters = traitlets.Int(0).tag(sync=True)
    color_by = traitlets.Unicode("cluster").tag(sync=True)
    selected_feature = traitlets.List().tag(sync=True)   # [dict_id, idx] or []

    def __init__(self, df, run_dir: str | Path | None = None, color_by: str = "cluster",
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
            density=(df["density"].to_numpy(np.float32) if "density" in df else
                     np.full(len(df), np.nan, np.float32)).tobytes(),
            cluster_labels=cluster_labels(df), color_by=color_by, **kw)
        self.run_dir = None if run_dir is None else Path(run_dir)
        if self.run_dir is not None:
            self.explanations = self._explanations(df)
        self.cards = LinkedCards(card_factory or default_card_factory(self.run_dir), "click a point to open its card")

    def _explanations(self, df) -> list[str]:
        """Every point's label (``interpret.labels``; "" where none)."""
        from monosemantic.interpret.labels import Labels

        run = open_run(self.run_dir)
        texts = {}
        for d in df["dict_id"].unique():
            try:
                texts[d] = Labels.open(run, d).texts()
            except ValueError:      # a dictionary the run's config does not name
                texts[d] = []
        return [texts[d][i] if i < len(texts[d]) else "" for d, i in zip(df["dict_id"], df["idx"].astype(int))]

    @classmethod
    def from_run(cls, run_dir: str | Path, transformer: str = "A", **kw) -> "FeatureMap":
        from monosemantic.splitting import load_feature_map

        run = open_run(run_dir)
        return cls(load_feature_map(run, transformer), run_dir=run.root, **kw)

    @traitlets.validate("color_by")
    def _valid_color(self, proposal):
        v = proposal["value"]
        if v not in COLOR_BY:
            raise traitlets.TraitError(f"color_by must be one of {COLOR_BY}, got {v!r}")
        return v

    def feature_info(self, d: str, i: int) -> dict | None:
        k = self._key.get((d, i))
        if k is None:
            return None
        r = self._df.iloc[k]
        info = {"cluster": "noise" if int(r["cluster"]) < 0 else int(r["cluster"]),
                "top tokens": self.labels[k], "map position": f"({float(r['x']):.2f}, {float(r['y']):.2f})"}
        if "density" in r and np.isfinite(r["density"]):
            info["density"] = density_text(float(r["density"]), odds=True)
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
