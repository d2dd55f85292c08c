"""Widgets: escaping of hostile tokens, card specs, state changes of the card / heatmap / browser, static export."""
import html.parser
import json
import re

import numpy as np
import pytest
import traitlets

from monosemantic.features import (Example, FeatureStatsConfig, Histogram, UnitStats, compute_feature_stats,
                                   compute_neuron_stats)
from monosemantic.prompt import prompt_activations
from monosemantic.widgets.browser import FeatureBrowser
from monosemantic.widgets.card import CardLayout, FeatureCard, NeuronCard, card_spec, proxy_figure, side_by_side
from monosemantic.widgets.heatmap import ActivationHeatmap
from monosemantic.widgets.html import display_token, escape_html, script_json, static_page

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "\u202eevil\u202c", "nul\x00byte",
           "</script><!--", "a\u2028b", "&amp;", "\n", "\t", "\x07bell", "\u2066iso\u2069", "\ud800"]


def test_display_token_makes_controls_visible():
    assert display_token("\n") == "↵" and display_token("\t") == "⇥" and display_token("\x00") == "␀"
    assert display_token("\u202eabc") == "⟨U+202E⟩abc"
    assert display_token("\u2066x\u2069") == "⟨U+2066⟩x⟨U+2069⟩"
    assert display_token("\x07") == "\\x07" and display_token("\x9b") == "\\x9b"
    assert display_token("\ud800") == "\ufffd"
    assert display_token(" the") == " the"            # ordinary tokens keep their spaces
    for t in HOSTILE:
        shown = display_token(t)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]", shown), t


def test_escape_html_and_script_json():
    assert escape_html('<img src=x onerror="a">') == "&lt;img src=x onerror=&quot;a&quot;&gt;"
    s = script_json({"t": HOSTILE, "nan": float("nan")})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s
    back = json.loads(s)
    assert back["t"] == HOSTILE and back["nan"] is None


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def page_block(page: str, block_id: str):
    """The JSON data block ``block_id`` of a static page, decoded."""
    return json.loads(page.split(f'id="{block_id}">', 1)[1].split("</script>", 1)[0])


def page_state(page: str, view: int = 0) -> dict:
    """The synced state of the page's ``view``-th widget (0: the exported widget, then its linked cards)."""
    return page_block(page, "ms-data")["views"][view]["state"]


def synthetic_unit(tokens=HOSTILE, kind="feature"):
    K = 4
    ex = [Example(section=-1, rank=i, act=1.0 - 0.1 * i, context=i, pos=3, token_ids=list(range(len(tokens))),
                  tokens=list(tokens), acts=[0.0] * 3 + [1.0 - 0.1 * i] + [0.2] * (len(tokens) - 4), center=3)
          for i in range(3)]
    counts = np.zeros((142, K), np.int64)
    counts[70:80, 0] = 5
    counts[75:85, 2] = 3
    row = {"density": 0.01, "count": 80, "max_act": 1.0, "mean_act": 0.4, "dead": False, "ultralow": False,
           "top_domain": "python", "top_tokens": tokens[:3], "proxy_specificity": 0.6, "proxy_corr": 0.3,
           **{f"{m}_{d}": 0.1 for m in ("act_share", "sensitivity", "corr", "fire_share")
              for d in ("python", "bible", "base64", "text")}}
    edges = 10.0 ** np.linspace(-4, 3, 141)
    intervals = [{"index": i, "lo": i / 11, "hi": (i + 1) / 11, "count": 10, "examples": ex[:1] if i == 10 else []}
                 for i in range(11)]
    return UnitStats(kind=kind, source="A/1" if kind == "feature" else "A", unit=7, row=row,
                     histogram=Histogram(edges=edges, counts=counts, zero=8000, domains=["python", "bible",
                                                                                        "base64", "text"]),
                     top=ex, intervals=intervals, logits_top=[(t, 0.5) for t in tokens[:5]],
                     logits_bottom=[(t, -0.5) for t in tokens[5:10]], neurons=[(3, 0.4), (9, -0.2)], n_tokens=8080,
                     proxy_domain="base64", domains=["python", "bible", "base64", "text"],
                     domain_tokens={"python": 100, "bible": 100, "base64": 10, "text": 0})


def test_card_spec_is_data_with_escaped_tokens():
    spec = card_spec(synthetic_unit())
    assert spec["kind"] == "feature" and spec["unit"] == 7
    assert set(spec["panels"]) == {"header", "histogram", "logits", "units", "domains", "top", "intervals"}
    assert spec["layout"]["columns"] == CardLayout().columns
    seq = spec["panels"]["top"]["groups"][0]["seqs"][0]
    assert seq["center"] == 3 and seq["act"] == 1.0
    assert seq["tokens"] == [display_token(t) for t in HOSTILE[:len(seq["tokens"])]]
    hist = spec["panels"]["histogram"]["figure"]
    assert sum(sum(tr["y"]) for tr in hist["data"]) == 80     # the firing tokens; zeros are reported as density
    assert {tr["name"] for tr in hist["data"]} == {"python", "base64"}
    assert [r["domain"] for r in spec["panels"]["domains"]["rows"]] == ["python", "bible", "base64"]
    # intervals listed from the top down, empty ones included with their counts
    titles = [g["title"] for g in spec["panels"]["intervals"]["groups"]]
    assert titles[0].startswith("Interval 10") and len(titles) == 11
    compact = card_spec(synthetic_unit(), CardLayout.compact())
    assert compact["layout"]["columns"] == [["histogram", "top", "logits", "units"]]
    assert len(compact["panels"]["top"]["groups"][0]["seqs"][0]["tokens"]) <= 6 + 1 + 3


def test_static_page_cannot_be_broken_out_of(tmp_path):
    page = static_page("card", {"card": card_spec(synthetic_unit())}, title="<script>x</script>",
                       include_plotly=False)
    p = _Tags()
    p.feed(page)
    tags = [t for t, _ in p.tags]
    assert "img" not in tags and "iframe" not in tags
    scripts = [a for t, a in p.tags if t == "script"]
    assert scripts == [{"type": "application/json", "id": "ms-modules"}, {"type": "application/json", "id": "ms-data"},
                       {"type": "module"}]
    assert "<title>&lt;script&gt;x&lt;/script&gt;</title>" in page
    card = page_state(page)["card"]
    toks = card["panels"]["top"]["groups"][0]["seqs"][0]["tokens"]
    assert toks[0] == "<script>alert(1)</script>" and "⟨U+202E⟩" in toks[2] and "␀" in toks[3]
    from monosemantic.widgets.html import write_static_page

    with pytest.raises(ValueError, match=r"\.html"):
        write_static_page(tmp_path / "card.png", "card", {"card": {}}, "t")


# ---- widgets on the tiny run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_with_stats(tiny_run):
    cfg = FeatureStatsConfig(n_tokens=4000, batch_contexts=64, top_k=8, per_interval=3)
    st = compute_feature_stats(tiny_run, "A/1", cfg, progress=False)
    ns = compute_neuron_stats(tiny_run, "A", cfg, progress=False)
    return tiny_run, st, ns


def test_feature_card_follows_its_unit(run_with_stats, tmp_path):
    run, st, ns = run_with_stats
    alive = st.table.index[~st.table["dead"]]
    a, b = int(alive[0]), int(alive[1])
    card = FeatureCard.from_run(run.root, "A/1", a)
    assert card.card["unit"] == a and card.card["title"] == f"Feature A/1/{a}"
    top = card.card["panels"]["top"]["groups"][0]["seqs"]
    assert [s["act"] for s in top] == pytest.approx([e.act for e in st.unit(a).top[:len(top)]])
    card.unit = b
    assert card.card["unit"] == b and card.card["title"] == f"Feature A/1/{b}"
    with pytest.raises(traitlets.TraitError, match="out of range"):
        card.unit = st.n_units
    assert card.unit == b
    out = card.to_html(tmp_path / "card.html", include_plotly=False)
    assert f"Feature A/1/{b}" in out.read_text()
    nc = NeuronCard.from_run(run, "A", 3)
    assert nc.card["kind"] == "neuron" and nc.card["panels"]["units"]["unit_kind"] == "feature"
    assert "A/1" in nc.card["panels"]["units"]["title"]
    with pytest.raises(ValueError, match="transformer name"):
        NeuronCard.from_run(run, "A/1", 3)
    box = side_by_side(card, nc, titles=["<b>f</b>", "n"])
    assert len(box.children) == 2 and "&lt;b&gt;" in box.children[0].children[0].value


def test_plotly_js_is_sent_once_on_request(run_with_stats, monkeypatch):
    run, st, ns = run_with_stats
    card = FeatureCard.from_run(run, "A/1", 0)
    sent = []
    monkeypatch.setattr(card, "send", lambda content, buffers=None: sent.append((content, buffers)))
    card._on_custom_msg(card, {"type": "need-plotly"}, [])
    assert sent[0][0] == {"type": "plotly-js"} and len(sent[0][1][0]) > 1_000_000
    assert b"window.Plotly" in sent[0][1][0]


def test_heatmap_state_changes(run_with_stats):
    run, st, ns = run_with_stats
    texts = ["And God said, Let there be light", "def f(x):\n    return '<b>'"]
    hm = ActivationHeatmap.from_run(run, "A/1", texts, top=5, labels=["bible", "code"])
    pa = prompt_activations(run, "A/1", texts)
    want = np.argsort(-np.maximum(pa[0].acts_TU.max(0), pa[1].acts_TU.max(0)), kind="stable")[:5]
    assert hm.units == [int(u) for u in want]
    row = hm.data["rows"][1]
    assert row["label"] == "code" and row["tokens"] == [display_token(t) for t in pa[1].tokens]
    np.testing.assert_allclose(np.array(row["acts"]), pa[1].acts_TU[:, hm.units], atol=1e-4)
    assert hm.data["units"][0]["max"] >= float(st.table.loc[hm.units[0], "max_act"]) - 1e-6
    hm.selected, hm.heat_row = 2, 1
    hm.set_units([7, 7, 3])
    assert hm.units == [7, 3] and hm.selected == 1              # clamped to the new list
    hm.set_texts(["In the beginning"])
    assert len(hm.data["rows"]) == 1 and hm.heat_row == 0
    with pytest.raises(IndexError, match="out of range"):
        hm.set_units([10_000])
    neur = ActivationHeatmap.from_run(run, "A", "And God said", top=3)
    assert neur.data["kind"] == "neuron" and len(neur.units) == 3


def test_browser_sorts_searches_filters_and_steps(run_with_stats, tmp_path):
    run, st, ns = run_with_stats
    b = FeatureBrowser.from_run(run, "A/1")
    t = st.table
    alive = t[~t["dead"]]
    assert b.n_total == st.n_units and b.n_matching == len(alive)
    want = alive.sort_values(["density"], ascending=False, kind="stable").index[:b.page_size]
    assert [r["unit"] for r in b.rows] == list(want)
    assert b.selected == int(want[0]) and b.card["unit"] == int(want[0])
    # sort ascending by max activation
    b.sort_by, b.descending = "max_act", False
    vals = [r["max_act"] for r in b.rows]
    assert vals == sorted(vals) and vals[0] == alive["max_act"].min()
    # paging
    b.page = 1
    assert b.rows[0]["max_act"] >= vals[-1]
    b.sort_by = "density"
    assert b.page == 0
    # search by id and by token
    b.query = str(int(want[3]))
    assert int(want[3]) in [r["unit"] for r in b.rows]
    tok = alive.loc[int(want[0]), "top_tokens"][0].strip()
    b.query = tok.lower()
    # a digit query also matches the unit of that id
    assert b.n_matching >= 1 and all(tok.lower() in r["search"] or (tok.isdigit() and r["unit"] == int(tok))
                                     for r in b.rows)
    b.query = ""
    # filters
    b.filter = "dead"
    assert b.n_matching == int(t["dead"].sum()) and all(r["dead"] for r in b.rows)
    b.filter = "all"
    assert b.n_matching == st.n_units
    with pytest.raises(traitlets.TraitError, match="filter must be one of"):
        b.filter = "nope"
    with pytest.raises(traitlets.TraitError, match="sort_by must be one of"):
        b.sort_by = "nope"
    # selection and one-click stepping through the current view
    order = list(b.view().index)
    b.select(order[30])
    assert b.selected == order[30] and b.page == 30 // b.page_size and b.card["unit"] == order[30]
    assert b.next() == order[31] and b.card["unit"] == order[31]
    assert b.prev() == order[30]
    b._on_custom_msg(b, {"type": "step", "delta": 2}, [])      # the front-end's next ▶ button
    assert b.selected == order[32]
    b.select(order[0])
    assert b.prev() == order[0]                                # clamped at the start
    out = b.to_html(tmp_path / "browser.html", max_rows=5, include_plotly=False)
    state = page_state(out.read_text())
    assert len(state["static_rows"]) == 5
    assert set(state["static_cards"]) == {str(r["unit"]) for r in state["static_rows"]}
    nb = FeatureBrowser.from_run(run, "A")
    assert nb.unit_kind == "neuron" and nb.card["kind"] == "neuron"


def test_proxy_figure(run_with_stats):
    run, st, ns = run_with_stats
    f = int(st.find("base64").index[0])
    n = int(ns.find("base64").index[0])
    fig = proxy_figure(st, f, ns, n)
    scores = [tr for tr in fig.data if tr.name in (f"feature {f}", f"neuron {n}")]
    assert len(scores) == 2
    assert scores[0].y[0] == pytest.approx(st.table.loc[f, "act_share_base64"])
    assert scores[1].y[2] == pytest.approx(ns.table.loc[n, "corr_base64"])
    hist_total = sum(sum(tr.y) for tr in fig.data if tr.xaxis == "x")
    assert hist_total == st.table.loc[f, "count"]
