"""The one sparse-encoding module: the entries it finds equal the dense encoder's, in both filter modes."""
import numpy as np
import pytest
import torch

from monosemantic import DictionaryConfig, make_dictionary
from monosemantic.sparse import SparseEncoder, batch_topk_indices, bf16_default, encode_sparse, positive_entries


@pytest.mark.parametrize("bf16", [False, True])
def test_sparse_encoder_matches_dense_encode(bf16):
    torch.manual_seed(0)
    sae = make_dictionary(DictionaryConfig(d_in=48, d_sae=300, seed=1))
    with torch.no_grad():
        sae.b_enc_F.uniform_(-2.5, -0.8)
        sae.b_dec_D.uniform_(-0.1, 0.1)
    x = torch.relu(torch.randn(1000, 48))
    enc = SparseEncoder(sae, bf16=bf16)
    assert enc.bf16 == bf16
    rows, cols, vals = enc(x)
    f = sae.encode(x).detach()
    nz = torch.nonzero(f > 0)
    assert 0.005 < len(nz) / f.numel() < 0.2
    np.testing.assert_array_equal(rows.numpy(), nz[:, 0].numpy())
    np.testing.assert_array_equal(cols.numpy(), nz[:, 1].numpy())
    np.testing.assert_allclose(vals.numpy(), f[nz[:, 0], nz[:, 1]].numpy(), rtol=1e-4, atol=1e-5)


def test_sparse_encoder_default_follows_bf16_default(monkeypatch):
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=16, seed=1))
    for env, want in (("0", False), ("1", True)):
        monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", env)
        assert SparseEncoder(sae).bf16 is want is bf16_default()
    assert SparseEncoder(sae, dense=True).bf16 is False and not SparseEncoder(sae, dense=True).linear


@pytest.mark.parametrize("kernel", ["auto", "dense", "fast"])
def test_encode_sparse_kernels_agree_on_empty_and_full_inputs(kernel):
    sae = make_dictionary(DictionaryConfig(d_in=16, d_sae=64, seed=2))
    x = torch.randn(37, 16)
    f = encode_sparse(sae, x, chunk_elems=64 * 5, kernel=kernel)
    dense = sae.encode(x).detach().numpy()
    assert f.shape == (37, 64) and f.nnz == int((dense > 0).sum())
    np.testing.assert_allclose(f.toarray(), dense, rtol=1e-5, atol=1e-6)
    assert encode_sparse(sae, x[:0], kernel=kernel).shape == (0, 64)


@pytest.mark.parametrize("case", ["default_size", "one_row_holds_the_batch", "few_positives", "n_past_the_end"])
def test_batch_topk_indices_is_the_full_sort_s_set(case):
    """BatchTopK's selection (candidates per row, then a threshold) keeps exactly the n largest of the whole batch,
    including when one row holds more of them than its candidates and when the tail is zeros."""
    g = torch.Generator().manual_seed(0)
    B, F, n = 4096, 4096, 16 * 4096
    acts = (torch.randn(B, F, generator=g) * 0.5 - 1.0).relu()
    if case == "one_row_holds_the_batch":
        B, F, n = 64, 512, 64 * 8
        acts = torch.rand(B, F, generator=g) * 0.1
        acts[3] += 1.0  # row 3's 512 entries are the batch's largest: its 16 candidates are far too few
    elif case == "few_positives":
        B, F, n = 64, 512, 64 * 8
        acts = torch.zeros(B, F)
        acts[torch.arange(64), torch.arange(64)] = torch.rand(64, generator=g) + 0.1   # 64 positive of n 512
    elif case == "n_past_the_end":
        B, F, n = 8, 16, 1000
        acts = torch.rand(B, F, generator=g)
    idx = batch_topk_indices(acts, n)
    n_eff = min(n, acts.numel())
    assert idx.shape == (n_eff,) and idx.unique().numel() == n_eff
    expect = acts.flatten().topk(n_eff).values
    got = acts.flatten()[idx].sort(descending=True).values
    assert torch.equal(got, expect)                       # the same multiset of values: the n largest
    if case == "one_row_holds_the_batch":
        assert (idx // F == 3).sum() == F                 # all of row 3, not only its candidates
    if case == "few_positives":
        assert int((acts.flatten()[idx] > 0).sum()) == 64


def test_positive_entries_of_a_dense_matrix():
    x = torch.tensor([[0.0, 1.5, -1.0], [2.0, 0.0, 0.25]])
    rows, cols, vals = positive_entries(x)
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [1, 0, 2] and vals.tolist() == [1.5, 2.0, 0.25]


def test_token_mass_top_tokens_match_brute_force_whatever_the_chunking_and_checkpoints():
    # the one definition of a unit's top tokens: highest mean activation per token among tokens seen ≥ 3 times
    from monosemantic.sparse import TOP_TOKEN_MIN_COUNT, TokenMass

    rng = np.random.default_rng(0)
    N, U, V = 3000, 6, 50
    tok = rng.integers(0, V, N)
    A = np.where(rng.random((N, U)) < 0.1, rng.random((N, U)), 0.0)
    A[:, 0] = 0.0                               # unit 0 never fires: no top tokens
    A[tok == 7, 1] = 5.0                        # unit 1 is the token-7 unit
    rare = np.nonzero(tok == 11)[0][:1]
    tok[tok == 11] = 12
    tok[rare] = 11                              # token 11 occurs once: big activation, still not a top token
    A[rare, 2] = 100.0
    cnt = np.bincount(tok, minlength=V)
    want = []
    for u in range(U):
        mean = np.bincount(tok, weights=A[:, u], minlength=V) / np.maximum(cnt, 1)
        ids = np.nonzero((cnt >= TOP_TOKEN_MIN_COUNT) & (mean > 0))[0]
        want.append(ids[np.argsort(-mean[ids], kind="stable")][:4].tolist())
    assert want[0] == [] and want[1][0] == 7 and 11 not in want[2]

    def feed(m, lo, hi, step):
        for a in range(lo, hi, step):
            blk = A[a:min(a + step, hi)]
            r, c = np.nonzero(blk)
            m.update(tok[a:a + len(blk)], r, c, blk[r, c])

    one = TokenMass(U, V)
    feed(one, 0, N, N)
    sparse = TokenMass(U, V, flush_entries=37)   # the sparse form, with many coalescing flushes
    sparse.DENSE_CELLS = 0
    sparse.__init__(U, V, flush_entries=37)
    assert one.dense is not None and sparse.dense is None
    feed(sparse, 0, 1234, 101)
    resumed = TokenMass(U, V)                    # a checkpoint of the sparse form resumed in the dense one
    resumed.load_state_dict({k: v.copy() for k, v in sparse.state_dict().items()})
    feed(resumed, 1234, N, 333)
    feed(sparse, 1234, N, 333)
    for m in (one, resumed, sparse):
        assert [t.tolist() for t in m.top(4)] == want
        np.testing.assert_array_equal(m.count, cnt)
    with pytest.raises(ValueError, match="expected"):
        TokenMass(U, V + 1).load_state_dict(one.state_dict())
    # the default run's largest, A/2's 16,384 features over its 4,096-token vocabulary, takes the dense form
    assert TokenMass(16384, 4096).dense is not None and TokenMass(16384, 4097).dense is None


@pytest.mark.parametrize("bf16", ["0", "1"])
def test_encode_sparse_auto_takes_topk_fast_path_and_matches_dense(monkeypatch, bf16):
    """A TopK dictionary as wide as the default's A/1 goes through ``topk_entries`` (not its dense ``encode``):
    the default run's compare and splitting stages encode through this."""
    import monosemantic.sparse as S
    from monosemantic.sparse import FAST_MIN_FEATURES

    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", bf16)
    torch.manual_seed(0)
    sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=FAST_MIN_FEATURES, kind="topk", seed=3,
                                           l1_coefficient=0.0, options={"k": 8}))
    x = torch.relu(torch.randn(300, 32))
    calls = []
    orig = S.topk_entries
    monkeypatch.setattr(S, "topk_entries", lambda *a, **k: calls.append(1) or orig(*a, **k))
    f = encode_sparse(sae, x)
    assert calls, "auto did not pick the TopK fast path"
    dense = sae.encode(x).detach().numpy()
    assert f.shape == dense.shape and f.nnz == int((dense > 0).sum()) and 0 < f.nnz <= 8 * 300
    np.testing.assert_allclose(f.toarray(), dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("theta", [0.0, 0.35, 1.2])
def test_batchtopk_inference_goes_through_the_threshold_path_and_matches_dense(bf16, theta):
    """BatchTopK's inference, ReLU(pre)·1[pre > θ], is the ReLU kernel with the test pre > θ
    (``sparse.threshold_encoder``): the same entries as its dense ``encode``, at θ = 0 (before training) too —
    the statistics, compare and splitting passes of a BatchTopK run encode through it."""
    from monosemantic.sparse import FAST_MIN_FEATURES, threshold_encoder

    torch.manual_seed(1)
    sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=FAST_MIN_FEATURES, kind="batchtopk", seed=3,
                                           l1_coefficient=0.0, options={"k": 8}))
    with torch.no_grad():
        sae.b_enc_F.uniform_(-1.0, 0.2)
        sae.threshold.fill_(theta)
    assert threshold_encoder(sae) == pytest.approx(theta)
    x = torch.relu(torch.randn(400, 32))
    enc = SparseEncoder(sae, bf16=bf16)
    assert enc.linear and enc.bf16 == bf16 and enc.topk is None
    rows, cols, vals = enc(x)
    dense = sae.encode(x).detach()
    nz = torch.nonzero(dense > 0)
    assert 0.002 < len(nz) / dense.numel() < 0.5
    np.testing.assert_array_equal(rows.numpy(), nz[:, 0].numpy())
    np.testing.assert_array_equal(cols.numpy(), nz[:, 1].numpy())
    np.testing.assert_allclose(vals.numpy(), dense[nz[:, 0], nz[:, 1]].numpy(), rtol=1e-5, atol=1e-6)
    assert bool((vals > theta).all())
    f = encode_sparse(sae, x)   # "auto" at this width takes the same path
    assert f.nnz == len(nz)
    np.testing.assert_allclose(f.toarray(), dense.numpy(), rtol=1e-5, atol=1e-6)
    # a subclass that changes its encode is not a threshold encoder: it gets the dense path
    from monosemantic.kinds import BatchTopKDictionary

    class Odd(BatchTopKDictionary):
        def encode(self, x_BD):
            return super().encode(x_BD) * 2

    odd = Odd.__new__(Odd)
    odd.__dict__ = sae.__dict__
    assert threshold_encoder(odd) is None and not SparseEncoder(odd).linear


@pytest.mark.parametrize("case", ["random", "crowded_rows", "few_positives"])
def test_batch_topk_entries_from_the_bf16_product_are_the_batch_s_top_n(case):
    """BatchTopK's training selection from per-row bf16 candidates (``sparse.batch_topk_entries``): the same n
    entries as ``batch_topk_indices`` over the dense fp32 ReLU(pre), with their pre-activations — including rows
    that hold more of the batch's top n than their 3n/B candidates (recomputed densely) and a zero tail (the
    dense fallback)."""
    from monosemantic.sparse import batch_topk_entries, bf16_operand

    g = torch.Generator().manual_seed(5)
    N, D, F, n = 256, 48, 600, 256 * 6
    x = torch.randn(N, D, generator=g)
    W = torch.randn(D, F, generator=g) / D ** 0.5
    b = 0.2 * torch.randn(F, generator=g) - 0.5
    if case == "crowded_rows":
        x[[7, 100]] *= 6.0   # two rows whose entries outrank most of the batch's
    if case == "few_positives":
        b = b - 4.0
    pre = x @ W + b
    want = batch_topk_indices(pre.relu(), n).sort().values
    for Wa in (None, bf16_operand(W, b)[0]):
        fl, v = batch_topk_entries(x, W, b, n, Wa)
        assert torch.equal(fl, fl.sort().values) and fl.unique().numel() == n
        torch.testing.assert_close(v, pre.view(-1)[fl], rtol=1e-5, atol=1e-5)
        if case == "few_positives":   # fewer than n positive: every positive one, then zeros (any of them)
            pos = (pre.view(-1) > 0).nonzero().view(-1)
            assert len(pos) < n and bool(torch.isin(pos, fl).all())
        else:
            assert torch.equal(fl, want)
    if case == "crowded_rows":
        per_row = torch.bincount(want // F, minlength=N)
        assert int(per_row.max()) > 3 * n // N   # the case is what it says: a row beyond its 3n/N candidates


def test_batch_topk_entries_keeps_n_when_the_dense_recompute_puts_the_threshold_entry_an_ulp_lower(monkeypatch):
    """The candidate that sets t is a sampled dot; a crowded row's dense product sums in another order and may
    put that entry just below t.  The pool must still hold n entries (it once held n − 1 and topk raised on the
    default run's A/2).  Forced here: every row crowded (an infinite bound is a valid one) and the sampled dots
    a relative 2⁻²⁰ high."""
    import monosemantic.sparse as S

    g = torch.Generator().manual_seed(8)
    N, D, F, n = 32, 32, 400, 32 * 4
    x = torch.eye(N, D)                                   # pre = W + b exactly, in any summation order
    W = 0.01 * torch.rand(D, F, generator=g)              # small positive entries everywhere …
    for i in range(N):                                    # … and exactly 4 large ones per row: the batch's top n
        W[i, torch.randperm(F, generator=g)[:4]] = 1 + torch.rand(4, generator=g)
    b = torch.zeros(F)
    pre = x @ W + b
    want = batch_topk_indices(pre.relu(), n).sort().values
    orig_cand, orig_dots = S._bf16_row_candidates, S.sampled_dots
    monkeypatch.setattr(S, "_bf16_row_candidates",
                        lambda *a: (lambda j, s, sub: (j, torch.full_like(s, float("inf")), sub))(*orig_cand(*a)))
    monkeypatch.setattr(S, "sampled_dots", lambda *a: orig_dots(*a) * (1 + 2.0 ** -20))
    fl, v = S.batch_topk_entries(x, W, b, n, S.bf16_operand(W, b)[0])
    assert fl.numel() == n and torch.equal(fl, want)
    torch.testing.assert_close(v, pre.view(-1)[fl], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_april2024_encodes_through_the_relu_kernels_without_subtracting_b_dec(bf16):
    """april2024's pre-activation is x W_enc + b_enc (no b_dec subtraction): the base class computes it
    (``input_offset_D`` is zero), so ``linear_encoder`` holds and the sparse kernels give its dense ``encode`` —
    with a b_dec far from zero, which a kernel that subtracted it would get wrong."""
    from monosemantic.sparse import linear_encoder

    torch.manual_seed(2)
    sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=2048, l1_coefficient=4e-3, recipe="april2024", seed=4))
    with torch.no_grad():
        sae.b_enc_F.uniform_(-0.6, 0.0)
        sae.b_dec_D.fill_(3.0)
    assert linear_encoder(sae) and float(sae.input_offset_D.abs().max()) == 0.0
    x = torch.relu(torch.randn(500, 32))
    dense = sae.encode(x).detach()
    torch.testing.assert_close(dense, torch.relu(x @ sae.W_enc_DF.detach() + sae.b_enc_F.detach()))
    rows, cols, vals = SparseEncoder(sae, bf16=bf16)(x)
    nz = torch.nonzero(dense > 0)
    assert 0.01 < len(nz) / dense.numel() < 0.6
    np.testing.assert_array_equal(rows.numpy(), nz[:, 0].numpy())
    np.testing.assert_array_equal(cols.numpy(), nz[:, 1].numpy())
    np.testing.assert_allclose(vals.numpy(), dense[nz[:, 0], nz[:, 1]].numpy(), rtol=1e-4, atol=1e-5)
