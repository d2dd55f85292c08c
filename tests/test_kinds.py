"""TopK, BatchTopK and JumpReLU dictionaries: forward math, training through the one trainer, their kind-specific
state (dead-latent counters, the BatchTopK threshold, JumpReLU thresholds), persistence and option errors."""
import json

import pytest
import torch

import monosemantic.kinds as kinds
from monosemantic import (ConfigError, DictionaryConfig, SAETrainConfig, available_kinds, make_dictionary,
                          train_dictionary)
from monosemantic.io import read_jsonl
from monosemantic.sae import Dictionary

from test_sae import Crash, crashing_source, planted


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: a second thread only contends


# options that make each kind train well on `planted` data (coefficients 0.5–2.5 along unit directions)
RECIPES = {
    "relu": dict(options={}, l1_coefficient=3e-2),
    "topk": dict(options={"k": 2, "dead_tokens": 4096}, l1_coefficient=0.0),
    "batchtopk": dict(options={"k": 2, "dead_tokens": 4096}, l1_coefficient=0.0),
    "jumprelu": dict(options={"threshold_init": 0.3, "bandwidth": 0.2}, l1_coefficient=1e-2),
}


def _cfg(kind, d_in=32, d_sae=64, **kw):
    recipe = {**RECIPES.get(kind, {"options": {}}), **kw}
    return DictionaryConfig(d_in=d_in, d_sae=d_sae, kind=kind, **recipe)


def test_kinds_are_registered_and_relu_stays_default():
    assert {"relu", "topk", "batchtopk", "jumprelu"} <= set(available_kinds())
    assert DictionaryConfig().kind == "relu"
    assert type(make_dictionary(_cfg("topk"))) is kinds.TopKDictionary


def test_importing_sae_alone_registers_every_builtin_kind_without_an_import_circle():
    import subprocess
    import sys
    from pathlib import Path

    # a fresh interpreter: importing only monosemantic.sae must make every kind available (the package's
    # __init__ imports the kind modules) ...
    code = ("from monosemantic.sae import available_kinds, make_dictionary, DictionaryConfig; "
            "print(sorted(available_kinds())); "
            "print(type(make_dictionary(DictionaryConfig(d_in=4, d_sae=8, kind='jumprelu'))).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("['batchtopk',") and "'topk']" in out[-2] and out[-1] == "JumpReLUDictionary"
    # ... and sae.py itself imports no kind module (the circle the registry module breaks)
    src = (Path(__file__).resolve().parents[1] / "lib" / "sae.py").read_text()
    assert "import kinds" not in src and "from .kinds" not in src


def test_a_kind_registered_elsewhere_is_validated_and_built_through_the_registry():
    from monosemantic.registry import _KINDS, kind_class
    from monosemantic.sae import register_kind

    @register_kind("test-scaled-relu")
    class Scaled(Dictionary):
        @classmethod
        def validate_options(cls, cfg):
            if set(cfg.options) - {"scale"}:
                raise ConfigError("only option scale")

        def encode(self, x_BD):
            return self.cfg.options.get("scale", 1.0) * super().encode(x_BD)

    try:
        assert "test-scaled-relu" in available_kinds() and kind_class("test-scaled-relu") is Scaled
        sae = make_dictionary(DictionaryConfig(d_in=4, d_sae=8, kind="test-scaled-relu", options={"scale": 2.0}))
        assert type(sae) is Scaled and sae.kind == "test-scaled-relu"
        with pytest.raises(ConfigError, match="only option scale"):
            DictionaryConfig(d_in=4, d_sae=8, kind="test-scaled-relu", options={"k": 1}).validate()
    finally:
        del _KINDS["test-scaled-relu"]
    with pytest.raises(ConfigError, match="unknown dictionary kind 'test-scaled-relu'; choose one of"):
        DictionaryConfig(kind="test-scaled-relu").validate()


# ---- forward math ---------------------------------------------------------------------------------------------

def _randomise(sae):
    with torch.no_grad():
        sae.b_dec_D.uniform_(-0.2, 0.2)
        sae.b_enc_F.uniform_(-0.2, 0.2)
    return sae


def test_topk_forward_math_and_l0_exactly_k():
    sae = _randomise(make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="topk", options={"k": 5})))
    x = torch.rand(200, 8)
    pre = (x - sae.b_dec_D) @ sae.W_enc_DF + sae.b_enc_F
    f = sae.encode(x)
    top = pre.topk(5, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    assert torch.equal(f, expect)
    # L0 per token: exactly k, except where fewer than k pre-activations are positive
    l0 = (f > 0).sum(-1)
    assert torch.equal(l0, torch.clamp((pre > 0).sum(-1), max=5))
    assert (l0 == 5).float().mean() > 0.5
    out = sae.loss(x)
    assert torch.allclose(out["mse"], ((f @ sae.W_dec_FD + sae.b_dec_D - x) ** 2).mean())
    assert torch.allclose(out["loss"], out["mse"])  # nothing is dead yet: no auxiliary term
    assert torch.allclose(sae.W_enc_DF, make_dictionary(sae.cfg).W_dec_FD.T)  # encoder init = decoder transpose


def test_batchtopk_train_time_keeps_k_times_batch_and_inference_uses_threshold():
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="batchtopk", options={"k": 3}))
    x = torch.rand(64, 8)
    pre = sae.pre_acts(x)
    f_train = sae.loss(x)["f_BF"]
    assert int((f_train > 0).sum()) == min(3 * 64, int((pre > 0).sum()))
    kept = pre.relu().flatten().topk(3 * 64).values
    assert torch.allclose(f_train[f_train > 0].sort().values, kept[kept > 0].sort().values)
    # per-token counts vary (that is the point of BatchTopK)
    assert (f_train > 0).sum(-1).unique().numel() > 1
    # inference: a per-token JumpReLU with the one shared threshold θ
    with torch.no_grad():
        sae.threshold.fill_(0.25)
    assert torch.equal(sae.encode(x), pre.relu() * (pre > 0.25))
    assert torch.equal(sae.encode(x[:5]), sae.encode(x)[:5])  # independent of the rest of the batch


def test_batchtopk_threshold_is_a_running_average_of_the_minimum_positive_activation():
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="batchtopk", options={"k": 2, "threshold_lr": 0.1}))
    assert float(sae.threshold) == 0.0
    mins = []
    for i in range(3):
        f = sae.loss(torch.rand(50, 8) + i)["f_BF"]
        mins.append(float(f[f > 0].min().detach()))
        sae.after_optimizer_step()
    expect = mins[0]                       # the first step sets θ (no bias towards the initial 0)
    for m in mins[1:]:
        expect = 0.9 * expect + 0.1 * m
    assert float(sae.threshold) == pytest.approx(expect, rel=1e-5)
    assert int(sae.threshold_updates) == 3
    sae.loss(torch.rand(50, 8) + 10)       # a loss without an optimiser step changes nothing
    assert float(sae.threshold) == pytest.approx(expect, rel=1e-5)


def test_jumprelu_forward_math():
    sae = _randomise(make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="jumprelu", l1_coefficient=0.1,
                                                      options={"threshold_init": 0.1})))
    with torch.no_grad():
        sae.log_threshold_F.uniform_(-4, 0)
    x = torch.rand(100, 8)
    pre = (x - sae.b_dec_D) @ sae.W_enc_DF + sae.b_enc_F
    theta = sae.log_threshold_F.exp()
    f = pre * (pre > theta)
    assert torch.equal(sae.encode(x), f)
    out = sae.loss(x)
    assert torch.allclose(out["f_BF"], f)
    x_hat = f @ sae.W_dec_FD + sae.b_dec_D
    l0 = (pre > theta).float().sum(-1).mean()
    assert torch.allclose(out["loss"], ((x_hat - x) ** 2).mean() + 0.1 * l0)
    assert float(out["sparsity"]) == pytest.approx(float(l0))


# ---- JumpReLU straight-through estimators ----------------------------------------------------------------------

def test_jumprelu_pseudo_derivatives_are_the_papers():
    eps = 0.1
    z = torch.tensor([[0.47, 0.5, 0.93], [0.54, 0.1, 0.97], [0.2, 0.9, 0.96]])
    theta = torch.tensor([0.5, 0.3, 0.95], requires_grad=True)
    kinds.heaviside_step(z, theta, eps).sum().backward()
    # column i: −(1/ε) · #{|z − θ_i| < ε/2}
    assert torch.allclose(theta.grad, torch.tensor([-2 / eps, 0.0, -3 / eps]))
    theta.grad = None
    zz = z.clone().requires_grad_(True)
    kinds.jumprelu(zz, theta, eps).sum().backward()
    assert torch.allclose(theta.grad, -(theta.detach() / eps) * torch.tensor([2.0, 0.0, 3.0]))
    assert torch.equal(zz.grad, (z > theta.detach()).float())  # ∂f/∂z = H(z − θ)
    zz.grad = None
    kinds.heaviside_step(zz, theta, eps).sum().backward()
    assert zz.grad is None or (zz.grad == 0).all()              # H passes nothing to the pre-activations


def test_jumprelu_threshold_gets_gradient_only_near_the_threshold():
    eps = 0.05
    sae = make_dictionary(DictionaryConfig(d_in=16, d_sae=64, kind="jumprelu", l1_coefficient=0.01,
                                           options={"threshold_init": 0.2, "bandwidth": eps}))
    x = torch.rand(256, 16)
    sae.loss(x)["loss"].backward()
    g = sae.log_threshold_F.grad
    pre = sae.pre_acts(x).detach()
    near = ((pre - 0.2).abs() < eps / 2).any(0)
    assert near.any() and (~near).any()
    assert (g[near] != 0).all()                 # nonzero through the STE, though H is flat almost everywhere
    assert (g[~near] == 0).all()


def test_jumprelu_l0_falls_as_the_sparsity_coefficient_rises():
    x, _ = planted(n=8192, d=32, k=32, active=2)
    tcfg = SAETrainConfig(steps=150, batch_size=512, lr=1e-2, resample_at=())
    l0 = {}
    for lam in (1e-3, 3e-2):
        sae = train_dictionary(x, _cfg("jumprelu", l1_coefficient=lam), tcfg, progress=False)
        l0[lam] = float((sae.encode(x) > 0).float().sum(-1).mean())
    assert l0[3e-2] < 0.75 * l0[1e-3], l0


# ---- training through the shared trainer -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["topk", "batchtopk", "jumprelu"])
def test_kind_recovers_planted_directions(kind):
    x, dirs = planted(n=8192, d=32, k=32, active=2)
    sae = train_dictionary(x, _cfg(kind), SAETrainConfig(steps=300, batch_size=512, lr=1e-2, resample_at=()),
                           progress=False)
    cos = (dirs @ sae.W_dec_FD.T).max(-1).values
    assert (cos > 0.95).float().mean() >= 0.9, cos
    f = sae.encode(x)
    l0_tok = (f > 0).float().sum(-1)
    if kind == "topk":
        assert (l0_tok == 2).all()                                   # exactly k on every token
    elif kind == "batchtopk":
        assert all(r["l0"] == pytest.approx(2.0) for r in sae.train_log if "l0" in r)  # train time: mean L0 = k
        assert float(sae.threshold) > 0
        assert l0_tok.mean() == pytest.approx(2.0, rel=0.15)         # the inference threshold gives ≈ k
    else:
        assert 1.5 < l0_tok.mean() < 2.5                             # two planted directions per row


def test_aux_loss_revives_a_planted_dead_set():
    # 48 planted directions, but only 24 of 64 latents alive: 40 start with tiny encoder columns and never make
    # the top k.  Without AuxK they never get a gradient; with it they learn the residual and fire.
    x, dirs = planted(n=8192, d=32, k=48, active=2)
    dead = torch.arange(64) < 40
    result = {}
    for dead_tokens in (0, 1024):  # 0 = AuxK off
        sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=64, kind="topk",
                                               options={"k": 2, "dead_tokens": dead_tokens}))
        with torch.no_grad():
            sae.W_enc_DF[:, dead] *= 0.02
        assert not (sae.encode(x)[:, dead] > 0).any()
        sae = train_dictionary(x, sae, SAETrainConfig(steps=150, batch_size=512, lr=1e-2, resample_at=()),
                               progress=False)
        density = (sae.encode(x) > 0).float().mean(0)
        result[dead_tokens] = ((density[dead] > 0.002).float().mean().item(), sae.train_log[-1]["mse"])
    assert result[0][0] == 0.0                       # control: the planted dead set stays dead
    assert result[1024][0] > 0.5, result             # AuxK: most of it is in use
    assert result[1024][1] < 0.5 * result[0][1], result


def test_dead_counter_counts_tokens_since_firing_and_drives_the_aux_term():
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=16, kind="topk", options={"k": 1, "dead_tokens": 100}))
    x = torch.rand(40, 8)
    for _ in range(3):
        out = sae.loss(x)
        sae.after_optimizer_step()
    fired = (out["f_BF"] > 0).any(0)
    assert (sae.tokens_since_fired_F[fired] == 0).all()
    assert (sae.tokens_since_fired_F[~fired] == 100).all()     # 120 tokens, saturated at dead_tokens
    assert torch.equal(sae.dead_latents(), ~fired)
    out = sae.loss(x)
    assert out["aux"] > 0 and torch.allclose(out["loss"], out["mse"] + out["aux"] / 32)


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "jumprelu"])
def test_resampling_is_not_part_of_these_recipes(kind):
    sae = make_dictionary(_cfg(kind))
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    assert sae.resample(torch.ones(64, dtype=torch.bool), torch.rand(100, 32), None) == 0
    assert all(torch.equal(v, sae.state_dict()[k]) for k, v in before.items())
    assert sae.revive_target is None  # so the loop does not even sample a resampling pool
    x, _ = planted(n=1024)
    trained = train_dictionary(x, _cfg(kind), SAETrainConfig(steps=8, batch_size=128, resample_at=(0.5,),
                                                             geometric_median_rows=256), progress=False)
    assert not any(r.get("event") == "resample" for r in trained.train_log)


def test_train_dictionary_trains_every_registered_kind_and_saves_it(tmp_path):
    x, _ = planted(n=2048)
    for kind in available_kinds():
        out = tmp_path / kind
        sae = train_dictionary(x, _cfg(kind), SAETrainConfig(steps=12, batch_size=256, lr=1e-2, checkpoint_every=6,
                               resample_at=(0.5,), geometric_median_rows=512, resample_inputs=512),
                               out_dir=out, progress=False)
        rows = [r for r in read_jsonl(out / "train_log.jsonl") if "loss" in r]
        assert [r["step"] for r in rows] == list(range(1, 13)), kind
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), kind
        back = Dictionary.load(out)
        assert type(back) is type(sae) and back.cfg == sae.cfg
        for k, v in sae.state_dict().items():
            assert torch.equal(v, back.state_dict()[k]), (kind, k)
        with torch.no_grad():
            assert torch.equal(back.encode(x), sae.encode(x)), kind


def test_save_load_round_trips_every_kind_with_its_buffers(tmp_path):
    x = torch.rand(300, 8)
    for kind, opts in [("topk", {"k": 2, "dead_tokens": 200, "k_aux": 3}), ("batchtopk", {"k": 2.5}),
                       ("jumprelu", {"threshold_init": 0.05, "bandwidth": 0.01, "sparsity_warmup_steps": 5})]:
        sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=24, kind=kind, l1_coefficient=0.2, seed=3, options=opts))
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
        for i in range(4):  # move parameters and buffers off their initial values
            out = sae.loss(x[i * 75:(i + 1) * 75], step=i)
            opt.zero_grad()
            out["loss"].backward()
            sae.before_optimizer_step()
            opt.step()
            sae.after_optimizer_step()
        if kind == "jumprelu":
            with torch.no_grad():
                sae.log_threshold_F.uniform_(-4, -1)  # per-latent thresholds must survive, not just the init
        sae.save(tmp_path / kind)
        back = Dictionary.load(tmp_path / kind)
        assert back.cfg == sae.cfg and back.opts == sae.opts
        sd, bsd = sae.state_dict(), back.state_dict()
        assert set(sd) == set(bsd)
        for k in sd:
            assert torch.equal(sd[k].to(bsd[k].dtype), bsd[k]), (kind, k)
        assert torch.equal(back.encode(x), sae.encode(x))
        if kind == "topk":
            assert int(back.tokens_since_fired_F.max()) > 0
        if kind == "batchtopk":
            assert float(back.threshold) > 0 and int(back.threshold_updates) == 4
        if kind == "jumprelu":
            assert back.log_threshold_F.unique().numel() == 24
        assert json.loads((tmp_path / kind / "cfg.json").read_text())["dictionary"]["options"] == opts


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_resume_restores_kind_state_exactly(tmp_path, kind):
    x, _ = planted(n=4096)
    cfg = _cfg(kind, options={"k": 2, "dead_tokens": 512})
    tcfg = SAETrainConfig(steps=30, batch_size=256, lr=1e-2, checkpoint_every=10, resample_at=())
    full = train_dictionary(x, cfg, tcfg, out_dir=tmp_path / "full", progress=False)

    with pytest.raises(Crash):
        train_dictionary(crashing_source(x, 15), cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    resumed = train_dictionary(x, cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    for k, v in full.state_dict().items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-6), k
    if kind == "topk":
        assert full.tokens_since_fired_F.dtype == torch.long


# ---- option validation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, options, match", [
    ("topk", {}, r"needs option k .*options=\{'k': 32\}"),
    ("topk", {"k": 0}, r"option k=0 must be an integer between 1 and d_sae \(64\)"),
    ("topk", {"k": 65}, r"option k=65 must be an integer between 1 and d_sae"),
    ("topk", {"k": 2.0}, r"option k=2.0 must be an integer"),
    ("topk", {"k": True}, r"option k=True must be an integer"),
    ("topk", {"k": 8, "kk": 1}, r"unknown option\(s\) \['kk'\] for dictionary kind 'topk'; it takes: k \("),
    ("topk", {"k": 8, "aux_coefficient": -1}, r"aux_coefficient=-1 must be a finite number"),
    ("topk", {"k": 8, "dead_tokens": -5}, r"dead_tokens=-5 must be an integer ≥ 0"),
    ("batchtopk", {"k": 0}, r"option k=0 must be a number in \(0, d_sae=64\]"),
    ("batchtopk", {"k": 4, "threshold_lr": 0}, r"threshold_lr=0 must be a finite number in \(0.0, 1.0\]"),
    ("jumprelu", {"bandwidth": 0}, r"bandwidth=0 must be a finite number in \(0.0, ∞\)"),
    ("jumprelu", {"threshold_init": float("nan")}, r"threshold_init=nan must be a finite number"),
    ("jumprelu", {"k": 3}, r"unknown option\(s\) \['k'\] for dictionary kind 'jumprelu'"),
    ("relu", {"k": 3}, r"takes no options"),
])
def test_option_errors_name_the_fix(kind, options, match):
    with pytest.raises(ConfigError, match=match):
        DictionaryConfig(d_in=32, d_sae=64, kind=kind, options=options).validate()


def test_fractional_k_is_fine_for_batchtopk_and_defaults_fill_in():
    sae = make_dictionary(DictionaryConfig(d_in=512, d_sae=1024, kind="batchtopk", options={"k": 2.5}))
    assert sae.opts == {"k": 2.5, "k_aux": 256, "aux_coefficient": 1 / 32, "dead_tokens": None, "dead_fraction": 0.05,
                        "lr_decay": 0.0, "threshold_lr": None}
    assert sae.cfg.options == {"k": 2.5}  # the config is not rewritten (run configs compare equal)
    small = make_dictionary(DictionaryConfig(d_in=512, d_sae=64, kind="topk", options={"k": 4}))
    assert small.opts["k_aux"] == 64      # d_in // 2, capped at d_sae


def test_batchtopk_threshold_rate_is_scaled_to_the_run_unless_set():
    """θ's running average lags the weights by ~1/rate steps: unset, the rate is max(0.01, 10 / steps) (about the
    last tenth of the run, never slower than Bussmann et al.'s 0.01); a set rate is kept whatever the run."""
    from monosemantic.kinds import BatchTopKDictionary

    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="batchtopk", options={"k": 2}))
    assert sae.threshold_lr == 0.01                     # before a trainer says how long the run is
    for steps, want in ((300, 1 / 30), (150, 1 / 15), (1200, 0.01), (100_000, 0.01), (5, 1.0)):
        sae.begin_training(steps, 4096)
        assert sae.threshold_lr == pytest.approx(want), steps
        assert BatchTopKDictionary.scaled_threshold_lr(steps) == pytest.approx(want)
    fixed = make_dictionary(DictionaryConfig(d_in=8, d_sae=32, kind="batchtopk", options={"k": 2, "threshold_lr": 0.2}))
    fixed.begin_training(300, 4096)
    assert fixed.threshold_lr == 0.2
    # the rate the trainer set is the one θ moves by
    with torch.no_grad():
        sae.begin_training(300, 4096)
        sae.threshold.fill_(1.0)
        sae.threshold_updates.fill_(1)
        sae._step_stats = {"fired_F": torch.zeros(32, dtype=torch.bool), "tokens": 4, "min_positive": torch.tensor(0.4)}
        sae.after_optimizer_step()
    assert float(sae.threshold) == pytest.approx(1.0 - (1.0 - 0.4) / 30)
