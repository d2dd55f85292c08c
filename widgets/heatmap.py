"""ActivationHeatmap: any text against chosen features (or neurons).

Every text is a row of tokens coloured by the selected unit's activation (hover: the activation and the top units
on that token); each unit's chip carries its label (``interpret.labels``); below, a tokens × units heatmap of one row.  The synced state is ``data`` (tokens and activations
of the shown units), ``selected`` (which unit colours the rows) and ``heat_row`` (which row the heatmap shows).

    hm = ActivationHeatmap.from_run("data/runs/default", "A/1", ["And God said", "def main():"], top=8)
    hm.selected = 2                         # colour by the third unit
    hm.set_texts(["import os"])             # recompute (runs the model)
    hm.to_html("heatmap.html")
"""
from __future__ import annotations

import numpy as np
import traitlets

from .base import MsWidget, open_run
from .html import display_token, token_label


class ActivationHeatmap(MsWidget):
    _js = "heatmap"
    _draws_plots = True
    data = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(0).tag(sync=True)
    heat_row = traitlets.Int(0).tag(sync=True)

    def __init__(self, run, source: str, texts: list[str], units: list[int] | None = None, top: int = 8,
                 labels: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._run = open_run(run)
        self.source = source
        self._top = int(top)
        self._fixed_units = None if units is None else list(dict.fromkeys(int(u) for u in units))
        self._labels = labels
        self._stats = None
        try:
            from monosemantic.features import FeatureStats

            self._stats = FeatureStats.load(self._run, source)
        except FileNotFoundError:  # statistics are optional: colours then scale to the texts' own max
            self._stats = None
        self.set_texts(texts, labels)

    @classmethod
    def from_run(cls, run, source: str, texts: str | list[str], units: list[int] | None = None, top: int = 8,
                 labels: list[str] | None = None) -> "ActivationHeatmap":
        """``source`` "A/1" (features) or "A" (neurons); ``units`` the ids to show, or the ``top`` units with the
        largest activation anywhere in the texts."""
        return cls(run, source, [texts] if isinstance(texts, str) else list(texts), units=units, top=top,
                   labels=labels)

    @property
    def units(self) -> list[int]:
        return [u["id"] for u in self.data.get("units", [])]

    def set_texts(self, texts: list[str], labels: list[str] | None = None) -> None:
        from monosemantic.prompt import prompt_activations

        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("ActivationHeatmap needs at least one text")
        self._labels = labels
        self._acts = prompt_activations(self._run, self.source, list(texts))
        self._rebuild()

    def set_units(self, units: list[int] | None) -> None:
        """Show these units (None: the top units of the texts again)."""
        self._fixed_units = None if units is None else list(dict.fromkeys(int(u) for u in units))
        self._rebuild()

    def _rebuild(self) -> None:
        acts = self._acts
        n_units = acts[0].n_units
        if self._fixed_units is not None:
            bad = [u for u in self._fixed_units if not 0 <= u < n_units]
            if bad:
                raise IndexError(f"units {bad} out of range for {self.source} (0 … {n_units - 1})")
            units = self._fixed_units
        else:
            mx = np.max(np.stack([a.acts_TU.max(0) if len(a.tokens) else np.zeros(n_units) for a in acts]), 0)
            units = [int(u) for u in np.argsort(-mx, kind="stable")[:self._top] if mx[u] > 0]
        kind = acts[0].kind
        word = "feature" if kind == "feature" else "neuron"
        from monosemantic.interpret.labels import Labels

        labels = Labels.open(self._run, self.source)
        unit_info = []
        for u in units:
            seen = max((float(a.acts_TU[:, u].max()) for a in acts if len(a.tokens)), default=0.0)
            # "label" names the chip; "explanation" is the unit's label from interpret.labels (shown under it)
            info = {"id": u, "label": f"{word} {u}", "max": seen, "hint": "", "explanation": labels.get(u).text}
            if self._stats is not None:
                row = self._stats.table.loc[u]
                info["max"] = max(float(row["max_act"]), seen)
                info["hint"] = "top tokens " + token_label(row["top_tokens"], 4)
            unit_info.append(info)
        rows = []
        for i, a in enumerate(acts):
            sub = a.acts_TU[:, units] if units else np.zeros((len(a.tokens), 0), np.float32)
            top = []
            for t in range(len(a.tokens)):
                top.append([(f"{word} {u}", round(v, 4)) for u, v in a.token_top_units(t, 3)])
            label = self._labels[i] if self._labels and i < len(self._labels) else f"row {i + 1}"
            rows.append({"label": label, "tokens": [display_token(t) for t in a.tokens],
                         "acts": np.round(sub.astype(np.float64), 5).tolist(), "top": top})
        self.data = {"title": f"{self.source}: {len(units)} {word}s on {len(rows)} text{'s' if len(rows) != 1 else ''}",
                     "kind": word, "source": self.source, "units": unit_info, "rows": rows}
        self.selected = min(self.selected, max(0, len(units) - 1))
        self.heat_row = min(self.heat_row, len(rows) - 1)

    def page_title(self) -> str:
        return self.data.get("title", "activations")
