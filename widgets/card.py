"""FeatureCard / NeuronCard: the paper's feature page, live in the notebook.

A card is data: a few small panel dataclasses (header, activation histogram, logit effects, the ablation in
context, the units it is built from, the nearest features, domain / proxy scores, top examples, interval samples)
and a ``CardLayout`` saying which panel goes in which column — as in sae_vis.  ``card_spec`` turns a
``monosemantic.features.UnitStats`` into that data (``CardExtras`` adds the label, the ablation and the nearest
features from the library); the widget syncs it as one trait (``card``) and the front-end (``card.js``) draws it.
``unit`` is a synced trait: set it (or ``card.unit = 17``) and the card redraws.

The header carries the unit's label (``interpret.labels``: the user's edit, else the best explanation, with its
score); "edit" on a live card changes it in place, saved in the run, and every view opened afterwards shows it.
A click on a nearest feature opens its card below (``cards``, a ``LinkedCards``).

    card = FeatureCard.from_run("data/runs/default", "A/1", 123)
    card.unit = 124                               # another feature
    card.set_label("Bible verse numbers")         # as an edit in the header ("" goes back to the automatic label)
    card.to_html("feature_124.html")              # a self-contained page for slides
    NeuronCard.from_run("data/runs/default", "A", 7, features_from="A/1")
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import traitlets

from .base import DOMAIN_COLORS, LinkedCards, MsWidget, WithLinkedCards, default_card_factory, open_run
from .html import density_text, display_token, escape_html, token_label


# ---- panels -----------------------------------------------------------------------------------------------

@dataclass
class HeaderPanel:
    title: str
    subtitle: str = ""
    badges: list[dict] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    label: dict | None = None      # interpret.labels.Label.to_dict(): text, score, origin, auto; None: no labels
    editable: bool = False         # the label can be edited in place (a live card of a run)
    kind: str = "header"


@dataclass
class HistogramPanel:
    title: str
    hist: dict            # histogram_data: log-spaced bins × domains, drawn as SVG by base.js msHistogram
    subtitle: str = ""
    kind: str = "histogram"


@dataclass
class LogitsPanel:
    positive: list[tuple[str, float]]
    negative: list[tuple[str, float]]
    title: str = "Logit effects"
    subtitle: str = "decoder → W_out → LayerNorm → W_U, median 0"
    kind: str = "logits"


@dataclass
class UnitsPanel:
    title: str
    rows: list[tuple[int, float]]
    unit_kind: str = "neuron"
    subtitle: str = ""
    kind: str = "units"


@dataclass
class DomainsPanel:
    rows: list[dict]
    title: str = "Domains"
    subtitle: str = "specificity: share of activation · sensitivity: share of the domain's tokens it fires on"
    kind: str = "domains"


@dataclass
class ExamplesPanel:
    title: str
    groups: list[dict]
    max_act: float
    subtitle: str = ""
    empty: str = "never fires on the token set"
    kind: str = "examples"


@dataclass
class AblationPanel:
    """``ablation.AblationEffects`` as the card shows it: the next tokens whose log-likelihood the feature raises
    and lowers where it fires (rows ``(token, mean effect, count)``)."""

    raised: list[tuple[str, float, int]]
    lowered: list[tuple[str, float, int]]
    positions: int
    contexts: int
    title: str = "Ablation in context"
    subtitle: str = ""
    empty: str = "never fires in its top contexts"
    kind: str = "ablation"


@dataclass
class NearestPanel:
    """The features nearest to this one by decoder cosine (rows: unit, cosine, label or top tokens); a click
    opens the feature's card."""

    source: str
    rows: list[dict]
    title: str = "Nearest features"
    subtitle: str = "by decoder cosine"
    kind: str = "nearest"


# the card in present mode (base.js msCardLayout): three columns, fewer samples, fits a 1920×1080 screen
PRESENT_LAYOUT = {"columns": [["histogram", "logits", "domains"], ["top"], ["intervals"]], "n_top": 10, "n_seqs": 2,
                  "n_groups": 6}


@dataclass
class CardLayout:
    """Which panels, in which columns (the header always spans the top), how many examples, and how many
    characters of context each example shows (whole tokens around the activating one, about 3/5 before it)."""

    columns: list[list[str]] = field(default_factory=lambda: [["histogram", "logits", "ablation", "units",
                                                               "nearest", "domains"], ["top", "intervals"]])
    n_top: int = 12
    n_per_interval: int = 5
    context_chars: int = 96

    @classmethod
    def compact(cls) -> "CardLayout":
        """One column for cards side by side: 8 top examples and 2 samples per interval (a polysemantic unit's
        top examples can look clean; its lower intervals tell)."""
        return cls(columns=[["histogram", "top", "intervals", "logits", "ablation", "units", "nearest"]], n_top=8,
                   n_per_interval=2, context_chars=64)

    present: bool = True      # the spec carries the present-mode layout (and its panels)

    @classmethod
    def export(cls) -> "CardLayout":
        """The full card with 10 top examples and 1 sample per interval: every card of a static browser (4,096
        cards in under 10 MB)."""
        return cls(n_top=10, n_per_interval=1)

    @classmethod
    def compact_export(cls) -> "CardLayout":
        """The compact card with 6 top examples and 1 sample per interval, no present layout: every card of
        both dictionaries on a static correlation matrix."""
        return dataclasses.replace(cls.compact(), n_top=6, n_per_interval=1, present=False)

    def panels(self) -> set[str]:
        """The panels this layout draws (in present mode too, when it carries that layout)."""
        names = {n for col in self.columns for n in col}
        if self.present:
            names |= {n for col in PRESENT_LAYOUT["columns"] for n in col}
        return names


# ---- building a card spec from the library's data ------------------------------------------------------------

def _pct(v: float) -> str:
    return density_text(v)


def _num(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.4g}"


def context_window(tokens: list[str], center: int, chars: int, before: float = 0.6) -> tuple[int, int]:
    """``[lo, hi)``: whole tokens around ``center`` whose shown text fits ``chars`` characters, about ``before``
    of them before it (a side that runs out of tokens leaves its share to the other)."""
    lens = [max(1, len(t)) for t in tokens]
    lo, hi = center, center + 1
    used = lens[center]
    want_l = before * max(0, chars - used)
    left = 0
    while True:
        can_l = lo > 0 and used + lens[lo - 1] <= chars
        can_r = hi < len(tokens) and used + lens[hi] <= chars
        if not (can_l or can_r):
            return lo, hi
        if can_l and (left < want_l or not can_r):
            lo -= 1
            used += lens[lo]
            left += lens[lo]
        else:
            used += lens[hi]
            hi += 1


def _seq(ex, layout: CardLayout) -> dict:
    shown = [display_token(t) for t in ex.tokens]
    lo, hi = context_window(shown, ex.center, layout.context_chars)
    return {"tokens": shown[lo:hi], "acts": [float(f"{a:.3g}") for a in ex.acts[lo:hi]],
            "center": ex.center - lo, "act": float(ex.act)}


def histogram_data(hist) -> dict:
    """A log-binned activation histogram (a ``features.Histogram``) as the card draws it: the bins from one below
    the lowest to one above the highest that hold tokens (under/overflow drawn as one bin beyond each end),
    stacked by the domains that occur.  ``{x0, step, domains, colors, counts}``: ``x0`` is log10 of the first
    bin's lower edge, ``step`` the bins' width in log10, ``counts[bin][domain]``."""
    counts = np.asarray(hist.counts)                       # (G+2, K): underflow, G bins, overflow
    edges = np.log10(hist.edges)
    step = float(edges[1] - edges[0])
    lo_edges = np.concatenate([[edges[0] - step], edges])
    nz = np.nonzero(counts.sum(1))[0]
    if not len(nz):
        return {"x0": float(lo_edges[0]), "step": step, "domains": [], "colors": [], "counts": []}
    a, b = max(0, nz[0] - 1), min(len(counts) - 1, nz[-1] + 1)
    keep = [k for k in range(counts.shape[1]) if counts[:, k].sum() > 0]
    doms = [hist.domains[k] for k in keep]
    return {"x0": float(lo_edges[a]), "step": step, "domains": doms,
            "colors": [DOMAIN_COLORS.get(d, "#999999") for d in doms],
            "counts": counts[a:b + 1][:, keep].astype(int).tolist()}


# ---- unit status: the library's rule (metrics.feature_status → dead / ultralow) and its low-density mode -----------

STATUSES = ("alive", "low-mode", "ultralow", "dead")


@dataclass
class StatusRule:
    """How a source's units are tagged, on its statistics' token set: ``dead`` and ``ultralow`` are the library's
    columns (``metrics.feature_status`` with ``ultralow_threshold``); ``low-mode`` a unit below the valley of a
    bimodal density (``metrics.density_modes``; ``low_threshold`` None when the densities are not bimodal)."""

    n_tokens: int
    ultralow_threshold: float
    low_threshold: float | None

    @classmethod
    def of(cls, stats) -> "StatusRule":
        from monosemantic.metrics import density_modes

        modes = density_modes(stats.table["density"].to_numpy())
        low = float(modes["threshold"]) if modes and modes["bimodal"] else None
        thr = float((getattr(stats, "meta", None) or {}).get("ultralow_threshold", 0.0) or 0.0)
        return cls(n_tokens=int(stats.n_tokens), ultralow_threshold=thr, low_threshold=low)

    def status(self, row) -> str:
        if bool(row["dead"]):
            return "dead"
        if bool(row["ultralow"]):
            return "ultralow"
        if self.low_threshold is not None and 0 < float(row["density"]) < self.low_threshold:
            return "low-mode"
        return "alive"

    def column(self, table):
        """Every unit's status (a pandas Series of STATUSES), as ``status`` gives it."""
        import pandas as pd

        st = pd.Series("alive", index=table.index, dtype=object)
        if self.low_threshold is not None:
            st[table["density"].to_numpy() < self.low_threshold] = "low-mode"
        st[table["ultralow"].to_numpy(bool)] = "ultralow"
        st[table["dead"].to_numpy(bool)] = "dead"
        return st

    @property
    def token_set(self) -> str:
        return f"{self.n_tokens:,} tokens"

    def badge(self, status: str) -> dict | None:
        """The card's badge of a status (None for alive), naming the token set and its size."""
        if status == "dead":
            return {"kind": "dead", "text": f"dead: never fires on the {self.token_set}"}
        if status == "ultralow":
            return {"kind": "ultralow", "text": f"ultralow: below {density_text(self.ultralow_threshold)} "
                                                f"of the {self.token_set}"}
        if status == "low-mode":
            return {"kind": "lowmode", "text": f"low-density mode: below {density_text(self.low_threshold)} "
                                               f"of the {self.token_set}"}
        return None


# ---- what a card shows beyond the statistics: label, ablation in context, nearest features ---------------------

def ablation_panel(effects) -> AblationPanel:
    """An ``ablation.AblationEffects`` as the card's panel (token strings made visible)."""
    rows = lambda ts: [(display_token(t.token), t.mean, t.count) for t in ts]  # noqa: E731
    n = len(effects.contexts)
    return AblationPanel(raised=rows(effects.raised), lowered=rows(effects.lowered), positions=effects.positions,
                         contexts=n, subtitle=f"the feature ablated (x − f·d, error kept) where it fires in its top "
                                              f"{n} contexts: mean Δ log-likelihood of the next token, nats "
                                              f"({effects.positions} positions)")


class CardExtras:
    """What the cards of one source show beyond its statistics: each unit's label (``interpret.labels``, editable
    in place when ``editable``), a feature's ablation in context (``ablation``: computed on first view when
    ``compute_ablation``, else only a cached result is shown — a static export of thousands of cards) and its
    ``k_nearest`` nearest features by decoder cosine (``splitting.nearest_decoder``).  Failures show in the panel
    (the card still opens)."""

    def __init__(self, run, source: str, compute_ablation: bool = True, k_nearest: int = 8, editable: bool = True):
        from monosemantic.interpret.labels import Labels

        self.run, self.source = run, source
        self.is_features = "/" in source
        self.compute_ablation, self.k_nearest, self.editable = compute_ablation, int(k_nearest), editable
        self.labels = Labels.open(run, source)
        self._nearest: dict[int, tuple] = {}
        self._sae = None

    def label(self, unit: int) -> dict:
        return self.labels.get(unit).to_dict()

    def ablation(self, unit: int) -> AblationPanel | None:
        if not self.is_features:
            return None
        from monosemantic.ablation import ablation_effects, cached

        try:
            ab = ablation_effects(self.run, self.source, unit) if self.compute_ablation else \
                cached(self.run, self.source, unit)
        except Exception as e:  # noqa: BLE001 - shown in the panel, never swallowed
            return AblationPanel([], [], 0, 0, empty=f"not available: {type(e).__name__}: {e}")
        if ab is None:
            return AblationPanel([], [], 0, 0, empty="not computed yet: open this card live (or run "
                                                     "monosemantic.ablation.ablation_effects) to compute it")
        return ablation_panel(ab)

    def prepare_nearest(self, units) -> None:
        """Compute the nearest features of many units at once (a static export)."""
        if not self.is_features or not self.k_nearest:
            return
        from monosemantic.splitting import nearest_decoder

        if self._sae is None:
            self._sae = self.run.dictionary(self.source)
        units = [int(u) for u in units if int(u) not in self._nearest]
        if units:
            idx, cos = nearest_decoder(self._sae, units, self.k_nearest)
            self._nearest.update({u: (idx[r], cos[r]) for r, u in enumerate(units)})

    def nearest(self, unit: int, top_tokens) -> NearestPanel | None:
        """``top_tokens(u)``: a unit's top token strings (shown when it has no label)."""
        if not self.is_features or not self.k_nearest:
            return None
        self.prepare_nearest([unit])
        idx, cos = self._nearest[int(unit)]
        rows = [{"unit": int(j), "cos": float(c), "label": self.labels.get(int(j)).text,
                 "tokens": token_label(top_tokens(int(j)), 3, max_chars=16)} for j, c in zip(idx, cos)]
        return NearestPanel(source=self.source, rows=rows)

    def card_kwargs(self, unit: int, top_tokens) -> dict:
        """The keyword arguments of ``card_spec`` for ``unit``."""
        return {"label": self.label(unit), "editable": self.editable, "ablation": self.ablation(unit),
                "nearest": self.nearest(unit, top_tokens)}


def table_top_tokens(stats):
    """``top_tokens(u)`` of a ``FeatureStats`` (its table's top tokens)."""
    col = dict(zip(stats.table.index.tolist(), stats.table["top_tokens"]))
    return lambda u: list(col.get(int(u), []))


def handle_label_message(run, source: str, content) -> bool:
    """A card's label edit sent from the front-end (``{"type": "label", "unit", "text"}``; empty text clears it)
    saved through ``interpret.labels``; True when ``content`` was one."""
    if not (isinstance(content, dict) and content.get("type") == "label"):
        return False
    from monosemantic.interpret.labels import Labels

    labels = Labels.open(run, str(content.get("source") or source))
    text = str(content.get("text") or "")
    if text.strip():
        labels.set(int(content["unit"]), text)
    else:
        labels.clear(int(content["unit"]))
    return True


def card_spec(us, layout: CardLayout | None = None, features_of_neuron: list[tuple[int, float]] | None = None,
              features_source: str | None = None, rule: "StatusRule | None" = None, label: dict | None = None,
              editable: bool = False, ablation: AblationPanel | None = None,
              nearest: NearestPanel | None = None) -> dict:
    """The card of one unit (a ``monosemantic.features.UnitStats``) as JSON-able data; ``rule`` tags it dead /
    ultralow / low-mode (default: the library's dead and ultralow columns alone); ``label`` (a
    ``Label.to_dict()``), ``ablation`` and ``nearest`` what ``CardExtras`` gives (None: not shown)."""
    layout = layout or CardLayout()
    r = us.row
    kind = us.kind
    rule = rule or StatusRule(n_tokens=int(us.n_tokens), ultralow_threshold=0.0, low_threshold=None)
    status = rule.status(r)
    badges = [{"kind": "kind", "text": f"{us.source} · {kind} {us.unit}"}]
    if rule.badge(status):
        badges.append(rule.badge(status))
    if r.get("top_domain"):
        badges.append({"kind": "domain", "text": f"mostly {r['top_domain']}"})
    if r.get("proxy_specificity", 0) >= 0.5:
        badges.append({"kind": "proxy", "text": f"{us.proxy_domain} (exact proxy): {_pct(r['proxy_specificity'])} "
                                                 f"of its activation"})
    top_toks = list(r.get("top_tokens", []))
    header = HeaderPanel(
        title=f"{'Feature' if kind == 'feature' else 'Neuron'} {us.source}/{us.unit}",
        subtitle=("top tokens: " + token_label(top_toks, sep="  ")) if top_toks else "",
        badges=badges,
        facts=[("density", density_text(r["density"], odds=True)), ("tokens fired", f"{int(r['count']):,} / {us.n_tokens:,}"),
               ("max activation", _num(r["max_act"])), ("mean when firing", _num(r["mean_act"])),
               (f"{us.proxy_domain} corr", _num(r.get("proxy_corr", float("nan"))))],
        label=label, editable=bool(editable and label is not None))
    hist = HistogramPanel(title="Activation histogram", subtitle=f"density {_pct(r['density'])}, by domain",
                          hist=histogram_data(us.histogram))
    logits = LogitsPanel(positive=[(display_token(t), v) for t, v in us.logits_top],
                         negative=[(display_token(t), v) for t, v in us.logits_bottom])
    if kind == "feature":
        units = UnitsPanel(title="Built from neurons", subtitle="largest decoder weights", rows=us.neurons,
                           unit_kind="neuron")
    elif features_of_neuron:
        units = UnitsPanel(title=f"Features of {features_source} built from it",
                           subtitle="largest decoder weights on this neuron", rows=features_of_neuron,
                           unit_kind="feature")
    else:
        units = None
    doms = DomainsPanel(rows=[{"domain": d, "specificity": float(r.get(f"act_share_{d}", 0.0)),
                               "sensitivity": float(r.get(f"sensitivity_{d}", 0.0)),
                               "corr": float(r.get(f"corr_{d}", 0.0)), "proxy": d == us.proxy_domain,
                               "color": DOMAIN_COLORS.get(d, "#999")}
                              for d in us.domains if us.domain_tokens.get(d, 0) > 0])
    max_act = float(r["max_act"]) or 1.0
    top = ExamplesPanel(title="Top activations", subtitle=f"{min(layout.n_top, len(us.top))} of the largest",
                        max_act=max_act,
                        groups=[{"title": "", "seqs": [_seq(e, layout) for e in us.top[:layout.n_top]]}] if us.top
                        else [])
    groups = []
    n_fire = max(1, int(r["count"]))
    for iv in reversed(us.intervals):
        if iv["count"] == 0 and not iv["examples"]:
            continue
        groups.append({"title": f"Interval {iv['index']}: {iv['lo']:.3g} – {iv['hi']:.3g}",
                       "subtitle": f"{iv['count']:,} tokens ({_pct(iv['count'] / n_fire)} of firings), "
                                   f"{len(iv['examples'][:layout.n_per_interval])} sampled",
                       "seqs": [_seq(e, layout) for e in iv["examples"][:layout.n_per_interval]]})
    intervals = ExamplesPanel(title="Subsample intervals", subtitle="evenly spaced fractions of the max activation",
                              groups=groups, max_act=max_act, empty="no interval samples")
    panels = {"header": header, "histogram": hist, "logits": logits, "domains": doms, "top": top,
              "intervals": intervals}
    if units is not None:
        panels["units"] = units
    if ablation is not None:
        panels["ablation"] = ablation
    if nearest is not None:
        panels["nearest"] = nearest
    drawn = layout.panels() | {"header"}
    panels = {k: v for k, v in panels.items() if k in drawn}    # a panel no column shows does not travel
    return {"kind": kind, "source": us.source, "unit": us.unit, "title": header.title, "status": status,
            "panels": _short_numbers({k: dataclasses.asdict(v) for k, v in panels.items()}),
            "layout": {"columns": [list(c) for c in layout.columns], **({"present": PRESENT_LAYOUT} if layout.present
                                                                         else {})}}


def _short_numbers(o):
    """Every float to 4 significant digits (what any panel shows; a static browser carries 4,096 cards)."""
    if isinstance(o, float):
        if not math.isfinite(o):
            return o
        v = float(f"{o:.4g}")
        return int(v) if v.is_integer() and abs(v) < 1e15 else v
    if isinstance(o, list):
        return [_short_numbers(v) for v in o]
    if isinstance(o, tuple):
        return [_short_numbers(v) for v in o]
    if isinstance(o, dict):
        return {k: _short_numbers(v) for k, v in o.items()}
    return o


def default_dictionary(run, transformer: str) -> str | None:
    """The dictionary a neuron's page links to: ``T/1`` (the paper's) if it has statistics, then any with
    statistics, then ``T/1``, then any trained dictionary of ``transformer``."""
    from monosemantic.features import stats_dir

    trained = [d.id for d in run.cfg.dictionaries if d.transformer == transformer
               and run.is_done(f"dictionary:{d.id}")]
    # meta.json is written last by the statistics pass: its presence means they are complete
    with_stats = [d for d in trained if (stats_dir(run, d) / "meta.json").exists()]
    paper = f"{transformer}/1"
    for group in ([d for d in with_stats if d == paper], with_stats, [d for d in trained if d == paper], trained):
        if group:
            return group[0]
    return None


def neuron_features(run, dict_id: str, neuron: int, n: int = 8) -> list[tuple[int, float]]:
    """The features of ``dict_id`` with the largest |decoder weight| on ``neuron``."""
    import torch

    with torch.no_grad():
        W_F = open_run(run).dictionary(dict_id).W_dec_FD[:, int(neuron)]
    idx = W_F.abs().topk(min(n, W_F.numel())).indices
    return [(int(i), float(W_F[i])) for i in idx]


# ---- the widgets ------------------------------------------------------------------------------------------------

class FeatureCard(WithLinkedCards, MsWidget):
    """One feature's (or neuron's) page.  ``unit`` and ``source`` are synced; the card follows them.  Its header
    carries the unit's label (``interpret.labels``), edited in place and saved in the run; a feature's card shows
    its ablation in context and its nearest features, a click on one opening its card below (``cards``)."""

    _js = "card"
    card = traitlets.Dict().tag(sync=True)
    unit = traitlets.Int(0).tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)

    def __init__(self, stats, unit: int = 0, layout: CardLayout | None = None, features_from: str | None = None,
                 extras: CardExtras | None = None, **kwargs):
        self._stats = stats
        self._layout = layout or CardLayout()
        self._features_from = features_from
        self._rule = StatusRule.of(stats)
        if extras is None and stats.run is not None:
            extras = CardExtras(stats.run, stats.source)
        self._extras = extras
        super().__init__(source=stats.source, **kwargs)
        run_dir = stats.run.root if stats.run is not None else None
        # below the card only once a nearest feature was clicked (no placeholder line under every card)
        self.cards = LinkedCards(default_card_factory(run_dir, compact=True), "")
        self.unit = int(unit)
        self._redraw()

    @classmethod
    def from_run(cls, run, source: str, unit: int, layout: CardLayout | None = None,
                 features_from: str | None = None) -> "FeatureCard":
        """``run`` a run directory (or ``Run``); ``source`` "A/1" (features) or "A" (neurons)."""
        from monosemantic.features import FeatureStats

        run = open_run(run)
        if features_from is None and "/" not in source:
            features_from = default_dictionary(run, source)
        return cls(FeatureStats.load(run, source), unit, layout=layout, features_from=features_from)

    @property
    def stats(self):
        return self._stats

    @traitlets.validate("unit")
    def _check_unit(self, proposal):
        u = int(proposal["value"])
        if not 0 <= u < self._stats.n_units:
            raise traitlets.TraitError(f"{self._stats.kind} {u} out of range: {self._stats.source} has "
                                       f"{self._stats.n_units} (0 … {self._stats.n_units - 1})")
        return u

    @traitlets.observe("unit")
    def _on_unit(self, change):
        self._redraw()

    def _redraw(self) -> None:
        self.card = self.spec(self.unit)

    def spec(self, unit: int) -> dict:
        us = self._stats.unit(unit)
        feats = None
        if us.kind == "neuron" and self._features_from and self._stats.run is not None:
            feats = neuron_features(self._stats.run, self._features_from, unit)
        extra = self._extras.card_kwargs(unit, table_top_tokens(self._stats)) if self._extras is not None else {}
        return card_spec(us, self._layout, features_of_neuron=feats, features_source=self._features_from,
                         rule=self._rule, **extra)

    def set_label(self, text: str) -> None:
        """Save ``text`` as this unit's label (empty: back to the automatic one) and redraw, as an edit in place."""
        self._handle({"type": "label", "unit": self.unit, "text": text})

    def open_card(self, source: str, unit: int) -> None:
        """Open the card of ``unit`` of ``source`` below this one (what a click on a nearest feature does)."""
        self.cards.show([(str(source), int(unit), {})])

    def _handle(self, content) -> None:
        if self._stats.run is not None and handle_label_message(self._stats.run, self.source, content):
            self._redraw()
        elif isinstance(content, dict) and content.get("type") == "open":
            self.open_card(content.get("source") or self.source, int(content["unit"]))

    def page_title(self) -> str:
        return self.card.get("title", "card")


class NeuronCard(FeatureCard):
    """A neuron's page: the same card, for an MLP neuron (``source`` a transformer name, e.g. "A"); with
    ``features_from`` ("A/1") it lists the features built most from this neuron."""

    @classmethod
    def from_run(cls, run, source: str, unit: int, layout: CardLayout | None = None,
                 features_from: str | None = None) -> "NeuronCard":
        if "/" in source:
            raise ValueError(f"{source!r} is a dictionary; a NeuronCard takes a transformer name such as 'A' "
                             f"(use FeatureCard for features)")
        return super().from_run(run, source, unit, layout=layout, features_from=features_from)


def side_by_side(*widgets, titles: list[str] | None = None):
    """Cards (or any widgets) next to each other, e.g. a feature beside its most correlated neuron."""
    import ipywidgets as W

    kids = []
    for i, w in enumerate(widgets):
        box = [w] if not titles else [W.HTML(f"<b>{escape_html(titles[i])}</b>"), w]
        kids.append(W.VBox(box, layout=W.Layout(flex="1 1 0", min_width="0", overflow="hidden")))
    return W.HBox(kids, layout=W.Layout(width="100%", align_items="flex-start", grid_gap="12px"))


def proxy_figure(feature_stats, feature: int, neuron_stats, neuron: int, domain: str | None = None):
    """Specificity and sensitivity against a domain (default: the exact proxy) for a feature and a neuron:
    their activation histograms split into domain / other tokens, and the three scores side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = domain or feature_stats.proxy_domain
    fr, nr = feature_stats.table.loc[int(feature)], neuron_stats.table.loc[int(neuron)]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.37, 0.37, 0.26], horizontal_spacing=0.07, subplot_titles=(
        f"{feature_stats.source} feature {feature}", f"{neuron_stats.source} neuron {neuron}",
        f"scores against {d}"))
    for col, (st, u) in enumerate(((feature_stats, int(feature)), (neuron_stats, int(neuron))), start=1):
        h = st.histogram(u)
        k = st.domains.index(d)
        cnt = h.counts
        edges = np.log10(h.edges)
        step = edges[1] - edges[0]
        x = np.concatenate([[edges[0] - step], edges]) + step / 2          # log10 bin centres (under/overflow too)
        nz = np.nonzero(cnt.sum(1))[0]
        sl = slice(max(0, nz[0] - 1), nz[-1] + 2) if len(nz) else slice(0, 0)
        xs = x[sl].tolist()
        inside, other = cnt[sl, k], cnt[sl].sum(1) - cnt[sl, k]
        ranges = [f"{10 ** (c - step / 2):.3g} – {10 ** (c + step / 2):.3g}" for c in xs]
        # stacked by hand (base=), so the score panel can group its bars
        fig.add_trace(go.Bar(x=xs, y=inside.tolist(), name=f"{d} tokens", marker_color=DOMAIN_COLORS.get(d),
                             offsetgroup=f"h{col}", legendgroup="in", showlegend=col == 1, customdata=ranges,
                             hovertemplate="%{customdata}: %{y}<extra>" + d + "</extra>"), row=1, col=col)
        fig.add_trace(go.Bar(x=xs, y=other.tolist(), base=inside.tolist(), name="other tokens",
                             marker_color="#c9d1d9", offsetgroup=f"h{col}", legendgroup="out",
                             showlegend=col == 1, customdata=ranges,
                             hovertemplate="%{customdata}: %{y}<extra>other</extra>"), row=1, col=col)
        ticks = [t for t in range(int(np.floor(xs[0])) if xs else 0, int(np.ceil(xs[-1])) + 1 if xs else 0)]
        fig.update_xaxes(title_text="activation (log scale)", tickmode="array", tickvals=ticks,
                         ticktext=[f"{10.0 ** t:g}" for t in ticks], row=1, col=col)
        fig.update_yaxes(title_text="tokens" if col == 1 else None, row=1, col=col)
    names = ["specificity", "sensitivity", "corr"]
    for r, lab, color in ((fr, f"feature {feature}", "#ff7000"), (nr, f"neuron {neuron}", "#6e7781")):
        vals = [float(r[f"act_share_{d}"]), float(r[f"sensitivity_{d}"]), float(r[f"corr_{d}"])]
        fig.add_trace(go.Bar(x=names, y=vals, name=lab, marker_color=color, offsetgroup=lab,
                             text=[f"{v:.2f}" for v in vals], textposition="outside"), row=1, col=3)
    lo = min(0.0, float(fr[f"corr_{d}"]), float(nr[f"corr_{d}"]))
    fig.update_yaxes(range=[lo - 0.05, 1.15], row=1, col=3)
    fig.update_layout(barmode="group", bargap=0.02, height=360, legend=dict(orientation="h", y=-0.25),
                      title=f"{d}: specificity (share of activation on {d}) and sensitivity (share of {d} tokens "
                            f"it fires on)")
    return fig
