"""Data parallelism on ``torch.distributed`` for the one training loop (single-process is world size 1).

Launch with torchrun; gloo on CPU, nccl on GPU::

    torchrun --nproc_per_node=2 -m monosemantic.cli train-dictionary RUN A/1          # 2 CPU processes
    torchrun --nproc_per_node=8 -m monosemantic.cli train-dictionary RUN A/1 --device cuda   # 8 GPUs

Every rank holds the whole dictionary and a disjoint share of every batch; after ``backward`` the gradients are
averaged with one coalesced all-reduce.  Because each rank's loss is a mean over its equal share, the averaged
gradient is exactly the gradient of the global batch's loss: the method is the same as single-process, only the
arithmetic order differs.  (We all-reduce by hand rather than wrap in ``DistributedDataParallel`` because the
loop calls ``sae.loss`` — not ``forward`` — and the sparse fast path computes its gradients itself, so DDP's
autograd hooks would see neither.)
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device | str = "cpu") -> bool:
    """Join the process group torchrun describes in the environment; False when not launched distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_mean_grads(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over ranks with one flat buffer (one collective, not one per tensor)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off:off + n].view_as(g))
        off += n


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if not active():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if active():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t
