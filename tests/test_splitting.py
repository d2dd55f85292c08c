"""Feature splitting: the masked cosine on hand-made cases and against numpy, recovery of a planted split, families
across sizes, the run-level analysis (checked against a dense recomputation), and the feature map."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from monosemantic.errors import ConfigError
from monosemantic.sae import DictionaryConfig, make_dictionary
from monosemantic.splitting import (Splitting, embed_and_cluster, feature_map, link_activations, link_dictionaries,
                                    load_feature_map, load_splitting)
from monosemantic.crossstats import CrossStats
from monosemantic.tokensets import token_set


def masked_cosine_numpy(F, G):
    """Reference: for every pair, cos on the tokens where f fires and on those where g fires; the max."""
    F, G = np.asarray(F, np.float64), np.asarray(G, np.float64)
    out = np.full((F.shape[1], G.shape[1]), np.nan)
    for i in range(F.shape[1]):
        for j in range(G.shape[1]):
            f, g = F[:, i], G[:, j]
            if not (f > 0).any() or not (g > 0).any():
                continue
            vals = []
            for m in (f > 0, g > 0):
                a, b = f[m], g[m]
                den = np.linalg.norm(a) * np.linalg.norm(b)
                vals.append(0.0 if den == 0 else a @ b / den)
            out[i, j] = max(vals)
    return out


def _masked(F, G, batches=1, sparse=True):
    st = CrossStats(F.shape[1], G.shape[1], pearson=False, masked=True)
    for f, g in zip(np.array_split(F, batches), np.array_split(G, batches)):
        st.update(sp.csr_matrix(f) if sparse else f, sp.csr_matrix(g) if sparse else torch.from_numpy(g))
    return st.masked_cosine(directions=True)


def test_masked_cosine_hand_made_cases():
    parent = [1, 1, 1, 1, 0, 0]
    F = np.array([parent, [1, 2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32).T    # f0 parent, f1, f2 dead
    G = np.array([[1, 1, 0, 0, 0, 0],          # a child: half the parent's tokens, proportional there
                  [2, 4, 0, 0, 0, 0],          # f1 scaled: identical direction
                  [0, 0, 0, 0, 3, 1],          # disjoint from everything
                  [1, 0, 0, 0, 1, 0]], np.float32).T   # overlaps f1 on one token, fires elsewhere too
    m, cf, cg = _masked(F, G)
    assert cg[0, 0] == pytest.approx(1.0) and cf[0, 0] == pytest.approx(1 / np.sqrt(2))   # child under its own mask
    assert m[0, 0] == pytest.approx(1.0)
    assert m[1, 1] == pytest.approx(1.0) and cf[1, 1] == pytest.approx(1.0)
    assert m[0, 2] == 0.0 and m[1, 2] == 0.0                                               # never co-fire
    # f1 = (1, 2) on tokens 0, 1; g3 = (1, 0) there: cos 1/√5 under f1's mask; under g3's mask (tokens 0, 4): f1 = (1, 0)
    assert cf[1, 3] == pytest.approx(1 / np.sqrt(5)) and cg[1, 3] == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(m[2]).all()                                                            # a dead feature: undefined
    np.testing.assert_allclose(m, masked_cosine_numpy(F, G), atol=1e-6)


@pytest.mark.parametrize("sparse", [True, False])
def test_masked_cosine_matches_numpy_streaming(sparse):
    rng = np.random.default_rng(0)
    F = (rng.exponential(size=(600, 12)) * (rng.random((600, 12)) < 0.1)).astype(np.float32)
    G = (rng.exponential(size=(600, 20)) * (rng.random((600, 20)) < 0.05)).astype(np.float32)
    G[:, 3] = F[:, 4] * (rng.random(600) < 0.5) * 2.0     # a child of f4
    F[:, 7] = 0.0
    m, _, _ = _masked(F, G, batches=5, sparse=sparse)
    ref = masked_cosine_numpy(F, G)
    assert np.array_equal(np.isnan(m), np.isnan(ref))
    np.testing.assert_allclose(m[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-5)
    assert m[4, 3] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(Exception, match="non-negative"):
        CrossStats(2, 2, pearson=False, masked=True).update(np.array([[-1.0, 0]]), np.array([[1.0, 0]]))


# ---- a planted split ---------------------------------------------------------------------------------------

D = 16


def _dictionary(enc_cols, F):
    sae = make_dictionary(DictionaryConfig(d_in=D, d_sae=F))
    W = torch.zeros(D, F)
    for j, dirs in enumerate(enc_cols):
        for k in dirs:
            W[k, j] = 1.0
    with torch.no_grad():
        sae.W_enc_DF.copy_(W)
        sae.b_enc_F.fill_(-0.25)
        sae.W_dec_FD.copy_(torch.nn.functional.normalize(W.T, dim=1))
        sae.b_dec_D.zero_()
    return sae


def planted_dictionaries():
    """S (4 features): S0 detects any of e0, e1, e2; S1 = e3; S2 = e4; S3 = e5 or e6.  L (8): one per e_k.
    So S0 splits into L0, L1, L2 and S3 into L5, L6; L7 has no parent."""
    small = _dictionary([[0, 1, 2], [3], [4], [5, 6]], 4)
    large = _dictionary([[k] for k in range(8)], 8)
    return small, large


def planted_batches(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 8, n)
    x = rng.normal(scale=0.02, size=(n, D))
    x[np.arange(n), k] += rng.uniform(0.5, 1.5, n)
    return [(torch.tensor(x[i:i + 2000], dtype=torch.float32), k[i:i + 2000]) for i in range(0, n, 2000)]


def test_planted_split_is_recovered():
    small, large = planted_dictionaries()
    res = link_activations(planted_batches(), {"L": large, "S": small}, vocab=8, token_str=lambda t: f"tok{t}")
    assert res.dict_ids == ["S", "L"]                                  # ordered by size
    fams = {f.root: sorted(f.keys_at("L")) for f in res.families("S")}
    assert fams == {"S:0": [0, 1, 2], "S:1": [3], "S:2": [4], "S:3": [5, 6]}
    e = res.edges.set_index(["src_idx", "dst_idx"])
    for s, l in [(0, 0), (0, 1), (0, 2), (1, 3), (3, 5), (3, 6)]:
        assert e.loc[(s, l), "sim"] > 0.97                            # under the child's mask: the same signal
        if s in (0, 3):                                               # a split: the child covers part of the parent
            assert e.loc[(s, l), "cos_src_mask"] < 0.8
    assert e.loc[(0, 0), "cos_src_mask"] == pytest.approx(1 / np.sqrt(3), abs=0.05)   # a third of the parent
    assert e.loc[(0, 0), "decoder_cos"] == pytest.approx(1 / np.sqrt(3), abs=1e-6)
    assert res.edges[res.edges["sim"] >= 0.4].shape[0] == 7            # nothing else links
    assert len(res.parents("L", 7)) == 0
    s = res.summary()["pairs"]["S->L"]
    assert s["parents_split"] == 2 and s["edges"] == 7 and s["max_children"] == 3
    assert s["orphan_fraction"] == pytest.approx(1 / 8)
    n = res.node("L", 4)
    assert n["top_tokens"][0] == "tok4" and 0.08 < n["density"] < 0.17
    assert set(res.node("S", 0)["top_tokens"][:3]) == {"tok0", "tok1", "tok2"}


def _edges(rows):
    return pd.DataFrame(rows, columns=["src", "src_idx", "dst", "dst_idx", "sim", "cos_src_mask", "cos_dst_mask",
                                       "decoder_cos"])


def _nodes(sizes):
    return pd.concat([pd.DataFrame({"dict_id": d, "idx": np.arange(n), "d_sae": n, "fires": 10, "density": 0.01,
                                    "top_tokens": [["x"]] * n, "top_token_ids": [[1]] * n}) for d, n in sizes.items()],
                     ignore_index=True)


def test_family_across_three_sizes_with_a_merge():
    e = _edges([("A/0", 0, "A/1", 0, 0.9, .5, .9, .3), ("A/0", 0, "A/1", 1, 0.6, .4, .6, .2),
                ("A/0", 0, "A/1", 2, 0.3, .2, .3, .1),          # below the threshold
                ("A/0", 1, "A/1", 1, 0.5, .5, .4, .2),          # A/1 #1 has two parents
                ("A/1", 0, "A/2", 0, 0.8, .3, .8, .5), ("A/1", 0, "A/2", 1, 0.7, .2, .7, .4),
                ("A/1", 1, "A/2", 1, 0.45, .2, .45, .4),        # merge at the next level
                ("A/1", 2, "A/2", 3, 0.95, .9, .9, .9)])        # under a child that is not in the family
    sp_ = Splitting(["A/0", "A/1", "A/2"], {"A/0": 2, "A/1": 3, "A/2": 4}, e, _nodes({"A/0": 2, "A/1": 3, "A/2": 4}),
                    parents_rule="all")
    f = sp_.family("A/0", 0)
    assert sorted(n["key"] for n in f.nodes) == ["A/0:0", "A/1:0", "A/1:1", "A/2:0", "A/2:1"]
    assert {(x["src"], x["dst"]) for x in f.edges} == {("A/0:0", "A/1:0"), ("A/0:0", "A/1:1"), ("A/1:0", "A/2:0"),
                                                       ("A/1:0", "A/2:1"), ("A/1:1", "A/2:1")}
    assert {n["key"]: n["level"] for n in f.nodes}["A/2:1"] == 2
    assert sorted(n["key"] for n in sp_.family("A/0", 0, threshold=0.2).nodes)[-1] == "A/2:3"
    assert [n["key"] for n in sp_.family("A/0", 0, max_depth=1).nodes if n["level"] == 2] == []
    assert sorted(n["key"] for n in sp_.family("A/0", 0, max_children=1).nodes) == ["A/0:0", "A/1:0", "A/2:0"]
    assert [f.root for f in sp_.families("A/0")] == ["A/0:0", "A/0:1"]
    assert list(sp_.parents("A/1", 1)["src_idx"]) == [0, 1]
    # the ranked shortcut gives the same families as building every one
    for t in (0.2, 0.4, 0.55):
        every = sp_.families("A/0", threshold=t)
        assert [(f.root, f.size) for f in sp_.families("A/0", threshold=t, limit=1)] == [(every[0].root, every[0].size)]
        roots = np.array([int(f.root.split(":")[1]) for f in every])
        assert list(sp_._family_sizes("A/0", roots, t, "sim", None)) == [f.size for f in every]


def test_best_parent_rule_makes_families_trees():
    """``parents_rule="best"`` (the default): each child joins only its strongest parent's family; ``parents()``
    still lists every candidate; the summary counts both."""
    e = _edges([("A/0", 0, "A/1", 0, 0.9, .5, .9, .3), ("A/0", 0, "A/1", 1, 0.6, .4, .6, .2),
                ("A/0", 1, "A/1", 1, 0.5, .5, .4, .2),          # A/1 #1's weaker parent
                ("A/0", 1, "A/1", 2, 0.45, .5, .4, .2), ("A/0", 0, "A/1", 2, 0.3, .2, .3, .1),
                ("A/1", 0, "A/2", 0, 0.8, .3, .8, .5), ("A/1", 0, "A/2", 1, 0.7, .2, .7, .4),
                ("A/1", 1, "A/2", 1, 0.45, .2, .45, .4)])       # A/2 #1's weaker parent
    sizes = {"A/0": 2, "A/1": 3, "A/2": 4}
    best = Splitting(["A/0", "A/1", "A/2"], sizes, e, _nodes(sizes))
    assert best.parents_rule == "best"
    f = best.family("A/0", 0)
    assert sorted(n["key"] for n in f.nodes) == ["A/0:0", "A/1:0", "A/1:1", "A/2:0", "A/2:1"]
    assert {(x["src"], x["dst"]) for x in f.edges} == {("A/0:0", "A/1:0"), ("A/0:0", "A/1:1"), ("A/1:0", "A/2:0"),
                                                       ("A/1:0", "A/2:1")}
    assert [n["key"] for n in best.family("A/0", 1).nodes] == ["A/0:1", "A/1:2"]   # A/1 #1 went to its best parent
    assert list(best.children("A/0", 1)["dst_idx"]) == [2]
    assert list(best.parents("A/1", 1)["src_idx"]) == [0, 1]
    s = best.summary()["pairs"]["A/0->A/1"]
    assert (s["edges"], s["edges_above_threshold"], s["children_with_several_parents"]) == (3, 4, 1)
    assert s["mean_children"] == pytest.approx(1.5) and best.summary()["parents"] == "best"
    roots = np.array([0, 1])
    assert list(best._family_sizes("A/0", roots, 0.4, "sim", None)) == [best.family("A/0", r).size for r in roots]
    every = Splitting(["A/0", "A/1", "A/2"], sizes, e, _nodes(sizes), parents_rule="all")
    assert every.summary()["pairs"]["A/0->A/1"]["edges"] == 4
    assert len(every.family("A/0", 0).edges) == 5
    with pytest.raises(ConfigError, match="parents_rule"):
        Splitting(["A/0", "A/1"], sizes, e, _nodes(sizes), parents_rule="first")


def test_link_dictionaries_on_the_tiny_run_matches_a_dense_recomputation(tiny_run):
    run = tiny_run
    res = link_dictionaries(run, n_tokens=3000)
    assert res.dict_ids == ["A/0", "A/1"] and res.tokens == token_set(run, 3000).tokens
    ts = token_set(run, 3000)
    m = run.model("A")
    fwd = m.mlp_acts_function(torch.from_numpy(next(iter(ts.batches(run, 2048)))[:8]))  # the library's forward
    acts = torch.cat([fwd(torch.from_numpy(t))[:, 1:].reshape(-1, m.d_mlp) for t in ts.batches(run, 2048)])
    F0 = run.dictionary("A/0").encode(acts).detach().numpy()
    F1 = run.dictionary("A/1").encode(acts).detach().numpy()
    e = res.edges
    sample = e.sample(25, random_state=0)
    ref = masked_cosine_numpy(F0[:, sample["src_idx"]], F1[:, sample["dst_idx"]])
    np.testing.assert_allclose(sample["sim"].to_numpy(), np.diag(ref), atol=2e-4)
    dec = (torch.nn.functional.normalize(run.dictionary("A/0").W_dec_FD, dim=1)
           @ torch.nn.functional.normalize(run.dictionary("A/1").W_dec_FD, dim=1).T).detach().numpy()
    np.testing.assert_allclose(sample["decoder_cos"], dec[sample["src_idx"], sample["dst_idx"]], atol=1e-5)
    # every A/1 feature that fires keeps its 3 strongest parents, so a family can be browsed below the threshold
    fires = (F1 > 0).sum(0)
    assert (e.groupby("dst_idx").size() >= 3).all() and set(e["dst_idx"]) == set(np.flatnonzero(fires > 0))
    n1 = res.nodes[res.nodes["dict_id"] == "A/1"]
    assert (n1["fires"].to_numpy() == fires).all()
    # the share of each feature's activation on the planted base64 tokens (the exact proxy)
    dom = np.concatenate([d[:, 1:].reshape(-1) for _, d in ts.batches(run, 2048, with_domains=True)])
    b64 = F1[dom == 2].sum(0) / np.maximum(F1.sum(0), 1e-30)
    np.testing.assert_allclose(n1["share_base64"].to_numpy(), np.where(F1.sum(0) > 0, b64, np.nan), atol=1e-6)
    # saved and summarised
    pair = run.summary()["splitting"]["A"]["pairs"]["A/0->A/1"]
    assert pair["edges_above_threshold"] == int((e["sim"] >= 0.4).sum())
    best_sim = e.groupby("dst_idx")["sim"].max()        # the default rule: each child under its strongest parent
    assert pair["edges"] == int((best_sim >= 0.4).sum()) == pair["children_with_parent"]
    back = load_splitting(run, "A")
    pd.testing.assert_frame_equal(back.edges, res.edges)
    assert back.family("A/0", 3).to_dict() == res.family("A/0", 3).to_dict()
    assert all(isinstance(t, str) for t in back.node("A/1", 0)["top_tokens"])


def test_umap_clusters_and_feature_map(tiny_run):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 32)) * 3
    X = np.concatenate([c + rng.normal(scale=0.3, size=(60, 32)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(3), 60)
    xy, labels = embed_and_cluster(X, min_cluster_size=10)
    assert xy.shape == (180, 2)
    assert adjusted_rand_score(truth, labels) > 0.9
    df = feature_map(tiny_run, ["A/0", "A/1"])
    alive = sum(int((tiny_run.density(d) > 0).sum()) for d in ("A/0", "A/1"))
    assert len(df) == alive and set(df["dict_id"]) == {"A/0", "A/1"}
    assert {"x", "y", "cluster", "top_tokens", "density"} <= set(df.columns)
    assert np.isfinite(df[["x", "y"]].to_numpy()).all() and df["cluster"].max() >= 1
    back = load_feature_map(tiny_run, "A")
    assert len(back) == len(df) and list(back["idx"]) == list(df["idx"])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_knn_matches_brute_force(metric):
    from scipy.spatial.distance import cdist

    from monosemantic.splitting import exact_knn

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 24)).astype(np.float32)
    idx, dist = exact_knn(X, 7, metric, chunk=64)          # several chunks
    full = cdist(X.astype(np.float64), X.astype(np.float64), metric)
    assert idx.shape == dist.shape == (300, 7)
    assert (idx[:, 0] == np.arange(300)).all() and (dist[:, 0] == 0).all()
    ref = np.sort(full, axis=1)[:, :7]
    np.testing.assert_allclose(dist[:, 1:], ref[:, 1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1)[:, 1:], ref[:, 1:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="cosine and euclidean"):
        exact_knn(X, 3, "manhattan")


def test_edge_selection_in_row_blocks_equals_the_whole_matrix():
    from monosemantic.splitting import _select_edges

    rng = np.random.default_rng(0)
    F = (rng.exponential(size=(3000, 50)) * (rng.random((3000, 50)) < 0.05)).astype(np.float32)
    G = (rng.exponential(size=(3000, 70)) * (rng.random((3000, 70)) < 0.03)).astype(np.float32)
    st = CrossStats(50, 70, pearson=False, masked=True).update(sp.csr_matrix(F), sp.csr_matrix(G))
    blocks = _select_edges(st, None, "a", "b", keep_min=0.1, keep_top=3, block_elems=70 * 7)   # 8 row blocks
    m = np.nan_to_num(st.masked_cosine(), nan=-1)
    ref = m >= 0.1
    for r in range(50):
        ref[r, np.argsort(-m[r])[:3]] = True
    for c in range(70):
        ref[np.argsort(-m[:, c])[:3], c] = True
    ref &= m > 0
    assert set(zip(blocks.src_idx, blocks.dst_idx)) == set(zip(*np.nonzero(ref)))
    np.testing.assert_allclose(blocks["sim"], m[blocks.src_idx, blocks.dst_idx], atol=1e-7)


def test_min_density_leaves_the_low_density_mode_out_of_families_and_the_summary():
    """A rare child (the low-density mode) links to a common parent by masked cosine over its own few firings;
    min_density="mode" drops it, and the summary reports the pair again without the mode."""
    sizes = {"A/0": 2, "A/1": 40}
    nodes = _nodes(sizes)
    rng = np.random.default_rng(1)
    dens = np.where(np.arange(40) < 30, 10 ** rng.normal(-4.2, 0.1, 40), 10 ** rng.normal(-1.8, 0.2, 40))
    nodes.loc[nodes["dict_id"] == "A/1", "density"] = dens
    nodes.loc[nodes["dict_id"] == "A/0", "density"] = [0.05, 0.03]
    e = _edges([("A/0", 0, "A/1", 35, 0.8, .5, .8, .7), ("A/0", 0, "A/1", 36, 0.7, .4, .7, .6),
                ("A/0", 0, "A/1", 3, 0.9, .1, .9, .0), ("A/0", 1, "A/1", 4, 0.85, .1, .85, .0)])
    sp_ = Splitting(["A/0", "A/1"], sizes, e, nodes)
    assert sorted(n["key"] for n in sp_.family("A/0", 0).nodes) == ["A/0:0", "A/1:3", "A/1:35", "A/1:36"]
    t = sp_.density_threshold("A/1")
    assert 10 ** -3.9 < t < 10 ** -2.1 and sp_.density_threshold("A/0") == 0.0  # 2 nodes: no modes to find
    assert sorted(n["key"] for n in sp_.family("A/0", 0, min_density="mode").nodes) == ["A/0:0", "A/1:35", "A/1:36"]
    assert [f.root for f in sp_.families("A/0", min_density="mode")] == ["A/0:0"]
    assert [n["key"] for n in sp_.family("A/0", 0, min_density=0.5).nodes] == ["A/0:0"]
    s = sp_.summary()["pairs"]["A/0->A/1"]
    assert s["parents_split"] == 1 and s["children_with_parent"] == 4
    hm = s["high_mode"]
    assert hm["alive_large"] == 10 and hm["children_with_parent"] == 2 and hm["parents_split"] == 1
    assert hm["median_decoder_cos_of_edges"] == pytest.approx(0.65)


def test_finished_links_and_map_are_loaded_not_recomputed(tiny_run, tmp_path, monkeypatch):
    import shutil

    from monosemantic import splitting
    from monosemantic.runs import Run

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    run = Run.open(root)
    spl = splitting.link_dictionaries(run, ["A/0", "A/1"], n_tokens=3000)
    fmap = splitting.feature_map(run, ["A/0", "A/1"], splitting=spl)
    calls = []

    class NewPass(Exception):
        pass

    def no_pass(*a, **k):
        calls.append("links")
        raise NewPass

    monkeypatch.setattr(splitting, "iter_activation_batches", no_pass)
    monkeypatch.setattr(splitting, "embed_and_cluster", lambda *a, **k: calls.append("umap"))
    again = splitting.link_dictionaries(run, ["A/0", "A/1"], n_tokens=3000)
    assert calls == [] and again.edges.equals(spl.edges) and again.summary() == spl.summary()
    m2 = splitting.feature_map(run, ["A/0", "A/1"], splitting=again)
    assert calls == [] and m2[["x", "y", "cluster"]].equals(fmap[["x", "y", "cluster"]])
    with pytest.raises(NewPass):   # another threshold is a new pass
        splitting.link_dictionaries(run, ["A/0", "A/1"], n_tokens=3000, threshold=0.5)
    assert calls == ["links"]


def test_decoder_cosine_of_pairs_reads_the_full_matrix_in_any_order_across_row_blocks():
    """The links' decoder cosines come from row blocks of the product over the distinct sources: the same numbers
    as the full matrix whatever the pairs' order, repeats or block size; no pairs give an empty array."""
    from monosemantic.splitting import decoder_cosine

    a = make_dictionary(DictionaryConfig(d_in=16, d_sae=300, seed=1))
    b = make_dictionary(DictionaryConfig(d_in=16, d_sae=700, seed=2))
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 300, 5000), rng.integers(0, 700, 5000)
    i[:10] = 299                                                  # repeats of one source, unsorted
    full = decoder_cosine(a, b)
    assert full.shape == (300, 700) and np.abs(np.diag(decoder_cosine(a, a))).min() > 1 - 1e-6
    np.testing.assert_allclose(decoder_cosine(a, b, i, j), full[i, j], rtol=0, atol=1e-6)
    np.testing.assert_allclose(decoder_cosine(a, b, i, j, block_elems=700 * 7), full[i, j], rtol=0, atol=1e-6)
    sub = rng.choice(300, 7, replace=False)
    sel = np.isin(i, sub)                                         # a few sources: few rows of the product
    np.testing.assert_allclose(decoder_cosine(a, b, i[sel], j[sel]), full[i[sel], j[sel]], rtol=0, atol=1e-6)
    assert decoder_cosine(a, b, i[:0], j[:0]).shape == (0,)
