"""Training dictionaries — on a run's activation store, or on any activations you bring.

    sae = monosemantic.train_dictionary(acts_ND, DictionaryConfig(d_in=512, d_sae=4096), SAETrainConfig(steps=500))

One loop for every dictionary kind: the kind owns its loss and its constraints (``before_optimizer_step`` /
``after_optimizer_step``), the loop owns data, optimisation, the paper's dead-feature resampling, logging and
checkpoints.  A killed run resumes from its last checkpoint and sees the same batches it would have seen.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from . import distributed as D
from .activations import ActivationStore
from .config import SAETrainConfig
from .errors import CheckpointMismatchError, ConfigError, TrainingDivergedError
from .io import (append_jsonl, atomic_write_json, load_optimizer_state, load_safetensors, optimizer_state_tensors,
                 read_json, save_safetensors)
from .sae import Dictionary, DictionaryConfig, geometric_median, make_dictionary


# ---- data sources ----------------------------------------------------------------------------------------------

class TensorSource:
    """In-memory activations (N, D): shuffled without replacement each epoch, deterministic in (seed, batch)."""

    def __init__(self, x_ND: torch.Tensor):
        self.x = x_ND
        self.d = x_ND.shape[-1]

    def __len__(self):
        return len(self.x)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + 99)
        return self.x[torch.randperm(len(self.x), generator=g)[:n]].float()

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0, rank: int = 0, world: int = 1,
                **_) -> Iterator[torch.Tensor]:
        """Global batches of ``batch_size``; under data parallelism rank r gets the r-th equal slice of each, so
        the ranks together see exactly the single-process batch."""
        if batch_size > len(self.x):
            raise ConfigError(f"batch size {batch_size} exceeds the {len(self.x)} activation rows given; "
                              f"pass more rows or lower batch_size")
        per_epoch = len(self.x) // batch_size
        share = batch_size // world
        b = start_batch
        while True:
            epoch, k = divmod(b, per_epoch)
            perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            rows = perm[k * batch_size:(k + 1) * batch_size][rank * share:(rank + 1) * share]
            yield self.x[rows].float()
            b += 1


class IterableSource:
    """Any iterable of (B, D) batches (bring your own pipeline).  The first batches seed the geometric median
    and the resampling pool; resuming skips the batches already consumed."""

    def __init__(self, batches: Iterable, pool_rows: int = 65_536):
        self._it = iter(batches)
        self._head: list[torch.Tensor] = []
        rows = 0
        while rows < pool_rows:
            try:
                b = torch.as_tensor(next(self._it)).float()
            except StopIteration:
                break
            self._head.append(b)
            rows += len(b)
        if not self._head:
            raise ConfigError("the activation iterable yielded no batches; pass a non-empty iterable of (B, D) tensors")
        self.d = self._head[0].shape[-1]
        self._pool = torch.cat(self._head)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + 99)
        return self._pool[torch.randperm(len(self._pool), generator=g)[:n]]

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0, **_) -> Iterator[torch.Tensor]:
        # rebatch to the requested size
        buf, n, emitted = [], 0, 0
        def chain():
            yield from self._head
            for b in self._it:
                yield torch.as_tensor(b).float()
        for b in chain():
            buf.append(b)
            n += len(b)
            while n >= batch_size:
                cat = torch.cat(buf)
                out, rest = cat[:batch_size], cat[batch_size:]
                buf, n = [rest], len(rest)
                if emitted >= start_batch:
                    yield out
                emitted += 1


class StoreSource:
    def __init__(self, store: ActivationStore, buffer_shards: int = 4):
        self.store = store
        self.d = store.d
        self.buffer_shards = buffer_shards

    def __len__(self):
        return len(self.store)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self.store.sample(n, seed)

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0, rank: int = 0, world: int = 1, **_):
        """Under data parallelism the store is sharded: rank r reads shards r, r+W, … in batches of B/W."""
        return self.store.batches(batch_size // world, seed=seed, start_batch=start_batch,
                                  buffer_shards=self.buffer_shards, rank=rank, world=world)


def as_source(data, buffer_shards: int = 4):
    if isinstance(data, (TensorSource, IterableSource, StoreSource)):
        return data
    if isinstance(data, ActivationStore):
        return StoreSource(data, buffer_shards)
    if isinstance(data, (str, Path)):
        return StoreSource(ActivationStore(data), buffer_shards)
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.asarray(data, dtype=np.float32))
    if torch.is_tensor(data):
        if data.ndim != 2:
            raise ConfigError(f"activations must be a 2-D (rows, d_in) tensor, got shape {tuple(data.shape)}")
        return TensorSource(data)
    if hasattr(data, "__iter__"):
        return IterableSource(data)
    raise ConfigError(f"cannot train on {type(data).__name__}: pass a (N, D) tensor/array, an ActivationStore or "
                      f"its directory, or an iterable of (B, D) batches")


# ---- schedule --------------------------------------------------------------------------------------------------

def resample_schedule(train: SAETrainConfig) -> tuple[list[int], int]:
    """Steps at which to resample, and the silence window (steps) that marks a feature dead."""
    steps = sorted({int(round(f * train.steps)) for f in train.resample_at if 0 < f < 1})
    steps = [s for s in steps if s > 0]
    if not steps:
        return [], 0
    gaps = np.diff([0] + steps)
    window = max(1, int(min(gaps) // 2))
    return steps, window


def lr_at(step: int, train: SAETrainConfig) -> float:
    return train.lr * min(1.0, (step + 1) / max(1, train.warmup_steps))


# ---- the loop --------------------------------------------------------------------------------------------------

def train_dictionary(data, dictionary: Dictionary | DictionaryConfig, train: SAETrainConfig | None = None, *,
                     out_dir: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0,
                     progress: bool = True, init_b_dec: bool = True) -> Dictionary:
    """Train ``dictionary`` (or a new one from its config) on ``data``; see the module docstring.

    ``out_dir`` (optional) receives ``train_log.jsonl`` (one row per logged step), checkpoints in ``ckpt/``
    (resumed automatically) and the final ``sae.safetensors`` + ``cfg.json``.
    """
    from tqdm.auto import tqdm

    train = train or SAETrainConfig()
    device = torch.device(device)
    D.init_from_env(device)
    rank, world, main = D.rank(), D.world(), D.is_main()
    if train.init_density is not None and not 0 < train.init_density < 1:
        raise ConfigError(f"init_density must be in (0, 1) or None (b_e = 0), got {train.init_density}")
    if train.batch_size % world:
        raise ConfigError(f"batch_size {train.batch_size} must divide evenly over {world} data-parallel ranks")
    source = as_source(data, train.shuffle_buffer_shards)
    sae = make_dictionary(dictionary) if isinstance(dictionary, DictionaryConfig) else dictionary
    if source.d != sae.d_in:
        raise ConfigError(f"activation width {source.d} does not fit the dictionary's d_in={sae.d_in}; build the "
                          f"dictionary with d_in={source.d} (DictionaryConfig(d_in={source.d}, ...))")
    sae.to(device)
    from .fast import fast_loss, fast_supported, make_adam, plan_step

    use_fast = train.fast and fast_supported(sae)
    opt = make_adam(sae.parameters(), lr=train.lr, betas=tuple(train.betas))  # fused: one pass per tensor
    params = list(sae.parameters())
    resample_steps, window = resample_schedule(train)
    F = sae.d_sae
    last_fired = torch.zeros(F, dtype=torch.long)  # step at which each feature last fired
    ever_fired = torch.zeros(F, dtype=torch.bool)
    start = 0
    start_density = None  # the active fraction before the first step, where known
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt = out_dir / "ckpt" if out_dir else None
    fingerprint = {"dictionary": sae.cfg.to_dict(), "train": _jsonable(train.__dict__), "seed": seed, "d": source.d}
    prog = read_json(ckpt / "progress.json") if ckpt else None
    progress = progress and main
    if prog is not None:
        if prog["fingerprint"] != fingerprint:
            raise CheckpointMismatchError(
                f"the dictionary checkpoint in {ckpt} was written by a different config; delete {ckpt} to start "
                f"over or train with the config that wrote it")
        state = load_safetensors(ckpt / "state.safetensors", device=str(device))
        sae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("sae.")})
        load_optimizer_state(opt, params, {k: v for k, v in state.items() if k.startswith("opt.")}, prog["opt_scalars"])
        last_fired = state["loop.last_fired"].cpu().long()
        ever_fired = state["loop.ever_fired"].cpu().bool()
        start = int(prog["step"])
    else:
        sample = None
        if init_b_dec:
            sample = source.sample(train.geometric_median_rows, seed).to(device)
            with torch.no_grad():
                sae.b_dec_D.copy_(geometric_median(sample))
        if train.init_density is not None and sae.bias_sets_density:
            if sample is None:
                sample = source.sample(train.geometric_median_rows, seed).to(device)
            sae.init_encoder_bias(sample, train.init_density)
            start_density = train.init_density  # so the first step already takes the sparse path
    D.broadcast_module(sae)  # every rank starts from rank 0's dictionary
    gen = torch.Generator().manual_seed(seed + 5)
    batches = source.batches(train.batch_size, seed=seed, start_batch=start, rank=rank, world=world)
    log_rows: list[dict] = []
    density = start_density  # the previous step's L0 / F: picks the cheaper of two exact paths (fast.plan_step)
    t0 = time.time()
    bar = tqdm(range(start, train.steps), desc=f"train dictionary {sae.d_in}→{sae.d_sae}", initial=start,
               total=train.steps, unit="step", disable=not progress)
    for step in bar:
        x = next(batches).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, train)
        fast_now, bf16_now = plan_step(density, F, train.bf16) if use_fast else (False, False)
        out = fast_loss(sae, x, bf16=bf16_now, step=step) if fast_now else sae.loss(x, step=step)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"dictionary loss became {float(loss)} at step {step}; lower the learning rate (now {train.lr}) or "
                f"the sparsity coefficient, or check the activations for NaN/inf"
                + (f"; the last checkpoint in {ckpt} is kept" if ckpt else ""))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        D.all_reduce_mean_grads(params)
        sae.before_optimizer_step()
        opt.step()
        sae.after_optimizer_step()
        with torch.no_grad():
            fired = out["fired_F"] if "fired_F" in out else (out["f_BF"] > 0).any(0)
            fired_F = D.all_reduce_(fired.to(torch.uint8), "max").bool().cpu()
            last_fired[fired_F] = step + 1
            ever_fired |= fired_F
            l0 = float(out["l0"]) if "l0" in out else float((out["f_BF"] > 0).float().sum(-1).mean())
            density = l0 / F
        if (step + 1) in resample_steps:
            dead = (step + 1 - last_fired) >= window
            pool = source.sample(train.resample_inputs, seed + step + 1).to(device)
            n = sae.resample(dead.to(device), pool, opt, generator=gen)
            D.broadcast_module(sae)  # rank 0's resampled rows win; every rank reset the same Adam slices
            last_fired[dead] = step + 1  # a resampled feature gets a fresh window
            log_rows.append({"step": step + 1, "event": "resample", "resampled": n})
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            row = {"step": step + 1, "loss": float(loss.detach()), "mse": float(out["mse"].detach()),
                   "sparsity": float(out["sparsity"].detach()), "l0": l0, "lr": opt.param_groups[0]["lr"],
                   "dead_window": int(((step + 1 - last_fired) >= max(window, 1)).sum()) if window else None,
                   "never_fired": int((~ever_fired).sum()), "tokens": (step + 1) * train.batch_size,
                   "path": ("fast-bf16" if bf16_now else "fast") if fast_now else "dense",
                   "seconds": round(time.time() - t0, 3)}
            log_rows.append(row)
            bar.set_postfix(mse=f"{row['mse']:.4g}", l0=f"{l0:.1f}")
        if ckpt and main and ((step + 1) % train.checkpoint_every == 0 or step + 1 == train.steps):
            append_jsonl(out_dir / "train_log.jsonl", log_rows)
            log_rows = []
            tensors, scalars = optimizer_state_tensors(opt, params)
            tensors.update({f"sae.{k}": v for k, v in sae.state_dict().items()})
            tensors["loop.last_fired"] = last_fired
            tensors["loop.ever_fired"] = ever_fired
            save_safetensors(tensors, ckpt / "state.safetensors")
            atomic_write_json(ckpt / "progress.json", {"step": step + 1, "opt_scalars": scalars,
                                                       "fingerprint": fingerprint})
    bar.close()
    D.barrier()
    if out_dir is not None and main:
        append_jsonl(out_dir / "train_log.jsonl", log_rows)
        sae.save(out_dir, extra={"train": _jsonable(train.__dict__), "seed": seed,
                                 "train_seconds_this_session": time.time() - t0})
    sae.train_log = log_rows  # in-memory log for callers without an out_dir
    return sae.eval()


def _jsonable(o):
    import json

    return json.loads(json.dumps(o, default=lambda x: list(x) if isinstance(x, tuple) else str(x)))
