"""Labels (``interpret.labels``): the best explanation of a unit, the user's edits saved in the run, search; and the
card's two intervention panels' numbers (``ablation``, ``splitting.nearest_decoder``) against brute force."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from monosemantic import preset
from monosemantic.errors import ConfigError
from monosemantic.features import FeatureStatsConfig, compute_feature_stats, compute_neuron_stats
from monosemantic.interpret import Interpretation, interpret
from monosemantic.interpret.labels import Label, Labels, labels_path

HOSTILE_LABEL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def labelled_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with A/1's and A's statistics and A/1's interpretation (labels are written into it)."""
    from monosemantic.runs import Run

    root = tmp_path_factory.mktemp("labels") / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns(".lock", "ckpt"))
    run = Run.open(root)
    cfg = FeatureStatsConfig(n_tokens=4000, batch_contexts=64, top_k=8, per_interval=3)
    compute_feature_stats(run, "A/1", cfg, progress=False)
    compute_neuron_stats(run, "A", cfg, progress=False)
    interpret(run, "A/1", progress=False)
    return run


def _named(it, group="features"):
    t = it.table(group)
    return [int(u) for u in t.index[(t["named"] > 0) & t["scored"]]]


def test_label_is_the_offline_explanation_with_its_score(labelled_run):
    run = labelled_run
    it = Interpretation.load(run, "A/1")
    labels = Labels.open(run, "A/1")
    u = _named(it)[0]
    rec = it.unit(u)
    lab = labels.get(u)
    assert lab == Label(rec.label, rec.spearman if math.isfinite(rec.spearman) else None, "offline")
    assert lab.text and lab.text.split(" · ")[0] in rec.explanation
    # a unit without any pattern has no label (empty, origin none), never an error
    t = it.table("features")
    unnamed = [int(x) for x in t.index[t["named"] == 0]]
    if unnamed:
        assert labels.get(unnamed[0]) == Label("", None, "none") and not labels.get(unnamed[0])
    # every labelled unit is in all() / texts(), and nothing else
    texts = labels.texts()
    assert len(texts) == 512 and sum(bool(x) for x in texts) == len(labels.all())
    assert {u for u, x in enumerate(texts) if x} == set(_named(it)) | {
        int(v) for v in t.index[(t["named"] > 0) & ~t["scored"]]}
    # neurons: the neurons group of A/1's interpretation
    n = _named(it, "neurons")[0]
    assert Labels.open(run, "A").get(n).text == it.unit(n, "neurons").label


def test_edit_wins_clears_back_persists_and_survives_recomputing(labelled_run, tmp_path):
    run = labelled_run
    labels = Labels.open(run, "A/1")
    it = Interpretation.load(run, "A/1")
    u, v, w = _named(it)[:3]
    auto = labels.get(u)
    lab = labels.set(u, "  the   name of\nGod  ")
    assert lab.text == "the name of God" and lab.origin == "user" and lab.score is None and lab.auto == auto
    path = labels_path(run, "A/1")
    doc = json.loads(path.read_text())
    assert doc["edits"][str(u)]["text"] == "the name of God" and doc["source"] == "A/1"
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))             # written by rename, no temp left
    # a fresh object (another kernel) reads it; an edit through it shows in the first one
    other = Labels(run, "A/1")
    assert other.get(u).text == "the name of God"
    other.set(v, HOSTILE_LABEL)
    assert labels.get(v).text == HOSTILE_LABEL and labels.get(u).text == "the name of God"   # neither lost
    assert labels.search("NAME god") == [u]                               # case-insensitive, every word
    assert labels.search("onerror alert") == [v]
    # recomputing the interpretation keeps the edits (they live apart from it)
    shutil.rmtree(run.root / "analyses" / "interpret" / "A-1")
    assert labels.get(w) == Label("", None, "none")                   # no interpretation: no automatic label
    assert labels.get(u).text == "the name of God" and labels.get(u).auto == Label("", None, "none")
    interpret(run, "A/1", progress=False)
    assert labels.get(u).text == "the name of God" and labels.get(u).auto == auto
    # clearing goes back to the automatic label; an empty edit clears too
    assert labels.clear(u) == auto
    labels.set(v, "   ")
    assert labels.get(v).origin == "offline"
    assert str(u) not in json.loads(path.read_text())["edits"]


def test_llm_explanation_wins_over_the_offline_one_and_bad_input_is_named(labelled_run):
    from monosemantic.interpret.llm import TokenPatternExplainer

    run = labelled_run
    labels = Labels.open(run, "A/1")
    it = Interpretation.load(run, "A/1")
    u = _named(it)[2]
    lab = labels.record(u, "Bible verse numbers", 0.61, "openai-chat", detection=0.8)
    assert lab == Label("Bible verse numbers", 0.61, "llm")
    labels.set(u, "mine")
    assert labels.get(u).auto == Label("Bible verse numbers", 0.61, "llm")
    labels.clear(u)
    # an explainer through the protocol, scored on the interpretation's held-out windows, recorded
    from monosemantic.interpret.llm import heldout_examples

    sections, toks, acts = it.heldout(u)
    res = it.rescore(u, TokenPatternExplainer(vocab=run.tokenizer.vocab_size),
                     train=heldout_examples(toks[sections == -1], acts[sections == -1], run.tokenizer.token_strings(),
                                            0))
    lab = labels.record(u, json.loads(res["explanation"])["text"] or "x", res["spearman"], "token-pattern")
    assert lab.origin == "llm" and lab.score == pytest.approx(res["spearman"])
    # explain(): explained from the unit's feature page, scored on the saved held-out windows, recorded
    strs = run.tokenizer.token_strings()
    lab = labels.explain(u, TokenPatternExplainer(vocab=run.tokenizer.vocab_size, token_strings=strs))
    rec = json.loads(labels_path(run, "A/1").read_text())["llm"][str(u)]
    assert lab.origin == "llm" and lab.text == rec["text"] and rec["explainer"] == "token-pattern"
    assert lab.text.startswith('"') and -1 <= lab.score <= 1          # the readable text, not the JSON
    with pytest.raises(IndexError, match=r"feature 512 out of range.*0 … 511"):
        labels.get(512)
    with pytest.raises(ConfigError, match="200"):
        labels.set(u, "x" * 201)
    with pytest.raises(ConfigError, match="no transformer 'Z'"):
        Labels.open(run, "Z")
    with pytest.raises(ConfigError, match="no dictionary 'A/9'"):
        Labels.open(run, "A/9")


def test_a_run_without_an_interpretation_has_empty_labels(tiny_run):
    labels = Labels.open(tiny_run, "A/1")
    assert labels.interpretation_dir() is None
    assert labels.get(3) == Label("", None, "none") and labels.all() == {} and labels.search("god") == []
    assert not (tiny_run.root / "analyses" / "interpret").exists()   # reading computed nothing


# ---- the card's intervention panels: numbers against brute force --------------------------------------------

def test_ablation_panel_equals_one_position_at_a_time_through_the_hooks(labelled_run):
    from monosemantic.ablation import ablation_effects, ablation_path, cached
    from monosemantic.features import FeatureStats

    run = labelled_run
    st = FeatureStats.load(run, "A/1")
    u = int(st.table["count"].idxmax())                       # the feature that fires most: many positions
    ab = ablation_effects(run, "A/1", u, n_contexts=4, k=5)
    assert ablation_path(run, "A/1", u).exists() and cached(run, "A/1", u, 4, 5) == ab
    assert cached(run, "A/1", u, 5, 5) is None                    # other settings: not cached
    # brute force: every context, every firing position ablated alone through TransformerLens hooks
    model, sae = run.model("A").eval(), run.dictionary("A/1").eval()
    split = run.split(st.meta["split"])
    ex = st.examples(u)
    ctx = list(dict.fromkeys(ex[ex["section"] == -1].sort_values("rank")["context"].tolist()))[:4]
    assert ab.contexts == ctx
    hook = model.hook
    effects: dict[int, list[float]] = {}
    with torch.no_grad():
        for c in ctx:
            tok = torch.from_numpy(np.asarray(split.contexts(np.array([c])), np.int64))
            x = model.mlp_acts(tok)[0]
            f = sae.encode(x)[:, u]
            clean = torch.log_softmax(model.model(tok, return_type="logits")[0].double(), -1)
            for t in range(1, tok.shape[1] - 1):
                if f[t] <= 0:
                    continue

                def ablate(act, hook, t=t):
                    act = act.clone()
                    act[0, t] = act[0, t] - f[t] * sae.W_dec_FD[u]
                    return act

                lp = torch.log_softmax(model.model.run_with_hooks(tok, return_type="logits",
                                                                  fwd_hooks=[(hook, ablate)])[0].double(), -1)
                y = int(tok[0, t + 1])
                effects.setdefault(y, []).append(float(clean[t, y] - lp[t, y]))
    n = sum(len(v) for v in effects.values())
    assert n == ab.positions > 0
    means = {y: np.mean(v) for y, v in effects.items()}
    assert ab.mean_effect == pytest.approx(np.mean([e for v in effects.values() for e in v]), abs=1e-6)
    want_up = sorted((y for y in means if means[y] > 0), key=lambda y: (-means[y], y))[:5]
    want_down = sorted((y for y in means if means[y] < 0), key=lambda y: (means[y], y))[:5]
    assert [t.token_id for t in ab.raised] == want_up and [t.token_id for t in ab.lowered] == want_down
    for t in ab.raised + ab.lowered:
        assert t.mean == pytest.approx(means[t.token_id], abs=1e-6) and t.count == len(effects[t.token_id])
        assert t.token == run.tokenizer.token_strings()[t.token_id]
    with pytest.raises(ConfigError, match="dictionary id"):
        ablation_effects(run, "A", 0)
    with pytest.raises(IndexError, match="out of range"):
        ablation_effects(run, "A/1", 512)


def test_nearest_features_equal_brute_force_cosines(labelled_run):
    from monosemantic.splitting import nearest_decoder

    sae = labelled_run.dictionary("A/1")
    W = sae.W_dec_FD.detach().double().numpy()
    units = [0, 7, 311]
    idx, cos = nearest_decoder(sae, units, k=6, chunk=2)
    for r, u in enumerate(units):
        c = np.array([W[u] @ W[j] / np.linalg.norm(W[u]) / np.linalg.norm(W[j]) for j in range(len(W))])
        c[u] = -np.inf
        want = np.argsort(-c, kind="stable")[:6]
        assert idx[r].tolist() == want.tolist() and u not in idx[r]
        np.testing.assert_allclose(cos[r], c[want], atol=1e-5)
    with pytest.raises(IndexError, match="out of range"):
        nearest_decoder(sae, [512])


# ---- labels in every view ----------------------------------------------------------------------------------------

def _page(path) -> tuple[str, list[dict]]:
    text = path.read_text()
    return text, json.loads(text.split('id="ms-data">', 1)[1].split("</script>", 1)[0])["views"]


def test_card_header_edits_the_label_in_place_and_every_view_shows_it(labelled_run, tmp_path):
    import sys
    from pathlib import Path

    from monosemantic.ablation import ablation_effects
    from monosemantic.splitting import nearest_decoder
    from monosemantic.widgets import ActivationHeatmap, CorrelationMatrix, FeatureBrowser, FeatureMap
    from monosemantic.widgets.card import FeatureCard
    from monosemantic.widgets.html import display_token, unpacked

    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    from widget_fixtures import comparison, map_frame

    run = labelled_run
    labels = Labels.open(run, "A/1")
    it = Interpretation.load(run, "A/1")
    u, v = _named(it)[4:6]
    card = FeatureCard.from_run(run, "A/1", u)
    head = card.card["panels"]["header"]
    assert head["label"] == labels.get(u).to_dict() and head["editable"] and head["label"]["origin"] == "offline"
    assert head["label"]["score"] == pytest.approx(labels.get(u).score, abs=1e-3)
    # the ablation panel carries the library's numbers, the nearest panel the decoder cosines
    ab = ablation_effects(run, "A/1", u)
    panel = card.card["panels"]["ablation"]
    assert [r[0] for r in panel["raised"]] == [display_token(t.token) for t in ab.raised]
    assert [r[1] for r in panel["raised"]] == pytest.approx([t.mean for t in ab.raised], rel=1e-3)
    assert [r[2] for r in panel["lowered"]] == [t.count for t in ab.lowered] and panel["positions"] == ab.positions
    idx, cos = nearest_decoder(run.dictionary("A/1"), [u], 8)
    rows = card.card["panels"]["nearest"]["rows"]
    assert [r["unit"] for r in rows] == idx[0].tolist()
    assert [r["cos"] for r in rows] == pytest.approx(cos[0].tolist(), abs=1e-3)
    assert all(r["label"] == labels.get(r["unit"]).text for r in rows)
    # an edit in place (the front-end's message) is saved through the library and redraws the card
    card._on_custom_msg(card, {"type": "label", "source": "A/1", "unit": u, "text": HOSTILE_LABEL}, [])
    assert card.card["panels"]["header"]["label"]["text"] == HOSTILE_LABEL
    assert labels.get(u).origin == "user" and labels.get(u).text == HOSTILE_LABEL
    # a click on a nearest feature opens its card below
    card._on_custom_msg(card, {"type": "open", "source": "A/1", "unit": rows[0]["unit"]}, [])
    assert card.cards.keys == [("A/1", rows[0]["unit"])]
    # a card opened afterwards, and the browser, show the edit; the browser finds units by label words
    assert FeatureCard.from_run(run, "A/1", u).card["panels"]["header"]["label"]["text"] == HOSTILE_LABEL
    b = FeatureBrowser.from_run(run, "A/1", filter="all")
    assert any(c["key"] == "label" for c in b.columns)
    b.query = "ONERROR alert"
    assert list(b.view().index) == [u] and b.rows[0]["label"] == HOSTILE_LABEL
    b.set_label(v, "Psalm verse numbers")           # an edit through the browser's card
    b.query = "psalm numbers"
    assert list(b.view().index) == [v] and b.rows[0]["label"] == "Psalm verse numbers"
    b.select(v)
    assert b.card["panels"]["header"]["label"]["text"] == "Psalm verse numbers"
    assert FeatureCard.from_run(run, "A/1", v).card["panels"]["header"]["label"]["origin"] == "user"
    b._on_custom_msg(b, {"type": "open", "source": "A/1", "unit": u}, [])     # a nearest feature on its card
    assert b.selected == u
    # heatmap chips, matrix tooltips, tree nodes carry the label
    hm = ActivationHeatmap.from_run(run, "A/1", "And God said", units=[u, v])
    assert [x["explanation"] for x in hm.data["units"]] == [HOSTILE_LABEL, "Psalm verse numbers"]
    m = CorrelationMatrix(comparison(P=30, Q=40), run_dir=run.root, figure=False)
    assert len(m.a_names) == 512 and m.a_names[u] == HOSTILE_LABEL and m.a_names == labels.texts()
    frame = map_frame()
    frame.loc[frame["dict_id"] == "A/1", "idx"] = [u, v] + list(range(8))
    fm = FeatureMap(frame, run_dir=run.root)                  # A/0 has no interpretation: empty labels there
    assert fm.explanations[:7] == [""] * 5 + [HOSTILE_LABEL, "Psalm verse numbers"]
    # static exports keep the label as data: never raw HTML in the page
    for w, name in ((FeatureCard.from_run(run, "A/1", u), "card"), (hm, "heatmap")):
        text, views = _page(w.to_html(tmp_path / f"{name}.html", include_plotly=False))
        assert "<img src=x" not in text and "\\u003cimg src=x onerror=alert(1)\\u003e" in text
    text, views = _page(b.to_html(tmp_path / "browser.html", include_plotly=False))
    assert "<img src=x" not in text
    rows = {r["unit"]: r for r in unpacked(views[0]["state"]["static_rows"])}
    assert rows[u]["label"] == HOSTILE_LABEL and rows[v]["label"] == "Psalm verse numbers"
    pack = views[0]["state"]["static_cards"]["A/1"]
    spec = unpacked(pack["packs"][str(pack["index"][str(u)])])[str(u)]
    assert spec["panels"]["header"]["label"]["text"] == HOSTILE_LABEL and not spec["panels"]["header"]["editable"]
    assert spec["panels"]["ablation"]["raised"]                  # cached by the live card: carried, not recomputed
    labels.clear(u)
    labels.clear(v)


def test_splitting_tree_nodes_carry_labels(labelled_run):
    from monosemantic.splitting import link_dictionaries
    from monosemantic.widgets import SplittingTree

    run = labelled_run
    link_dictionaries(run, n_tokens=2000)
    t = SplittingTree.from_run(run.root)
    labels = Labels.open(run, "A/1")
    nodes = [n for n in t.tree["nodes"] if n["dict_id"] == "A/1"]
    assert nodes and all(n["label"] == labels.get(n["idx"]).text for n in nodes)
    labels.set(nodes[0]["idx"], "a split child")
    t.threshold = t.threshold                                    # same value: redraw on the next change
    t.max_children = t.max_children + 1
    assert next(n for n in t.tree["nodes"] if n["key"] == nodes[0]["key"])["label"] == "a split child"
    labels.clear(nodes[0]["idx"])
    # the node's card opens below the tree, and the features its nearest-features panel opens go below that card
    t.select("A/1", nodes[0]["idx"])
    col = t.cards.box.children[0]
    card = col.children[1]
    assert card.card["panels"]["header"]["label"]["text"] == labels.get(nodes[0]["idx"]).text
    assert col.children[2] is card.cards.box
    card.open_card("A/1", card.card["panels"]["nearest"]["rows"][0]["unit"])
    assert len(card.cards.box.children) == 1 and card.cards.keys[0][1] == card.card["panels"]["nearest"]["rows"][0]["unit"]
    # A/0 has no interpretation: its nodes have empty labels, no error
    assert all(n["label"] == "" for n in t.tree["nodes"] if n["dict_id"] == "A/0")


def test_two_processes_editing_labels_at_once_lose_nothing(labelled_run):
    """Edits are a locked read-modify-write (io.update_json): two kernels labelling different units keep all."""
    import subprocess
    import sys

    import time

    # both start writing at the same moment (after their imports), 120 edits each
    code = ("import sys, time; from monosemantic.interpret.labels import Labels; L = Labels.open(sys.argv[1], 'A/1'); "
            "time.sleep(max(0.0, float(sys.argv[3]) - time.time())); "
            "[L.set(u, f'label {u}') for u in range(int(sys.argv[2]), int(sys.argv[2]) + 120)]")
    start = str(time.time() + 12)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(labelled_run.root), str(s), start]) for s in (0, 200)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    labels = Labels.open(labelled_run, "A/1")
    assert all(labels.get(u).text == f"label {u}" for s in (0, 200) for u in range(s, s + 120))
    for s in (0, 200):
        for u in range(s, s + 120):
            labels.clear(u)
    assert not json.loads(labels_path(labelled_run, "A/1").read_text())["edits"]
