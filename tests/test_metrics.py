"""Metrics on hand-computed cases, and the evaluation over a real (tiny) run."""
import numpy as np
import pytest
import torch

from monosemantic import DictionaryConfig, EvalConfig, make_dictionary
from monosemantic.metrics import density_histogram, evaluate_dictionary, fvu, l0, loss_recovered


def test_fvu_hand_computed():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])          # mean (2, 1); total SS = 1+1+1+1 = 4
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 2.0]])      # residual SS = 1
    assert fvu(x, x_hat) == pytest.approx(0.25)
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)


def test_loss_recovered_hand_computed():
    assert loss_recovered(clean=2.0, zero=4.0, spliced=2.5) == pytest.approx(0.75)
    assert loss_recovered(clean=2.0, zero=4.0, spliced=4.0) == 0.0
    assert loss_recovered(clean=2.0, zero=4.0, spliced=2.0) == 1.0
    assert np.isnan(loss_recovered(2.0, 2.0, 2.0))


def test_l0_hand_computed():
    f = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert l0(f) == pytest.approx(1.0)


def test_density_histogram_counts():
    d = np.array([0.0, 0.0, 1e-3, 1e-3, 0.1, 2e-7])
    h = density_histogram(d, bins=8, lo=-8, hi=0)
    assert h["dead"] == 2 and sum(h["counts"]) == 4
    assert h["counts"][5] == 2 and h["counts"][7] == 1 and h["counts"][1] == 1  # log10 bins of width 1


def _identity_dictionary(d):
    sae = make_dictionary(DictionaryConfig(d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc_DF.copy_(torch.eye(d))
        sae.W_dec_FD.copy_(torch.eye(d))
        sae.b_enc_F.zero_()
        sae.b_dec_D.zero_()
    return sae


def test_identity_dictionary_on_real_model_is_perfect(tiny_run):
    """MLP activations are post-ReLU (≥ 0), so the identity dictionary reconstructs them exactly."""
    model = tiny_run.model("A")
    split = tiny_run.split("val")
    m = evaluate_dictionary(_identity_dictionary(model.d_mlp), model, split, EvalConfig(contexts=16), progress=False)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10) and m["mse"] == pytest.approx(0.0, abs=1e-10)
    assert m["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert m["loss_spliced"] == pytest.approx(m["loss_clean"], abs=1e-5)
    assert m["loss_zero_ablated"] > m["loss_clean"]
    # the identity's L0 is the number of neurons firing per token; density = each neuron's firing rate
    from monosemantic.metrics import neuron_density
    nd = neuron_density(model, split, EvalConfig(contexts=16))
    assert m["l0"] == pytest.approx(nd.sum(), rel=1e-6)
    assert m["tokens"] == 16 * (tiny_run.cfg.model.n_ctx - 1)
    assert m["dead"] == int((nd == 0).sum())


@pytest.mark.parametrize("kind", ["relu", "topk"])
def test_evaluation_equals_the_dense_forward(tiny_run, kind):
    """On a CPU the evaluation encodes sparsely (``SparseEncoder``) and decodes k of F, once per batch, and
    splices that reconstruction: MSE, L0, density and the spliced loss equal the dense ``sae(x)`` computation."""
    from monosemantic.tokensets import eval_contexts

    model, split = tiny_run.model("A"), tiny_run.split("val")
    opts = {"options": {"k": 8}} if kind == "topk" else {}
    sae = make_dictionary(DictionaryConfig(d_in=model.d_mlp, d_sae=300, kind=kind, seed=4, **opts))
    with torch.no_grad():
        sae.b_enc_F.copy_(torch.linspace(-0.5, 0.2, 300))
    cfg = EvalConfig(contexts=8, batch_contexts=4)
    m = evaluate_dictionary(sae, model, split, cfg, progress=False)
    toks = torch.from_numpy(split.contexts(eval_contexts(split, cfg.contexts)))
    with torch.no_grad():
        x = model.mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp)
        x_hat, f = sae(x)

        def splice(a):
            out = a.clone()
            out[:, 1:] = sae(a[:, 1:].reshape(-1, a.shape[-1]))[0].reshape(a.shape[0], -1, a.shape[-1])
            return out
        spliced = float(model.loss_spliced(toks, splice))
    assert m["mse"] == pytest.approx(float((x - x_hat).pow(2).mean()), rel=1e-5)
    assert m["l0"] == pytest.approx(float((f > 0).sum(-1).float().mean()), rel=1e-6)
    assert m["dead"] == int(((f > 0).sum(0) == 0).sum()) and 0 < m["l0"] < 300
    assert m["loss_spliced"] == pytest.approx(spliced, rel=1e-5)


def test_zero_dictionary_recovers_nothing(tiny_run):
    model = tiny_run.model("A")
    sae = _identity_dictionary(model.d_mlp)
    with torch.no_grad():
        sae.b_enc_F.fill_(-1e6)   # nothing fires → x̂ = b_dec = 0 → the MLP output is W_out·0 + b_out
        sae.W_dec_FD.zero_()
    m = evaluate_dictionary(sae, model, tiny_run.split("val"), EvalConfig(contexts=8), progress=False)
    assert m["l0"] == 0 and m["dead"] == model.d_mlp and m["dead_fraction"] == 1.0
    assert m["fvu"] > 0.99


def test_store_density_counts_firing_rows_of_the_store(tiny_run):
    """Density over the activation store (the sparse, bf16-filtered encoder) equals the dense count, and the
    pipeline's metrics use it: dead + ultralow come from more tokens than the evaluation split holds."""
    from monosemantic.metrics import store_density

    store = tiny_run.store("A")
    sae = make_dictionary(DictionaryConfig(d_in=store.d, d_sae=256, seed=3))
    with torch.no_grad():
        sae.b_enc_F.copy_(torch.linspace(-3.0, 0.5, 256))  # from never to often
    rows = min(3000, len(store))
    dens, n = store_density(sae, store, rows)
    assert n == rows
    xs, got = [], 0
    for i in range(len(store.shards)):
        a = torch.from_numpy(np.asarray(store.shard(i)[0], dtype=np.float32))
        xs.append(a[:rows - got])
        got += len(xs[-1])
        if got >= rows:
            break
    x = torch.cat(xs)
    with torch.no_grad():
        want = (sae.encode(x) > 0).double().mean(0).numpy()
    np.testing.assert_allclose(dens, want, atol=1.5 / rows)  # fp32 summation order may flip a tie
    assert (dens == 0).any() and (dens > 0.05).any()
    m = evaluate_dictionary(sae, tiny_run.model("A"), tiny_run.split("val"), EvalConfig(contexts=8, density_rows=rows),
                            progress=False, store=store)
    assert m["density_source"] == "store" and m["density_tokens"] == rows
    assert m["dead"] == int((dens == 0).sum())
    m2 = evaluate_dictionary(sae, tiny_run.model("A"), tiny_run.split("val"), EvalConfig(contexts=8), progress=False)
    assert m2["density_source"] == "eval" and m2["density_tokens"] == m2["tokens"]


def test_density_modes_finds_the_valley_of_a_bimodal_histogram():
    from monosemantic.metrics import density_modes

    rng = np.random.default_rng(0)
    low, high = 10 ** rng.normal(-4.2, 0.2, 1200), 10 ** rng.normal(-1.8, 0.4, 500)
    m = density_modes(np.concatenate([low, high, np.zeros(30)]))  # silent units are left out
    assert m["bimodal"] and m["low"] == 1200 and m["high"] == 500
    assert -3.6 < m["log10_threshold"] < -2.6 and m["ashman_d"] > 5
    assert m["low_mean_log10"] == pytest.approx(-4.2, abs=0.05)
    uni = density_modes(10 ** rng.normal(-3, 0.5, 2000))
    assert not uni["bimodal"] and uni["valley"] > 0.5
    flat = density_modes(10 ** rng.uniform(-5, -1, 2000))
    assert not flat["bimodal"]
    assert m["valley"] < 0.2
    assert density_modes(np.full(10, 0.01)) is None  # too few to say
    # a small low mode beside a broad main one (Otsu would halve the main mode instead)
    small = density_modes(np.concatenate([10 ** rng.normal(-2.3, 0.5, 3850), 10 ** rng.normal(-4.5, 0.25, 246)]))
    assert small["bimodal"] and abs(small["low"] - 246) <= 5
    one = density_modes(np.r_[np.full(49, 1e-2), 1e-5])  # a single outlier is not a mode
    assert not one["bimodal"]
    same = density_modes(np.full(40, 1e-3))
    assert not same["bimodal"] and same["high"] == 40
