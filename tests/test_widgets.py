"""Widgets: escaping of hostile tokens, card specs, state changes of the card / heatmap / browser, static export."""
import html.parser
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import traitlets

from monosemantic.features import FeatureStatsConfig, compute_feature_stats, compute_neuron_stats
from monosemantic.prompt import prompt_activations
from monosemantic.widgets.base import CARD_CHUNK
from monosemantic.widgets.browser import FeatureBrowser
from monosemantic.widgets.card import CardLayout, FeatureCard, NeuronCard, card_spec, proxy_figure, side_by_side
from monosemantic.widgets.heatmap import ActivationHeatmap
from monosemantic.widgets.html import display_token, escape_html, script_json, static_page, unpacked

sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
from widget_fixtures import (HOSTILE, PAGE_BREAKERS, SyntheticStats, hostile_exports, page_block,  # noqa: E402
                             page_scripts, page_state, synthetic_unit)
from conftest import state_strings  # noqa: E402

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


def test_card_spec_is_data_with_escaped_tokens():
    spec = card_spec(synthetic_unit())
    assert spec["kind"] == "feature" and spec["unit"] == 7
    assert set(spec["panels"]) == {"header", "histogram", "logits", "units", "domains", "top", "intervals"}
    assert spec["layout"]["columns"] == CardLayout().columns
    seq = spec["panels"]["top"]["groups"][0]["seqs"][0]
    assert seq["center"] == 3 and seq["act"] == 1.0
    assert seq["tokens"] == [display_token(t) for t in HOSTILE[:len(seq["tokens"])]]
    hist = spec["panels"]["histogram"]["hist"]                # data the card draws as SVG (no plotly)
    assert sum(map(sum, hist["counts"])) == 80                # the firing tokens; zeros are reported as density
    assert hist["domains"] == ["python", "base64"] and all(len(r) == 2 for r in hist["counts"])
    assert len(hist["counts"]) == 17 and hist["counts"][0] == [0, 0] and hist["counts"][-1] == [0, 0]
    assert hist["step"] == pytest.approx(7 / 140) and hist["x0"] == pytest.approx(-4 + 68 * 7 / 140)   # count row 69: bin [edge 68, edge 69)
    assert [r["domain"] for r in spec["panels"]["domains"]["rows"]] == ["python", "bible", "base64"]
    # intervals listed from the top down, empty ones included with their counts
    titles = [g["title"] for g in spec["panels"]["intervals"]["groups"]]
    assert titles[0].startswith("Interval 10") and len(titles) == 11
    compact = card_spec(synthetic_unit(), CardLayout.compact())
    # side by side, the compact card keeps interval samples (a polysemantic unit's top 8 can look clean)
    assert compact["layout"]["columns"] == [["histogram", "top", "intervals", "logits", "ablation", "units", "nearest"]]
    shown = compact["panels"]["top"]["groups"][0]["seqs"][0]["tokens"]
    assert sum(map(len, shown)) <= 64 and "nul␀byte" in shown      # the activating token (centre) is always kept
    assert spec["layout"]["present"]["columns"] == [["histogram", "logits", "domains"], ["top"], ["intervals"]]


def test_context_window_fills_a_character_budget_with_whole_tokens():
    from monosemantic.widgets.card import context_window

    toks = [f"w{i:02d} " for i in range(40)]                   # 4 characters each
    lo, hi = context_window(toks, 20, 96)
    assert hi - lo == 24 and lo <= 20 < hi                     # 96 characters, nothing cut inside a token
    assert 20 - lo == 14 and hi - 21 == 9                      # about 3/5 of it before the activating token
    lo, hi = context_window(toks, 2, 96)                       # near the start the rest goes after it
    assert (lo, hi) == (0, 24)
    lo, hi = context_window(toks, 39, 96)
    assert (lo, hi) == (16, 40)
    assert context_window(["x" * 200], 0, 96) == (0, 1)        # a token longer than the budget still shows


def test_whitespace_bytes_and_density_have_one_visible_form():
    assert display_token(" ") == "·" and display_token("    ") == "·×4" and display_token("   ") == "···"
    assert display_token("\n\n") == "↵↵" and display_token("\n" * 5) == "↵×5" and display_token("\t\t") == "⇥⇥"
    assert display_token(" \n") == "·↵" and display_token("\u00a0") == "⟨U+00A0⟩"
    assert display_token(" the") == " the" and display_token("a  b") == "a  b"    # words keep their spaces
    assert display_token("\udce2\udc80") == "\\xe2\\x80"               # surrogateescape'd bytes as \xNN
    from monosemantic.widgets.html import density_text

    assert density_text(0.000056) == "0.0056 %" and density_text(0.000056, odds=True) == "0.0056 % (1 in 18k)"
    assert density_text(0.0) == "0 %" and density_text(0.123) == "12 %" and density_text(0.0123) == "1.2 %"
    assert density_text(0.0000999) == "0.010 %" and density_text(2e-7, odds=True) == "0.000020 % (1 in 5.0M)"
    assert density_text(0.25, odds=True) == "25 % (1 in 4)" and density_text(float("nan")) == "–"
    assert all("e" not in density_text(10.0 ** -k) for k in range(1, 9))


def test_front_end_is_one_bundle_that_follows_edits_of_either_file(tmp_path):
    """Every widget's ESM is base.js followed by its own file (nothing pasted); when either file changes (anywidget's
    file watcher, ANYWIDGET_HMR=1) the bundle and every live widget's ``_esm`` follow."""
    import gc
    import weakref

    from monosemantic.widgets import html as wh

    base = (wh.HERE / "base.js").read_text()
    for cls in (FeatureCard, ActivationHeatmap, FeatureBrowser):
        js = (wh.HERE / f"{cls._js}.js").read_text()
        assert str(cls._esm) == base + "\n" + js and js.count("function msEl(") == 0
    assert str(FeatureCard._css) == wh.CSS_PATH.read_text()
    # without ANYWIDGET_HMR the assets are text: nothing watches them, so a closed card can be collected
    card = FeatureCard(SyntheticStats(), 1)
    ref = weakref.ref(card)
    card.close()
    del card
    gc.collect()
    assert ref() is None
    # with it, the watched bundle (anywidget's contents objects) and the stylesheet's Path
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wh, "_hmr_enabled", lambda: False)
        assert isinstance(wh.widget_assets("card")[0], str)
        mp.setattr(wh, "_hmr_enabled", lambda: True)
        esm, css = wh.widget_assets("card")
        assert esm is wh.esm_bundle("card") and css == wh.CSS_PATH
    a, b = tmp_path / "base.js", tmp_path / "w.js"
    a.write_text("const X = 1;")
    b.write_text("export default { render() {} };")
    bundle = wh.EsmBundle(a, b)
    from monosemantic.widgets.base import MsWidget

    class Live(MsWidget):
        _esm = bundle

    live = Live()
    assert live._esm == "const X = 1;\nexport default { render() {} };"
    b.write_text("export default { render() { return X; } };")
    bundle.parts[1]._contents = None                             # what FileContents.watch does on a change
    bundle.parts[1].changed.emit(str(bundle.parts[1]))
    assert str(bundle) == live._esm == "const X = 1;\nexport default { render() { return X; } };"


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


def test_every_static_export_keeps_page_breaking_strings_as_data(tmp_path):
    """Issue 11: ``<!--<script>`` in a token blanked the FeatureMap and SplittingTree pages.  On every widget's
    page the data blocks hold no ``<`` (so no ``<!--``, ``<script``, ``</script``) and no U+2028/9, the page has
    exactly its own script elements, and every string comes back from the JSON as it went in."""
    pages = hostile_exports(tmp_path)
    assert set(pages) == {"card", "browser", "heatmap", "matrix", "tree", "map"}
    shown = {display_token(t) for t in PAGE_BREAKERS}
    for name, path in pages.items():
        page = path.read_text(encoding="utf-8")
        scripts = page_scripts(page)
        assert [a for a, _ in scripts] == [{"type": "application/json", "id": "ms-modules"},
                                           {"type": "application/json", "id": "ms-data"}, {"type": "module"}], name
        for attrs, text in scripts[:2]:
            assert "<" not in text and ">" not in text, (name, attrs)
            assert "\u2028" not in text and "\u2029" not in text, (name, attrs)
            json.loads(text)
        module = scripts[2][1].lower()
        assert "<!--" not in module and "<script" not in module
        data = page_block(page, "ms-data")
        strings = set(state_strings(data))
        assert shown & strings, f"{name}: no hostile string reached the page's data"
        modules = page_block(page, "ms-modules")
        esms = [v["esm"] for v in data["views"]]
        assert set(modules) == set(esms) and all("export default" in m for m in modules.values())
        if name in ("matrix", "tree", "map"):          # a linked card open: the card's own front-end below
            assert esms[1:] and set(esms[1:]) == {"card"}, name
            assert 'class="ms-cardhead"' in page
    tree = page_state(pages["tree"].read_text())
    assert all(n["top_tokens"] == [display_token(t) for t in PAGE_BREAKERS] for n in tree["tree"]["nodes"])
    fmap = page_state(pages["map"].read_text())
    assert fmap["labels"][0].startswith("‹<!--<script>› ‹</script><script>win")
    assert page_state(pages["matrix"].read_text())["a_label"] == "A/" + PAGE_BREAKERS[0]
    assert page_state(pages["heatmap"].read_text())["data"]["rows"][0]["label"] == PAGE_BREAKERS[0]
    bstate = page_state(pages["browser"].read_text())
    rows = unpacked(bstate["static_rows"])                 # bulk data travels packed: gzip JSON in base64
    assert set(bstate["static_rows"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    cards = {u: c for p in bstate["static_cards"]["A/1"]["packs"].values() for u, c in unpacked(p).items()}
    assert sorted(cards, key=int) == [str(r["unit"]) for r in sorted(rows, key=lambda r: r["unit"])]
    assert shown & set(state_strings(cards))
    assert rows and all(r["top_tokens"] == [display_token(t) for t in PAGE_BREAKERS[:3]] for r in rows)
    card = page_state(pages["card"].read_text())["card"]
    assert card["panels"]["top"]["groups"][0]["seqs"][0]["tokens"][:2] == [display_token(t) for t in PAGE_BREAKERS[:2]]


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
    assert [s["act"] for s in top] == pytest.approx([e.act for e in st.unit(a).top[:len(top)]], rel=1e-3)   # 4 digits
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
    from monosemantic.metrics import density_modes
    from monosemantic.widgets.card import StatusRule

    run, st, ns = run_with_stats
    b = FeatureBrowser.from_run(run, "A/1")
    t = st.table
    # the status rule: the library's dead / ultralow columns and the low mode of a bimodal density
    rule = StatusRule.of(st)
    modes = density_modes(t["density"].to_numpy())
    assert rule.low_threshold == (modes["threshold"] if modes and modes["bimodal"] else None)
    status = rule.column(t)
    assert list(status) == [rule.status(r) for _, r in t.iterrows()]
    assert (status == "dead").sum() == t["dead"].sum() and (status == "ultralow").sum() == t["ultralow"].sum()
    assert b.status_counts["n_tokens"] == st.n_tokens and sum(b.status_counts[k] for k in
                                                             ("alive", "dead", "ultralow", "low-mode")) == st.n_units
    alive = t[status == "alive"]                              # the default filter hides every tagged unit
    assert b.n_total == st.n_units and b.n_matching == len(alive)
    want = alive.sort_values(["density"], ascending=False, kind="stable").index[:b.page_size]
    assert [r["unit"] for r in b.rows] == list(want)
    assert b.selected == int(want[0]) and b.card["unit"] == int(want[0]) and b.card["status"] == "alive"
    # sort ascending by max activation
    b.sort_by, b.descending = "max_act", False
    vals = [r["max_act"] for r in b.rows]
    assert vals == sorted(vals) and vals[0] == pytest.approx(alive["max_act"].min(), rel=1e-3)
    # paging
    b.page = 1
    assert b.rows[0]["max_act"] >= vals[-1]
    b.sort_by = "density"
    assert b.page == 0
    # search by id and by token, ranked by relevance: the id first, then exact top tokens (earlier first)
    b.filter = "all"
    b.sort_by = "relevance"
    b.query = str(int(want[3]))
    assert b.rows[0]["unit"] == int(want[3])
    tok = alive.loc[int(want[0]), "top_tokens"][0].strip()
    b.query = tok.lower()
    ranks = b.view()["_relevance"].to_numpy()
    assert len(ranks) == b.n_matching >= 1 and (np.diff(ranks) >= 0).all() and ranks[0] < 2
    first = b.view().iloc[0]
    assert any(x.strip().lower() == tok.lower() for x in first["top_tokens"])
    same = b.view()[b.view()["_relevance"] == ranks[0]]
    assert (np.diff(same["density"].to_numpy()) <= 0).all()   # ties: the more common unit first, not the rarest
    b.query = ""
    # filters
    b.filter = "dead"
    assert b.n_matching == int(t["dead"].sum()) and all(r["dead"] for r in b.rows)
    b.filter = "low-mode"
    assert b.n_matching == int((status == "low-mode").sum()) and all(r["status"] == "low-mode" for r in b.rows)
    b.filter = "all"
    assert b.n_matching == st.n_units
    with pytest.raises(traitlets.TraitError, match="filter must be one of"):
        b.filter = "nope"
    with pytest.raises(traitlets.TraitError, match="sort_by must be one of"):
        b.sort_by = "nope"
    # a unit out of range is refused where the caller sees it (a validator), the selection and card unchanged
    before = (b.selected, b.card["unit"])
    with pytest.raises(traitlets.TraitError, match="out of range"):
        b.selected = st.n_units
    assert (b.selected, b.card["unit"]) == before
    b.selected = -1
    assert b.card == {}
    b.selected = before[0]
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
    # the static page holds every unit and its card (packed), with the query, sort and filter as they are
    b.query, b.filter = "the", "alive"
    out = b.to_html(tmp_path / "browser.html")        # plotly.js (4.8 MB) not inlined: the histograms are SVG
    assert out.stat().st_size < 3_000_000
    state = page_state(out.read_text())
    rows = unpacked(state["static_rows"])
    assert sorted(r["unit"] for r in rows) == list(range(st.n_units)) and state["n_total"] == st.n_units
    assert (state["query"], state["filter"], state["source"]) == ("the", "alive", "A/1")
    packs = state["static_cards"]["A/1"]["packs"]
    assert len(packs) == -(-st.n_units // CARD_CHUNK)
    k = state["static_cards"]["A/1"]["index"][str(order[5])]
    card = unpacked(packs[str(k)])[str(order[5])]
    assert card["unit"] == order[5] and card["panels"]["top"]["groups"]
    assert len(card["panels"]["top"]["groups"][0]["seqs"]) <= 10                   # CardLayout.export()
    out5 = b.to_html(tmp_path / "browser5.html", max_rows=5, include_plotly=False)
    state5 = page_state(out5.read_text())
    assert [r["unit"] for r in unpacked(state5["static_rows"])] == list(b.view().index[:5])
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
