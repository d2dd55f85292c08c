"""CorrelationMatrix, SplittingTree, FeatureMap: the synced state (the truth), clicks → linked cards, export."""
import base64
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import traitlets

from monosemantic.universality import one_to_one
from monosemantic.widgets.base import LinkedCards
from monosemantic.widgets.correlation import CorrelationMatrix, encode_image
from monosemantic.widgets.feature_map import FeatureMap, feature_map_figure
from monosemantic.widgets.splitting import SplittingTree

sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
from widget_fixtures import comparison, map_frame, planted_splitting  # noqa: E402


def _decode(w):
    q = np.frombuffer(w.image, np.uint8).reshape(w.image_shape).astype(float)
    return np.where(q == 255, np.nan, q / 250 * 2 - 1)


class Recorder:
    """A card factory that records what it was asked for (stands in for FeatureCard)."""

    def __init__(self):
        self.calls = []

    def __call__(self, dict_id, idx, info):
        import ipywidgets

        self.calls.append((dict_id, idx, info))
        return ipywidgets.HTML(f"card {dict_id} {idx}")


def _heads(cards: LinkedCards):
    out = []
    for col in cards.box.children:
        if hasattr(col, "children"):
            m = re.search(r'data-feature="([^"]+)"', col.children[0].value)
            out.append(m.group(1))
    return out


def test_encode_image_codes():
    q = np.frombuffer(encode_image(np.array([-1, 0, 1, np.nan, 2.0])), np.uint8)
    assert q.tolist() == [0, 125, 250, 255, 250]


def test_matrix_reorders_matches_onto_the_diagonal_and_pools_block_maxima():
    cmp_ = comparison()
    w = CorrelationMatrix(cmp_, max_pixels=16, card_factory=Recorder(), hide_flagged=False)
    corr = cmp_.features.corr
    assert w.shape == [30, 40] and w.view == [0, 30, 0, 40] and w.image_shape == [16, 16]
    # the first rows of the matrix order are the one-to-one matches, strongest first, on the diagonal
    rows, cols, vals = one_to_one(corr)
    diag = corr[w.row_order[:len(vals)], w.col_order[:len(vals)]]
    assert np.allclose(np.sort(vals)[::-1], diag)
    assert w.row_order[-1] == 2                       # the dead feature last
    # every pixel is the NaN-ignoring maximum of its block (within the 8-bit code's resolution)
    M = corr[np.ix_(w.row_order, w.col_order)]
    re_, ce = w.image_row_edges, w.image_col_edges
    ref = np.array([[np.nanmax(M[re_[k]:re_[k + 1], ce[l]:ce[l + 1]]) if not np.isnan(M[re_[k]:re_[k + 1], ce[l]:ce[l + 1]]).all()
                     else np.nan for l in range(16)] for k in range(16)])
    got = _decode(w)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.nanmax(np.abs(got - ref)) <= 1 / 250 + 1e-6
    # zoom: a window of single cells shows exact cells
    w.view = [3, 10, 5, 17]
    assert w.image_shape == [7, 12] and w.image_view == [3, 10, 5, 17]
    assert np.nanmax(np.abs(_decode(w) - M[3:10, 5:17])) <= 1 / 250 + 1e-6
    w.view = [-5, 999, 38, 10]                        # clamped, never empty
    assert w.view == [0, 30, 38, 39]


def test_matrix_hides_units_that_are_not_alive_and_steps_through_matches():
    cmp_ = comparison()
    pr = cmp_.features
    w = CorrelationMatrix(cmp_, max_pixels=16, card_factory=Recorder())
    assert w.hide_flagged and w.flagged == {"a": 1, "b": 0, "tokens": 10_000}   # the dead feature 2 of A/1
    assert w.shape == [29, 40] and 2 not in w.row_order and w.view == [0, 29, 0, 40]
    rows, cols, vals = pr.assignment()
    assert w.n_matches == len(vals) == 29
    # the first n_matches of the orders are the matched pairs, strongest first (what present mode steps through)
    got = [float(pr.corr[w.row_order[k], w.col_order[k]]) for k in range(w.n_matches)]
    assert got == pytest.approx(w.match_values, abs=1e-6) and w.match_values == sorted(w.match_values, reverse=True)
    assert {(w.row_order[k], w.col_order[k]) for k in range(w.n_matches)} == set(zip(rows.tolist(), cols.tolist()))
    w.hide_flagged = False
    assert w.shape == [30, 40] and w.row_order[-1] == 2 and w.view == [0, 30, 0, 40]
    w.select(2, 0)                                     # a hidden unit can still be selected by id
    assert w.selected_pair == [2, 0]


def test_matrix_click_opens_both_cards():
    rec = Recorder()
    cmp_ = comparison()
    w = CorrelationMatrix(cmp_, max_pixels=16, card_factory=rec)
    assert w.selected_pair == [] and _heads(w.cards) == []
    # a pooled pixel clicked: the front end sends the block, the kernel selects its strongest pair
    w.pick = [0, 4, 0, 5, 123]
    corr = cmp_.features.corr
    block = corr[np.ix_(w.row_order[0:4], w.col_order[0:5])]
    i, j = np.unravel_index(np.nanargmax(block), block.shape)
    pair = [w.row_order[i], w.col_order[j]]
    assert w.selected_pair == pair
    assert w.selected_value == pytest.approx(float(corr[pair[0], pair[1]]))
    assert _heads(w.cards) == [f"A/1:{pair[0]}", f"B/1:{pair[1]}"]
    assert [c[:2] for c in rec.calls] == [("A/1", pair[0]), ("B/1", pair[1])]
    assert w.cards.keys == [("A/1", pair[0]), ("B/1", pair[1])]
    # a single cell clicked: the front end sets the pair itself
    w.selected_pair = [5, 7]
    assert _heads(w.cards) == ["A/1:5", "B/1:7"] and rec.calls[-1][:2] == ("B/1", 7)
    assert "correlation with A/1 #5" in rec.calls[-1][2]
    # the dead feature's pair has no correlation; an out-of-range pair is refused
    w.select(2, 0)
    assert w.selected_value is None and _heads(w.cards) == ["A/1:2", "B/1:0"]
    w.selected_pair = [99, 0]
    assert w.selected_pair == [] and _heads(w.cards) == []
    assert w.static_state()["static_cards"] == {}      # no run directory: the page carries the open cards only


def test_matrix_distribution_shows_features_and_neurons_side_by_side():
    w = CorrelationMatrix(comparison(), card_factory=Recorder())
    bars = [t for t in w.distribution.data if t.type == "bar"]
    assert len(bars) == 2 and {t.name for t in bars} == {"features", "neurons"}
    assert sum(bars[0].y) == 29                       # every alive feature of a (one of 30 is dead)
    assert sum(bars[1].y) == 8
    assert w.stats["paper"] == {"feature_median": 0.72, "neuron_median": 0.46}


def test_matrix_to_html_is_self_contained_and_escaped(tmp_path):
    evil = "A/<script>alert(1)</script>"
    w = CorrelationMatrix(comparison(a=evil), card_factory=None)
    w.select(0, 1)
    p = w.to_html(tmp_path / "m.html")
    text = p.read_text()
    assert "<script>alert(1)</script>" not in text                  # neither in the state nor in the cards
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text           # the summary card, escaped
    assert re.search(r"""<(script|link|img|iframe)[^>]*(src|href)=["']?(https?:)?//""", text) is None   # nothing fetched
    view = json.loads(text.split('id="ms-data">', 1)[1].split("</script>", 1)[0])["views"][0]
    state = view["state"]
    assert state["a_label"] == evil and state["selected_pair"] == [0, 1]
    assert state["image"] and view["bytes"] == ["image"]
    assert base64.b64decode(state["image"]) == w.image


def test_splitting_tree_family_and_clicks():
    sp = planted_splitting()
    rec = Recorder()
    t = SplittingTree(sp, root=("S", 0), card_factory=rec)
    keys = {n["key"] for n in t.tree["nodes"]}
    assert keys == {"S:0", "L:0", "L:1", "L:2"}
    assert all(e["sim"] >= 0.4 for e in t.tree["edges"]) and len(t.tree["edges"]) == 3
    assert t.levels == ["S", "L"] and t.sizes == [4, 8]
    t.selected_feature = ["L", 1]                     # a node clicked
    assert _heads(t.cards) == ["L:1"] and rec.calls[-1][:2] == ("L", 1)
    assert "S #0" in rec.calls[-1][2]["parents"]
    sims = sorted(e["sim"] for e in t.tree["edges"])
    t.threshold = sims[1]                             # the slider: the kernel recomputes the family
    assert len(t.tree["nodes"]) == 3 and min(e["sim"] for e in t.tree["edges"]) == sims[1]
    t.threshold = 0.4
    t.root = ["S", 3]                                 # double-click / the root box
    assert {n["key"] for n in t.tree["nodes"]} == {"S:3", "L:5", "L:6"} and t.error == ""
    t.root = ["S", 99]
    assert "no feature S:99" in t.error and {n["key"] for n in t.tree["nodes"]} == {"S:3", "L:5", "L:6"}
    t.root = ["Z", 0]                                 # a dictionary the analysis did not link
    assert "not one of the linked dictionaries" in t.error
    with pytest.raises(traitlets.TraitError, match=r"root must be \[dict_id, feature index\]"):
        t.root = ["S", "three"]
    t.root = ["S", 3]
    assert t.error == "" and t.root == ["S", 3]
    default = SplittingTree(sp, card_factory=rec)     # default root: the largest family
    assert default.root == ["S", 0]


def test_splitting_tree_cap_is_visible_and_adjustable():
    sp = planted_splitting()
    t = SplittingTree(sp, root=("S", 0), card_factory=Recorder())
    root = next(n for n in t.tree["nodes"] if n["key"] == "S:0")
    assert t.max_children == 12 and root["more"] == 0 and t.tree["capped"] == 0
    t.max_children = 2                                # the cap keeps the two strongest children; the node says so
    root = next(n for n in t.tree["nodes"] if n["key"] == "S:0")
    kept = sorted((e["sim"] for e in t.tree["edges"]), reverse=True)
    assert len(t.tree["nodes"]) == 3 and root["more"] == 1 and t.tree["capped"] == 1 and len(kept) == 2
    assert all(n["more"] == 0 for n in t.tree["nodes"] if n["key"] != "S:0")
    t.max_children = 0                                # no cap
    assert len(t.tree["nodes"]) == 4 and t.tree["capped"] == 0
    t.max_children = -3
    assert t.max_children == 0
    # the low-density filter is the library's min_density="mode" (planted densities are not bimodal: none cut)
    assert t.hide_flagged and t.tree["low_thresholds"] == {d: sp.density_threshold(d) for d in sp.dict_ids}
    assert [n["key"] for n in t.family().nodes] == [n["key"] for n in sp.family("S", 0, t.threshold,
                                                                               min_density="mode").nodes]
    t.hide_flagged = False
    assert t.tree["low_thresholds"] == {} and len(t.tree["nodes"]) == 4


def test_feature_map_click_and_colour():
    df = map_frame()
    rec = Recorder()
    m = FeatureMap(df, card_factory=rec)
    assert m.dict_ids == ["A/0", "A/1"] and m.sizes == [5, 10] and m.n_clusters == 2
    assert np.allclose(np.frombuffer(m.xs, np.float32), df["x"].to_numpy(np.float32))
    assert np.frombuffer(m.which, np.uint8).tolist() == [0] * 5 + [1] * 10
    assert m.labels[0] == "‹ the› ‹<b>›"
    assert m.color_by == "cluster"                    # coloured by something meaningful by default
    assert np.allclose(np.frombuffer(m.density, np.float32), df["density"].to_numpy(np.float32))
    # each cluster labelled by its most common first top tokens, at its members' median position
    assert [c["cluster"] for c in m.cluster_labels] == [0, 1] and [c["n"] for c in m.cluster_labels] == [6, 6]
    assert m.cluster_labels[0]["label"] == "‹the›"
    members = df[df["cluster"] == 1]
    assert m.cluster_labels[1]["x"] == pytest.approx(float(np.median(members["x"])))
    from monosemantic.widgets.feature_map import cluster_labels

    mixed = df.assign(top_tokens=[["<b>"], ["x"], ["<b>"], [" y"], ["z"]] * 3)
    assert cluster_labels(mixed)[0]["label"] == "‹<b>› ‹x›" and cluster_labels(mixed)[1]["label"] == "‹<b>› ‹y›"
    m.selected_feature = ["A/1", 7]                   # a point clicked
    assert _heads(m.cards) == ["A/1:7"] and rec.calls[-1][2]["cluster"] == 1
    m.selected_feature = ["A/1", 70]                  # not on the map
    assert m.selected_feature == [] and _heads(m.cards) == []
    m.color_by = "density"
    m.color_by = "dict"
    with pytest.raises(Exception):
        m.color_by = "rainbow"
    fig = feature_map_figure(df, color_by="cluster")
    assert len(fig.data) == 3 and "&lt;b&gt;" in fig.data[0].text[0]


def test_real_feature_card_opens_from_a_click(tiny_run, tmp_path):
    """With a run directory the default factory opens a real FeatureCard (stats computed first); a feature
    without statistics shows why its card could not be built.  Either way the container follows the click."""
    from monosemantic.features import FeatureStatsConfig, compute_feature_stats
    from monosemantic.runs import Run
    from monosemantic.splitting import link_dictionaries
    from monosemantic.widgets.card import FeatureCard

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns("analyses*", "feature_stats", "neuron_stats"))
    run = Run.open(root)
    compute_feature_stats(run, "A/1", FeatureStatsConfig(n_tokens=1500), progress=False)
    link_dictionaries(run, n_tokens=2000)
    t = SplittingTree.from_run(root)
    child = next(n for n in t.tree["nodes"] if n["dict_id"] == "A/1")
    t.select("A/1", child["idx"])
    col = t.cards.box.children[0]
    card = col.children[1]
    assert _heads(t.cards) == [f"A/1:{child['idx']}"]
    assert isinstance(card, FeatureCard) and card.unit == child["idx"] and card.source == "A/1"
    p = t.to_html(tmp_path / "tree.html")
    text = p.read_text()
    views = json.loads(text.split('id="ms-data">', 1)[1].split("</script>", 1)[0])["views"]
    assert [v["esm"] for v in views] == ["splitting", "card"] and views[1]["state"]["card"]["unit"] == child["idx"]
    assert "<script>" not in text                     # the card's histogram is SVG: no plotly.js on the page
    t.select("A/0", t.root[1])                        # an A/0 node: no stats computed for A/0
    msg = t.cards.box.children[0].children[1]
    assert "could not be built" in msg.value and "compute_feature_stats" in msg.value
    t.selected_feature = []
    bare = t.to_html(tmp_path / "bare.html").read_text()
    views = json.loads(bare.split('id="ms-data">', 1)[1].split("</script>", 1)[0])["views"]
    assert "<script>" not in bare and [v["esm"] for v in views] == ["splitting"]     # no card open
