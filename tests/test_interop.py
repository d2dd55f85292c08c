"""SAELens interop: our exports load in sae_lens with the same features and reconstructions; SAEs built, trained and
saved by sae_lens import into our Dictionary with the same features, and work with our metrics."""
import json

import pytest
import torch

from monosemantic import ConfigError, DictionaryConfig, EvalConfig, make_dictionary
from monosemantic.interop import export_saelens, import_saelens
from monosemantic.sae import Dictionary

from test_sae import planted

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE  # noqa: E402

ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n=300, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * 2  # non-negative, like post-ReLU MLP activations


def _same(ours: Dictionary, theirs, x, atol=ATOL):
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert f_ours.shape == f_theirs.shape
        assert torch.allclose(f_ours, f_theirs, atol=atol), (f_ours - f_theirs).abs().max()
        assert torch.equal(f_ours > 0, f_theirs > 0) or torch.allclose(f_ours, f_theirs, atol=atol)
        r_ours, r_theirs = ours(x)[0], theirs(x)
        assert torch.allclose(r_ours, r_theirs, atol=atol), (r_ours - r_theirs).abs().max()
    return f_ours


# ---- ours → SAELens ----------------------------------------------------------------------------------------------

def _ours(kind, seed=0):
    opts = {"topk": {"k": 5}, "batchtopk": {"k": 5}, "jumprelu": {"threshold_init": 0.2}}.get(kind, {})
    sae = make_dictionary(DictionaryConfig(d_in=16, d_sae=48, kind=kind, seed=seed, l1_coefficient=0.01,
                                           options=opts))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec_D.copy_(torch.rand(16, generator=g) * 0.5)
        sae.b_enc_F.copy_(torch.rand(48, generator=g) * 0.4 - 0.2)
        if kind == "batchtopk":
            sae.threshold.fill_(0.3)
            sae.threshold_updates.fill_(7)
        if kind == "jumprelu":
            sae.log_threshold_F.copy_(torch.rand(48, generator=g) * 3 - 3)
    return sae


@pytest.mark.parametrize("kind, cls", [("relu", "StandardSAE"), ("topk", "TopKSAE"), ("batchtopk", "JumpReLUSAE"),
                                       ("jumprelu", "JumpReLUSAE")])
def test_export_loads_in_saelens_with_the_same_function(tmp_path, kind, cls):
    ours = _ours(kind)
    export_saelens(ours, tmp_path, model_name=None, context_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.0.mlp.hook_post" and cfg["metadata"]["context_size"] == 32
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    theirs = SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == cls
    assert theirs.cfg.metadata.hook_name == "blocks.0.mlp.hook_post"
    x = _x()
    f = _same(ours, theirs, x)
    l0 = (f > 0).float().sum(-1)
    assert l0.min() > 0 and l0.max() < 48      # a real test: some latents on, some off on every token
    if kind == "topk":
        assert theirs.cfg.k == 5 and (l0 <= 5).all()
    # and back: the kind, its options and its state return
    back = import_saelens(tmp_path)
    assert back.cfg.kind == kind and back.cfg.options == ours.cfg.options
    assert back.cfg.l1_coefficient == ours.cfg.l1_coefficient
    _same(back, theirs, x)
    if kind == "batchtopk":
        assert float(back.threshold) == pytest.approx(0.3)


def test_export_refuses_to_overwrite_one_of_our_dictionaries(tmp_path):
    sae = _ours("relu")
    sae.save(tmp_path)
    with pytest.raises(ConfigError, match="holds a monosemantic dictionary"):
        export_saelens(sae, tmp_path)
    with pytest.raises(FileNotFoundError, match="no SAELens SAE"):
        import_saelens(tmp_path)


# ---- SAELens → ours ----------------------------------------------------------------------------------------------

def _randomise_saelens(sae, seed=0, threshold=False):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.W_dec.shape[0], 1, generator=g) + 0.5)  # rows not unit norm
        sae.b_dec.copy_(torch.rand(sae.b_dec.shape, generator=g) * 0.5)
        sae.b_enc.copy_(torch.rand(sae.b_enc.shape, generator=g) * 0.4 - 0.2)
        if threshold:
            sae.threshold.copy_(torch.rand(sae.threshold.shape, generator=g) * 0.4)
            sae.threshold[:3] = torch.tensor([0.0, -0.1, 0.0])  # ≤ 0 acts as 0 (ReLU first)
    return sae


@pytest.mark.parametrize("arch, apply_b_dec, extra", [
    ("standard", True, {}), ("standard", False, {}),
    ("topk", True, {"k": 6}), ("topk", False, {"k": 6, "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", True, {}), ("jumprelu", False, {}),
])
def test_saelens_saved_sae_imports_with_the_same_function(tmp_path, arch, apply_b_dec, extra):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    cls, cfg_cls = {"standard": (StandardSAE, StandardSAEConfig), "topk": (TopKSAE, TopKSAEConfig),
                    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig)}[arch]
    theirs = _randomise_saelens(cls(cfg_cls(d_in=16, d_sae=40, apply_b_dec_to_input=apply_b_dec, **extra)),
                                threshold=arch == "jumprelu")
    theirs.cfg.metadata.hook_name = "blocks.0.mlp.hook_post"
    theirs.save_model(tmp_path)
    ours = import_saelens(tmp_path, expect_hook_name="blocks.0.mlp.hook_post")
    assert ours.cfg.kind == {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}[arch]
    assert ours.saelens_metadata["hook_name"] == "blocks.0.mlp.hook_post"
    x = _x(seed=1)
    f = _same(ours, theirs, x)
    assert (f > 0).any() and (f == 0).any()
    # it is just a Dictionary: it saves and loads like one of ours
    ours.save(tmp_path / "ours")
    _same(Dictionary.load(tmp_path / "ours"), theirs, x)


def _train_saelens(sae, x, steps=25, lr=1e-2):
    from sae_lens.saes.sae import TrainStepInput

    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for i in range(steps):
        batch = x[(i * 256) % len(x):][:256]
        out = sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients={}, dead_neuron_mask=None,
                                                       n_training_steps=i, is_logging_step=False))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return sae


def test_saelens_trained_batchtopk_imports_as_batchtopk(tmp_path):
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    x, _ = planted(n=4096, d=16, k=24, active=2)
    trained = _train_saelens(BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=40, k=3)), x)
    theta = float(trained.topk_threshold)
    assert theta > 0
    # the inference form SAELens publishes (a JumpReLU with one threshold) ...
    trained.save_inference_model(tmp_path / "inference")
    theirs = SAE.load_from_disk(tmp_path / "inference")
    assert type(theirs).__name__ == "JumpReLUSAE"
    ours = import_saelens(tmp_path / "inference")
    assert ours.cfg.kind == "batchtopk" and ours.cfg.options == {"k": 3, "threshold_lr": 0.01}
    assert float(ours.threshold) == pytest.approx(theta, rel=1e-6)
    f = _same(ours, theirs, x[:500])
    assert (f > 0).any() and (f == 0).any()  # (SAELens's θ starts at 0, so after 25 steps L0 is still ≫ k)
    # ... and its training checkpoint (architecture "batchtopk", topk_threshold, decoder-norm rescaling)
    trained.save_model(tmp_path / "checkpoint")
    ckpt = import_saelens(tmp_path / "checkpoint")
    assert ckpt.cfg.kind == "batchtopk" and float(ckpt.threshold) == pytest.approx(theta, rel=1e-6)
    _same(ckpt, theirs, x[:500])


def test_saelens_trained_topk_checkpoint_imports(tmp_path):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    x, _ = planted(n=4096, d=16, k=24, active=2)
    trained = _train_saelens(TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=40, k=3)), x)
    assert trained.cfg.rescale_acts_by_decoder_norm       # SAELens's default: our import must fold the norms
    assert not torch.allclose(trained.W_dec.norm(dim=-1), torch.ones(40), atol=1e-3)
    trained.save_model(tmp_path)
    ours = import_saelens(tmp_path)
    f = _same(ours, trained, x[:500])
    assert ((f > 0).sum(-1) <= 3).all()
    assert torch.allclose(ours.W_dec_FD.norm(dim=-1), torch.ones(40), atol=1e-5)


def test_pre_6_topk_config_is_read_like_saelens_reads_it(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    theirs = _randomise_saelens(TopKSAE(TopKSAEConfig(d_in=16, d_sae=40, k=4)))
    theirs.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    old = {"d_in": 16, "d_sae": 40, "dtype": "float32", "device": "cpu", "hook_point": "blocks.0.mlp.hook_post",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": cfg["k"]}}
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    reread = SAE.load_from_disk(tmp_path)
    assert type(reread).__name__ == "TopKSAE"
    ours = import_saelens(tmp_path)
    assert ours.cfg.kind == "topk" and ours.cfg.options["k"] == 4
    _same(ours, reread, _x())


def test_constant_activation_scale_is_folded_and_per_input_normalisation_refused(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    theirs = _randomise_saelens(StandardSAE(StandardSAEConfig(d_in=16, d_sae=40,
                                                              normalize_activations="expected_average_only_in")))
    theirs.save_model(tmp_path)
    with pytest.raises(ConfigError, match="scaling_factor=s"):
        import_saelens(tmp_path)
    s = 0.37
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": s}))
    ours = import_saelens(tmp_path)
    x = _x()
    with torch.no_grad():  # the SAE was trained on s·x: its features of s·x, its reconstruction scaled back
        f = theirs.encode(x * s)
        assert torch.allclose(ours.encode(x), f, atol=ATOL)
        assert torch.allclose(ours(x)[0], theirs.decode(f) / s, atol=ATOL)
    assert torch.allclose(import_saelens(tmp_path, scaling_factor=s).encode(x), f, atol=ATOL)

    cfg = json.loads((tmp_path / "cfg.json").read_text())
    for norm in ("layer_norm", "constant_norm_rescale"):
        cfg["normalize_activations"] = norm
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(ConfigError, match=f"normalize_activations='{norm}'.*cannot express"):
            import_saelens(tmp_path)


def test_import_errors_name_the_problem(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    StandardSAE(StandardSAEConfig(d_in=16, d_sae=40)).save_model(tmp_path / "std")
    with pytest.raises(ConfigError, match="trained on hook None, not 'blocks.0.mlp.hook_post'"):
        import_saelens(tmp_path / "std", expect_hook_name="blocks.0.mlp.hook_post")
    cfg = json.loads((tmp_path / "std" / "cfg.json").read_text())
    (tmp_path / "std" / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ConfigError, match="architecture 'gated'.*cannot be imported; supported"):
        import_saelens(tmp_path / "std")
    TopKSAE(TopKSAEConfig(d_in=16, d_sae=40, k=4)).save_model(tmp_path / "topk")
    with pytest.raises(ConfigError, match="fold_decoder_norm .* refused for topk"):
        import_saelens(tmp_path / "topk", fold_decoder_norm=True)


def test_fold_decoder_norm_keeps_reconstructions_and_unit_rows(tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    theirs = _randomise_saelens(JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=40)), threshold=True)
    theirs.save_model(tmp_path)
    ours = import_saelens(tmp_path, fold_decoder_norm=True)
    norms = theirs.W_dec.norm(dim=-1).detach()
    assert torch.allclose(ours.W_dec_FD.norm(dim=-1), torch.ones(40), atol=1e-5)
    x = _x()
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x) * norms, atol=ATOL)
        assert torch.allclose(ours(x)[0], theirs(x), atol=ATOL)


# ---- an imported dictionary works with our data objects and metrics ------------------------------------------------

def test_imported_dictionary_works_with_our_metrics(tiny_run, tmp_path):
    from monosemantic.metrics import evaluate_dictionary
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    model, split, ecfg = tiny_run.model("A"), tiny_run.split("val"), EvalConfig(contexts=16)
    # our A/1 → SAELens → saved by SAELens itself → back: the same metrics as the original
    original = tiny_run.dictionary("A/1")
    export_saelens(original, tmp_path / "export", context_size=tiny_run.cfg.model.n_ctx)
    SAE.load_from_disk(tmp_path / "export").save_model(tmp_path / "resaved")
    back = import_saelens(tmp_path / "resaved", expect_hook_name=model.hook)
    m0 = evaluate_dictionary(original, model, split, ecfg, progress=False)
    m1 = evaluate_dictionary(back, model, split, ecfg, progress=False)
    for key in ("l0", "mse", "fvu", "loss_recovered", "dead"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-7), key

    # a SAELens-native JumpReLU SAE on the same hook: our metrics agree with SAELens's own activations
    theirs = _randomise_saelens(JumpReLUSAE(JumpReLUSAEConfig(d_in=model.d_mlp, d_sae=256,
                                                              apply_b_dec_to_input=False)), threshold=True)
    theirs.cfg.metadata.hook_name = model.hook
    theirs.save_model(tmp_path / "native")
    ours = import_saelens(tmp_path / "native", expect_hook_name=model.hook)
    m = evaluate_dictionary(ours, model, split, ecfg, progress=False)
    from monosemantic.metrics import eval_contexts

    toks = torch.from_numpy(split.contexts(eval_contexts(split, ecfg.contexts)))
    with torch.no_grad():
        acts = model.mlp_acts(toks)[:, 1:].reshape(-1, model.d_mlp)
        f = theirs.encode(acts)
    assert m["tokens"] == len(acts)
    assert m["l0"] == pytest.approx(float((f > 0).float().sum(-1).mean()), rel=1e-5)
    assert m["dead"] == int(((f > 0).sum(0) == 0).sum())
    assert 0 < m["l0"] < 256


def test_an_april2024_dictionary_exports_without_input_centring(tmp_path):
    """april2024 never subtracts b_dec from its input: SAELens must be told so, or it computes another function."""
    ours = make_dictionary(DictionaryConfig(d_in=16, d_sae=48, kind="relu", recipe="april2024", seed=0,
                                            l1_coefficient=0.01))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ours.b_dec_D.copy_(torch.rand(16, generator=g))
        ours.b_enc_F.copy_(torch.rand(48, generator=g) * 0.4 - 0.2)
    export_saelens(ours, tmp_path, model_name=None, context_size=32)
    assert json.loads((tmp_path / "cfg.json").read_text())["apply_b_dec_to_input"] is False
    theirs = SAE.load_from_disk(tmp_path)
    x = _x()
    f = _same(ours, theirs, x)
    assert (f > 0).any()
    _same(import_saelens(tmp_path), theirs, x)
