"""The one sparse-encoding module: the entries it finds equal the dense encoder's, in both filter modes."""
import numpy as np
import pytest
import torch

from monosemantic import DictionaryConfig, make_dictionary
from monosemantic.sparse import SparseEncoder, bf16_default, encode_sparse, positive_entries


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


def test_positive_entries_of_a_dense_matrix():
    x = torch.tensor([[0.0, 1.5, -1.0], [2.0, 0.0, 0.25]])
    rows, cols, vals = positive_entries(x)
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [1, 0, 2] and vals.tolist() == [1.5, 2.0, 0.25]
