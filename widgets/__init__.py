"""monosemantic.widgets — the presentation layer: plots, feature cards, heatmaps, browsers.

It reads the library's data objects (``monosemantic.runs.Run`` and friends) and never computes anything a second
caller would need; the library never imports it.
"""
from .plots import (density_histogram_figure, dictionary_metrics_table, l0_vs_loss_recovered_figure,
                    training_curves_figure)

__all__ = ["density_histogram_figure", "dictionary_metrics_table", "l0_vs_loss_recovered_figure",
           "training_curves_figure"]
