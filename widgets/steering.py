"""``SteeringPanel``: steer a prompt's next token and continuation with features (or neurons), live.

A prompt box; a feature picker that searches the features' top tokens (the feature browser's ranking,
``browser.relevance``) and lists the features most active on the prompt; one slider per chosen feature — ``add``
(x → x + c·d_i, c from −max to +max, max the feature's largest activation in its statistics), ``set`` (clamp
f_i to c) or ``×`` (scale f_i by m, −4 … 4; 0 ablates); the next-token distribution as paired bars, clean against
steered, with KL(clean ‖ steered) and each prompt token's Δ log-likelihood; and a seeded sampled continuation,
clean and steered side by side.  Every number comes from ``monosemantic.interventions.Steering.steer`` — the
panel calls it and lays out what it returns, so ``panel.result`` equals ``Steering.steer(prompt,
panel.steer_edits(), …)``.

Synced state is the truth: ``prompt``, ``edits`` ([{unit, mode, value}]), ``n_tokens``, ``temperature``,
``top_k`` (0: the whole vocabulary), ``seed`` and ``keep_error``; any change recomputes ``result`` in the kernel
(the front-end debounces slider moves).  A bad edit, an empty prompt or one longer than the context leaves the
library's error in ``error`` and an empty ``result``.  A recomputation runs on ``threads`` intra-op threads (default
1: one prompt's matrices are too small for a second thread to pay, and on a shared machine a two-thread region
stalls whenever the other core is busy — ``benchmarks/steer.py`` on the base run under load: a move 153 ms on one
thread, 1.7 s on two; None: torch's setting).  ``to_html`` saves a snapshot (the controls are shown,
disabled: a page without a kernel cannot run the model).

    p = SteeringPanel.from_run(run, "A/1", prompt="def main(self):")
    p.query = "LORD"; p.matches[0]                     # search by top tokens
    p.add(123, mode="add", value=5.0)                  # a slider; moving it (or p.set_value(123, 8)) recomputes
    SteeringPanel.from_run(run, "A")                   # the neurons of A, for contrast
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import traitlets

from monosemantic.errors import ConfigError

from .base import MsWidget, open_run
from .html import display_token

__all__ = ["SteeringPanel", "MODES", "SCALE_RANGE"]

MODES = {"add": "add", "set": "clamp", "scale": "scale"}     # the panel's slider modes → interventions.OPS
SCALE_RANGE = (-4.0, 4.0)                                   # the multiplier slider's range


class SteeringPanel(MsWidget):
    """See the module docstring.  ``SteeringPanel(steering, stats=None, run=None, prompt=…)`` or
    ``SteeringPanel.from_run(run, "A/1")``."""

    _js = "steering"

    source = traitlets.Unicode("").tag(sync=True)
    unit_kind = traitlets.Unicode("feature").tag(sync=True)
    n_units = traitlets.Int(0).tag(sync=True)
    n_ctx = traitlets.Int(0).tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    matches = traitlets.List(traitlets.Dict()).tag(sync=True)       # search results: {unit, top_tokens, max, density}
    active = traitlets.List(traitlets.Dict()).tag(sync=True)        # the units most active on the prompt
    edits = traitlets.List(traitlets.Dict()).tag(sync=True)         # [{unit, mode, value}]
    units = traitlets.Dict().tag(sync=True)                         # str(unit) → {top_tokens, max, density}
    n_tokens = traitlets.Int(20).tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    top_k = traitlets.Int(0).tag(sync=True)                         # 0: the whole vocabulary
    seed = traitlets.Int(0).tag(sync=True)
    keep_error = traitlets.Bool(True).tag(sync=True)
    n_bars = traitlets.Int(8).tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    revision = traitlets.Int(0).tag(sync=True)                      # +1 per recomputation (the front-end waits on it)

    def __init__(self, steering, stats=None, run=None, prompt: str = "In the beginning God created the heaven",
                 threads: int | None = 1, **kw):
        self._st = steering
        self._threads = threads
        self._stats = stats
        self._run = run
        self._ready = False
        super().__init__(source=steering.source, unit_kind=steering.kind, n_units=steering.n_units,
                         n_ctx=int(steering.model.n_ctx), **kw)
        if stats is None:
            self.notice = (f"no {steering.kind} statistics for {steering.source}: search by top tokens is off and "
                           f"each slider spans ± the {steering.kind}'s largest activation on the prompt; compute "
                           f"them with monosemantic.features.compute_"
                           f"{'feature' if steering.kind == 'feature' else 'neuron'}_stats(run, {steering.source!r})")
        self._ready = True
        if prompt == self.prompt:     # no change event: compute as one would
            self._on_prompt(None)
        else:
            self.prompt = prompt      # → _on_prompt (the active units) → recompute

    @classmethod
    def from_run(cls, run, source: str = "A/1", prompt: str = "In the beginning God created the heaven",
                 **kw) -> "SteeringPanel":
        """``source``: a dictionary id ("A/1": its features) or a transformer ("A": its MLP neurons).  The
        statistics (for search and slider ranges) are used when computed."""
        from monosemantic.features import FeatureStats
        from monosemantic.interventions import Steering

        run = open_run(run)
        try:
            stats = FeatureStats.load(run, source)
        except FileNotFoundError:
            stats = None
        return cls(Steering.open(run, source), stats=stats, run=run, prompt=prompt, **kw)

    @property
    def steering(self):
        return self._st

    # ---- the units: their top tokens and slider ranges -------------------------------------------------------
    def unit_info(self, unit: int) -> dict:
        """{top_tokens, max, density} of ``unit`` (from the statistics; without them, its largest activation on
        the prompt, or 1)."""
        u = int(unit)
        if self._stats is not None and 0 <= u < self._stats.n_units:
            r = self._stats.table.loc[u]
            mx = float(r["max_act"])
            return {"top_tokens": [display_token(t) for t in list(r["top_tokens"])[:6]],
                    "max": mx if mx > 0 else 1.0, "density": float(r["density"])}
        mx = getattr(self, "_prompt_max", {}).get(u, 0.0)
        return {"top_tokens": [], "max": mx if mx > 0 else 1.0, "density": None}

    def search(self, query: str, k: int = 12) -> list[dict]:
        """The ``k`` units whose top tokens best match ``query`` (``browser.relevance``: the unit of that id,
        a top token equal to the query, starting with it, containing it; ties by density, most common first)."""
        from .browser import relevance

        if self._stats is None or not query.strip():
            return []
        t = self._stats.table
        toks = [[display_token(s).lower() for s in ts] for ts in t["top_tokens"]]
        rank = relevance(query, toks, list(t["top_domain"]), t.index.to_numpy())
        ok = np.isfinite(rank) & ~t["dead"].to_numpy()
        idx = np.nonzero(ok)[0]
        order = idx[np.lexsort((t.index.to_numpy()[idx], -t["density"].to_numpy()[idx], rank[idx]))][:k]
        return [{"unit": int(t.index[i]), **self.unit_info(int(t.index[i]))} for i in order]

    @traitlets.observe("query")
    def _on_query(self, change):
        self.matches = self.search(self.query)

    # ---- edits ---------------------------------------------------------------------------------------------------
    def add(self, unit: int, mode: str = "add", value: float | None = None) -> None:
        """A slider for ``unit`` (``mode`` add / set / scale; ``value`` default: no change — 0, 1 — or, for set,
        the unit's max).  A unit already chosen keeps its slider and takes the new mode and value."""
        if mode not in MODES:
            raise ConfigError(f"unknown slider mode {mode!r}; use one of {list(MODES)}")
        u = int(unit)
        if value is None:
            value = {"add": 0.0, "scale": 1.0, "set": self.unit_info(u)["max"]}[mode]
        rest = [e for e in self.edits if int(e["unit"]) != u]
        self.edits = rest + [{"unit": u, "mode": mode, "value": float(value)}]

    def set_value(self, unit: int, value: float) -> None:
        """Move ``unit``'s slider to ``value``."""
        self.edits = [{**e, "value": float(value)} if int(e["unit"]) == int(unit) else e for e in self.edits]

    def remove(self, unit: int) -> None:
        self.edits = [e for e in self.edits if int(e["unit"]) != int(unit)]

    def steer_edits(self) -> list:
        """The ``interventions.Edit`` list the sliders stand for (every position, new tokens included)."""
        from monosemantic.interventions import Edit

        out = []
        for e in self.edits:
            mode = str(e.get("mode", "add"))
            if mode not in MODES:
                raise ConfigError(f"unknown slider mode {mode!r} for unit {e.get('unit')}; use one of {list(MODES)}")
            try:
                unit = int(e["unit"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"an edit needs an integer unit id, got {e!r}") from None
            out.append(Edit(unit, MODES[mode], float(e.get("value", 0.0))))
        return out

    def sampling(self) -> dict:
        """The sampling settings, as ``Steering.steer`` takes them."""
        return {"n_tokens": int(self.n_tokens), "temperature": float(self.temperature),
                "top_k": int(self.top_k) if self.top_k > 0 else None, "seed": int(self.seed)}

    @traitlets.observe("edits")
    def _on_edits(self, change):
        units = {}
        for e in self.edits:
            try:
                units[str(int(e["unit"]))] = self.unit_info(int(e["unit"]))
            except (KeyError, TypeError, ValueError):
                continue
        self.units = units
        self.recompute()

    @traitlets.observe("prompt")
    def _on_prompt(self, change):
        if not self._ready:
            return
        self.active, self._prompt_max = self._active_units()
        self.recompute()

    @traitlets.observe("n_tokens", "temperature", "top_k", "seed", "keep_error")
    def _on_settings(self, change):
        self.recompute()

    def _active_units(self, k: int = 8) -> tuple[list[dict], dict[int, float]]:
        """The ``k`` units with the largest activation on the prompt, and each unit's largest there."""
        try:
            a_TU = self._st.unit_acts(self.prompt)
        except ConfigError:
            return [], {}
        mx_U = a_TU.max(0)
        self._prompt_max = {int(u): float(mx_U[u]) for u in np.nonzero(mx_U > 0)[0]}    # unit_info's fallback
        order = [int(u) for u in np.argsort(-mx_U, kind="stable")[:k] if mx_U[u] > 0]
        return [{"unit": u, "on_prompt": float(mx_U[u]), **self.unit_info(u)} for u in order], self._prompt_max

    # ---- the one recomputation -----------------------------------------------------------------------------------
    def recompute(self) -> None:
        """``result`` from ``Steering.steer`` on the current state, or ``error`` (the library's message)."""
        if not self._ready:
            return
        from monosemantic.features.threads import intra_op_threads

        try:
            with intra_op_threads(self._threads or torch_threads()):
                r = self._st.steer(self.prompt, self.steer_edits(), k=self.n_bars, keep_error=self.keep_error,
                                   **self.sampling())
        except ConfigError as e:
            with self.hold_sync():
                self.error, self.result = str(e), {}
                self.revision += 1
            return
        with self.hold_sync():
            self.error, self.result = "", result_dict(r, self._st.tokenizer.token_strings(), self.n_bars)
            self.revision += 1

    # ---- export --------------------------------------------------------------------------------------------------
    def page_title(self) -> str:
        return f"steering {self.source}"

    def to_html(self, path, include_plotly: bool | None = None) -> Path:
        """A snapshot page: the prompt, the sliders where they stand, the chart and both continuations."""
        return super().to_html(path, include_plotly=False if include_plotly is None else include_plotly)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def result_dict(r, token_strings: list[str], n_bars: int = 8) -> dict:
    """A ``SteerResult`` as the panel draws it (token strings through ``display_token``):

    bars      the next-token candidates — the ``n_bars`` most likely clean and the ``n_bars`` most likely
              steered, each once, most likely first: {id, token, p_clean, p_edited}
    raised / lowered  the tokens whose probability rose / fell most: {id, token, p_clean, p_edited}
    prompt    each prompt token with its Δ log-likelihood: {token, dll}
    kl        KL(clean ‖ steered) of the next token, nats
    clean / steered   the continuations: {tokens, text}"""
    nx = r.effect.next
    p_c, p_e = nx.p_clean_V, nx.p_edited_V
    k = min(int(n_bars), len(p_c))
    ids = list(dict.fromkeys([int(i) for i in np.argsort(-p_c, kind="stable")[:k]]
                             + [int(i) for i in np.argsort(-p_e, kind="stable")[:k]]))
    ids.sort(key=lambda i: (-max(float(p_c[i]), float(p_e[i])), i))
    tok = r.effect

    def rows(changes):
        return [{"id": c.token_id, "token": display_token(c.token), "p_clean": c.p_clean, "p_edited": c.p_edited}
                for c in changes]

    bars = [{"id": i, "token": display_token(token_strings[i]), "p_clean": float(p_c[i]), "p_edited": float(p_e[i])}
            for i in ids]
    return {"bars": bars,
            "raised": rows(nx.raised), "lowered": rows(nx.lowered), "kl": float(nx.kl),
            "prompt": [{"token": display_token(t), "dll": float(d)} for t, d in zip(tok.tokens, tok.delta_loglik_T)],
            "clean": {"tokens": [display_token(t) for t in r.clean.tokens], "text": display_token(r.clean.text)},
            "steered": {"tokens": [display_token(t) for t in r.edited.tokens],
                        "text": display_token(r.edited.text)}}

