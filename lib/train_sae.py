"""Training dictionaries — on a run's activation store, or on any activations you bring.

    sae = monosemantic.train_dictionary(acts_ND, DictionaryConfig(d_in=512, d_sae=4096), SAETrainConfig(steps=500))

One loop for every dictionary kind: the kind owns its loss and its constraints (``before_optimizer_step`` /
``after_optimizer_step``), the loop owns data, optimisation, the paper's dead-feature resampling, logging and
checkpoints.  A killed run resumes from its last checkpoint and sees the same batches it would have seen.

Where a training recipe plugs in (``recipes.py``; a recipe is a class registered for (kind, recipe)): the
objective, its sparsity schedule (``loss`` receives the step), the decoder constraint, the initialisation and
whether resampling is part of it belong to the class; so do the loop-level choices the loop reads from it —
``init_b_dec_to_median``, ``lr_decay_fraction`` (``lr_at``), ``grad_clip`` (``_Loop.step``) and
``revive_target`` (``_Loop.revival_F``: the paper's dead, the low-density mode, or no revival) — and what it
scales to the run (``begin_training``, called with the run's steps and batch size).  The resampling steps and
silence window are ``resample_schedule`` (a function of ``SAETrainConfig`` alone); which features count as dead
is ``_Loop.dead_F`` (the window and the firing record).
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
from .fast import MIXED_DENSE_ABOVE, fast_loss, fast_supported, make_adam, plan_step
from .io import (append_jsonl, checkpoint_state, json_safe, load_optimizer_state, optimizer_state_tensors,
                 read_json, save_checkpoint, truncate_jsonl)
from .sae import Dictionary, DictionaryConfig, geometric_median, make_dictionary
from .sparse import bf16_available


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


def lr_at(step: int, train: SAETrainConfig, decay_fraction: float = 0.0) -> float:
    """Linear warm-up over ``train.warmup_steps``; with ``decay_fraction`` > 0 (the recipe's
    ``lr_decay_fraction``), then linear decay to 0 over that last share of ``train.steps``."""
    lr = train.lr * min(1.0, (step + 1) / max(1, train.warmup_steps))
    if decay_fraction > 0:
        lr *= min(1.0, (train.steps - step) / max(1.0, decay_fraction * train.steps))
    return lr


# ---- the loop --------------------------------------------------------------------------------------------------
#
# train_dictionary = _Loop(...) → init_or_resume → per step: step → revive (at the resample steps) → log →
# checkpoint → finish.  The kind owns its loss and constraints (sae.loss, before/after_optimizer_step, resample);
# these parts own data, optimisation, revival, logging and checkpoints.

class _Loop:
    """One training run's state: the dictionary, Adam, the batch stream, and the per-feature firing record that
    revival needs (``last_fired_F``: the step at which each feature last fired; ``ever_fired_F``), which a
    checkpoint saves with the weights and the optimiser so a resumed run continues exactly."""

    def __init__(self, data, dictionary: Dictionary | DictionaryConfig, train: SAETrainConfig, device: torch.device,
                 seed: int, out_dir: str | Path | None):
        if train.init_density is not None and not 0 < train.init_density < 1:
            raise ConfigError(f"init_density must be in (0, 1) or None (b_e = 0), got {train.init_density}")
        if train.batch_size % D.world():
            raise ConfigError(f"batch_size {train.batch_size} must divide evenly over {D.world()} data-parallel ranks")
        self.train, self.device, self.seed = train, device, seed
        self.source = as_source(data, train.shuffle_buffer_shards)
        sae = make_dictionary(dictionary) if isinstance(dictionary, DictionaryConfig) else dictionary
        if self.source.d != sae.d_in:
            d = self.source.d
            raise ConfigError(f"activation width {d} does not fit the dictionary's d_in={sae.d_in}; build the "
                              f"dictionary with d_in={d} (DictionaryConfig(d_in={d}, ...))")
        self.sae = sae.to(device)
        self.use_fast = train.fast and fast_supported(sae)
        # SAETrainConfig.mixed_dense: the steps above MIXED_DENSE_ABOVE on bf16 products (CPU; the exact sparse
        # step takes over below it)
        self.mixed_dense = bool(train.mixed_dense) and self.use_fast and bf16_available()
        self.opt = make_adam(sae.parameters(), lr=train.lr, betas=tuple(train.betas))  # fused: one pass per tensor
        self.params = list(sae.parameters())
        self.resample_steps, self.window = resample_schedule(train)
        if sae.revive_target is None:  # revival is not part of the recipe
            self.resample_steps = []
        self.last_fired_F = torch.zeros(sae.d_sae, dtype=torch.long)
        self.ever_fired_F = torch.zeros(sae.d_sae, dtype=torch.bool)
        # low-mode revival needs each feature's firings since the last revival (window_start), not only the last one
        self.count_firings = sae.revive_target == "low_mode"
        self.fired_count_F = torch.zeros(sae.d_sae, dtype=torch.long)
        self.window_start = 0
        sae.begin_training(train.steps, train.batch_size)
        self.start = 0
        self.density: float | None = None  # the previous step's L0 / F: picks the cheaper exact path (plan_step)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.ckpt = self.out_dir / "ckpt" if self.out_dir else None
        self.fingerprint = {"dictionary": sae.cfg.to_dict(), "train": json_safe(train.fingerprint()), "seed": seed,
                            "d": self.source.d}
        self.gen = torch.Generator().manual_seed(seed + 5)  # resampling's draws
        self.log_rows: list[dict] = []

    # ---- init / resume ----------------------------------------------------------------------------------------
    def init_or_resume(self, init_b_dec: bool) -> None:
        prog = read_json(self.ckpt / "progress.json") if self.ckpt else None
        if prog is not None:
            self._resume(prog)
        else:
            self._initialise(init_b_dec)
        D.broadcast_module(self.sae)  # every rank starts from rank 0's dictionary
        self.batches = self.source.batches(self.train.batch_size, seed=self.seed, start_batch=self.start,
                                           rank=D.rank(), world=D.world())

    def _resume(self, prog: dict) -> None:
        saved = prog["fingerprint"]
        if isinstance(saved.get("dictionary"), dict):  # a checkpoint from before recipes: tm2023
            saved["dictionary"].setdefault("recipe", "tm2023")
        if saved != self.fingerprint:
            raise CheckpointMismatchError(
                f"the dictionary checkpoint in {self.ckpt} was written by a different config; delete {self.ckpt} to "
                f"start over or train with the config that wrote it")
        state = checkpoint_state(self.ckpt, prog, device=str(self.device))
        self.sae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("sae.")})
        load_optimizer_state(self.opt, self.params, {k: v for k, v in state.items() if k.startswith("opt.")},
                             prog["opt_scalars"])
        self.last_fired_F = state["loop.last_fired"].cpu().long()
        self.ever_fired_F = state["loop.ever_fired"].cpu().bool()
        if self.count_firings:
            self.fired_count_F = state["loop.fired_count"].cpu().long()
            self.window_start = int(prog["window_start"])
        if "loop.gen_state" in state:   # revival's draws continue where they were (older checkpoints: reseeded)
            self.gen.set_state(state["loop.gen_state"].cpu())
        self.start = int(prog["step"])
        # the density that plans the next step (plan_step, mixed_dense), so the resumed step is the step the
        # uninterrupted run took; a checkpoint without it: unknown, the first resumed step takes the dense path
        self.density = prog.get("density")
        if self.out_dir is not None and D.is_main():
            truncate_jsonl(self.out_dir / "train_log.jsonl", self.start)

    def _initialise(self, init_b_dec: bool) -> None:
        train, sae = self.train, self.sae
        sample = None
        if init_b_dec and sae.init_b_dec_to_median:
            sample = self.source.sample(train.geometric_median_rows, self.seed).to(self.device)
            with torch.no_grad():
                sae.b_dec_D.copy_(geometric_median(sample))
        if train.init_density is not None and sae.bias_sets_density:
            if sample is None:
                sample = self.source.sample(train.geometric_median_rows, self.seed).to(self.device)
            sae.init_encoder_bias(sample, train.init_density)
            self.density = train.init_density  # so the first step already takes the sparse path

    # ---- one step ---------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict:
        """One optimiser step on the next batch; records which features fired.  Returns the kind's loss dict
        with ``l0`` (a float) and ``path`` (which exact path computed it) added."""
        sae, opt = self.sae, self.opt
        x = next(self.batches).to(self.device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, self.train, sae.lr_decay_fraction)
        fast_now, bf16_now = plan_step(self.density, sae.d_sae, self.train.bf16) if self.use_fast else (False, False)
        mixed = self.mixed_dense and (self.density is None or self.density >= MIXED_DENSE_ABOVE)
        if mixed:
            fast_now = False
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = sae.loss(x, step=step)
        else:
            out = fast_loss(sae, x, bf16=bf16_now, step=step) if fast_now else sae.loss(x, step=step)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"dictionary loss became {float(loss)} at step {step}; lower the learning rate (now {self.train.lr}) "
                f"or the sparsity coefficient, or check the activations for NaN/inf"
                + (f"; the last checkpoint in {self.ckpt} is kept" if self.ckpt else ""))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        D.all_reduce_mean_grads(self.params)
        if sae.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, sae.grad_clip)
        sae.before_optimizer_step()
        opt.step()
        sae.after_optimizer_step()
        with torch.no_grad():
            fired = out["fired_F"] if "fired_F" in out else (out["f_BF"] > 0).any(0)
            fired_F = D.all_reduce_(fired.to(torch.uint8), "max").bool().cpu()
            self.last_fired_F[fired_F] = step + 1
            self.ever_fired_F |= fired_F
            if self.count_firings:
                f = out["f_BF"]
                count_F = (torch.bincount(f.col_indices(), minlength=sae.d_sae) if f.layout == torch.sparse_csr
                           else (f > 0).sum(0))
                self.fired_count_F += D.all_reduce_(count_F, "sum").cpu()
            l0 = float(out["l0"]) if "l0" in out else float((out["f_BF"] > 0).float().sum(-1).mean())
        self.density = l0 / sae.d_sae
        # (the TopK fast step has no bf16 filter: it says which it used)
        bf16_used = bool(out.get("bf16", bf16_now)) if fast_now else False
        path = "dense-bf16" if mixed else ("fast-bf16" if bf16_used else "fast") if fast_now else "dense"
        return {**out, "l0": l0, "path": path}

    def dead_F(self, done: int) -> torch.Tensor:
        """Features silent for the last ``window`` steps, after ``done`` steps."""
        return (done - self.last_fired_F) >= max(self.window, 1)

    def revival_F(self, done: int) -> tuple[torch.Tensor, dict]:
        """The features revival resamples after ``done`` steps, as the recipe's ``revive_target`` says: the dead
        (``dead_F``), or the low-density mode of the firings since the last revival (``recipes.low_mode_revival``,
        which also starts a new counting window).  Returns the mask and what to add to the log row."""
        if not self.count_firings:
            return self.dead_F(done), {}
        from .recipes import low_mode_revival

        window_tokens = (done - self.window_start) * self.train.batch_size
        revive_F, info = low_mode_revival(self.fired_count_F, window_tokens,
                                          getattr(self.sae, "FLOOR_FIRINGS", 3))
        self.fired_count_F.zero_()
        self.window_start = done
        return revive_F, info

    # ---- revival (the paper's resampling) ---------------------------------------------------------------------
    def revive(self, done: int) -> None:
        """Resample the features ``revival_F`` picks (the kind decides how, or returns 0 where revival is not its
        recipe)."""
        dead_F, info = self.revival_F(done)
        pool = self.source.sample(self.train.resample_inputs, self.seed + done).to(self.device)
        n = self.sae.resample(dead_F.to(self.device), pool, self.opt, generator=self.gen)
        D.broadcast_module(self.sae)  # rank 0's resampled rows win; every rank reset the same Adam slices
        self.last_fired_F[dead_F] = done  # a resampled feature gets a fresh window
        self.log_rows.append({"step": done, "event": "resample", "resampled": n, **info})

    # ---- log and checkpoint -----------------------------------------------------------------------------------
    def log(self, done: int, out: dict, seconds: float) -> dict:
        row = {"step": done, "loss": float(out["loss"].detach()), "mse": float(out["mse"].detach()),
               "sparsity": float(out["sparsity"].detach()), "l0": out["l0"], "lr": self.opt.param_groups[0]["lr"],
               "dead_window": int(self.dead_F(done).sum()) if self.window else None,
               "never_fired": int((~self.ever_fired_F).sum()), "tokens": done * self.train.batch_size,
               "path": out["path"], "seconds": round(seconds, 3)}
        self.log_rows.append(row)
        return row

    def checkpoint(self, done: int) -> None:
        """Model + Adam + firing record in one safetensors file, then progress.json (written last: its step is
        the step the state holds); the log rows so far are appended first, so the log never runs ahead."""
        append_jsonl(self.out_dir / "train_log.jsonl", self.log_rows)
        self.log_rows = []
        tensors, scalars = optimizer_state_tensors(self.opt, self.params)
        tensors.update({f"sae.{k}": v for k, v in self.sae.state_dict().items()})
        tensors["loop.last_fired"] = self.last_fired_F
        tensors["loop.ever_fired"] = self.ever_fired_F
        tensors["loop.gen_state"] = self.gen.get_state()
        progress = {"step": done, "opt_scalars": scalars, "fingerprint": self.fingerprint, "density": self.density}
        if self.count_firings:
            tensors["loop.fired_count"] = self.fired_count_F
            progress["window_start"] = self.window_start
        save_checkpoint(self.ckpt, tensors, progress)

    def finish(self, seconds: float) -> Dictionary:
        D.barrier()
        self.sae.finish_training()  # the recipe's last word on the weights (april2024 folds its decoder norms)
        if self.out_dir is not None and D.is_main():
            append_jsonl(self.out_dir / "train_log.jsonl", self.log_rows)
            self.sae.save(self.out_dir, extra={"train": json_safe(self.train.__dict__), "seed": self.seed,
                                               "train_seconds_this_session": seconds})
        self.sae.train_log = self.log_rows  # in-memory log (the rows since the last checkpoint) for callers
        return self.sae.eval()


def train_dictionary(data, dictionary: Dictionary | DictionaryConfig, train: SAETrainConfig | None = None, *,
                     out_dir: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0,
                     progress: bool = True, init_b_dec: bool = True) -> Dictionary:
    """Train ``dictionary`` (or a new one from its config) on ``data``; see the module docstring.

    ``out_dir`` (optional) receives ``train_log.jsonl`` (one row per logged step), checkpoints in ``ckpt/``
    (resumed automatically) and the final ``sae.safetensors`` + ``cfg.json``.  ``init_b_dec=False`` keeps the
    given dictionary's b_dec instead of starting it at the geometric median of the data.
    """
    from tqdm.auto import tqdm

    train = train or SAETrainConfig()
    device = torch.device(device)
    D.init_from_env(device)
    loop = _Loop(data, dictionary, train, device, seed, out_dir)
    loop.init_or_resume(init_b_dec)
    sae, main = loop.sae, D.is_main()
    t0 = time.time()
    bar = tqdm(range(loop.start, train.steps), desc=f"train dictionary {sae.d_in}→{sae.d_sae}", initial=loop.start,
               total=train.steps, unit="step", disable=not (progress and main))
    for step in bar:
        out = loop.step(step)
        done = step + 1
        if done in loop.resample_steps:
            loop.revive(done)
        if done % train.log_every == 0 or done == train.steps:
            row = loop.log(done, out, time.time() - t0)
            bar.set_postfix(mse=f"{row['mse']:.4g}", l0=f"{row['l0']:.1f}")
        if loop.ckpt and main and (done % train.checkpoint_every == 0 or done == train.steps):
            loop.checkpoint(done)
    bar.close()
    return loop.finish(time.time() - t0)


def train_variant(run, dict_id: str, out_dir: str | Path, *, seed_offset: int = 0, train_if_missing: bool = True,
                  device: str = "cpu", progress: bool = False, **changes) -> Dictionary | None:
    """A variant of a run's dictionary ``dict_id``: the same spec with ``seed_offset`` added to its seed and the
    ``DictionaryConfig`` fields in ``changes`` replaced (e.g. ``recipe="tm2023"``, ``kind="relu"``,
    ``options={}``, ``l1_coefficient=4e-3``), trained for the spec's steps on the same activation store, resumably,
    into ``out_dir`` and loaded from there once finished.  ``train_if_missing=False``: None instead of training
    (minutes on the default preset).  Used by the seed control (universality) and the recipe comparison."""
    from dataclasses import replace

    out = Path(out_dir)
    if (out / "sae.safetensors").exists():
        return Dictionary.load(out, map_location=device)
    if not train_if_missing:
        return None
    spec = run.cfg.dictionary(dict_id)
    train = spec.train_config(run.cfg.sae_train)
    seed = spec.seed + seed_offset
    cfg = replace(spec.dictionary_config(run.cfg.model.d_mlp), seed=seed, **changes).validate()
    return train_dictionary(run.store(spec.transformer), cfg, train, out_dir=out, device=device, seed=seed,
                            progress=progress)
