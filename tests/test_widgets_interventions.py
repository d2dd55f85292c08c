"""SteeringPanel and AutomatonGraph: the synced state is what the library computes, errors reach the state,
hostile token strings stay data, and the static pages carry no raw markup."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import traitlets

from monosemantic.errors import ConfigError
from monosemantic.features import FeatureStatsConfig, compute_feature_stats, compute_neuron_stats
from monosemantic.interventions import Edit, Steering
from monosemantic.widgets.html import display_token
from monosemantic.widgets.steering import SteeringPanel, result_dict

sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
from widget_fixtures import PAGE_BREAKERS, SyntheticStats, page_scripts, page_state  # noqa: E402
from conftest import state_strings  # noqa: E402

PROMPT = "def main(self):\n    return self.value"
SAMPLING = dict(n_tokens=6, temperature=1.0, top_k=None, seed=3)


@pytest.fixture(scope="module")
def run_stats(tiny_run):
    torch.set_num_threads(1)
    cfg = FeatureStatsConfig(n_tokens=4000, batch_contexts=64, top_k=8, per_interval=3)
    return tiny_run, compute_feature_stats(tiny_run, "A/1", cfg, progress=False), \
        compute_neuron_stats(tiny_run, "A", cfg, progress=False)


@pytest.fixture()
def panel(run_stats):
    run, stats, _ = run_stats
    return SteeringPanel(Steering.open(run, "A/1"), stats=stats, run=run, prompt=PROMPT, n_tokens=6, seed=3)


# ---- SteeringPanel ------------------------------------------------------------------------------------------

def test_the_panel_after_a_slider_move_shows_exactly_what_steer_computes(panel, run_stats):
    run, _, _ = run_stats
    assert panel.error == "" and panel.result["kl"] == 0.0              # no slider yet: steered is clean
    assert panel.result["steered"] == panel.result["clean"]
    u = panel.active[0]["unit"]
    assert panel.active[0]["on_prompt"] > 0 and panel.units == {}
    rev = panel.revision
    panel.add(u, mode="add")                                            # a new slider starts at no change
    assert panel.edits == [{"unit": u, "mode": "add", "value": 0.0}] and panel.result["kl"] == 0.0
    mx = panel.units[str(u)]["max"]
    assert mx == pytest.approx(float(run_stats[1].table.loc[u, "max_act"]))
    panel.set_value(u, 3 * mx)                                          # the slider moved: one recomputation
    assert panel.revision == rev + 2 and panel.error == ""
    fresh = Steering.open(run, "A/1")
    want = result_dict(fresh.steer(PROMPT, [Edit(u, "add", 3 * mx)], k=panel.n_bars, **SAMPLING),
                       fresh.tokenizer.token_strings(), panel.n_bars)
    assert panel.result == want and want["kl"] > 0
    # the front-end's form of a move (the edits trait), the multiplier mode and the settings, each recomputed
    panel.edits = [{"unit": u, "mode": "scale", "value": 0.0}, {"unit": 7, "mode": "set", "value": 1.5}]
    edits = [Edit(u, "scale", 0.0), Edit(7, "clamp", 1.5)]
    assert panel.steer_edits() == edits
    want = result_dict(fresh.steer(PROMPT, edits, k=panel.n_bars, **SAMPLING), fresh.tokenizer.token_strings(),
                       panel.n_bars)
    assert panel.result == want
    panel.seed, panel.top_k, panel.temperature = 11, 5, 0.7
    r = fresh.steer(PROMPT, edits, n_tokens=6, temperature=0.7, top_k=5, seed=11, k=panel.n_bars)
    assert panel.result["steered"]["tokens"] == [display_token(t) for t in r.edited.tokens]
    assert panel.result["clean"]["tokens"] == [display_token(t) for t in r.clean.tokens]
    panel.remove(7)
    assert [e["unit"] for e in panel.edits] == [u] and set(panel.units) == {str(u)}
    with pytest.raises(ConfigError, match="slider mode"):
        panel.add(3, mode="pin")


def test_chart_data_has_the_clean_and_steered_top_tokens_once_each(panel):
    u = panel.active[0]["unit"]
    panel.add(u, mode="set", value=None)                                # set: starts at the unit's max
    assert panel.edits[0]["value"] == pytest.approx(panel.units[str(u)]["max"])
    panel.set_value(u, 4 * panel.units[str(u)]["max"])
    r, k = panel.result, panel.n_bars
    ids = [b["id"] for b in r["bars"]]
    assert k <= len(ids) <= 2 * k and len(set(ids)) == len(ids)
    top = lambda key: {b["id"] for b in sorted(r["bars"], key=lambda b: -b[key])[:k]}   # noqa: E731
    p_c = panel.steering.effect(PROMPT, panel.steer_edits()).next.p_clean_V
    p_e = panel.steering.effect(PROMPT, panel.steer_edits()).next.p_edited_V
    assert top("p_clean") == set(np.argsort(-p_c, kind="stable")[:k].tolist())
    assert top("p_edited") == set(np.argsort(-p_e, kind="stable")[:k].tolist())
    peak = [max(b["p_clean"], b["p_edited"]) for b in r["bars"]]
    assert peak == sorted(peak, reverse=True) and all(0 <= p <= 1 for p in peak)
    assert len(r["raised"]) == len(r["lowered"]) == k
    assert all(c["p_edited"] > c["p_clean"] for c in r["raised"])
    assert all(c["p_edited"] < c["p_clean"] for c in r["lowered"])
    n_prompt = panel.steering.tokens(PROMPT).shape[1] - 1
    assert len(r["prompt"]) == n_prompt and any(t["dll"] != 0 for t in r["prompt"])
    assert "↵" in "".join(t["token"] for t in r["prompt"])             # the newline, made visible
    assert len(r["clean"]["tokens"]) == len(r["steered"]["tokens"]) == panel.n_tokens


def test_search_by_top_tokens_ranks_as_the_feature_browser(panel, run_stats):
    from monosemantic.widgets.browser import FeatureBrowser

    _, stats, _ = run_stats
    panel.query = "self"
    got = [m["unit"] for m in panel.matches]
    assert got and all(any("self" in t.lower() for t in m["top_tokens"]) for m in panel.matches)
    b = FeatureBrowser(stats, query="self", sort_by="relevance", filter="alive")
    assert got == [int(u) for u in b.view().index[:len(got)]]
    panel.query = "12"
    assert panel.matches[0]["unit"] == 12
    panel.query = "   "
    assert panel.matches == []


def test_a_recomputation_runs_on_one_intra_op_thread_and_restores_torchs(panel, monkeypatch):
    seen, steer, old = [], panel.steering.steer, torch.get_num_threads()
    monkeypatch.setattr(panel.steering, "steer",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), steer(*a, **k))[1])
    torch.set_num_threads(2)
    try:
        panel.seed = 5
        assert seen == [1] and torch.get_num_threads() == 2 and panel.error == ""
    finally:
        torch.set_num_threads(old)


def test_bad_units_and_prompts_leave_the_librarys_error_in_the_state(panel):
    n = panel.n_units
    good = dict(panel.result)
    panel.add(n + 5, mode="add", value=1.0)
    assert panel.error.startswith(f"feature {n + 5} does not exist") and "pick an id" in panel.error
    assert panel.result == {} and panel.units[str(n + 5)]["max"] == 1.0
    panel.remove(n + 5)
    assert panel.error == "" and panel.result == good
    panel.prompt = "   "
    assert "the prompt is empty" in panel.error and panel.result == {} and panel.active == []
    panel.prompt = "the " * (panel.n_ctx + 3)
    assert f"shorten the prompt to at most {panel.n_ctx - 1} tokens" in panel.error and panel.result == {}
    panel.prompt = PROMPT
    assert panel.error == "" and panel.result == good
    panel.edits = [{"unit": "seven", "mode": "add", "value": 1}]
    assert "integer unit id" in panel.error
    panel.edits = [{"unit": 3, "mode": "pin", "value": 1}]
    assert "unknown slider mode 'pin'" in panel.error


def test_a_neuron_panel_steers_neurons_for_contrast(run_stats):
    run, _, neurons = run_stats
    p = SteeringPanel.from_run(run, "A", prompt=PROMPT, n_tokens=4)
    assert p.unit_kind == "neuron" and p.n_units == 128 and p.notice == "" and p.active
    u = p.active[0]["unit"]
    p.add(u, mode="scale", value=0.0)
    st = Steering.open(run, "A")
    r = st.steer(PROMPT, [Edit(u, "scale", 0.0)], n_tokens=4, seed=0, k=p.n_bars)
    assert p.result == result_dict(r, st.tokenizer.token_strings(), p.n_bars) and p.result["kl"] > 0
    p.add(128, value=1.0)
    assert p.error.startswith("neuron 128 does not exist")


def test_without_statistics_the_panel_says_how_to_get_search(run_stats):
    run, _, _ = run_stats
    p = SteeringPanel(Steering.open(run, "A/1"), stats=None, prompt=PROMPT, n_tokens=2)
    assert "compute_feature_stats(run, 'A/1')" in p.notice
    p.query = "self"
    assert p.matches == []
    u = p.active[0]["unit"]
    p.add(u)                                                            # the range: its largest on the prompt
    assert p.units[str(u)]["max"] == pytest.approx(p.active[0]["on_prompt"])


class _HostileTokenizer:
    """The run's tokenizer with a page-breaking string in front of every token string."""

    def __init__(self, tok):
        self._t = tok

    def __getattr__(self, k):
        return getattr(self._t, k)

    def token_strings(self):
        return [PAGE_BREAKERS[i % len(PAGE_BREAKERS)] + s for i, s in enumerate(self._t.token_strings())]


def test_hostile_token_strings_stay_data_in_the_state_and_the_static_page(run_stats, tmp_path):
    run, _, _ = run_stats
    real = Steering.open(run, "A/1")
    st = Steering(real.model, _HostileTokenizer(real.tokenizer), real.dictionary, "A/1")
    stats = SyntheticStats(PAGE_BREAKERS, n_units=real.n_units)
    p = SteeringPanel(st, stats=stats, prompt=PROMPT, n_tokens=5)
    p.query = "<!--"
    p.add(p.matches[0]["unit"], value=2.0)
    shown = {display_token(t) for t in PAGE_BREAKERS}
    bar_tokens = [b["token"] for b in p.result["bars"]]
    assert all(any(t.startswith(s) for s in shown) for t in bar_tokens)
    assert p.units[str(p.edits[0]["unit"])]["top_tokens"] == [display_token(t) for t in PAGE_BREAKERS[:3]]
    strs = "".join(state_strings(p.result))                                 # line separators made visible
    assert "\u2028" not in strs and "x⟨U+2028⟩y" in strs
    page = p.to_html(tmp_path / "steer.html").read_text(encoding="utf-8")
    blocks = [text for _, text in page_scripts(page)]
    assert len(blocks) == 3
    for text in blocks[:2]:
        assert "<" not in text and ">" not in text and "\u2028" not in text
    module = blocks[2].lower()
    assert "<!--" not in module and "<script" not in module
    state = page_state(page)
    assert state["result"] == json.loads(json.dumps(p.result)) and state["edits"] == p.edits
    assert any(s.startswith("<!--<script>") for s in state_strings(state["result"]["bars"]))
    assert "static_cards" not in state and "plotly" not in page[:5000].lower()


# ---- AutomatonGraph -------------------------------------------------------------------------------------------

def test_the_graph_draws_find_automatas_edges_and_a_click_opens_the_card(run_stats, tmp_path):
    from monosemantic.automata import find_automata
    from monosemantic.widgets.automata import AutomatonGraph, force_layout

    run, _, _ = run_stats
    a = find_automata(run, "A/1", n_tokens=8192, threshold=1.0, n_check=3, contexts=4)
    g = AutomatonGraph(a, run_dir=run.root)
    got = pd.DataFrame(g.edges)
    assert len(got) == len(a.edges) > 3
    assert got["src"].tolist() == a.edges["src"].tolist() and got["dst"].tolist() == a.edges["dst"].tolist()
    assert np.allclose(got["score"], a.edges["score"])
    gain = got["gain"].astype(float).to_numpy()
    assert np.allclose(gain, a.edges["gain"], equal_nan=True)
    assert np.allclose(got["base"].astype(float), a.edges["base"], equal_nan=True)
    want = np.where(np.isnan(a.edges["gain"]), "unchecked", np.where(a.edges["gain"] > 0, "confirmed", "failed"))
    assert got["status"].tolist() == want.tolist()
    units = sorted(set(a.edges["src"]) | set(a.edges["dst"]))
    assert [n["unit"] for n in g.nodes] == units
    assert all(-0.01 <= n["x"] <= 1.01 and -0.01 <= n["y"] <= 1.01 for n in g.nodes)
    assert [p["units"] for p in g.loops] == a.loops and [p["units"] for p in g.chains] == a.chains
    assert all(n["top_tokens"] == [display_token(t) for t in a.top_tokens[n["unit"]][:5]] for n in g.nodes)
    assert {n["unit"] for n in g.nodes if n["in_chain"]} == {u for c in a.chains for u in c}
    # the same graph, the same picture
    assert AutomatonGraph(a).nodes == g.nodes
    pos = force_layout(5, [(0, 1), (1, 2)], seed=1)
    assert np.array_equal(pos, force_layout(5, [(0, 1), (1, 2)], seed=1)) and pos.shape == (5, 2)
    # a click on a node: its card below; a unit that is not a node clears the selection
    u = g.nodes[0]["unit"]
    g.select("A/1", u)
    assert g.cards.keys == [("A/1", u)]
    assert "could not be built" not in str(getattr(g.cards.cards[0], "value", ""))
    g.select("A/1", max(units) + 1000)
    assert g.selected_feature == [] and g.cards.keys == []
    if g.chains:
        g.highlight = "chain:0"
    with pytest.raises(traitlets.TraitError, match="loop:i"):
        g.highlight = f"loop:{len(g.loops)}"
    g.select("A/1", u)
    page = g.to_html(tmp_path / "auto.html").read_text(encoding="utf-8")
    st = page_state(page)
    assert st["edges"] == json.loads(json.dumps(g.edges)) and st["selected_feature"] == ["A/1", u]
    from monosemantic.widgets.html import unpacked

    cards = {int(k) for p in st["static_cards"]["A/1"]["packs"].values() for k in unpacked(p)}
    assert cards == set(units)                                          # every node's card rides along


def test_a_hostile_automaton_exports_as_data(tmp_path):
    from monosemantic.automata import Automata
    from monosemantic.widgets.automata import AutomatonGraph

    edges = pd.DataFrame({"src": [4, 5, 6, 4], "dst": [5, 6, 4, 4], "score": [6.0, 5.0, 4.0, 3.5],
                          "gain": [0.3, -0.01, np.nan, 0.2], "base": [0.1, 0.2, np.nan, 0.0]})
    tops = {u: PAGE_BREAKERS[k:k + 3] for k, u in enumerate((4, 5, 6))}
    a = Automata("A/1", edges, loops=[[4], [4, 5, 6]], chains=[], top_tokens=tops, pin_F=np.ones(8), n_tokens=99)
    g = AutomatonGraph(a)
    assert [e["status"] for e in g.edges] == ["confirmed", "failed", "unchecked", "confirmed"]
    assert g.edges[2]["gain"] is None and g.edges[2]["base"] is None
    assert g.loops[1]["label"].startswith("#4 ‹<!--<script>›") and g.loops[1]["label"].endswith("→ #4")
    assert g.feature_info("A/1", 4)["raises"].startswith("#5 (S 6.00, gain 0.3)")
    assert g.feature_info("B/1", 4) is None
    g.highlight = "loop:1"
    page = g.to_html(tmp_path / "g.html").read_text(encoding="utf-8")
    blocks = [text for _, text in page_scripts(page)]
    assert len(blocks) == 3 and all("<" not in b and "\u2028" not in b for b in blocks[:2])
    st = page_state(page)
    assert st["highlight"] == "loop:1" and st["static_cards"] == {}
    assert st["nodes"][0]["top_tokens"] == [display_token(t) for t in PAGE_BREAKERS[:3]]
