"""The TransformerLens adapter: local models, the pretrained code path (offline), splicing and ablation."""
import pytest
import torch

from monosemantic import ConfigError, DictionaryConfig, ModelConfig, SAETrainConfig, train_dictionary
from monosemantic.subject import SubjectModel


def test_build_has_the_papers_shape():
    m = SubjectModel.build(ModelConfig(), d_vocab=1000, seed=0)
    assert (m.d_model, m.d_mlp, m.n_ctx, m.model.cfg.n_layers, m.model.cfg.act_fn) == (128, 512, 128, 1, "relu")
    assert m.hook == "blocks.0.mlp.hook_post"
    acts = m.mlp_acts(torch.randint(0, 1000, (2, 10)))
    assert acts.shape == (2, 10, 512) and (acts >= 0).all()  # post-ReLU


def test_seed_changes_the_initialisation():
    a = SubjectModel.build(ModelConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16), 100, seed=0)
    b = SubjectModel.build(ModelConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16), 100, seed=1)
    assert not torch.equal(a.W_out, b.W_out)


def test_splice_identity_and_zero_ablation():
    m = SubjectModel.build(ModelConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16, n_ctx=16), 100, seed=0)
    toks = torch.randint(0, 100, (3, 16))
    clean = m.loss(toks)
    assert torch.allclose(m.loss_spliced(toks, lambda a: a), clean)
    assert not torch.allclose(m.loss_mlp_zero_ablated(toks), clean)


@pytest.mark.parametrize("autocast", [False, True])
def test_loss_matches_transformer_lens_and_its_gradient_autograd(autocast):
    """``SubjectModel.loss`` (``next_token_loss``'s hand-written backward) against TransformerLens's own loss: the
    same value, per token too, and the same parameter gradients as autograd through the plain formula — in fp32 and
    under the bf16 autocast the transformer trains with (both read the same bf16 logits)."""
    from monosemantic.subject import next_token_loss

    m = SubjectModel.build(ModelConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16, n_ctx=16), 100, seed=0)
    toks = torch.randint(0, 100, (5, 16), generator=torch.Generator().manual_seed(0))

    def grads(loss_fn, bf16):
        for p in m.parameters():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.float().backward()
        return float(loss), [p.grad.clone() for p in m.parameters()]

    def plain():   # log-probs in fp32, gathered at the next token: the formula, through autograd
        lp = m.model(toks, return_type="logits")[:, :-1].float().log_softmax(-1)
        return -lp.gather(2, toks[:, 1:, None]).mean()

    def err(g, ref):
        return float(sum(((a - b) ** 2).sum() for a, b in zip(g, ref)).sqrt() / sum((b ** 2).sum() for b in ref).sqrt())

    v, g = grads(lambda: m.loss(toks), autocast)
    v_ref, g_ref = grads(plain, autocast)
    assert v == pytest.approx(v_ref, rel=1e-6)
    assert err(g, g_ref) < 1e-6
    with torch.no_grad():
        tl = m.model(toks, return_type="loss", loss_per_token=True)
        ours = m.loss(toks, per_token=True)
        assert ours.shape == tl.shape == (5, 15)
        assert torch.allclose(ours, tl, atol=1e-5)
        assert float(m.loss(toks)) == pytest.approx(float(m.model(toks, return_type="loss")), rel=1e-6)
    # next_token_loss's own backward (_NextTokenCE): autograd's gradient, in the logits' dtype
    lg = torch.randn(2, 4, 7, requires_grad=True)
    t = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(1))
    before = lg.detach().clone()
    next_token_loss(lg, t).backward()
    assert torch.equal(lg.detach(), before)   # the backward leaves the logits as they were
    ref = torch.autograd.grad(-lg[:, :-1].log_softmax(-1).gather(2, t[:, 1:, None]).mean(), lg)[0]
    assert torch.allclose(lg.grad, ref, atol=1e-7) and (lg.grad[:, -1] == 0).all()
    lg16 = torch.randn(2, 4, 7, dtype=torch.bfloat16, requires_grad=True)
    next_token_loss(lg16, t).backward()
    assert lg16.grad.dtype == torch.bfloat16


def test_pretrained_code_path_offline(monkeypatch):
    """`from_pretrained` wraps whatever TransformerLens returns; offline we hand it a locally built gelu-1l-shaped
    model and check the adapter finds the hook, the width and the tokenizer, and that a dictionary trains on it."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    calls = {}

    class FakeHFTokenizer:
        bos_token_id, eos_token_id, padding_side = 0, 0, "right"

        def __len__(self):
            return 300

        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            ids = [min(ord(c), 299) for c in text]
            return {"input_ids": ids, "offset_mapping": [(i, i + 1) for i in range(len(text))]}

        def encode(self, text, add_special_tokens=False):
            return self(text)["input_ids"]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    def fake_from_pretrained(name, device="cpu", **kw):
        calls["name"] = name
        cfg = HookedTransformerConfig(n_layers=1, d_model=64, d_head=16, n_heads=4, d_mlp=256, d_vocab=300, n_ctx=32,
                                      act_fn="gelu", normalization_type="LN", seed=0)
        model = HookedTransformer(cfg)
        model.tokenizer = FakeHFTokenizer()
        return model

    monkeypatch.setattr(HookedTransformer, "from_pretrained", staticmethod(fake_from_pretrained))
    sm = SubjectModel.from_pretrained("gelu-1l")
    assert calls["name"] == "gelu-1l" and sm.d_mlp == 256 and sm.hook == "blocks.0.mlp.hook_post"
    assert sm.tokenizer.vocab_size == 300 and sm.tokenizer.decode(sm.tokenizer.encode("hi")) == "hi"
    toks = torch.tensor([sm.tokenizer.encode("the quick brown fox jumps")])
    acts = sm.mlp_acts(toks)[0]
    sae = train_dictionary(acts.repeat(20, 1), DictionaryConfig(d_in=256, d_sae=512),
                           SAETrainConfig(steps=5, batch_size=64, resample_at=()), progress=False)
    assert sae.encode(acts).shape == (acts.shape[0], 512)


def test_pretrained_offline_error_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE=1 is set"):
        SubjectModel.from_pretrained("gelu-1l")


def test_checkpoint_from_a_different_config(tmp_path):
    from monosemantic import CheckpointMismatchError

    m = SubjectModel.build(ModelConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16), 100, seed=0)
    m.save(tmp_path)
    back = SubjectModel.load(tmp_path)
    assert torch.equal(back.W_out, m.W_out)
    with pytest.raises(CheckpointMismatchError, match=r"d_mlp: checkpoint 64 vs config 512"):
        back.check_matches(ModelConfig(d_model=32, d_mlp=512, n_heads=2, d_head=16), 100, str(tmp_path))
