"""Training the subject transformer: AdamW, linear warm-up then cosine decay, periodic validation loss,
checkpoints that resume exactly (model + optimizer state in safetensors, progress in JSON; no pickle).

Batches are a pure function of (seed, step): step s reads contexts ``perm_epoch[s·B:(s+1)·B]`` of a per-epoch
seeded permutation, so a resumed run sees exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .config import LMTrainConfig, ModelConfig
from .errors import CheckpointMismatchError, TrainingDivergedError
from .io import (append_jsonl, atomic_write_json, checkpoint_state, json_safe, load_optimizer_state,
                 optimizer_state_tensors, read_json, save_checkpoint, truncate_jsonl)
from .subject import SubjectModel
from .tokenizer import TokenSplit


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def use_autocast(cfg: LMTrainConfig, device: torch.device) -> bool:
    if cfg.autocast == "off":
        return False
    if cfg.autocast == "bf16" or device.type == "cuda":
        return True
    from .sparse import bf16_available

    return bf16_available()


def batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    per_epoch = n // batch
    if per_epoch == 0:
        return np.random.default_rng([seed, step]).integers(0, n, size=batch)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch:(k + 1) * batch]


@torch.no_grad()
def eval_loss(model: SubjectModel, val: TokenSplit, n_batches: int, batch: int) -> float:
    model.eval()
    n = min(val.n_contexts, n_batches * batch)
    idx = np.linspace(0, val.n_contexts - 1, n).astype(np.int64)  # fixed, evenly spread validation contexts
    tot, cnt = 0.0, 0
    for i in range(0, n, batch):
        toks = torch.from_numpy(val.contexts(idx[i:i + batch])).to(model.device)
        loss = model.loss(toks)
        tot += float(loss) * len(toks)
        cnt += len(toks)
    model.train()
    return tot / max(cnt, 1)


def train_transformer(out_dir: Path, tokens_dir: Path, model_cfg: ModelConfig, cfg: LMTrainConfig, d_vocab: int,
                      seed: int, device: torch.device, progress: bool = True) -> dict:
    """Train (or resume) one transformer into ``out_dir``; returns its final eval record."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "ckpt"
    torch.manual_seed(seed)
    model = SubjectModel.build(model_cfg, d_vocab=d_vocab, seed=seed, device=device)
    train = TokenSplit(tokens_dir, "train", model_cfg.n_ctx)
    val = TokenSplit(tokens_dir, "val", model_cfg.n_ctx)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the single-kernel implementation: same update, one pass per tensor
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    autocast = use_autocast(cfg, torch.device(device))
    ordered = decay + no_decay
    start = 0
    prog = read_json(ckpt_dir / "progress.json")
    fingerprint = {"model": model_cfg.__dict__, "train": {k: v for k, v in cfg.__dict__.items()}, "seed": seed,
                   "d_vocab": d_vocab}
    fingerprint = json_safe(fingerprint)
    if prog is not None:
        if prog.get("fingerprint") != fingerprint:
            raise CheckpointMismatchError(
                f"checkpoint in {ckpt_dir} was written by a different config; delete {ckpt_dir} to start over, "
                f"or run with the config that wrote it")
        state = checkpoint_state(ckpt_dir, prog, device=str(device))
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        load_optimizer_state(opt, ordered, {k: v for k, v in state.items() if k.startswith("opt.")}, prog["opt_scalars"])
        start = int(prog["step"])
        truncate_jsonl(out_dir / "train_log.jsonl", start)   # rows a killed run logged past its checkpoint
    log_path = out_dir / "train_log.jsonl"
    model.train()
    t0 = time.time()
    tokens_per_step = cfg.batch_size * model_cfg.n_ctx
    bar = tqdm(range(start, cfg.steps), desc=f"train transformer {out_dir.name}", disable=not progress,
               initial=start, total=cfg.steps, unit="step")
    rows = []
    last_eval = prog.get("last_eval") if prog else None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        toks = torch.from_numpy(train.contexts(batch_indices(step, cfg.batch_size, train.n_contexts, seed))).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            loss = model.loss(toks)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"transformer {out_dir.name}: loss became {float(loss)} at step {step}; lower lm_train.lr "
                f"(now {cfg.lr}) or raise warmup_steps; the last checkpoint in {ckpt_dir} is kept")
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"], "grad_norm": float(gn),
               "tokens": (step + 1) * tokens_per_step}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row["eval_loss"] = last_eval = eval_loss(model, val, cfg.eval_batches, cfg.batch_size)
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({"eval": f"{last_eval:.3f}"} if last_eval else {}))
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            append_jsonl(log_path, rows)
            rows = []
            tensors, scalars = optimizer_state_tensors(opt, ordered)
            tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
            save_checkpoint(ckpt_dir, tensors, {"step": step + 1, "opt_scalars": scalars,
                                                "fingerprint": fingerprint, "last_eval": last_eval})
    append_jsonl(log_path, rows)
    final = eval_loss(model, val, max(cfg.eval_batches, 8), cfg.batch_size)
    record = {"eval_loss": final, "steps": cfg.steps, "tokens_seen": cfg.steps * tokens_per_step,
              "seconds_this_session": time.time() - t0, "seed": seed,
              "n_params": sum(p.numel() for p in model.parameters())}
    model.save(out_dir, extra={"eval": record})
    atomic_write_json(out_dir / "eval.json", record)
    return record
