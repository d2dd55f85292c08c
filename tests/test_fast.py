"""The sparse-aware training step (monosemantic.fast) against the dense ReluDictionary.loss + autograd.

Tolerances: loss/mse/sparsity relative error < 1e-5, gradients relative error (‖Δ‖/‖ref‖) < 1e-4, l0 and the fired
mask exact — in fp32 mode *and* bf16 mode (bf16 is only a filter there; values and gradients are fp32).
"""
import math

import pytest
import torch

from monosemantic.config import SAETrainConfig
from monosemantic.fast import bf16_default, fast_loss, fast_supported
from monosemantic.sae import Dictionary, DictionaryConfig, make_dictionary
from monosemantic.sparse import FAST_MIN_FEATURES, bf16_operand, candidates_bf16, encode_sparse
from monosemantic.train_sae import train_dictionary

pytestmark = pytest.mark.usefixtures("one_thread")


MODES = [pytest.param(False, id="fp32"), pytest.param(True, id="bf16")]
PARAMS = ("W_enc_DF", "b_enc_F", "W_dec_FD", "b_dec_D")


def make(D, F, lam=0.01, seed=0, bias=(-0.5, 0.3)):
    sae = make_dictionary(DictionaryConfig(d_in=D, d_sae=F, l1_coefficient=lam, seed=seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec_D.copy_(torch.randn(D, generator=g) * 0.5)
        sae.b_enc_F.copy_(torch.randn(F, generator=g) * bias[1] + bias[0])
    return sae


def run(sae, x, fn, objective=lambda o: o["loss"]):
    for p in sae.parameters():
        p.grad = None
    out = fn(sae, x)
    objective(out).backward()
    return out, {n: getattr(sae, n).grad.detach().clone() for n in PARAMS}


def dense(sae, x):
    return sae.loss(x)


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(sae, x, bf16, objective=lambda o: o["loss"], grad_tol=1e-4):
    od, gd = run(sae, x, dense, objective)
    of, gf = run(sae, x, lambda s, xx: fast_loss(s, xx, bf16=bf16), objective)
    f_dense = od["f_BF"].detach()
    for k in ("loss", "mse", "sparsity"):
        assert of[k].shape == ()
        assert abs(of[k].item() - od[k].item()) <= 1e-5 * max(abs(od[k].item()), 1e-6), k
    assert float(of["l0"]) == pytest.approx(float((f_dense > 0).float().sum(-1).mean()), abs=1e-6)
    assert torch.equal(of["fired_F"], (f_dense > 0).any(0))
    assert of["fired_F"].dtype == torch.bool and of["fired_F"].shape == (sae.d_sae,)
    assert of["bf16"] is bf16
    f = of["f_BF"]
    assert f.layout == torch.sparse_csr and f.shape == f_dense.shape
    assert bool((f.values() > 0).all())
    torch.testing.assert_close(f.to_dense(), f_dense, rtol=1e-5, atol=1e-5)
    for n in PARAMS:
        if gd[n].norm() == 0:
            assert gf[n].norm() == 0, n
        else:
            assert rel(gf[n], gd[n]) < grad_tol, (n, rel(gf[n], gd[n]))
    return of


@pytest.mark.parametrize("bf16", MODES)
@pytest.mark.parametrize("B,D,F", [(256, 64, 300), (64, 16, 37), (3, 5, 7), (1, 1, 1), (200, 32, 1000), (40, 24, 8)])
def test_matches_dense(B, D, F, bf16):
    sae = make(D, F, seed=B + F)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(F)) + sae.b_dec_D.detach()
    check(sae, x, bf16)


@pytest.mark.parametrize("bf16", MODES)
def test_empty_rows_and_a_feature_on_every_row(bf16):
    D, F, B = 16, 45, 32
    sae = make(D, F, bias=(-3.0, 0.1))
    with torch.no_grad():
        sae.b_enc_F[7] = 50.0  # always on
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(3)) + sae.b_dec_D.detach()
    x[:5] = sae.b_dec_D.detach()  # x̄ = 0: only feature 7 is active on these rows
    out = check(sae, x, bf16)
    assert bool(out["fired_F"][7])
    assert (out["f_BF"].to_dense()[:, 7] > 0).all()
    with torch.no_grad():
        sae.b_enc_F[7] = -3.0  # now those rows have no active feature at all
    out = check(sae, x, bf16)
    crow = out["f_BF"].crow_indices()
    assert bool((crow[1:6] - crow[:5] == 0).all())


@pytest.mark.parametrize("bf16", MODES)
def test_nothing_active(bf16):
    sae = make(8, 20, bias=(-100.0, 0.0))
    x = torch.randn(16, 8)
    od, gd = run(sae, x, dense)
    of, gf = run(sae, x, lambda s, xx: fast_loss(s, xx, bf16=bf16))
    assert float(of["l0"]) == 0 and not of["fired_F"].any() and of["f_BF"].values().numel() == 0
    assert of["loss"].item() == pytest.approx(od["loss"].item(), rel=1e-6)
    for n in PARAMS:
        torch.testing.assert_close(gf[n], gd[n], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bf16", MODES)
def test_other_objectives_and_input_grad(bf16):
    """Gradients of mse and sparsity separately (not just loss), and d/dx when x requires grad."""
    sae = make(24, 50)
    x0 = torch.randn(48, 24, generator=torch.Generator().manual_seed(5)) + sae.b_dec_D.detach()
    check(sae, x0, bf16, objective=lambda o: 3.0 * o["mse"] - 0.5 * o["sparsity"] + o["loss"])
    xd = x0.clone().requires_grad_(True)
    xf = x0.clone().requires_grad_(True)
    sae.loss(xd)["loss"].backward()
    fast_loss(sae, xf, bf16=bf16)["loss"].backward()
    assert rel(xf.grad, xd.grad) < 1e-4


def test_empty_batch_behaves_like_dense():
    sae = make(8, 16)
    out = fast_loss(sae, torch.zeros(0, 8))
    assert math.isnan(out["loss"].item()) and out["f_BF"].shape == (0, 16) and not out["fired_F"].any()


def test_noncontiguous_and_no_grad():
    sae = make(16, 40)
    x = torch.randn(16, 40).t()[:, :16] + sae.b_dec_D.detach()
    assert not x.is_contiguous()
    check(sae, x, False)
    with torch.no_grad():
        out = fast_loss(sae, x)
    assert out["loss"].grad_fn is None
    assert out["loss"].item() == pytest.approx(sae.loss(x)["loss"].item(), rel=1e-5)


def _adversarial(kind, B, D, F, g):
    if kind == "coherent":  # near-constant vectors: every rounding error has the same sign
        x = (1.0 + 1e-3 * torch.randn(B, D, generator=g)) * torch.logspace(-3, 3, B)[:, None] / 3.0
        W = (1.0 + 1e-3 * torch.randn(D, F, generator=g)) * torch.logspace(-3, 3, F)[None, :] / 7.0
    else:  # "halfway": every entry halfway between two bf16 numbers (the largest rounding error)
        x = torch.randn(B, D, generator=g).bfloat16().float() * (1 + 2 ** -9)
        W = torch.randn(D, F, generator=g).bfloat16().float() * (1 + 2 ** -9)
    s = x.double() @ W.double()
    row = torch.randint(0, B, (F,), generator=g)
    j = torch.arange(F)
    sign = torch.where(j % 2 == 0, 1.0, -1.0).double()
    scale = x.double().norm(dim=1)[row] * W.double().norm(dim=0)
    b = (-s[row, j] + sign * 1e-5 * scale).float()  # entry (row_j, j) sits ±1e-5·‖x‖‖w‖ from 0
    return x, W, b


@pytest.mark.parametrize("kind", ["coherent", "halfway"])
def test_bf16_filter_is_a_superset_under_adversarial_rounding(kind):
    """Pre-activations a hair above/below 0 where bf16 rounding errors are largest or all of one sign: the bf16
    candidate set must contain every fp32-positive entry, and bf16 mode must pick exactly the fp32 set."""
    g = torch.Generator().manual_seed(0)
    B, D, F = 64, 128, 96
    x, W, b = _adversarial(kind, B, D, F, g)
    pre32 = x @ W + b
    fl = candidates_bf16(x, bf16_operand(W, b)[0])
    cand = torch.zeros(B * F, dtype=torch.bool)
    cand[fl] = True
    assert bool(cand[(pre32 > 0).view(-1)].all())
    naive = (x.bfloat16() @ W.bfloat16()).float() + b
    assert ((naive > 0) != (pre32 > 0)).any()  # the naive bf16 decision does flip some of them

    sae = make_dictionary(DictionaryConfig(d_in=D, d_sae=F, l1_coefficient=0.01))
    with torch.no_grad():
        sae.W_enc_DF.copy_(W)
        sae.b_enc_F.copy_(b)
        sae.b_dec_D.zero_()
    a = fast_loss(sae, x, bf16=False)["f_BF"]
    c = fast_loss(sae, x, bf16=True)["f_BF"]
    assert torch.equal(a.crow_indices(), c.crow_indices()) and torch.equal(a.col_indices(), c.col_indices())
    # the tiny values come from cancelling large dot products: compare them on the scale of the products
    rows = torch.repeat_interleave(torch.arange(B), a.crow_indices().diff())
    scale = x.norm(dim=1)[rows] * W.norm(dim=0)[a.col_indices()]
    assert bool(((a.values() - c.values()).abs() <= 1e-6 * scale).all())


def test_nan_weights_give_nan_loss():
    sae = make(8, 16)
    with torch.no_grad():
        sae.W_enc_DF[0, 0] = float("nan")
    for bf16 in (False, True):
        assert math.isnan(fast_loss(sae, torch.randn(4, 8), bf16=bf16)["loss"].item())


def test_supported_and_bf16_default(monkeypatch):
    sae = make(8, 16)
    assert fast_supported(sae)
    assert not fast_supported(make(8, 16).double())

    class Other(Dictionary):
        kind = "other-test"

        def encode(self, x):
            return torch.relu(self.pre_acts(x)).clamp_max(1.0)

    assert not fast_supported(Other(DictionaryConfig(d_in=8, d_sae=16)))
    monkeypatch.delenv("MONOSEMANTIC_FAST_BF16", raising=False)
    assert bf16_default(512) is False  # small F: fp32 is faster
    assert fast_loss(sae, torch.randn(4, 8))["bf16"] is False
    assert bf16_default(4096) is bf16_default()
    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", "0")
    assert bf16_default(4096) is False
    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", "1")
    assert bf16_default() is True and fast_loss(sae, torch.randn(4, 8))["bf16"] is True


def planted(n=4096, d=32, k=48, active=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(k, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    idx = torch.stack([torch.randperm(k, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 2 + 0.5
    return (coef[:, :, None] * dirs[idx]).sum(1)


@pytest.mark.parametrize("bf16", MODES)
def test_training_trajectory_matches_dense(bf16):
    """50 steps of the training loop (train_dictionary) from the same init on the same batches: with the fast
    path it ends where the dense path ends.  The encoder biases start at a fixed −0.3 rather than at
    ``init_density``: that start puts each bias at a quantile of a sample of these very rows, so some
    pre-activations sit within fp32 rounding of 0 and the bf16 mode's fp32 recompute (another summation order)
    may classify them differently (the module's caveat on ties)."""
    x_all = planted()
    cfg = DictionaryConfig(d_in=32, d_sae=96, l1_coefficient=3e-3, seed=1)
    results = []
    for use_fast in (False, True):
        train = SAETrainConfig(steps=50, batch_size=256, lr=3e-3, warmup_steps=0, resample_at=(), fast=use_fast,
                               bf16=bf16, geometric_median_rows=1024, log_every=1, init_density=None)
        sae = make_dictionary(cfg)
        with torch.no_grad():
            sae.b_enc_F.fill_(-0.3)
        sae = train_dictionary(x_all, sae, train, progress=False)
        paths = {r["path"] for r in sae.train_log if "path" in r}
        assert paths <= ({"dense", "fast-bf16" if bf16 else "fast"} if use_fast else {"dense"})
        assert not use_fast or ("fast-bf16" if bf16 else "fast") in paths  # the loop took the fast kernel
        with torch.no_grad():
            out = sae.loss(x_all[:1024])
            results.append((float(out["mse"]), float((out["f_BF"] > 0).float().sum(-1).mean()),
                            sae.W_dec_FD.detach().clone()))
    (mse_d, l0_d, Wd), (mse_f, l0_f, Wf) = results
    with torch.no_grad():
        init_mse = float(make_dictionary(cfg).loss(x_all[:1024])["mse"])
    assert mse_d < 0.5 * init_mse  # it learned something
    # measured: identical to ~1e-7 (fp32 summation order); the bounds leave ~1000× headroom
    assert mse_f == pytest.approx(mse_d, rel=1e-4)
    assert l0_f == pytest.approx(l0_d, abs=0.05)
    assert rel(Wf, Wd) < 1e-4


def test_plan_step_picks_the_cheaper_exact_path(monkeypatch):
    from monosemantic.fast import BF16_BELOW, DENSE_ABOVE, plan_step

    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", "1")
    assert plan_step(None, 4096) == (False, False)          # first step: a fresh dictionary is half active
    assert plan_step(DENSE_ABOVE + 0.01, 4096) == (False, False)
    assert plan_step(BF16_BELOW / 2, 4096) == (True, True)
    assert plan_step((BF16_BELOW + DENSE_ABOVE) / 2, 4096) == (True, False)  # too many bf16 candidates
    assert plan_step(0.1, 4096, bf16=True) == (True, True)  # an explicit choice wins while fast runs
    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", "0")
    assert plan_step(0.001, 4096) == (True, False)


def test_training_after_an_analysis_under_inference_mode(monkeypatch):
    """Notebook 04's order on the default run: a comparison encodes under ``torch.inference_mode`` (which used to
    leave the cached bf16 scratch buffers as inference tensors), then a dictionary trains in the same process.
    Sizes select the fast kernels (F ≥ FAST_MIN_FEATURES) and the bf16 filter is forced, so the scratch-buffer
    path runs whether or not this CPU has bf16 dot products."""
    monkeypatch.setenv("MONOSEMANTIC_FAST_BF16", "1")
    D, F = 32, FAST_MIN_FEATURES
    x_all = planted(n=2048, d=D)
    cfg = DictionaryConfig(d_in=D, d_sae=F, l1_coefficient=3e-3, seed=1)
    sae = make_dictionary(cfg)
    with torch.inference_mode():
        csr = encode_sparse(sae, x_all[:512])
    f_dense = torch.relu(sae.pre_acts(x_all[:512])).detach()
    assert csr.nnz == int((f_dense > 0).sum())
    with torch.inference_mode():  # the training kernel itself under inference mode, as an analysis might call it
        assert fast_loss(sae, x_all[:256], bf16=True)["bf16"] is True
    trained = train_dictionary(x_all, cfg, SAETrainConfig(steps=4, batch_size=256, bf16=True, log_every=1),
                               progress=False)
    paths = [r["path"] for r in trained.train_log if "path" in r]
    assert "fast-bf16" in paths  # the bf16 filter ran in training, after the inference-mode calls
    out, grads = run(trained, x_all[:256], lambda s, xx: fast_loss(s, xx, bf16=True))
    od, gd = run(trained, x_all[:256], dense)
    assert abs(out["loss"].item() - od["loss"].item()) <= 1e-5 * abs(od["loss"].item())
    for n in PARAMS:
        assert rel(grads[n], gd[n]) < 1e-4, n


# ---- TopK / BatchTopK: dense selection, sparse decoder and backward ------------------------------------------------

@pytest.mark.parametrize("kind,options", [("topk", {"k": 3, "k_aux": 5, "dead_tokens": 10}),
                                          ("topk", {"k": 4}),
                                          ("batchtopk", {"k": 2.5, "k_aux": 4, "dead_tokens": 10})])
@pytest.mark.parametrize("B,D,F", [(64, 24, 80), (5, 3, 7)])
@pytest.mark.parametrize("bf16", MODES)
@pytest.mark.parametrize("shared_aux", [False, True])
def test_topk_fast_step_equals_the_dense_step(kind, options, B, D, F, bf16, shared_aux, monkeypatch):
    """Same loss, mse, aux (on a dead set, so AuxK is on), activations, firing record and gradients — the
    selection in bf16 too (exact: ``sparse.topk_entries``, ``sparse.batch_topk_entries``).  ``shared_aux``: AuxK's
    selection from the main bf16 product (the path of many dead latents, ``AUX_SHARED_MIN_DEAD``) or its own."""
    import monosemantic.fast as fast_mod
    from monosemantic.fast import fast_form

    monkeypatch.setattr(fast_mod, "AUX_SHARED_MIN_DEAD", 1 if shared_aux else 10 ** 9)
    subsets = []
    orig = fast_mod.topk_entries
    monkeypatch.setattr(fast_mod, "topk_entries",
                        lambda *a, **kw: subsets.append(kw.get("subset") is not None) or orig(*a, **kw))

    sae = make_dictionary(DictionaryConfig(d_in=D, d_sae=F, kind=kind, options=options))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.b_enc_F.copy_(0.3 * torch.randn(F, generator=g))
        sae.b_dec_D.copy_(0.3 * torch.randn(D, generator=g))
        sae.tokens_since_fired_F[: F // 3] = 100
    assert fast_supported(sae) and fast_form(sae)["activation"] == kind
    x = torch.randn(B, D, generator=g)
    od, gd = run(sae, x, dense)
    sd = sae._step_stats
    of, gf = run(sae, x, lambda s, xx: fast_loss(s, xx, bf16=bf16))
    sf = sae._step_stats
    assert of["bf16"] is bool(bf16)
    assert options.get("dead_tokens") is None or float(od["aux"]) > 0
    took_shared = bf16 and kind == "topk" and shared_aux and "dead_tokens" in options and options["k"] + 16 < F
    assert any(subsets) is took_shared
    for k in ("loss", "mse", "sparsity", "aux"):
        assert float(of[k]) == pytest.approx(float(od[k]), rel=1e-5, abs=1e-7), k
    f_dense = od["f_BF"].detach()
    torch.testing.assert_close(of["f_BF"].to_dense(), f_dense)
    assert torch.equal(of["fired_F"], (f_dense > 0).any(0)) and torch.equal(sf["fired_F"], sd["fired_F"])
    assert float(of["l0"]) == pytest.approx(float((f_dense > 0).float().sum(-1).mean()))
    if kind == "batchtopk":  # θ's update reads the smallest kept activation: a sampled dot in bf16 mode (an ulp)
        assert float(sf["min_positive"]) == pytest.approx(float(sd["min_positive"]), rel=1e-6)
    else:
        assert "min_positive" not in sf and "min_positive" not in sd
    for n in PARAMS:
        assert rel(gf[n], gd[n]) < 1e-5 if gd[n].norm() > 0 else gf[n].norm() == 0, n


@pytest.mark.parametrize("kind,options", [("topk", {"k": 4}), ("batchtopk", {"k": 4, "threshold_lr": 0.05})])
def test_topk_training_ends_the_same_on_the_fast_and_the_dense_path(kind, options):
    x_all = planted()
    cfg = DictionaryConfig(d_in=32, d_sae=96, kind=kind, options=options, seed=1)
    ends = {}
    for use_fast in (True, False):
        sae = train_dictionary(x_all, cfg, SAETrainConfig(steps=40, batch_size=256, lr=3e-3, fast=use_fast,
                                                          geometric_median_rows=1024), progress=False)
        paths = {r["path"] for r in sae.train_log if "path" in r}
        assert paths == ({"dense", "fast"} if use_fast else {"dense"})   # the first step has no density yet
        ends[use_fast] = sae
    for n in PARAMS:
        assert rel(getattr(ends[True], n).detach(), getattr(ends[False], n).detach()) < 1e-4, n
    assert torch.equal(ends[True].tokens_since_fired_F, ends[False].tokens_since_fired_F)


@pytest.mark.parametrize("case", ["random", "near_ties"])
def test_topk_entries_in_bf16_are_the_fp32_top_k(case):
    """The bf16 candidates + fp32 check pick each row's exact top k.  With near-ties (entries closer together than
    bf16 can tell apart) the check must fail on some rows and send them to the dense path — still exact."""
    from monosemantic.sparse import TOPK_SLACK, topk_entries

    g = torch.Generator().manual_seed(11)
    N, D, F, k = 96, 40, 300, 8
    x = torch.randn(N, D, generator=g)
    W = torch.randn(D, F, generator=g) / D ** 0.5
    b = 0.1 * torch.randn(F, generator=g)
    if case == "near_ties":  # 3k columns share one direction: their pre-activations differ by ~1e-4 relative
        W[:, : 3 * k] = W[:, :1] * (1 + 1e-4 * torch.randn(1, 3 * k, generator=g))
        b[: 3 * k] = 5.0
    pre = x @ W + b
    want = pre.topk(k, dim=-1).indices.sort(-1).values
    fl32, v32, r32 = topk_entries(x, W, b, k)
    fl16, v16, redone = topk_entries(x, W, b, k, bf16_operand(W, b)[0])
    assert r32 == 0
    for fl, v in ((fl32, v32), (fl16, v16)):
        got = (fl % F).view(N, k)
        assert torch.equal(got, want)
        torch.testing.assert_close(v, pre.view(-1)[fl], rtol=1e-5, atol=1e-5)
        assert torch.equal(fl, fl.sort().values)
    assert (redone > 0) == (case == "near_ties") and redone <= N
    assert TOPK_SLACK > 0
    # a second selection over a column subset (AuxK's dead latents) from the same bf16 product: the top k_S of
    # each row among those columns, as flat indices into (N, S); with near-ties inside the subset, via the check
    # (the near-tied columns differ by ~1e-6 relative, where fp32 rounding orders them: compare values there)
    cols_S = torch.cat([torch.arange(0, 3 * k), torch.arange(100, 200)])
    k_S = 4
    (fl_m, v_m, _), (fl_s, v_s, redone_s) = topk_entries(x, W, b, k, bf16_operand(W, b)[0], subset=(cols_S, k_S))
    assert torch.equal(fl_m, fl16) and torch.equal(v_m, v16)
    pre_S = pre[:, cols_S]
    assert fl_s.shape == (N * k_S,) and torch.equal(fl_s, fl_s.sort().values)
    assert torch.equal((fl_s // len(cols_S)).view(N, k_S), torch.arange(N)[:, None].expand(N, k_S))
    torch.testing.assert_close(v_s, pre_S.reshape(-1)[fl_s], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_s.view(N, k_S).sort(-1, descending=True).values, pre_S.topk(k_S, dim=-1).values,
                               rtol=1e-5, atol=1e-5)
    if case == "random":
        want_S = pre_S.topk(k_S, dim=-1).indices.sort(-1).values
        assert torch.equal((fl_s % len(cols_S)).view(N, k_S), want_S)
    assert (redone_s > 0) == (case == "near_ties")
    with pytest.raises(ValueError, match="shares the bf16 product"):
        topk_entries(x, W, b, k, subset=(cols_S, k_S))


def test_sparse_encoder_of_a_topk_dictionary_equals_its_dense_encode():
    from monosemantic.sparse import SparseEncoder, topk_encoder_k

    sae = make_dictionary(DictionaryConfig(d_in=24, d_sae=200, kind="topk", options={"k": 5}, seed=2))
    bt = make_dictionary(DictionaryConfig(d_in=24, d_sae=200, kind="batchtopk", options={"k": 5}, seed=2))
    assert topk_encoder_k(sae) == 5 and topk_encoder_k(bt) is None   # BatchTopK encodes with its threshold
    with torch.no_grad():
        sae.b_enc_F.copy_(0.2 * torch.randn(200))
    x = torch.randn(70, 24)
    want = sae.encode(x).detach()
    for bf16 in (False, True):
        rows, cols, vals = SparseEncoder(sae, bf16=bf16)(x)
        got = torch.zeros(70, 200)
        got[rows, cols] = vals
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert bool((vals > 0).all())
