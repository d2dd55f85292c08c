"""Feature statistics against brute force: the streaming accumulator on synthetic entries, the sparse encoder,
logit effects, and the whole pass on the tiny run (top-k truly the maxima, interval samples inside their
intervals, histogram totals, proxy scores, windows, resume, the prompt query)."""

import numpy as np
import pytest
import torch

from monosemantic import ConfigError
from monosemantic.features import (FeatureStats, FeatureStatsConfig, StatsAccumulator,
                                   compute_feature_stats, compute_neuron_stats, compute_stats, correlated_neurons,
                                   logit_effects)
from monosemantic.tokensets import token_set_contexts
from monosemantic.prompt import prompt_activations

K = 4  # domains


def synthetic(n=4000, U=8, seed=0):
    """Dense (n, U) non-negative activations with varied densities and scales; unit 5 is dead; unit 6 grows
    by orders of magnitude along the stream (forcing the fine grid to double many times); unit 7 is dense."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, U), np.float32)
    dens = [0.05, 0.2, 0.01, 0.5, 0.003, 0.0, 0.1, 0.9]
    for u in range(U):
        fire = rng.random(n) < dens[u]
        logv = rng.uniform(-3.2, 1.5, n)
        if u == 6:
            logv = np.linspace(-3.5, 2.5, n) + rng.normal(0, 0.05, n)
        A[fire, u] = 10 ** logv[fire]
    # keep values off the log-histogram edges (float32 log10 vs float64 edges may disagree within ~1e-7)
    with np.errstate(divide="ignore"):
        frac = (np.log10(np.where(A > 0, A, 1)) * 20) % 1
    A[(A > 0) & ((frac < 1e-3) | (frac > 1 - 1e-3))] *= 1.01
    dom = rng.integers(0, K, n)
    return A, dom


def feed(acc, A, dom, chunks):
    g0 = 0
    for c in chunks:
        blk = torch.from_numpy(A[g0:g0 + c])
        nz = torch.nonzero(blk > 0)
        acc.update(torch.arange(g0, g0 + c), torch.from_numpy(dom[g0:g0 + c]), nz[:, 0], nz[:, 1],
                   blk[nz[:, 0], nz[:, 1]])
        g0 += c
    assert g0 == len(A)
    return acc.results()


def split_sizes(n, rng):
    out = []
    while n > 0:
        c = int(min(n, rng.integers(1, 700)))
        out.append(c)
        n -= c
    return out


CFG = FeatureStatsConfig(top_k=7, n_intervals=11, per_interval=4, fine_bins=64)


@pytest.fixture(scope="module")
def synth():
    A, dom = synthetic()
    res = feed(StatsAccumulator(A.shape[1], K, CFG), A, dom, split_sizes(len(A), np.random.default_rng(1)))
    return A, dom, res


def test_counts_sums_and_domains_match_brute_force(synth):
    A, dom, r = synth
    assert r["n_tokens"] == len(A)
    np.testing.assert_array_equal(r["count"], (A > 0).sum(0))
    np.testing.assert_allclose(r["sum"], A.astype(np.float64).sum(0), rtol=1e-6)
    np.testing.assert_allclose(r["sumsq"], (A.astype(np.float64) ** 2).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(r["max"], A.max(0))
    np.testing.assert_array_equal(r["domain_tokens"], np.bincount(dom, minlength=K))
    for k in range(K):
        np.testing.assert_array_equal(r["dcount"][:, k], (A[dom == k] > 0).sum(0))
        np.testing.assert_allclose(r["dsum"][:, k], A[dom == k].astype(np.float64).sum(0), rtol=1e-6)
    assert r["count"][5] == 0 and r["max"][5] == 0


def test_top_k_are_the_true_maxima(synth):
    A, dom, r = synth
    for u in range(A.shape[1]):
        want = np.sort(A[:, u][A[:, u] > 0])[::-1][:CFG.top_k]
        got = r["top_val"][u][r["top_g"][u] >= 0]
        np.testing.assert_array_equal(got, want)
        # the recorded token really holds that value
        np.testing.assert_array_equal(A[r["top_g"][u][r["top_g"][u] >= 0], u], got)
        assert (r["top_g"][u] >= 0).sum() == min(CFG.top_k, (A[:, u] > 0).sum())


def test_top_k_ties_go_to_the_earlier_token_whatever_the_chunking():
    A, dom = synthetic(n=3000, seed=3)
    A = np.where(A > 0, np.ceil(A * 4) / 4, 0).astype(np.float32)     # heavy ties
    rng = np.random.default_rng(5)
    a = feed(StatsAccumulator(A.shape[1], K, CFG), A, dom, split_sizes(len(A), rng))
    b = feed(StatsAccumulator(A.shape[1], K, CFG), A, dom, [len(A)])
    np.testing.assert_array_equal(a["top_g"], b["top_g"])
    for u in range(A.shape[1]):
        fired = np.nonzero(A[:, u] > 0)[0]
        want = fired[np.lexsort((fired, -A[fired, u]))][:CFG.top_k]    # value desc, then token asc
        np.testing.assert_array_equal(a["top_g"][u][:len(want)], want)


def test_histogram_counts_sum_to_the_token_count_and_match_bins(synth):
    A, dom, r = synth
    edges = CFG.log_edges()
    H = r["hist"]                                       # (U, G+2, K)
    for u in range(A.shape[1]):
        zero = len(A) - H[u].sum()
        assert zero + H[u].sum() == len(A)
        assert zero == (A[:, u] == 0).sum()
        for k in range(K):
            v = A[(dom == k) & (A[:, u] > 0), u]
            inner, _ = np.histogram(v, bins=edges)
            np.testing.assert_array_equal(H[u, 1:-1, k], inner)
            assert H[u, 0, k] == (v < edges[0]).sum() and H[u, -1, k] == (v >= edges[-1]).sum()


def test_interval_samples_lie_inside_their_intervals(synth):
    A, dom, r = synth
    iv = r["intervals"]
    I, S = CFG.n_intervals, CFG.per_interval
    for u in range(A.shape[1]):
        col = A[:, u]
        mx = col.max()
        if mx == 0:
            assert iv["count"][u].sum() == 0 and (iv["g"][u] < 0).all()
            continue
        lo, hi = iv["lo"][u], iv["hi"][u]
        assert lo[0] == 0 and hi[-1] >= mx
        np.testing.assert_array_equal(lo[1:], hi[:-1])                     # contiguous
        even = np.arange(1, I) * mx / I                                      # evenly spaced fractions of max,
        assert np.abs(lo[1:] - even).max() <= mx / 32 + 1e-12                # snapped to the fine grid
        assert iv["count"][u].sum() == (col > 0).sum()
        for i in range(I):
            inside = (col > 0) & (col >= lo[i]) & ((col < hi[i]) if i < I - 1 else (col <= hi[i]))
            assert iv["count"][u, i] == inside.sum()
            g = iv["g"][u, i]
            g = g[g >= 0]
            assert len(g) == min(S, inside.sum())
            assert len(set(g.tolist())) == len(g)
            assert inside[g].all(), (u, i)
            np.testing.assert_array_equal(iv["val"][u, i][:len(g)], col[g])


def test_results_do_not_depend_on_chunking_or_checkpoints(synth):
    A, dom, r = synth
    one = feed(StatsAccumulator(A.shape[1], K, CFG), A, dom, [len(A)])
    # a checkpoint round-trip half-way (as a resumed pass does)
    acc = StatsAccumulator(A.shape[1], K, CFG)
    feed_half = 1733
    feed(acc, A[:feed_half], dom[:feed_half], [feed_half])
    acc2 = StatsAccumulator(A.shape[1], K, CFG)
    acc2.load_state_dict({k: v.copy() for k, v in acc.state_dict().items()})
    rest = A[feed_half:]
    for g0 in range(0, len(rest), 400):
        blk = torch.from_numpy(rest[g0:g0 + 400])
        nz = torch.nonzero(blk > 0)
        acc2.update(torch.arange(feed_half + g0, feed_half + g0 + len(blk)),
                    torch.from_numpy(dom[feed_half + g0:feed_half + g0 + len(blk)]), nz[:, 0], nz[:, 1],
                    blk[nz[:, 0], nz[:, 1]])
    resumed = acc2.results()
    for other in (one, resumed):
        for key in ("count", "sum", "max", "hist", "top_val", "top_g", "dcount"):
            np.testing.assert_array_equal(other[key], r[key], err_msg=key)
        for key in ("lo", "hi", "count", "val", "g"):
            np.testing.assert_array_equal(other["intervals"][key], r["intervals"][key], err_msg=key)


def test_interval_sampler_is_uniform():
    # one unit, 24 firing tokens in one interval: over many seeds each is picked ≈ S/24 of the time
    n, S = 24, 4
    A = np.zeros((n, 1), np.float32)
    A[:, 0] = np.linspace(1.0, 1.05, n)  # all in the top interval
    dom = np.zeros(n, np.int64)
    hits = np.zeros(n)
    seeds = 300
    for seed in range(seeds):
        cfg = FeatureStatsConfig(top_k=1, n_intervals=11, per_interval=S, fine_bins=64, seed=seed)
        r = feed(StatsAccumulator(1, K, cfg), A, dom, [7, 9, 8])
        g = r["intervals"]["g"][0].reshape(-1)
        hits[g[g >= 0]] += 1
    assert hits.sum() == seeds * S
    expected = seeds * S / n
    chi2 = ((hits - expected) ** 2 / expected).sum()
    assert chi2 < 60, (chi2, hits)   # 23 dof: p ≈ 4e-5 at 60; a biased sampler lands far above


def test_accumulator_rejects_non_positive_entries():
    acc = StatsAccumulator(2, K, CFG)
    with pytest.raises(ValueError, match="strictly positive"):
        acc.update(torch.arange(2), torch.zeros(2, dtype=torch.int64), torch.tensor([0]), torch.tensor([1]),
                   torch.tensor([0.0]))


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="power of two"):
        FeatureStatsConfig(fine_bins=48).validate()
    with pytest.raises(ConfigError, match="n_intervals"):
        FeatureStatsConfig(fine_bins=16, n_intervals=11).validate()


def test_logit_effects_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    W_out, W_U = torch.randn(16, 8, generator=g), torch.randn(8, 31, generator=g)
    ln_w = torch.rand(8, generator=g) + 0.5
    dirs = torch.randn(5, 16, generator=g)
    got = logit_effects(dirs, W_out, W_U, ln_w, ln_scale=2.5).numpy()
    d, wo, wu, lw = (t.double().numpy() for t in (dirs, W_out, W_U, ln_w))
    for i in range(5):
        r = d[i] @ wo
        r = (r - r.mean()) * lw / 2.5
        lg = r @ wu
        np.testing.assert_allclose(got[i], lg - np.median(lg), rtol=1e-4, atol=1e-4)
        assert abs(np.median(got[i])) < 1e-5


# ---- the pass on the tiny run -------------------------------------------------------------------------

N_TOK = 5000


@pytest.fixture(scope="module")
def tiny_stats(tiny_run, tmp_path_factory):
    cfg = FeatureStatsConfig(n_tokens=N_TOK, batch_contexts=48, top_k=10, per_interval=3)
    out = tmp_path_factory.mktemp("fstats")
    st = compute_feature_stats(tiny_run, "A/1", cfg, progress=False, out_dir=out / "A1")
    ns = compute_neuron_stats(tiny_run, "A", cfg, progress=False, out_dir=out / "A")
    return tiny_run, cfg, st, ns, out


def brute_force(run, source, cfg):
    """Dense activations of every unit on the whole token set, the straightforward way."""
    split = run.split(cfg.split)
    ctx = token_set_contexts(split, cfg.n_tokens)
    model = run.model(source.split("/")[0])
    toks = torch.from_numpy(split.contexts(ctx))
    with torch.no_grad():
        x = model.mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp)
        a = run.dictionary(source).encode(x) if "/" in source else x
    return a.numpy(), split.domains(ctx)[:, 1:].reshape(-1), ctx, toks[:, 1:].numpy()


def test_tiny_run_features_against_brute_force(tiny_stats):
    run, cfg, st, ns, out = tiny_stats
    A, dom, ctx, toks = brute_force(run, "A/1", cfg)
    assert st.n_tokens == A.shape[0] >= N_TOK and st.n_units == A.shape[1] == 512
    t = st.table
    np.testing.assert_allclose(t["density"].to_numpy(), (A > 0).mean(0), atol=2 / len(A))
    np.testing.assert_allclose(t["max_act"].to_numpy(), A.max(0), rtol=1e-4, atol=1e-5)
    alive = np.nonzero((A > 0).sum(0) > 20)[0]
    assert len(alive) > 50
    body = run.cfg.model.n_ctx - 1
    for u in alive[:40]:
        us = st.unit(int(u))
        want = np.sort(A[:, u])[::-1][:cfg.top_k]
        got = np.array([e.act for e in us.top])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        for e in us.top[:3] + [x for iv in us.intervals for x in iv["examples"]][:6]:
            k = int(np.searchsorted(ctx, e.context))
            row = toks[k]
            assert e.token_ids[e.center] == row[e.pos - 1]
            # the window's tokens and activations are the context's own
            lo = e.pos - e.center
            np.testing.assert_array_equal(e.token_ids, row[lo - 1:lo - 1 + len(e.token_ids)])
            np.testing.assert_allclose(e.acts, A[k * body + lo - 1:k * body + lo - 1 + len(e.acts), u],
                                       rtol=1e-4, atol=1e-5)
        for iv in us.intervals:
            for e in iv["examples"]:
                assert iv["lo"] <= e.act <= iv["hi"]
        assert us.histogram.total == st.n_tokens
        assert us.histogram.zero == (A[:, u] == 0).sum()
    # proxy / domain scores
    for d_i, d in enumerate(st.domains):
        inside = dom == d_i
        if inside.sum() == 0:
            continue
        np.testing.assert_allclose(t[f"sensitivity_{d}"].to_numpy(), (A[inside] > 0).mean(0), atol=1e-9)
        s = A.sum(0)
        want = A[inside].sum(0) / np.where(s > 0, s, 1)
        np.testing.assert_allclose(t[f"act_share_{d}"].to_numpy()[s > 0], want[s > 0], rtol=1e-3, atol=1e-6)
        for u in alive[:10]:
            want = np.corrcoef(A[:, u], inside.astype(float))[0, 1]
            assert abs(t[f"corr_{d}"].iloc[u] - want) < 1e-3
    assert t["dead"].sum() == ((A > 0).sum(0) == 0).sum()
    # top tokens: the highest mean activation per token among tokens seen ≥ 3 times (sparse.TokenMass, the same
    # definition feature splitting's nodes use)
    flat, V, strs = toks.reshape(-1), run.tokenizer.vocab_size, run.tokenizer.token_strings()
    cnt = np.bincount(flat, minlength=V)
    for u in alive[:20]:
        mean = np.bincount(flat, weights=A[:, u].astype(np.float64), minlength=V) / np.maximum(cnt, 1)
        ids = np.nonzero((cnt >= 3) & (mean > 0))[0]
        assert t["top_tokens"].iloc[u] == [strs[i] for i in ids[np.argsort(-mean[ids], kind="stable")][:5]]
    assert all(t["top_tokens"].iloc[u] == [] for u in np.nonzero((A > 0).sum(0) == 0)[0])


def test_tiny_run_neurons_and_logits(tiny_stats):
    run, cfg, st, ns, out = tiny_stats
    X, dom, ctx, toks = brute_force(run, "A", cfg)
    np.testing.assert_allclose(ns.table["density"].to_numpy(), (X > 0).mean(0), atol=1e-12)
    assert ns.kind == "neuron" and ns.n_units == run.cfg.model.d_mlp
    j = int(np.argmax((X > 0).sum(0)))
    nu = ns.unit(j)
    np.testing.assert_allclose([e.act for e in nu.top], np.sort(X[:, j])[::-1][:cfg.top_k], rtol=1e-5)
    # logit effects against a direct computation through the model's weights
    model = run.model("A")
    sae = run.dictionary("A/1")
    u = int(st.table["count"].idxmax())
    lw = model.ln_final_weight.detach().double().numpy()
    scale = st.meta["ln_scale"]
    r = sae.W_dec_FD[u].detach().double().numpy() @ model.W_out.detach().double().numpy()
    lg = ((r - r.mean()) * lw / scale) @ model.W_U.detach().double().numpy()
    lg -= np.median(lg)
    us = st.unit(u)
    strs = run.tokenizer.token_strings()
    top = np.argsort(-lg)[:cfg.n_logits]
    assert [s for s, _ in us.logits_top] == [strs[i] for i in top]
    np.testing.assert_allclose([v for _, v in us.logits_top], lg[top], rtol=1e-3, atol=1e-4)
    bottom = np.argsort(lg)[:cfg.n_logits]
    np.testing.assert_allclose([v for _, v in us.logits_bottom], lg[bottom], rtol=1e-3, atol=1e-4)
    # the neurons a feature is built from: its largest |decoder weights|
    w = sae.W_dec_FD[u].detach().numpy()
    assert [n for n, _ in us.neurons] == list(np.argsort(-np.abs(w))[:cfg.n_neurons])
    assert 0 < ns.meta["ln_scale"] and np.isfinite(ns.meta["ln_scale"])


def test_resume_after_a_kill_gives_the_same_tables(tiny_stats, monkeypatch):
    from monosemantic.features import passes

    run, cfg, st, ns, out = tiny_stats
    d = out / "resumed"
    monkeypatch.setattr(passes, "_STOP_AFTER_CHUNKS", 1)  # the test hook: stop after one chunk, as a kill would
    with pytest.raises(passes.Interrupted):
        compute_stats(run, "A/1", cfg, progress=False, out_dir=d)
    monkeypatch.setattr(passes, "_STOP_AFTER_CHUNKS", None)
    assert (d / "state.npz").exists() and not (d / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="compute_feature_stats"):
        FeatureStats(d)
    r = compute_feature_stats(run, "A/1", cfg, progress=False, out_dir=d)
    assert not (d / "state.npz").exists()
    cols = ["density", "max_act", "sum_act", "proxy_corr", "top_tokens"]
    assert r.table[cols].equals(st.table[cols])
    assert r.examples(7).drop(columns=[]).equals(st.examples(7))
    # a finished pass with the same fingerprint is reused, not recomputed
    mtime = (d / "units.parquet").stat().st_mtime_ns
    compute_feature_stats(run, "A/1", cfg, progress=False, out_dir=d)
    assert (d / "units.parquet").stat().st_mtime_ns == mtime


def test_bad_input_errors_name_cause_and_fix(tiny_stats):
    run, cfg, st, ns, out = tiny_stats
    with pytest.raises(ConfigError, match="no dictionary 'A/9'"):
        compute_feature_stats(run, "A/9", cfg, progress=False)
    with pytest.raises(ConfigError, match="compute_neuron_stats"):
        compute_feature_stats(run, "A", cfg, progress=False)
    with pytest.raises(IndexError, match="0 … 511"):
        st.unit(512)
    with pytest.raises(FileNotFoundError, match="compute_feature_stats"):
        FeatureStats.load(run, "B/1")  # never computed in the run folder
    with pytest.raises(ConfigError, match="unknown domain"):
        st.find("klingon")


def test_store_in_the_run_folder_and_load_by_id(tiny_run):
    cfg = FeatureStatsConfig(n_tokens=1500, batch_contexts=32)
    st = compute_feature_stats(tiny_run, "A/0", cfg, progress=False)
    assert st.dir == tiny_run.dict_dir("A/0") / "feature_stats"
    assert {p.name for p in st.dir.iterdir()} == {"meta.json", "units.parquet", "examples.parquet"}
    again = FeatureStats.load(tiny_run.root, "A/0")
    assert again.table["count"].equals(st.table["count"])
    assert FeatureStats.exists(tiny_run, "A/0")


def test_prompt_query_matches_direct_encoding(tiny_run):
    text = "In the beginning God created the heaven and the earth.\ndef f(x):\n    return x"
    pa = prompt_activations(tiny_run, "A/1", text)
    tok = tiny_run.tokenizer
    ids = tok.encode(text)
    assert pa.token_ids == ids and pa.tokens == [tok.token_str(i) for i in ids]
    model, sae = tiny_run.model("A"), tiny_run.dictionary("A/1")
    body = tiny_run.cfg.model.n_ctx - 1
    assert len(ids) > body and pa.pieces == -(-len(ids) // body)   # longer than a context: cut into pieces
    with torch.no_grad():
        f = np.concatenate([sae.encode(model.mlp_acts(torch.tensor([[tok.bos_id] + ids[i:i + body]]))[0, 1:]).numpy()
                            for i in range(0, len(ids), body)])
    np.testing.assert_allclose(pa.acts_TU, f, rtol=1e-5, atol=1e-6)
    top = pa.top_units(5)
    assert top == [int(u) for u in np.argsort(-f.max(0), kind="stable")[:5]]
    df = pa.frame(top[:2])
    assert len(df) == 2 * len(ids) and set(df["unit"]) == set(top[:2])
    # long texts are cut into context-sized pieces
    long = prompt_activations(tiny_run, "A", ["word " * 100, "x"])
    assert long[0].pieces > 1 and long[0].acts_TU.shape == (len(tok.encode("word " * 100)), 128)
    with pytest.raises(ConfigError, match="no transformer 'C'"):
        prompt_activations(tiny_run, "C", "x")


def test_correlated_neurons_against_numpy(tiny_run):
    cfg_run = FeatureStatsConfig(n_tokens=2000)
    df = correlated_neurons(tiny_run, "A/1", [3, 10], n_tokens=2000, top=3)
    A, dom, ctx, toks = brute_force(tiny_run, "A/1", cfg_run)
    X, *_ = brute_force(tiny_run, "A", cfg_run)
    for f in (3, 10):
        c = np.array([np.corrcoef(A[:, f], X[:, j])[0, 1] if X[:, j].std() > 0 and A[:, f].std() > 0 else 0
                      for j in range(X.shape[1])])
        c = np.nan_to_num(c)
        sub = df[df.feature == f]
        assert list(sub.neuron) == list(np.argsort(-c)[:3])
        np.testing.assert_allclose(sub["corr"], np.sort(c)[::-1][:3], atol=1e-4)


@pytest.mark.parametrize("kept_codes", [False, True])
def test_example_windows_of_a_topk_dictionary_are_its_own_activations(tiny_run, kept_codes):
    """TopK keeps k of F per token, so a window's activations are ``sae.encode`` of each window token (not the
    unit's ReLU pre-activation, which is what the sampled-dot path of a ReLU dictionary computes) — encoded again,
    or read from the codes the statistics pass kept (``PassCodes``, handed its chunks out of order here)."""
    from monosemantic import DictionaryConfig, make_dictionary
    from monosemantic.features.examples import PassCodes, example_windows
    from monosemantic.sparse import SparseEncoder

    cfg = FeatureStatsConfig(n_tokens=N_TOK, batch_contexts=16)
    split = tiny_run.split(cfg.split)
    ctx = token_set_contexts(split, cfg.n_tokens)
    model = tiny_run.model("A")
    sae = make_dictionary(DictionaryConfig(d_in=model.d_mlp, d_sae=256, kind="topk", options={"k": 4}, seed=3))
    toks = torch.from_numpy(split.contexts(ctx))
    with torch.no_grad():
        f = sae.encode(model.mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp)).numpy()
    rng = np.random.default_rng(0)
    g = np.sort(rng.choice(len(f), 300, replace=False))
    u = rng.integers(0, 256, 300)
    u[:150] = f[g[:150]].argmax(1)    # half the examples at a unit that fires there (the lookup's hits)
    codes = None
    if kept_codes:
        codes, enc = PassCodes(256), SparseEncoder(sae)
        with torch.no_grad():
            x = model.mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp)
        chunks = list(range(0, len(x), 500))
        for c0 in chunks[::-1]:
            r, c, v = enc(x[c0:c0 + 500].clone())
            codes.add(c0, r, c, v)
        codes = codes.finish()
        assert codes.key.numel() == int((f > 0).sum())
        small = PassCodes(256, max_bytes=12 * 100)     # past its budget the cache gives up: the windows encode
        small.add(0, *enc(x[:500].clone()))
        assert small.finish() is None
    t_out, a_out, centre = example_windows(cfg, g, u, ctx, split, model, sae, progress=False, codes=codes)
    assert (a_out[np.arange(150), centre[:150].astype(int)] > 0).all()
    body = split.body
    for i in range(300):
        k, p = divmod(int(g[i]), body)
        for w, off in enumerate(range(-int(centre[i]), a_out.shape[1] - int(centre[i]))):
            if 0 <= p + off < body:
                assert t_out[i, w] == toks[k, p + off + 1]
                assert a_out[i, w] == pytest.approx(f[k * body + p + off, u[i]], abs=1e-5)
    assert (a_out[150:] > 0).mean() < 0.05   # k = 4 of 256: a ReLU of the pre-activations would be ~half positive
