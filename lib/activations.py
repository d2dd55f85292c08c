"""Activation stores: MLP activations harvested into shards on disk, read back shuffled with bounded RAM.

Harvest: contexts of the train split in a seeded order; from each context ``positions_per_context`` positions
sampled without replacement, never position 0 (BOS).  Rows are buffered, shuffled, and written as shards
``acts_NNNNN.npy`` (rows × d_mlp, float16) with ``meta_NNNNN.npy`` (rows × 3 int64: context, position, token id).
``store.json`` lists finished shards and is rewritten atomically after each, so a killed harvest resumes at the
next shard.

Read: each epoch visits the shards in a seeded order, ``buffer_shards`` at a time; the rows of the buffer are
permuted together and yielded in batches — every row exactly once per epoch (without replacement), with RAM at
most ``buffer_shards × shard_rows × d_mlp × 2`` bytes whatever the store's size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .config import HarvestConfig
from .errors import CheckpointMismatchError, ConfigError
from .io import atomic_save_npy, atomic_write_json, check_npy, load_npy, read_json
from .subject import SubjectModel
from .tokenizer import TokenSplit


def harvest(model: SubjectModel, split: TokenSplit, out_dir: Path, cfg: HarvestConfig, seed: int,
            context_offset: int = 0, progress: bool = True) -> dict:
    """Fill ``out_dir`` with ``cfg.rows`` activation rows (resuming a partial store).

    Shard k holds the sampled positions of contexts ``order[k·C:(k+1)·C]`` (C = shard_rows // P), drawn with a
    generator seeded by (seed, k): a shard's content does not depend on whether the harvest was interrupted.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    P = cfg.positions_per_context
    C = max(1, cfg.shard_rows // P)
    need_ctx = -(-cfg.rows // P)
    if need_ctx + context_offset > split.n_contexts:
        raise ConfigError(
            f"harvesting {cfg.rows} rows at {P} positions per context needs {need_ctx} contexts (after skipping "
            f"{context_offset}) but the train split has {split.n_contexts}; lower harvest.rows, raise "
            f"harvest.positions_per_context, or use a larger corpus (corpus.max_bytes)")
    fingerprint = {"rows": cfg.rows, "positions_per_context": P, "shard_rows": cfg.shard_rows, "seed": seed,
                   "context_offset": context_offset, "d_mlp": model.d_mlp, "hook": model.hook, "dtype": cfg.dtype}
    state = read_json(out_dir / "store.json")
    if state is not None and state.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"the activation store in {out_dir} was harvested with a different config; delete {out_dir} to re-harvest")
    if state is None:
        state = {"fingerprint": fingerprint, "shards": [], "rows": 0, "d": model.d_mlp, "complete": False,
                 "hook": model.hook, "positions_per_context": P}
    good = _intact_shards(out_dir, state)
    if good < len(state["shards"]):  # a shard cut short or lost: harvest again from it (shards are seeded by k)
        state["shards"] = state["shards"][:good]
        state["rows"] = sum(sh["rows"] for sh in state["shards"])
        state["complete"] = False
    if state["complete"]:
        return state
    # A and B read disjoint contexts when given different offsets (the paper trains B's dictionaries on other tokens)
    order = np.random.default_rng([seed, 17]).permutation(split.n_contexts)[context_offset:]
    dt = np.dtype(cfg.dtype)
    n_shards = -(-need_ctx // C)
    bar = tqdm(total=cfg.rows, initial=state["rows"], desc=f"harvest {out_dir.name}", unit="row", disable=not progress)
    model.eval()
    positions = np.arange(1, split.n_ctx)  # never position 0 (BOS)
    fwd = None
    for k in range(len(state["shards"]), n_shards):
        rng = np.random.default_rng([seed, 23, k])
        ctx = order[k * C:min((k + 1) * C, need_ctx)]
        acts_parts, meta_parts = [], []
        for i in range(0, len(ctx), cfg.batch_contexts):
            idx = ctx[i:i + cfg.batch_contexts]
            toks = split.contexts(idx)
            if fwd is None:  # the fastest exact forward (the fused one on a CPU), checked on real contexts
                fwd = model.mlp_acts_function(torch.from_numpy(toks[:8]).to(model.device))
            acts = fwd(torch.from_numpy(toks).to(model.device)).float().cpu().numpy()  # (n, ctx, d)
            pos = np.stack([rng.choice(positions, size=P, replace=False) for _ in range(len(idx))])
            r = np.arange(len(idx))[:, None]
            acts_parts.append(acts[r, pos].reshape(-1, acts.shape[-1]).astype(dt))
            meta_parts.append(np.stack([np.broadcast_to(idx[:, None], pos.shape), pos, toks[r, pos]], -1).reshape(-1, 3))
        A, M = np.concatenate(acts_parts), np.concatenate(meta_parts).astype(np.int64)
        take = min(len(A), cfg.rows - state["rows"])
        perm = rng.permutation(len(A))[:take]
        atomic_save_npy(out_dir / f"acts_{k:05d}.npy", A[perm])
        atomic_save_npy(out_dir / f"meta_{k:05d}.npy", M[perm])
        state["shards"].append({"name": f"{k:05d}", "rows": int(take)})
        state["rows"] += int(take)
        atomic_write_json(out_dir / "store.json", state)
        bar.update(take)
    bar.close()
    state["complete"] = True
    atomic_write_json(out_dir / "store.json", state)
    return state


def _intact_shards(out_dir: Path, state: dict) -> int:
    """How many of the store's listed shards, from the first, are whole on disk."""
    from .errors import CorruptArtifactError

    d = int(state["d"])
    for k, sh in enumerate(state["shards"]):
        try:
            _check_shard(out_dir, sh, d)
        except CorruptArtifactError:
            return k
    return len(state["shards"])


def _check_shard(out_dir: Path, shard: dict, d: int, stage: str | None = None) -> None:
    from .errors import CorruptArtifactError

    for kind, width in (("acts", d), ("meta", 3)):
        path = out_dir / f"{kind}_{shard['name']}.npy"
        shape, _ = check_npy(path, stage)
        if shape != (shard["rows"], width):
            raise CorruptArtifactError(path, f"shape {shape}, store.json says ({shard['rows']}, {width})", stage)


def as_float32(a: np.ndarray) -> torch.Tensor:
    """Rows of a store (float16, often a memory map) as a float32 tensor.  Through torch: numpy's float16 →
    float32 cast has no vector path and runs at ~25M values/s here (12 s for a 4-shard shuffle buffer, a stall
    every 128 training steps that cost the default run ~40 % of its dictionary time); torch's is ~10× faster."""
    return torch.from_numpy(np.ascontiguousarray(a)).float()


class ActivationStore:
    """Read side of a harvested store (see module docstring)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.stage = f"harvest:{self.dir.name}"  # the stage that (re)builds it, named in errors
        self.state = read_json(self.dir / "store.json", stage=self.stage)
        if self.state is None:
            raise FileNotFoundError(f"no activation store at {self.dir}; run the harvest stage first")
        self.shards = self.state["shards"]
        self.d = int(self.state["d"])
        self.rows = int(self.state["rows"])

    def __len__(self) -> int:
        return self.rows

    def verify(self) -> None:
        """Check every shard's header and size against store.json (no data read); raise ``CorruptArtifactError``
        naming the first bad file."""
        from .errors import CorruptArtifactError

        if not self.state.get("complete"):
            raise CorruptArtifactError(self.dir / "store.json", "the harvest did not finish", self.stage)
        for sh in self.shards:
            _check_shard(self.dir, sh, self.d, self.stage)

    def shard(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.shards[i]["name"]
        return (load_npy(self.dir / f"acts_{name}.npy", stage=self.stage),
                load_npy(self.dir / f"meta_{name}.npy", stage=self.stage))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` rows drawn uniformly from the whole store (for the geometric median, resampling, eval)."""
        rng = np.random.default_rng([seed, 99])
        picks = np.sort(rng.choice(self.rows, size=min(n, self.rows), replace=False))
        bounds = np.cumsum([0] + [s["rows"] for s in self.shards])
        out = []
        for i in range(len(self.shards)):
            sel = picks[(picks >= bounds[i]) & (picks < bounds[i + 1])] - bounds[i]
            if len(sel):
                out.append(self.shard(i)[0][sel])
        return as_float32(np.concatenate(out))

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0, buffer_shards: int = 4,
                epochs: int | None = None, with_meta: bool = False, rank: int = 0,
                world: int = 1) -> Iterator[torch.Tensor]:
        """Yield float32 batches (B, d) forever (or ``epochs`` times), shuffled without replacement per epoch.

        ``start_batch`` skips that many batches deterministically (resume).  ``rank``/``world`` shard the store for
        data parallelism: rank r reads only shards r, r+world, … (disjoint rows on every rank).
        """
        mine = [i for i in range(len(self.shards)) if i % world == rank]
        if not mine:
            raise ConfigError(f"{self.dir} has {len(self.shards)} shards, fewer than the {world} data-parallel "
                              f"ranks; harvest with a smaller harvest.shard_rows")
        rows = sum(self.shards[i]["rows"] for i in mine)
        if batch_size > rows:
            raise ConfigError(f"batch size {batch_size} exceeds the {rows} rows in {self.dir}"
                              f"{' on this rank' if world > 1 else ''}; harvest more rows or use a smaller batch")
        per_epoch = rows // batch_size
        epoch = start_batch // per_epoch
        skip = start_batch % per_epoch
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch, rank])
            order = np.asarray(mine)[rng.permutation(len(mine))]
            # the buffer stays in the store's dtype (float16: half the RAM); each batch is cast on its own
            carry_a = np.zeros((0, self.d), np.dtype(self.state.get("dtype", "float16")))
            carry_m = np.zeros((0, 3), np.int64)
            emitted = 0
            for g in range(0, len(order), buffer_shards):
                group = order[g:g + buffer_shards]
                n_group = sum(self.shards[i]["rows"] for i in group)
                avail = len(carry_a) + n_group
                n_out = avail // batch_size
                parts = [self.shard(i) for i in group]
                A = np.concatenate([carry_a] + [np.asarray(p[0]) for p in parts])
                M = np.concatenate([carry_m] + [np.asarray(p[1]) for p in parts]) if with_meta else None
                perm = rng.permutation(len(A))
                for b in range(n_out):
                    if emitted >= skip:
                        sel = perm[b * batch_size:(b + 1) * batch_size]
                        x = as_float32(A[sel])
                        yield (x, M[sel]) if with_meta else x
                    emitted += 1
                rest = perm[n_out * batch_size:]
                carry_a = A[rest]
                if with_meta:
                    carry_m = M[rest]
            skip = 0
            epoch += 1
