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
