"""Universality: the streaming correlation against numpy, the matching against brute force, and `compare` on the
tiny run (numbers checked against a dense recomputation, the summary, the CLI)."""
import itertools
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from monosemantic.sparse import encode_sparse
from monosemantic.crossstats import CrossStats, Side, best_matches, diagonal_order, one_to_one, rowwise_pearson
from monosemantic.features.logits import logit_weights
from monosemantic.tokensets import token_set
from monosemantic.universality import compare, load_comparison
from monosemantic.runs import update_analyses


def _np_pearson(X, Y):
    """Reference: float64 two-pass Pearson, NaN for zero-variance columns."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    sx, sy = np.sqrt((Xc ** 2).sum(0)), np.sqrt((Yc ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc.T @ Yc) / np.outer(sx, sy)
    r[sx == 0, :] = np.nan
    r[:, sy == 0] = np.nan
    return r


def _sparse_acts(rng, n, f, density, dead=()):
    x = rng.exponential(1.0, (n, f)) * (rng.random((n, f)) < density)
    x[:, list(dead)] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["sparse", "dense", "mixed"])
def test_streaming_pearson_matches_numpy_including_dead_columns(kind):
    rng = np.random.default_rng(0)
    X = _sparse_acts(rng, 3000, 40, 0.05, dead=(3, 17))
    Y = _sparse_acts(rng, 3000, 25, 0.08, dead=(0,))
    Y[:, 5] = X[:, 7] * 2 + 0.1 * (X[:, 7] > 0)     # a strongly correlated pair
    st = CrossStats(40, 25)
    for i in range(0, 3000, 700):                   # uneven batches, the last one short
        xb, yb = X[i:i + 700], Y[i:i + 700]
        if kind == "sparse":
            xb, yb = sp.csr_matrix(xb), sp.csr_matrix(yb)
        elif kind == "mixed":
            xb, yb = sp.csr_matrix(xb), torch.from_numpy(yb)
        st.update(xb, yb)
    got, ref = st.pearson(), _np_pearson(X, Y)
    assert st.n == 3000
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[[3, 17], :]).all() and np.isnan(got[:, 0]).all()
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], atol=2e-6)
    assert got[7, 5] > 0.99
    assert (st.nnz_x == (X != 0).sum(0)).all() and (st.nnz_y == (Y != 0).sum(0)).all()


def test_dense_pearson_is_stable_under_a_large_offset():
    # sums of squares around 1e8 would lose every digit of a variance of 1 without the first-batch shift
    rng = np.random.default_rng(1)
    X = 1e4 + rng.normal(size=(5000, 6))
    Y = np.c_[X[:, :3] * 0.5 + rng.normal(scale=0.5, size=(5000, 3)), np.full(5000, 7.0)]
    st = CrossStats(6, 4)
    for i in range(0, 5000, 1000):
        st.update(X[i:i + 1000], Y[i:i + 1000])
    got, ref = st.pearson(), _np_pearson(X.astype(np.float32), Y.astype(np.float32))
    assert np.isnan(got[:, 3]).all()                 # a constant column has no correlation
    np.testing.assert_allclose(got[:, :3], ref[:, :3], atol=2e-3)
    assert np.all(np.diag(got[:3, :3]) > 0.6)


def test_best_matches_skip_undefined():
    s = np.array([[0.1, np.nan, 0.7], [np.nan, np.nan, np.nan], [-0.2, -0.1, np.nan]])
    idx, val = best_matches(s, 1)
    assert idx.tolist() == [2, -1, 1] and np.isnan(val[1]) and val[0] == 0.7 and val[2] == -0.1
    idx0, val0 = best_matches(s, 0)
    assert idx0.tolist() == [0, 2, 0] and val0.tolist() == [0.1, -0.1, 0.7]


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4)])
def test_one_to_one_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(5):
        s = rng.uniform(-1, 1, shape)
        s[rng.random(shape) < 0.15] = np.nan
        rows, cols, vals = one_to_one(s)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert np.allclose(vals, s[rows, cols]) and not np.isnan(vals).any()
        # brute force over every injective map of the smaller side: fewest undefined pairs, then the largest total
        P, Q = shape
        best = (-np.inf, -np.inf)
        maps = ((zip(range(P), m) for m in itertools.permutations(range(Q), P)) if P <= Q else
                (zip(m, range(Q)) for m in itertools.permutations(range(P), Q)))
        for pairs in maps:
            v = [s[i, j] for i, j in pairs]
            best = max(best, (-sum(np.isnan(v)), float(np.nansum(v))))
        assert len(vals) == min(P, Q) + best[0]
        assert vals.sum() == pytest.approx(best[1], abs=1e-9), (trial, s)


def test_diagonal_order_puts_matches_on_the_diagonal():
    rng = np.random.default_rng(3)
    perm = rng.permutation(6)
    s = rng.uniform(0, 0.3, (5, 6))
    for i in range(5):
        s[i, perm[i]] = 0.9 - 0.1 * i
    ro, co = diagonal_order(s, *one_to_one(s))
    assert sorted(ro) == list(range(5)) and sorted(co) == list(range(6))
    d = s[ro[:5], co[:5]]
    assert np.allclose(d, [0.9, 0.8, 0.7, 0.6, 0.5])   # strongest first, on the diagonal
    assert co[5] == perm[5] or co[5] not in perm[:5]


def test_rowwise_pearson_and_logit_weights(tiny_run):
    a, b = np.random.default_rng(0).normal(size=(2, 4, 30))
    a[3] = 1.0
    r = rowwise_pearson(a, b)
    for i in range(3):
        assert r[i] == pytest.approx(np.corrcoef(a[i], b[i])[0, 1], abs=1e-12)
    assert np.isnan(r[3])
    m, sae = tiny_run.model("A"), tiny_run.dictionary("A/1")
    L = logit_weights(m, sae, rows=np.array([0, 5]))
    # the paper's logit effect: LayerNorm approximated (centred, gain, scale frozen), then median-centred
    r = (sae.W_dec_FD[[0, 5]] @ m.W_out).detach().double()
    ref = ((r - r.mean(1, keepdim=True)) * m.ln_final_weight.detach().double()) @ m.W_U.detach().double()
    ref = ref - ref.median(1, keepdim=True).values if ref.shape[1] % 2 else \
        ref - ref.sort(1).values[:, ref.shape[1] // 2 - 1:ref.shape[1] // 2 + 1].mean(1, keepdim=True)
    torch.testing.assert_close(L.double(), ref, rtol=1e-5, atol=1e-5)
    N = logit_weights(m)
    assert N.shape == (m.d_mlp, m.d_vocab)
    assert np.allclose(rowwise_pearson(N[:3], (m.W_out[:3] - m.W_out[:3].mean(1, keepdim=True)).detach()
                                       @ (m.ln_final_weight[:, None] * m.W_U).detach()), 1.0)


@pytest.mark.parametrize("kernel", ["dense", "fast"])
def test_encode_sparse_equals_dense_encode(tiny_run, kernel):
    sae = tiny_run.dictionary("A/1")
    x = tiny_run.store("A").sample(3000)
    f = encode_sparse(sae, x, chunk_elems=512 * 700, kernel=kernel)   # several chunks
    dense = sae.encode(x).detach().numpy()
    assert f.shape == dense.shape and f.nnz == int((dense > 0).sum())
    np.testing.assert_allclose(f.toarray(), dense, rtol=1e-5, atol=1e-6)


def test_token_set_is_fixed_and_never_bos(tiny_run):
    ts = token_set(tiny_run, 5000, seed=0)
    body = tiny_run.cfg.model.n_ctx - 1
    assert ts.tokens >= 5000 and ts.tokens - 5000 < body
    assert [s for s, _ in ts.parts][0] == "val"
    again = token_set(tiny_run, 5000, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(ts.parts, again.parts))
    batches = list(ts.batches(tiny_run, batch_tokens=1024))
    assert sum(b.shape[0] for b in batches) == ts.contexts
    assert all((b[:, 0] == tiny_run.split("val").bos_id).all() for b in batches)


def _dense_features(run, side, ts):
    """Reference activations, computed densely from scratch."""
    m = run.model(side.transformer)
    out = []
    for toks in ts.batches(run, 4096):
        a = m.mlp_acts(torch.from_numpy(toks))[:, 1:].reshape(-1, m.d_mlp)
        out.append(a if side.dictionary is None else side.dictionary.encode(a))
    return torch.cat(out).detach().numpy()


def test_compare_A1_B1_matches_a_dense_recomputation_and_lands_in_the_summary(tiny_run):
    run = tiny_run
    update_analyses(run.root, "other_analysis", lambda d: {"kept": 1})   # someone else's key must survive
    comp = compare(run, "A/1", "B/1", n_tokens=6000)
    ts = token_set(run, 6000)
    XA = _dense_features(run, Side("A/1", "A", run.dictionary("A/1")), ts)
    XB = _dense_features(run, Side("B/1", "B", run.dictionary("B/1")), ts)
    ref = _np_pearson(XA, XB)
    got = comp.features.corr
    assert got.shape == (512, 512) and comp.features.tokens == ts.tokens == XA.shape[0]
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-4)
    # best matches and medians follow from the matrix
    bi, bv = best_matches(ref, 1)
    alive = comp.features.status_a == "alive"
    assert np.median(bv[alive & ~np.isnan(bv)]) == pytest.approx(comp.summary()["feature_median"], abs=1e-4)
    # the neurons of A vs B in the same pass
    NA = _dense_features(run, Side("A/neurons", "A"), ts)
    NB = _dense_features(run, Side("B/neurons", "B"), ts)
    nref = _np_pearson(NA, NB)
    ngot = comp.neurons.corr
    np.testing.assert_allclose(ngot[~np.isnan(nref)], nref[~np.isnan(nref)], atol=1e-4)
    s = comp.summary()
    assert s["features"]["dead_a"] == int((XA.max(0) == 0).sum())
    assert -1 <= s["feature_median"] <= 1 and -1 <= s["neuron_median"] <= 1
    assert s["features"]["assignment_pairs"] == s["features"]["alive_a"] == min(s["features"]["alive_a"], s["features"]["alive_b"])
    bv_alive = bv[alive & ~np.isnan(bv)]
    assert s["features"]["fraction_above_0.7"] == pytest.approx(float((bv_alive > 0.7).mean()))
    from monosemantic.metrics import density_modes

    modes = s["features"]["density_modes"]  # the high-mode numbers exist exactly when the densities are bimodal
    dens_a = comp.features.fires_a / comp.features.tokens
    ref_modes = density_modes(dens_a[alive])
    for k in ("threshold", "ashman_d", "bimodal", "low", "high"):
        assert modes[k] == pytest.approx(ref_modes[k], rel=1e-9)
    if modes["bimodal"]:
        hi = alive & ~np.isnan(bv) & (dens_a >= modes["threshold"])
        assert modes["high_median"] == pytest.approx(float(np.median(bv[hi])), abs=1e-6)
    # logit-weight correlation of each matched pair equals a direct computation
    t = comp.features.table("a")
    i = int(np.flatnonzero(t["best_match"].to_numpy() >= 0)[0])
    La = logit_weights(run.model("A"), run.dictionary("A/1"), rows=np.array([i]))[0].numpy()
    Lb = logit_weights(run.model("B"), run.dictionary("B/1"), rows=np.array([t["best_match"][i]]))[0].numpy()
    assert t["logit_corr"][i] == pytest.approx(np.corrcoef(La, Lb)[0, 1], abs=1e-5)
    # written: tables, matrices, and the summary's headline numbers (merged, other keys kept)
    summ = run.summary()
    assert summ["other_analysis"] == {"kept": 1}
    u = summ["universality"]
    assert u["pair"] == "A/1~B/1"
    assert u["feature_median"] == pytest.approx(s["feature_median"]) and u["neuron_median"] == pytest.approx(s["neuron_median"])
    assert u["A/1~B/1"]["tokens"] == ts.tokens
    back = load_comparison(run, "A/1", "B/1")
    np.testing.assert_array_equal(back.features.corr, got)
    assert back.summary()["feature_median"] == pytest.approx(s["feature_median"])
    assert set(back.tables()) == {"features_a", "features_b", "neurons_a", "neurons_b"}


def test_compare_a_dictionary_with_itself_and_with_a_second_seed(tiny_run):
    import monosemantic as ms

    run = tiny_run
    a1 = run.dictionary("A/1")
    same = compare(run, "A/1", Side("A/1 copy", "A", a1), n_tokens=3000, write=False)
    st = same.features.status_a
    alive = np.flatnonzero(st == "alive")
    assert same.neurons is None                                  # same transformer: no neuron baseline
    assert np.allclose(np.diag(same.features.corr)[alive], 1.0, atol=1e-5)
    assert same.summary()["feature_median"] == pytest.approx(1.0, abs=1e-5)
    assert same.summary()["features"]["decoder_mmcs"] == pytest.approx(1.0, abs=1e-5)
    # a second seed trained ad hoc on the same activations
    spec = run.cfg.dictionary("A/1")
    seed1 = ms.train_dictionary(run.store("A"), ms.DictionaryConfig(d_in=128, d_sae=512, l1_coefficient=spec.l1_coefficient, seed=1),
                                ms.SAETrainConfig(steps=30, batch_size=512, warmup_steps=3, resample_inputs=2048,
                                                  geometric_median_rows=1024, checkpoint_every=1000, resample_at=()),
                                progress=False, seed=1)
    other = compare(run, "A/1", Side("A/1 seed 1", "A", seed1), n_tokens=3000)
    f = other.summary()["features"]
    assert 0 < f["decoder_mmcs"] < 1 and 0 < f["median"] < 1
    assert (run.root / "analyses/universality/A-1~A-1-seed-1/summary.json").exists()
    # a same-transformer comparison never replaces the cross-transformer headline
    u = run.summary()["universality"]
    assert "A/1~A/1 seed 1" in u and u.get("pair") in (None, "A/1~B/1")


def test_cli_compare_json(tiny_run, capsys):
    from monosemantic.cli import main

    assert main(["compare", str(tiny_run.root), "A/0", "B/1", "--tokens", "2000", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["a"] == "A/0" and s["b"] == "B/1" and s["features"]["units_a"] == 128
    assert s["tokens"] >= 2000 and s["neuron_median"] is not None
    assert main(["compare", str(tiny_run.root), "A/0", "B/1", "--tokens", "1000", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "A/0~B/1" in text and "(paper A/1~B/1: 0.72)" in text and "neurons   median best-match correlation" in text
    assert main(["compare", str(tiny_run.root), "A/1", "Z/9"]) == 2
    assert "no dictionary 'Z/9'" in capsys.readouterr().err


def test_a_finished_comparison_is_loaded_not_recomputed(tiny_run, tmp_path, monkeypatch):
    """A notebook opening a finished run gets the pipeline's comparison back; another token set or other
    weights are computed afresh."""
    import shutil

    from monosemantic import crossstats, universality as uni
    from monosemantic.runs import Run

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    run = Run.open(root)
    first = uni.compare(run, "A/1", "B/1", n_tokens=3000)
    passes = []
    real = uni.iter_activation_batches
    monkeypatch.setattr(uni, "iter_activation_batches", lambda *a, **k: (passes.append(1), real(*a, **k))[1])
    again = uni.compare(run, "A/1", "B/1", n_tokens=3000)
    assert passes == []
    a, b = again.summary(), first.summary()
    # the loaded tables are float32 on disk: what is derived from them agrees to float32 precision
    def flat(d, pre=""):
        for k, v in d.items():
            yield from flat(v, f"{pre}{k}.") if isinstance(v, dict) else [(pre + k, v)]

    fa, fb = dict(flat(a)), dict(flat(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], float) and isinstance(fb[k], float):
            assert fa[k] == pytest.approx(fb[k], rel=1e-4, abs=1e-6, nan_ok=True), k
        elif k != "seconds":
            assert fa[k] == fb[k], k
    uni.compare(run, "A/1", "B/1", n_tokens=2500)                 # another token set: a new pass
    assert passes == [1]
    twin = run.dictionary("A/1")
    with torch.no_grad():
        twin.W_dec_FD.mul_(-1)                                     # other weights under the same label
    uni.compare(run, "A/1", crossstats.Side("A/1 seed 1", "A", twin), n_tokens=3000)
    uni.compare(run, "A/1", crossstats.Side("A/1 seed 1", "A", run.dictionary("A/1")), n_tokens=3000)
    assert passes == [1, 1, 1]


def test_seed_control_trains_once_and_is_reused(tiny_run, tmp_path, monkeypatch):
    import shutil

    from monosemantic import train_sae, universality as uni
    from monosemantic.runs import Run

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root)
    run = Run.open(root)
    assert uni.seed_control(run, "A/1", train_if_missing=False) is None     # a finished run opens without it
    first = uni.seed_control(run, "A/1")
    f = first.summary()["features"]
    assert f["a"] == "A/1" and f["b"] == "A/1 seed+1" and f["decoder_mmcs"] is not None
    twin = run.dictionary("A/1")
    assert twin.cfg.seed == 0 and (uni.seed_control_dir(run, "A/1") / "sae.safetensors").exists()
    monkeypatch.setattr(train_sae, "train_dictionary", lambda *a, **k: pytest.fail("retrained the twin"))
    again = uni.seed_control(run, "A/1", train_if_missing=False)
    assert again.summary()["features"]["median"] == pytest.approx(f["median"], rel=1e-4)
