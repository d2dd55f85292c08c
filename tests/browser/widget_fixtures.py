"""Synthetic data for the widget tests (no run needed), and every widget's static export built on hostile strings.

Used by ``tests/test_widgets*.py`` (structure and round trip of the pages) and ``test_static_exports_browser.py``
(the same pages in Chromium: they render, the strings show as text, nothing runs).
"""
from __future__ import annotations

import html.parser
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: the planted splitting of test_splitting

# token strings a corpus can hold that must stay text: markup, script and comment openers, JS line separators
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "\u202eevil\u202c", "nul\x00byte",
           "</script><!--", "a\u2028b", "&amp;", "\n", "\t", "\x07bell", "\u2066iso\u2069", "\ud800"]
# what blanked the FeatureMap / SplittingTree exports (issue 11): a script-data comment opener before <script>
PAGE_BREAKERS = ["<!--<script>", "</script><script>window.__pwned=3</script>", "<SCRIPT>window.__pwned=1</script>",
                 '"><img src=x onerror="window.__pwned=2">', "x\u2028y\u2029z", "<!--", "</ScRiPt >"]
DOMAINS = ["python", "bible", "base64", "text"]


def synthetic_unit(tokens=HOSTILE, kind="feature", unit=7):
    """A ``UnitStats`` whose every token string (examples, top tokens, logits) comes from ``tokens``."""
    from monosemantic.features import Example, Histogram, UnitStats

    tokens = list(tokens) + ["pad"] * max(0, 10 - len(tokens))
    K = len(DOMAINS)
    ex = [Example(section=-1, rank=i, act=1.0 - 0.1 * i, context=i, pos=3, token_ids=list(range(len(tokens))),
                  tokens=list(tokens), acts=[0.0] * 3 + [1.0 - 0.1 * i] + [0.2] * (len(tokens) - 4), center=3)
          for i in range(3)]
    counts = np.zeros((142, K), np.int64)
    counts[70:80, 0] = 5
    counts[75:85, 2] = 3
    row = {"density": 0.01, "count": 80, "max_act": 1.0, "mean_act": 0.4, "dead": False, "ultralow": False,
           "top_domain": "python", "top_tokens": tokens[:3], "proxy_specificity": 0.6, "proxy_corr": 0.3,
           **{f"{m}_{d}": 0.1 for m in ("act_share", "sensitivity", "corr", "fire_share") for d in DOMAINS}}
    edges = 10.0 ** np.linspace(-4, 3, 141)
    intervals = [{"index": i, "lo": i / 11, "hi": (i + 1) / 11, "count": 10, "examples": ex[:1] if i == 10 else []}
                 for i in range(11)]
    return UnitStats(kind=kind, source="A/1" if kind == "feature" else "A", unit=unit, row=row,
                     histogram=Histogram(edges=edges, counts=counts, zero=8000, domains=list(DOMAINS)),
                     top=ex, intervals=intervals, logits_top=[(t, 0.5) for t in tokens[:5]],
                     logits_bottom=[(t, -0.5) for t in tokens[5:10]], neurons=[(3, 0.4), (9, -0.2)], n_tokens=8080,
                     proxy_domain="base64", domains=list(DOMAINS),
                     domain_tokens={"python": 100, "bible": 100, "base64": 10, "text": 0})


class SyntheticStats:
    """Stands in for ``features.FeatureStats``: every unit is ``synthetic_unit(tokens)``; ``table`` the browser's
    columns, unit ``u`` with density ``(u + 1) / 1000``."""

    def __init__(self, tokens=HOSTILE, n_units: int = 6, source: str = "A/1"):
        self.tokens, self.n_units, self.source = list(tokens), n_units, source
        self.kind, self.run, self.n_tokens = "feature", None, 8080
        self.table = pd.DataFrame({
            "density": [(u + 1) / 1000 for u in range(n_units)], "count": [80] * n_units,
            "max_act": [1.0] * n_units, "top_tokens": [self.tokens[:3]] * n_units,
            "top_domain": ["python"] * n_units, "proxy_specificity": [0.6] * n_units,
            "proxy_sensitivity": [0.1] * n_units, "proxy_corr": [0.3] * n_units,
            "dead": [False] * n_units, "ultralow": [False] * n_units})

    def unit(self, u: int):
        us = synthetic_unit(self.tokens, unit=int(u))
        r = self.table.loc[int(u)]
        us.row.update(density=float(r["density"]), dead=bool(r["dead"]), ultralow=bool(r["ultralow"]))
        return us


def comparison(P=30, Q=40, dead=(2,), a="A/1", b="B/1", seed=0):
    """A universality comparison with a planted one-to-one match per row (``dead`` rows never fire)."""
    from monosemantic.universality import Comparison, PairResult

    rng = np.random.default_rng(seed)
    corr = rng.uniform(-0.1, 0.3, (P, Q)).astype(np.float32)
    perm = rng.permutation(Q)
    for i in range(P):
        corr[i, perm[i]] = 0.5 + 0.45 * rng.random()
    corr[list(dead), :] = np.nan
    fires = np.full(P, 50)
    fires[list(dead)] = 0
    feats = PairResult(a, b, corr, fires, np.full(Q, 50), 10_000, 1e-5, False)
    ncorr = rng.uniform(0, 0.6, (8, 8)).astype(np.float32)
    neurons = PairResult("A/neurons", "B/neurons", ncorr, np.full(8, 5000), np.full(8, 5000), 10_000, 1e-5, False)
    return Comparison(feats, neurons, {"tokens": 10_000})


def planted_splitting():
    """A parent that splits into three children, from hand-built dictionaries on synthetic activations."""
    from test_splitting import planted_batches, planted_dictionaries

    from monosemantic.splitting import link_activations

    small, large = planted_dictionaries()
    return link_activations(planted_batches(), {"S": small, "L": large})


def map_frame(tokens=(" the", "<b>"), seed=0) -> pd.DataFrame:
    """A feature map of two dictionaries (5 and 10 features), every point's top tokens ``tokens``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"dict_id": ["A/0"] * 5 + ["A/1"] * 10, "idx": list(range(5)) + list(range(10)),
                         "d_sae": [5] * 5 + [10] * 10, "x": rng.normal(size=15), "y": rng.normal(size=15),
                         "cluster": [0, 0, 1, 1, -1] * 3, "density": rng.random(15),
                         "top_tokens": [list(tokens)] * 15})


def hostile_exports(out: Path, tokens=PAGE_BREAKERS, include_plotly: bool = False) -> dict[str, Path]:
    """Every widget's static export with ``tokens`` wherever a token string (or a label) reaches the page; the
    three analysis widgets with a linked card open.  ``{widget name: page}``."""
    from monosemantic.widgets.browser import FeatureBrowser
    from monosemantic.widgets.card import CardLayout, FeatureCard
    from monosemantic.widgets.correlation import CorrelationMatrix
    from monosemantic.widgets.feature_map import FeatureMap
    from monosemantic.widgets.html import display_token, write_static_page
    from monosemantic.widgets.splitting import SplittingTree

    out = Path(out)
    stats = SyntheticStats(tokens)

    wide = CardLayout(context_chars=400)       # every hostile string of a context reaches the page

    def cards(dict_id, idx, info):
        return FeatureCard(stats, int(idx) % stats.n_units, layout=wide)

    pages = {"card": FeatureCard(stats, 3, layout=wide).to_html(out / "card.html", include_plotly=include_plotly)}
    browser = FeatureBrowser(stats, filter="all")
    browser.select(4)
    pages["browser"] = browser.to_html(out / "browser.html", include_plotly=include_plotly,
                                       layout=CardLayout(n_top=10, n_per_interval=2, context_chars=400))
    # the heatmap's texts run through the model: its page is built from the state it would sync
    shown = [display_token(t) for t in tokens]
    data = {"title": f"A/1: 1 feature on {tokens[0]}", "kind": "feature", "source": "A/1",
            "units": [{"id": 3, "label": "feature 3", "max": 1.0, "hint": " ".join(shown)}],
            "rows": [{"label": tokens[0], "tokens": shown, "acts": [[0.1 * (i + 1)] for i in range(len(shown))],
                      "top": [[("feature 3", 0.5)]] * len(shown)}]}
    pages["heatmap"] = write_static_page(out / "heatmap.html", "heatmap", {"data": data, "selected": 0,
                                                                           "heat_row": 0},
                                         title=data["title"], include_plotly=include_plotly)
    matrix = CorrelationMatrix(comparison(a="A/" + tokens[0]), card_factory=cards)
    matrix.select(0, 1)
    pages["matrix"] = matrix.to_html(out / "matrix.html", include_plotly=include_plotly)
    sp = planted_splitting()
    sp.nodes["top_tokens"] = [list(tokens)] * len(sp.nodes)
    tree = SplittingTree(sp, root=("S", 0), card_factory=cards)
    tree.select("L", 1)
    pages["tree"] = tree.to_html(out / "tree.html", include_plotly=include_plotly)
    fmap = FeatureMap(map_frame(tokens), card_factory=cards)
    fmap.select("A/1", 4)
    pages["map"] = fmap.to_html(out / "map.html", include_plotly=include_plotly)
    return pages


# ---- presenter fixtures: ordinary tokens, the default run's sizes (A/0 512, A/1 4096, A/2 16384) -------------------
# token strings as a real run has them: words with their spaces, indentation, newlines, a raw byte, long identifiers
TOKENS = [" the", " LORD", "def", "        ", "\n", " God", "(", "self", ")", ":", " return", " AttributeError",
          "\udce2", " said", "\n\n", " unto", "_initialize_configuration", " x"]
SIZES = {"A/0": 512, "A/1": 4096, "A/2": 16384}
TINY_DENSITIES = {10: 5.6e-5, 11: 2e-7, 12: 9.99e-5, 13: 0.00123}


def default_size_splitting(seed: int = 0):
    """A ``Splitting`` of the default run's sizes whose largest family is as wide as the default run's (A/0 #7: 14
    children in A/1 above the threshold, each with 6–12 in A/2, long top tokens), plus random weaker links."""
    from monosemantic.families import Splitting

    rng = np.random.default_rng(seed)
    nodes = []
    for d, n in SIZES.items():
        dens = 10.0 ** rng.normal(-3.2, 0.7, n)
        for i in range(n):
            k = int(rng.integers(0, len(TOKENS) - 5))
            nodes.append({"dict_id": d, "idx": i, "d_sae": n, "fires": int(dens[i] * 1e6), "density": float(dens[i]),
                          "top_tokens": TOKENS[k:k + 5], "top_token_ids": list(range(5))})
    edges = []

    def link(src, si, dst, di, sim):
        edges.append({"src": src, "src_idx": si, "dst": dst, "dst_idx": di, "sim": sim, "cos_src_mask": sim,
                      "cos_dst_mask": sim, "decoder_cos": sim / 2})

    for c in range(14):
        link("A/0", 7, "A/1", 100 + c, 0.95 - 0.03 * c)
        for g in range(6 + c % 7):
            link("A/1", 100 + c, "A/2", 1000 + 20 * c + g, 0.9 - 0.04 * g)
    for _ in range(3000):
        link("A/0", int(rng.integers(0, 512)), "A/1", int(rng.integers(0, 4096)), float(rng.uniform(0.05, 0.45)))
    nd = pd.DataFrame(nodes)
    nd.loc[nd["dict_id"] != "A/0", "density"] = nd.loc[nd["dict_id"] != "A/0", "density"].clip(lower=1e-3)
    return Splitting(dict_ids=list(SIZES), sizes=dict(SIZES), edges=pd.DataFrame(edges), nodes=nd, threshold=0.4)


def default_size_map(seed: int = 0) -> pd.DataFrame:
    """A feature map of 20,992 features (the default run's three dictionaries) in 9 clusters and noise."""
    rng = np.random.default_rng(seed)
    rows = []
    centers = rng.normal(0, 6, (9, 2))
    for d, n in SIZES.items():
        cl = rng.integers(-1, 9, n)
        xy = np.where(cl[:, None] >= 0, centers[np.maximum(cl, 0)], 0) + rng.normal(0, 1.4, (n, 2))
        dens = 10.0 ** rng.normal(-3.2, 0.8, n)
        for i in range(n):
            k = int(rng.integers(0, len(TOKENS) - 5)) if cl[i] < 0 else int(cl[i]) % (len(TOKENS) - 5)
            rows.append((d, i, n, float(dens[i]), float(xy[i, 0]), float(xy[i, 1]), int(cl[i]), TOKENS[k:k + 5]))
    return pd.DataFrame(rows, columns=["dict_id", "idx", "d_sae", "density", "x", "y", "cluster", "top_tokens"])


def presenter_exports(out: Path, n_units: int = 300) -> dict[str, Path]:
    """Every widget's static export on ordinary tokens, the tree and the map at the default run's size; the matrix
    carries every card (its clicks open them) and the browser every unit."""
    from monosemantic.widgets.browser import FeatureBrowser
    from monosemantic.widgets.card import FeatureCard
    from monosemantic.widgets.correlation import CorrelationMatrix
    from monosemantic.widgets.feature_map import FeatureMap
    from monosemantic.widgets.html import display_token, write_static_page
    from monosemantic.widgets.splitting import SplittingTree

    out = Path(out)
    stats = SyntheticStats(TOKENS, n_units=n_units)
    stats.table.loc[[5, 6], "dead"] = True
    stats.table.loc[[5, 6], "density"] = 0.0
    for u, d in TINY_DENSITIES.items():          # rare units: the density format's small end
        stats.table.loc[u, "density"] = d

    def cards(dict_id, idx, info):
        return FeatureCard(stats, int(idx) % stats.n_units)

    pages = {"card": FeatureCard(stats, 3).to_html(out / "card.html")}
    browser = FeatureBrowser(stats)
    browser.select(40)
    pages["browser"] = browser.to_html(out / "browser.html")
    shown = [display_token(t) for t in TOKENS]
    data = {"title": "A/1: 2 features on 1 text", "kind": "feature", "source": "A/1",
            "units": [{"id": 3, "label": "feature 3", "max": 1.0, "hint": ""},
                      {"id": 9, "label": "feature 9", "max": 2.0, "hint": ""}],
            "rows": [{"label": "row 1", "tokens": shown, "acts": [[0.06 * i, 0.1 * (i % 3)] for i in range(len(shown))],
                      "top": [[("feature 3", 0.5)]] * len(shown)}]}
    pages["heatmap"] = write_static_page(out / "heatmap.html", "heatmap", {"data": data, "selected": 0, "heat_row": 0},
                                         title=data["title"])
    matrix = CorrelationMatrix(comparison(P=60, Q=60, dead=(2,)), card_factory=cards)
    matrix.select(matrix.row_order[0], matrix.col_order[0])
    pages["matrix"] = matrix.to_html(out / "matrix.html")
    tree = SplittingTree(default_size_splitting(), root=("A/0", 7), card_factory=cards)
    tree.select("A/1", 100)
    pages["tree"] = tree.to_html(out / "tree.html")
    fmap = FeatureMap(default_size_map(), card_factory=cards)
    fmap.select("A/1", 4)
    pages["map"] = fmap.to_html(out / "map.html")
    return pages


# ---- reading a static page back -----------------------------------------------------------------------------

def page_block(page: str, block_id: str):
    """The JSON data block ``block_id`` of a static page, decoded."""
    return json.loads(page.split(f'id="{block_id}">', 1)[1].split("</script>", 1)[0])


def page_state(page: str, view: int = 0) -> dict:
    """The synced state of the page's ``view``-th widget (0: the exported widget, then its linked cards)."""
    return page_block(page, "ms-data")["views"][view]["state"]


def page_scripts(page: str) -> list[tuple[dict, str]]:
    """Every <script> element of a page as (attributes, raw text), split as an HTML parser does."""
    class P(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.out, self._cur = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self._cur = [dict(attrs), ""]

        def handle_data(self, data):
            if self._cur is not None:
                self._cur[1] += data

        def handle_endtag(self, tag):
            if tag == "script" and self._cur is not None:
                self.out.append(tuple(self._cur))
                self._cur = None

    p = P()
    p.feed(page)
    return p.out
