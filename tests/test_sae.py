"""The paper's dictionary recipe: invariants, geometric median, resampling, persistence, errors."""
import math

import numpy as np
import pytest
import torch

from monosemantic import (ConfigError, DictionaryConfig, SAETrainConfig, TrainingDivergedError, geometric_median,
                          make_dictionary, train_dictionary)
from monosemantic.sae import Dictionary


def planted(n=8192, d=32, k=64, active=3, seed=0):
    """Sparse non-negative combinations of k random unit directions (a dictionary can recover them)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(k, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    idx = torch.stack([torch.randperm(k, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 2 + 0.5
    x = torch.zeros(n, d)
    for j in range(active):
        x += coef[:, j:j + 1] * dirs[idx[:, j]]
    return x, dirs


def test_forward_math_matches_docstring():
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=16, l1_coefficient=0.1, seed=3))
    with torch.no_grad():
        sae.b_dec_D.uniform_()
        sae.b_enc_F.uniform_(-0.1, 0.1)
    x = torch.rand(5, 8)
    f = torch.relu((x - sae.b_dec_D) @ sae.W_enc_DF + sae.b_enc_F)
    x_hat = f @ sae.W_dec_FD + sae.b_dec_D
    out = sae.loss(x)
    assert torch.allclose(out["f_BF"], f)
    expect = ((x - x_hat) ** 2).mean() + 0.1 * f.abs().sum(-1).mean()
    assert torch.allclose(out["loss"], expect)


def test_init_kaiming_uniform_and_unit_decoder():
    sae = make_dictionary(DictionaryConfig(d_in=64, d_sae=256, seed=1))
    assert torch.allclose(sae.W_dec_FD.norm(dim=-1), torch.ones(256), atol=1e-6)
    bound = math.sqrt(6 / 64)
    assert sae.W_enc_DF.abs().max() <= bound and sae.W_enc_DF.abs().max() > 0.9 * bound
    same = make_dictionary(DictionaryConfig(d_in=64, d_sae=256, seed=1))
    assert torch.equal(sae.W_enc_DF, same.W_enc_DF)  # the seed fixes the dictionary


def test_decoder_rows_stay_unit_norm_after_steps():
    x, _ = planted()
    sae = train_dictionary(x, DictionaryConfig(d_in=32, d_sae=64, l1_coefficient=1e-3),
                           SAETrainConfig(steps=30, batch_size=256, lr=1e-2, resample_at=()), progress=False)
    assert torch.allclose(sae.W_dec_FD.norm(dim=-1), torch.ones(64), atol=1e-5)


def test_projected_gradient_is_orthogonal_to_rows():
    sae = make_dictionary(DictionaryConfig(d_in=16, d_sae=32))
    x = torch.rand(64, 16)
    sae.loss(x)["loss"].backward()
    raw = sae.W_dec_FD.grad.clone()
    assert (raw * sae.W_dec_FD).sum(-1).abs().max() > 1e-6  # there was a parallel component to remove
    sae.before_optimizer_step()
    dots = (sae.W_dec_FD.grad * sae.W_dec_FD).sum(-1)
    assert dots.abs().max() < 1e-6
    # what remains is the tangential part of the raw gradient
    par = (raw * sae.W_dec_FD).sum(-1, keepdim=True) * sae.W_dec_FD
    assert torch.allclose(sae.W_dec_FD.grad, raw - par, atol=1e-7)


def test_geometric_median_on_known_data():
    # collinear points: the median is the middle one, unlike the mean
    pts = torch.tensor([[0.0, 0], [1, 0], [2, 0], [3, 0], [100, 0]])
    assert torch.allclose(geometric_median(pts), torch.tensor([2.0, 0]), atol=1e-3)
    # equilateral triangle: the Fermat point is the centroid
    tri = torch.tensor([[0.0, 0], [1, 0], [0.5, math.sqrt(3) / 2]])
    assert torch.allclose(geometric_median(tri), tri.mean(0), atol=1e-4)
    # symmetric cloud plus far outliers: the median stays at the centre
    g = torch.Generator().manual_seed(0)
    cloud = torch.randn(2000, 5, generator=g) * 0.1 + 3.0
    cloud = torch.cat([cloud, torch.full((50, 5), 1000.0)])
    assert (geometric_median(cloud) - 3.0).abs().max() < 0.05


def test_b_dec_initialised_to_geometric_median():
    x, _ = planted(n=2048)
    sae = train_dictionary(x, DictionaryConfig(d_in=32, d_sae=64), SAETrainConfig(steps=1, batch_size=256, lr=0.0,
                           geometric_median_rows=2048, resample_at=()), progress=False)
    assert torch.allclose(sae.b_dec_D, geometric_median(x), atol=1e-4)


def test_resampling_revives_dead_features():
    x, _ = planted(n=4096)
    sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=64, seed=0))
    with torch.no_grad():
        sae.b_enc_F[:40] = -1e3  # features 0..39 can never fire
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    sae.loss(x[:256])["loss"].backward()
    opt.step()  # populate Adam state
    dead = (sae.encode(x) > 0).sum(0) == 0
    assert dead[:40].all()
    alive_norm = sae.W_enc_DF[:, ~dead].norm(dim=0).mean()
    n = sae.resample(dead, x, opt, generator=torch.Generator().manual_seed(0))
    assert n == int(dead.sum())
    assert ((sae.encode(x) > 0).sum(0)[dead] > 0).float().mean() > 0.9  # revived
    assert torch.allclose(sae.W_dec_FD[dead].norm(dim=-1), torch.ones(n), atol=1e-5)
    assert torch.allclose(sae.W_enc_DF[:, dead].norm(dim=0), 0.2 * alive_norm.expand(n), rtol=1e-4)
    assert (sae.b_enc_F[dead] == 0).all()
    st = opt.state[sae.W_dec_FD]
    assert (st["exp_avg"][dead] == 0).all() and (st["exp_avg_sq"][dead] == 0).all()
    assert (st["exp_avg_sq"][~dead] != 0).any()  # only the changed rows were reset


def test_resampling_prefers_high_loss_inputs():
    x = torch.zeros(1000, 8) + 0.01
    x[7] = torch.tensor([5.0, 0, 0, 0, 0, 0, 0, 0])  # the one input the dictionary cannot reconstruct
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=4))
    with torch.no_grad():
        sae.b_enc_F[:] = -100
    dead = torch.tensor([True, False, False, False])
    sae.resample(dead, x, None, generator=torch.Generator().manual_seed(1))
    assert sae.W_dec_FD[0, 0] > 0.99  # P ∝ loss² picks the outlier


def test_training_recovers_planted_directions():
    x, dirs = planted(n=16384, d=32, k=32, active=2)
    sae = train_dictionary(x, DictionaryConfig(d_in=32, d_sae=64, l1_coefficient=3e-2),
                           SAETrainConfig(steps=400, batch_size=512, lr=1e-2, resample_at=(0.2, 0.4)), progress=False)
    cos = (dirs @ sae.W_dec_FD.T).max(-1).values
    assert (cos > 0.95).float().mean() > 0.9, cos
    l0 = (sae.encode(x) > 0).float().sum(-1).mean()
    assert 1.5 < l0 < 3.5  # two planted directions per row


def test_save_load_roundtrip_is_safetensors(tmp_path):
    sae = make_dictionary(DictionaryConfig(d_in=8, d_sae=16, l1_coefficient=0.5, seed=4))
    sae.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "sae.safetensors"]
    back = Dictionary.load(tmp_path)
    assert back.cfg == sae.cfg
    for k, v in sae.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_wrong_activation_width_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"activation width 24 does not fit the dictionary's d_in=32"):
        train_dictionary(torch.rand(512, 24), DictionaryConfig(d_in=32, d_sae=64),
                         SAETrainConfig(steps=2, batch_size=64), progress=False)


def test_nan_loss_is_a_clear_error_and_keeps_checkpoint(tmp_path):
    x = torch.rand(2048, 16)
    cfg = SAETrainConfig(steps=20, batch_size=128, checkpoint_every=5, resample_at=())
    train_dictionary(x, DictionaryConfig(d_in=16, d_sae=32), cfg, out_dir=tmp_path, progress=False)
    ck = (tmp_path / "ckpt" / "state-000000020.safetensors").read_bytes()
    bad = x.clone()
    bad[100:] = float("nan")
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        train_dictionary(bad, DictionaryConfig(d_in=16, d_sae=32), SAETrainConfig(steps=40, batch_size=128,
                         checkpoint_every=5, resample_at=()), out_dir=tmp_path / "b", progress=False)
    assert (tmp_path / "ckpt" / "state-000000020.safetensors").read_bytes() == ck


def test_unknown_kind_and_bad_sizes():
    with pytest.raises(ConfigError, match="unknown dictionary kind 'nope'"):
        DictionaryConfig(kind="nope").validate()
    with pytest.raises(ConfigError, match="d_sae must be a positive integer"):
        DictionaryConfig(d_sae=0).validate()


def test_bring_your_own_iterable_of_batches():
    x, _ = planted(n=4096)
    batches = (x[i:i + 300] for i in range(0, 4096, 300))  # odd batch size: the trainer rebatches
    sae = train_dictionary(batches, DictionaryConfig(d_in=32, d_sae=64), SAETrainConfig(steps=10, batch_size=256,
                           geometric_median_rows=1024, resample_inputs=1024, resample_at=()), progress=False)
    assert sae.d_sae == 64 and len(sae.train_log) == 10


class Crash(Exception):
    """A simulated kill inside training."""


def crashing_source(x, at: int):
    """``x`` as a training source that raises ``Crash`` when batch ``at`` is asked for (a kill mid-run)."""
    from monosemantic.train_sae import TensorSource

    class CrashingSource(TensorSource):
        def batches(self, batch_size, seed=0, start_batch=0, **kw):
            for i, b in enumerate(super().batches(batch_size, seed, start_batch), start=start_batch):
                if i == at:
                    raise Crash()
                yield b

    return CrashingSource(x)


def test_resume_after_crash_ends_exactly_where_an_uninterrupted_run_ends(tmp_path):
    x, _ = planted(n=4096)
    cfg = DictionaryConfig(d_in=32, d_sae=64, l1_coefficient=1e-2)
    tcfg = SAETrainConfig(steps=40, batch_size=256, checkpoint_every=10, resample_at=(0.25, 0.5))
    full = train_dictionary(x.numpy(), cfg, tcfg, out_dir=tmp_path / "full", progress=False)

    with pytest.raises(Crash):
        train_dictionary(crashing_source(x, 25), cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    import json
    assert json.loads((tmp_path / "part/ckpt/progress.json").read_text())["step"] == 20
    resumed = train_dictionary(x.numpy(), cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    steps = [r["step"] for r in __import__("monosemantic.io", fromlist=["read_jsonl"]).read_jsonl(
        tmp_path / "part/train_log.jsonl") if "loss" in r]
    assert steps == list(range(1, 41))  # the log has every step once: 1..20 before the crash, 21..40 after

    # a run with a different schedule must not silently continue this checkpoint
    from monosemantic import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match="different config"):
        train_dictionary(x.numpy(), cfg, SAETrainConfig(steps=80, batch_size=256, checkpoint_every=10,
                         resample_at=(0.25, 0.5)), out_dir=tmp_path / "part", progress=False)


def test_a_kill_between_the_state_and_progress_writes_resumes_exactly(tmp_path, monkeypatch):
    """A checkpoint commits when progress.json names its state file.  A kill after the step-20 state is written but
    before progress.json is: the resume continues from step 10's state (not step 20's weights under step 10's
    count, which trained ten steps twice), logs each step once, and revival's draws continue from the checkpointed
    generator (resampling at steps 10, 20 and 30 here) — the same dictionary as an uninterrupted run."""
    import json

    from monosemantic import io as mio
    from monosemantic.io import read_jsonl

    x, _ = planted(n=4096)
    cfg = DictionaryConfig(d_in=32, d_sae=128, l1_coefficient=1.0)   # a harsh λ and LR: features die
    tcfg = SAETrainConfig(steps=40, batch_size=256, lr=3e-2, init_density=0.01, checkpoint_every=10,
                          resample_at=(0.25, 0.5, 0.75))
    full = train_dictionary(x.numpy(), cfg, tcfg, out_dir=tmp_path / "full", progress=False)
    events = [r for r in read_jsonl(tmp_path / "full/train_log.jsonl") if r.get("event") == "resample"]
    assert [r["step"] for r in events] == [10, 20, 30] and all(r["resampled"] > 0 for r in events), events

    real = mio.atomic_write_json

    def torn(path, obj):
        if str(path).endswith("progress.json") and obj["step"] == 20:
            raise Crash()
        real(path, obj)

    monkeypatch.setattr(mio, "atomic_write_json", torn)
    with pytest.raises(Crash):
        train_dictionary(x.numpy(), cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    monkeypatch.setattr(mio, "atomic_write_json", real)
    ck = tmp_path / "part/ckpt"
    assert json.loads((ck / "progress.json").read_text())["step"] == 10
    assert sorted(p.name for p in ck.glob("state*")) == ["state-000000010.safetensors", "state-000000020.safetensors"]
    resumed = train_dictionary(x.numpy(), cfg, tcfg, out_dir=tmp_path / "part", progress=False)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    assert [r["step"] for r in read_jsonl(tmp_path / "part/train_log.jsonl") if "loss" in r] == list(range(1, 41))
    assert [p.name for p in ck.glob("state*")] == ["state-000000040.safetensors"]   # older states removed


def test_init_encoder_bias_sets_each_features_starting_density():
    x, _ = planted(n=8192)
    sae = make_dictionary(DictionaryConfig(d_in=32, d_sae=64, seed=2))
    with torch.no_grad():
        sae.b_dec_D.copy_(geometric_median(x))
    with torch.no_grad():
        before = (sae.encode(x) > 0).float().mean(0)
    assert before.mean() > 0.3  # b_enc = 0: about half the features fire on a token
    sae.init_encoder_bias(x[:4096], 0.02, chunk=16)
    with torch.no_grad():
        after = (sae.encode(x[4096:]) > 0).float().mean(0)  # held-out rows
    assert after.min() > 0.005 and after.max() < 0.05 and abs(float(after.mean()) - 0.02) < 0.005
    from monosemantic.kinds import TopKDictionary

    assert sae.bias_sets_density and not TopKDictionary.bias_sets_density


def test_training_applies_init_density_only_when_asked():
    x, _ = planted(n=2048)
    cfg = DictionaryConfig(d_in=32, d_sae=64)
    train = SAETrainConfig(steps=1, batch_size=256, lr=0.0, geometric_median_rows=2048, resample_at=())
    zero = train_dictionary(x, cfg, SAETrainConfig(**{**train.__dict__, "init_density": None}), progress=False)
    assert torch.count_nonzero(zero.b_enc_F) == 0
    set_ = train_dictionary(x, cfg, SAETrainConfig(**{**train.__dict__, "init_density": 0.05}), progress=False)
    with torch.no_grad():
        assert abs(float((set_.encode(x) > 0).float().mean()) - 0.05) < 0.01


# ---- Dictionary.load on damaged files: the project's error, naming the file, the problem and the stage ----------

def _cut(p, keep=0.5):
    b = p.read_bytes()
    p.write_bytes(b[:int(len(b) * keep)])


def _swap_weights_for_another_size(d):
    make_dictionary(DictionaryConfig(d_in=8, d_sae=32)).save(d / "other")
    (d / "other/sae.safetensors").replace(d / "sae.safetensors")


def _drop_tensor(d):
    from monosemantic.io import load_safetensors, save_safetensors

    state = load_safetensors(d / "sae.safetensors")
    del state["b_dec_D"]
    save_safetensors(state, d / "sae.safetensors")


def _inconsistent_header(d):
    import json
    import struct

    # a header that parses and promises no more bytes than the file has, over an offset that does not fit the shape
    h = json.dumps({"W_enc_DF": {"dtype": "F32", "shape": [8, 16], "data_offsets": [0, 100]}}).encode()
    (d / "sae.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + bytes(600))


def _rewrite_cfg(d, obj):
    import json

    (d / "cfg.json").write_text(json.dumps(obj))


DAMAGE = {  # case: (damage, file at fault, message fragment)
    "weights truncated": (lambda d: _cut(d / "sae.safetensors"), "sae.safetensors", "truncated"),
    "weights are random bytes": (lambda d: (d / "sae.safetensors").write_bytes(bytes(range(256)) * 8),
                                 "sae.safetensors", "not a safetensors file"),
    "weights of another size": (_swap_weights_for_another_size, "sae.safetensors",
                                "wrong shape for d_in=8, d_sae=16 in cfg.json: W_enc_DF (8, 32) (expected (8, 16))"),
    "weights with an inconsistent header": (_inconsistent_header, "sae.safetensors",
                                            "not a readable safetensors file"),
    "a weight tensor missing": (_drop_tensor, "sae.safetensors", "lacks tensors ['b_dec_D']"),
    "weights missing": (lambda d: (d / "sae.safetensors").unlink(), "sae.safetensors",
                        "missing, though cfg.json is beside it"),
    "config truncated": (lambda d: _cut(d / "cfg.json"), "cfg.json", "not valid JSON"),
    "config missing": (lambda d: (d / "cfg.json").unlink(), "cfg.json", "missing, though sae.safetensors"),
    "config without a dictionary": (lambda d: _rewrite_cfg(d, {"train": {}}), "cfg.json", "no 'dictionary' object"),
    "config with a bad size": (lambda d: _rewrite_cfg(d, {"dictionary": {"d_in": 8, "d_sae": -1}}), "cfg.json",
                               "invalid dictionary config (dictionary d_sae must be a positive integer"),
}


@pytest.mark.parametrize("in_run", [True, False], ids=["in a run", "standalone"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_of_a_damaged_dictionary_names_the_file_the_problem_and_the_stage(tmp_path, case, in_run):
    from monosemantic.errors import CorruptArtifactError

    if in_run:
        (tmp_path / "run.json").write_text("{}")
        d = tmp_path / "dictionaries" / "A" / "1"
    else:
        d = tmp_path / "mine"
    make_dictionary(DictionaryConfig(d_in=8, d_sae=16)).save(d)
    Dictionary.load(d)  # intact: loads
    damage, at_fault, fragment = DAMAGE[case]
    damage(d)
    with pytest.raises(CorruptArtifactError) as e:
        Dictionary.load(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / at_fault} is corrupt: ") and fragment in msg and "\n" not in msg
    if in_run:
        assert e.value.stage == "dictionary:A/1" and "rerun `monosemantic run" in msg and "dictionary:A/1" in msg
    else:
        assert e.value.stage is None and "rerun the command that wrote it" in msg


def test_load_of_nothing_and_of_an_unregistered_kind_say_what_to_do(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no dictionary at .*dictionaries/A/1.*monosemantic run --out .* "
                                                r"to train dictionary:A/1"):
        Dictionary.load(tmp_path / "dictionaries" / "A" / "1")
    d = tmp_path / "mine"
    make_dictionary(DictionaryConfig(d_in=8, d_sae=16)).save(d)
    _rewrite_cfg(d, {"dictionary": {"d_in": 8, "d_sae": 16, "kind": "my-notebook-kind"}})
    with pytest.raises(ConfigError, match="names dictionary kind 'my-notebook-kind', which is not registered here"):
        Dictionary.load(d)


def test_init_b_dec_false_keeps_the_given_dictionarys_decoder_bias():
    x, _ = planted(n=2048)
    train = SAETrainConfig(steps=1, batch_size=256, lr=0.0, geometric_median_rows=2048, resample_at=(),
                           init_density=None)
    given = make_dictionary(DictionaryConfig(d_in=32, d_sae=64))
    with torch.no_grad():
        given.b_dec_D.fill_(0.25)
    kept = train_dictionary(x, given, train, progress=False, init_b_dec=False)
    assert torch.equal(kept.b_dec_D, torch.full((32,), 0.25))  # lr 0: the step moves nothing
    median = train_dictionary(x, DictionaryConfig(d_in=32, d_sae=64), train, progress=False)
    assert torch.allclose(median.b_dec_D, geometric_median(x), atol=1e-6)
