"""monosemantic.widgets — the presentation layer: plots, feature cards, heatmaps, browsers, universality views.

It reads the library's data objects (``monosemantic.runs.Run``, ``monosemantic.features.FeatureStats``,
``monosemantic.universality``/``splitting`` results) and never computes anything a second caller would need nor
reads a file itself; the library never imports it.  Every widget builds from a run directory and ids and exports
static HTML (``to_html``).

One family: every widget is a ``base.MsWidget`` — its front-end is ``base.js`` + ``<name>.js`` (``_js = "name"``),
styled by ``widgets.css`` (``ms-`` classes), its token strings shown through ``html.display_token`` /
``token_label``, its static page built by ``html.static_page``.  A new widget is a ``<name>.py`` with an MsWidget
subclass and a ``<name>.js`` exporting ``render``; clicks that open feature cards go through ``base.LinkedCards``.
"""
from .plots import (density_histogram_figure, dictionary_metrics_table, l0_vs_loss_recovered_figure,
                    training_curves_figure)

__all__ = ["density_histogram_figure", "dictionary_metrics_table", "l0_vs_loss_recovered_figure",
           "training_curves_figure", "FeatureCard", "NeuronCard", "ActivationHeatmap", "FeatureBrowser",
           "CorrelationMatrix", "SplittingTree", "FeatureMap", "RatingSession", "SteeringPanel", "AutomatonGraph"]

_LAZY = {"FeatureCard": ".card", "NeuronCard": ".card", "ActivationHeatmap": ".heatmap",
         "FeatureBrowser": ".browser", "CorrelationMatrix": ".correlation", "SplittingTree": ".splitting",
         "FeatureMap": ".feature_map", "RatingSession": ".rating", "SteeringPanel": ".steering",
         "AutomatonGraph": ".automata"}


def __getattr__(name):  # anywidget/ipywidgets load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
