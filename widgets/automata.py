"""``AutomatonGraph``: a dictionary's feature automata (``monosemantic.automata.find_automata``) as a graph.

Nodes are features, labelled with their top tokens; an edge i → j is a logit → activation link — i's logit effect
raises the tokens j fires on — drawn as wide as its score S[i, j] (standard deviations of i's logit effect), solid
where the causal check confirmed it (gain > 0: pinning i raised j's expected activation at the next position),
faint where the check found no gain, dashed where it was not checked.  The loops and chains are listed beside the
graph; choosing one highlights its nodes and edges (``highlight``: "loop:0", "chain:3" or ""), and "only loops and
chains" hides the rest.  Clicking a node opens its feature card below (``selected_feature``, ``base.LinkedCards``).

The layout is computed here (a seeded force layout, ``force_layout``) so the notebook and the static page
(``to_html``, which carries every node's card) draw the same picture.

    g = AutomatonGraph.from_run(run, "A/1")            # find_automata's saved result, computed if missing
    g.highlight = "loop:0"; g.select("A/1", 1696)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import traitlets

from .base import (LinkedCards, MsWidget, WithFeatureSelection, default_card_factory, open_run, pack_cards,
                   source_cards)
from .html import display_token, token_label

__all__ = ["AutomatonGraph", "graph_data", "force_layout"]


def force_layout(n: int, pairs: list[tuple[int, int]], iters: int = 300, seed: int = 0) -> np.ndarray:
    """(n, 2) positions in [0, 1]² of ``n`` nodes linked by ``pairs`` (index pairs): Fruchterman–Reingold —
    every pair of nodes repels (k²/d), linked nodes attract (d²/k), a weak pull to the centre keeps separate
    components on the page — from a seeded start, so the same graph always gets the same picture."""
    if n == 0:
        return np.zeros((0, 2))
    rng = np.random.default_rng(seed)
    pos_N2 = rng.uniform(-1, 1, (n, 2))
    k = 2.0 / np.sqrt(n)
    links = np.array([(a, b) for a, b in pairs if a != b], dtype=np.int64).reshape(-1, 2)
    t = 0.2
    for _ in range(iters):
        d_NN2 = pos_N2[:, None] - pos_N2[None]
        dist_NN = np.linalg.norm(d_NN2, axis=-1) + 1e-9
        disp_N2 = (d_NN2 * (k * k / dist_NN ** 2)[..., None]).sum(1)
        if len(links):
            d_E2 = pos_N2[links[:, 0]] - pos_N2[links[:, 1]]
            f_E2 = d_E2 * np.linalg.norm(d_E2, axis=-1, keepdims=True) / k
            np.add.at(disp_N2, links[:, 0], -f_E2)
            np.add.at(disp_N2, links[:, 1], f_E2)
        disp_N2 -= 0.3 * pos_N2                                   # the pull to the centre
        length = np.linalg.norm(disp_N2, axis=-1, keepdims=True) + 1e-9
        pos_N2 += disp_N2 / length * np.minimum(length, t)
        t = max(t * 0.985, 0.002)
    # a few far-flung components must not squeeze the rest into the middle: scale to the 2nd–98th percentiles
    lo, hi = np.percentile(pos_N2, 2, axis=0), np.percentile(pos_N2, 98, axis=0)
    return np.clip((pos_N2 - lo) / np.where(hi - lo > 0, hi - lo, 1.0), -0.03, 1.03) * 0.9 + 0.05


def graph_data(automata, seed: int = 0) -> dict:
    """The drawing of an ``Automata``: ``nodes`` [{unit, top_tokens, x, y, in_loop, in_chain}], ``edges`` — every
    edge of ``automata.edges``, in its order — [{src, dst, score, gain, base, status}] (status ``confirmed`` gain > 0,
    ``failed`` gain ≤ 0, ``unchecked``), ``loops`` and ``chains`` (lists of units) with their ``describe`` texts."""
    e = automata.edges
    src, dst = [int(x) for x in e["src"]], [int(x) for x in e["dst"]]
    units = sorted(set(src) | set(dst))
    at = {u: i for i, u in enumerate(units)}
    pos = force_layout(len(units), [(at[a], at[b]) for a, b in zip(src, dst)], seed=seed)
    in_loop = {u for p in automata.loops for u in p}
    in_chain = {u for p in automata.chains for u in p}
    nodes = [{"unit": u, "top_tokens": [display_token(t) for t in automata.top_tokens.get(u, [])[:5]],
              "x": float(pos[i, 0]), "y": float(pos[i, 1]), "in_loop": u in in_loop, "in_chain": u in in_chain}
             for i, u in enumerate(units)]

    def num(v):
        v = float(v)
        return v if np.isfinite(v) else None

    edges = []
    for a, b, s, g, base in zip(src, dst, e["score"], e["gain"], e["base"]):
        g, base = num(g), num(base)
        edges.append({"src": a, "dst": b, "score": float(s), "gain": g, "base": base,
                      "status": "unchecked" if g is None else "confirmed" if g > 0 else "failed"})

    def label(p, closed):
        return " → ".join([f"#{u} {token_label(automata.top_tokens.get(u, []), 3)}" for u in p]
                          + ([f"#{p[0]}"] if closed else []))

    return {"nodes": nodes, "edges": edges,
            "loops": [{"units": [int(u) for u in p], "label": label(p, True)} for p in automata.loops],
            "chains": [{"units": [int(u) for u in p], "label": label(p, False)} for p in automata.chains]}


class AutomatonGraph(WithFeatureSelection, MsWidget):
    """See the module docstring.  ``AutomatonGraph(automata, run_dir=run.root)`` or
    ``AutomatonGraph.from_run(run_dir, "A/1", **find_automata_settings)``."""

    _js = "automata"

    source = traitlets.Unicode("").tag(sync=True)
    n_tokens = traitlets.Int(0).tag(sync=True)
    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    edges = traitlets.List(traitlets.Dict()).tag(sync=True)
    loops = traitlets.List(traitlets.Dict()).tag(sync=True)
    chains = traitlets.List(traitlets.Dict()).tag(sync=True)
    highlight = traitlets.Unicode("").tag(sync=True)        # "loop:i", "chain:i" or ""
    only_paths = traitlets.Bool(False).tag(sync=True)       # show only the loops' and chains' nodes and edges
    selected_feature = traitlets.List().tag(sync=True)      # [dict_id, idx] or []

    def __init__(self, automata, run_dir: str | Path | None = None, card_factory: Callable | None = None,
                 seed: int = 0, **kw):
        self._a = automata
        g = graph_data(automata, seed)
        super().__init__(source=automata.source, n_tokens=int(automata.n_tokens or 0), nodes=g["nodes"],
                         edges=g["edges"], loops=g["loops"], chains=g["chains"], **kw)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.cards = LinkedCards(card_factory or default_card_factory(self.run_dir), "click a node to open its card")

    @classmethod
    def from_run(cls, run_dir, source: str = "A/1", **settings) -> "AutomatonGraph":
        """The graph of ``find_automata(run, source, **settings)`` (its saved result when there is one)."""
        from monosemantic.automata import find_automata

        run = open_run(run_dir)
        return cls(find_automata(run, source, **settings), run_dir=run.root)

    @property
    def automata(self):
        return self._a

    @traitlets.validate("highlight")
    def _check_highlight(self, proposal):
        v = str(proposal["value"])
        if not v:
            return v
        kind, _, i = v.partition(":")
        n = {"loop": len(self.loops), "chain": len(self.chains)}.get(kind)
        if n is None or not i.isdigit() or int(i) >= n:
            raise traitlets.TraitError(f"highlight is 'loop:i' (i < {len(self.loops)}), 'chain:i' "
                                       f"(i < {len(self.chains)}) or ''; got {v!r}")
        return v

    def feature_info(self, d: str, i: int) -> dict | None:
        if d != self.source or i not in {n["unit"] for n in self.nodes}:
            return None
        out = [e for e in self.edges if e["src"] == i]
        inn = [e for e in self.edges if e["dst"] == i]
        fmt = (lambda e, other: f"#{e[other]} (S {e['score']:.2f}, " +
               ("unchecked)" if e["gain"] is None else f"gain {e['gain']:.3g})"))
        info = {"top tokens": token_label(self._a.top_tokens.get(i, []), 6)}
        if out:
            info["raises"] = ", ".join(fmt(e, "dst") for e in out[:5])
        if inn:
            info["raised by"] = ", ".join(fmt(e, "src") for e in inn[:5])
        loops = [p["label"] for p in self.loops if i in p["units"]]
        if loops:
            info["loops"] = "; ".join(loops[:3])
        return info

    # ---- export --------------------------------------------------------------------------------------------------
    def page_title(self) -> str:
        return f"feature automata of {self.source}"

    def static_state(self, cards: bool = True) -> dict:
        """The synced state and (``cards``, with a run directory and its feature statistics) every node's compact
        card, packed, so a click on the page opens it as in the notebook."""
        st = super().static_state()
        st["static_cards"] = {}
        if cards and self.run_dir is not None and self.nodes:
            from .card import CardLayout

            try:
                specs = source_cards(self.run_dir, self.source, [n["unit"] for n in self.nodes],
                                     CardLayout.compact_export())
            except FileNotFoundError:            # no statistics: the page opens no cards
                specs = {}
            if specs:
                st["static_cards"][self.source] = pack_cards(specs)
        return st

    def to_html(self, path, include_plotly: bool | None = None, cards: bool = True) -> Path:
        """A self-contained page: the graph, the lists, and (``cards``) every node's card opened by a click."""
        return super().to_html(path, include_plotly=False if include_plotly is None else include_plotly,
                               cards=cards)
