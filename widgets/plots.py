"""Plotly figures of a run's results (training curves, density histograms, the sparsity/fidelity frontier)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def training_curves_figure(run, names: list[str], keys: tuple[str, ...] = ("loss",), title: str | None = None):
    """Per-step curves of transformers (``"A"``) or dictionaries (``"A/1"``); ``eval_loss`` points are drawn
    as markers where present."""
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=keys)
    for col, key in enumerate(keys, start=1):
        for name in names:
            log = [r for r in run.train_log(name) if key in r]
            fig.add_trace(go.Scatter(x=[r["step"] for r in log], y=[r[key] for r in log], mode="lines",
                                     name=f"{name} {key}", legendgroup=name), row=1, col=col)
            ev = [r for r in run.train_log(name) if "eval_loss" in r]
            if key == "loss" and ev:
                fig.add_trace(go.Scatter(x=[r["step"] for r in ev], y=[r["eval_loss"] for r in ev],
                                         mode="markers", name=f"{name} eval loss", legendgroup=name), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(title=title or "training curves", height=380)
    return fig


def density_histogram_figure(run, dict_ids: list[str], neuron_density=None, variants: dict | None = None):
    """Log10 feature-density histograms (dead features reported in the legend), optionally with the neurons' and
    with ``variants`` ({label: metrics}, e.g. ``metrics.variant_metrics``: the same dictionary by another recipe)."""
    import numpy as np

    fig = go.Figure()
    for d, m in [(d, run.metrics(d)) for d in dict_ids] + list((variants or {}).items()):
        h = m["density_histogram"]
        centers = [(a + b) / 2 for a, b in zip(h["log10_edges"][:-1], h["log10_edges"][1:])]
        fig.add_trace(go.Bar(x=centers, y=h["counts"], name=f"{d} ({h['dead']} dead)", opacity=0.6))
    if neuron_density is not None:
        alive = neuron_density[neuron_density > 0]
        fig.add_trace(go.Histogram(x=np.log10(alive), name="neurons", opacity=0.6, nbinsx=40))
    fig.update_layout(barmode="overlay", title="feature density (log10 fraction of tokens)",
                      xaxis_title="log10 density", yaxis_title="features", height=380)
    return fig


def dictionary_metrics_table(run) -> pd.DataFrame:
    """The summary's dictionary metrics as a DataFrame (one row per dictionary)."""
    rows = [{"id": k, **v} for k, v in run.summary()["dictionaries"].items()]
    cols = ["id", "d_sae", "l0", "mse", "fvu", "loss_recovered", "dead", "ultralow", "dead_fraction",
            "ultralow_fraction"]
    return pd.DataFrame(rows, columns=cols).set_index("id") if rows else pd.DataFrame(columns=cols)


def l0_vs_loss_recovered_figure(run):
    df = dictionary_metrics_table(run).reset_index()
    fig = go.Figure(go.Scatter(x=df["l0"], y=df["loss_recovered"], mode="markers+text", text=df["id"],
                               textposition="top center", marker=dict(size=12, color=df["d_sae"].astype(float),
                               colorscale="Viridis", showscale=True, colorbar=dict(title="d_sae"))))
    fig.update_layout(title="sparsity vs fidelity across dictionary sizes", xaxis_title="L0 (active features / token)",
                      yaxis_title="loss recovered", height=380)
    return fig
