"""Harvest and the shuffled, bounded-RAM reader."""
import numpy as np
import pytest
import torch

from monosemantic import HarvestConfig
from monosemantic.activations import ActivationStore, harvest


def test_store_rows_are_real_activations_never_bos(tiny_run):
    store = tiny_run.store("A")
    model = tiny_run.model("A")
    split = tiny_run.split("train")
    P = tiny_run.cfg.harvest.positions_per_context
    assert len(store) == tiny_run.cfg.harvest.rows
    acts, meta = store.shard(0)
    assert acts.dtype == np.float16 and acts.shape[1] == model.d_mlp
    ctx, pos, tok = meta[:, 0], meta[:, 1], meta[:, 2]
    assert pos.min() >= 1 and pos.max() < tiny_run.cfg.model.n_ctx
    # P distinct positions from every context
    for c in np.unique(ctx)[:20]:
        ps = pos[ctx == c]
        assert len(ps) == P and len(set(ps.tolist())) == P
    # the stored row is the activation at that (context, position), and the token id matches
    sel = np.arange(0, 50)
    toks = split.contexts(ctx[sel])
    assert (toks[np.arange(len(sel)), pos[sel]] == tok[sel]).all()
    live = model.mlp_acts(torch.from_numpy(toks))[torch.arange(len(sel)), torch.from_numpy(pos[sel])]
    assert torch.allclose(live, torch.from_numpy(acts[sel].astype(np.float32)), atol=2e-3, rtol=2e-3)


def test_transformers_A_and_B_read_different_contexts(tiny_run):
    a = np.unique(tiny_run.store("A").shard(0)[1][:, 0])
    b = np.unique(tiny_run.store("B").shard(0)[1][:, 0])
    assert len(np.intersect1d(a, b)) == 0


def test_reader_is_shuffled_without_replacement(tiny_run):
    store = tiny_run.store("A")
    bs = 1000
    per_epoch = len(store) // bs
    seen = []
    for i, (x, m) in enumerate(store.batches(bs, seed=5, buffer_shards=2, with_meta=True)):
        if i == per_epoch:
            break
        seen.append(m)
    m = np.concatenate(seen)
    keys = m[:, 0] * 1000 + m[:, 1]
    assert len(np.unique(keys)) == len(keys)                # no row twice in an epoch
    assert len(keys) >= len(store) - bs                      # every row but the remainder
    # shuffled across shards: the first batch draws from more than one shard's contexts
    first = seen[0][:, 0]
    assert len(np.unique(first)) > 100


def test_reader_yields_the_stores_rows_exactly_as_float32(tiny_run):
    store = tiny_run.store("A")
    raw = np.concatenate([np.asarray(store.shard(i)[0]) for i in range(len(store.shards))])
    assert raw.dtype == np.float16
    rows = {r.tobytes() for r in raw.astype(np.float32)}     # the numpy cast: the reference
    x = next(store.batches(1000, seed=3, buffer_shards=2))
    assert x.dtype == torch.float32 and x.shape == (1000, store.d)
    assert all(r.tobytes() in rows for r in x.numpy())       # torch's cast (as_float32) gives the same bits
    s = store.sample(500, seed=1)
    assert s.dtype == torch.float32 and all(r.tobytes() in rows for r in s.numpy())


def test_reader_resume_skips_deterministically(tiny_run):
    store = tiny_run.store("A")
    it = store.batches(512, seed=1, buffer_shards=2)
    ref = [next(it) for _ in range(30)]
    it2 = store.batches(512, seed=1, buffer_shards=2, start_batch=17)
    for k in range(17, 30):
        assert torch.equal(next(it2), ref[k])


def test_reader_ram_is_bounded_by_the_buffer(tiny_run, monkeypatch):
    store = tiny_run.store("A")
    loaded = []
    orig = store.shard

    def spy(i):
        loaded.append(i)
        return orig(i)

    monkeypatch.setattr(store, "shard", spy)
    it = store.batches(256, seed=0, buffer_shards=2)
    next(it)
    assert len(loaded) == 2  # one buffer of two shards, never the whole store


def test_harvest_resumes_and_matches_an_uninterrupted_harvest(tiny_run, tmp_path):
    model = tiny_run.model("A")
    split = tiny_run.split("train")
    cfg = HarvestConfig(positions_per_context=8, rows=3000, shard_rows=1024, batch_contexts=16)
    full = harvest(model, split, tmp_path / "full", cfg, seed=0, progress=False)
    partial = HarvestConfig(**{**cfg.__dict__})
    harvest(model, split, tmp_path / "part", cfg, seed=0, progress=False)
    # simulate a kill after shard 1: drop the later shards from the manifest and the disk
    import json
    st = json.loads((tmp_path / "part/store.json").read_text())
    for s in st["shards"][2:]:
        (tmp_path / f"part/acts_{s['name']}.npy").unlink()
    st["rows"] = sum(s["rows"] for s in st["shards"][:2])
    st["shards"] = st["shards"][:2]
    st["complete"] = False
    (tmp_path / "part/store.json").write_text(json.dumps(st))
    harvest(model, split, tmp_path / "part", partial, seed=0, progress=False)
    a, b = ActivationStore(tmp_path / "full"), ActivationStore(tmp_path / "part")
    assert len(a) == len(b) == 3000
    for i in range(len(a.shards)):
        assert np.array_equal(a.shard(i)[0], b.shard(i)[0]) and np.array_equal(a.shard(i)[1], b.shard(i)[1])


def test_harvest_asks_for_more_contexts_than_exist(tiny_run, tmp_path):
    from monosemantic import ConfigError

    with pytest.raises(ConfigError, match="lower harvest.rows"):
        harvest(tiny_run.model("A"), tiny_run.split("val"), tmp_path, HarvestConfig(positions_per_context=4,
                rows=10**8), seed=0, progress=False)
