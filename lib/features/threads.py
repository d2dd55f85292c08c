"""How the pass spreads work over cores: single-threaded worker threads, each producing one chunk."""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager

import torch

__all__ = ["intra_op_threads", "worker_count", "pipelined"]


@contextmanager
def intra_op_threads(n: int):
    """Run the block with ``n`` intra-op threads.  The pass parallelises over chunks instead (one worker thread
    per core, each single-threaded): on a shared machine, two-thread OpenMP regions stall whenever the other
    thread is descheduled, and the small ops of a chunk gain little from them anyway."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def worker_count(workers: int | None, mlp_acts) -> int:
    """Worker threads for a pass whose forward is ``mlp_acts``: ``workers`` (None: one per core), but 1 unless
    the forward is the fused ``FastMLPActs`` — the hooked forward registers hooks on shared modules, so it is not
    thread-safe."""
    from ..subject import FastMLPActs

    if not isinstance(mlp_acts, FastMLPActs):
        return 1
    n = workers if workers is not None else min(os.cpu_count() or 1, max(1, torch.get_num_threads()))
    return max(1, int(n))


def pipelined(fn, items, workers: int):
    """``fn(item)`` for each item, in order, computed up to ``workers + 1`` items ahead by single-threaded worker
    threads (torch ops release the GIL)."""
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    ex = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,),
                            thread_name_prefix="monosemantic-stats")
    try:
        it = iter(items)
        q = deque(ex.submit(fn, x) for x in itertools.islice(it, workers + 1))
        while q:
            r = q.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                q.append(ex.submit(fn, nxt))
            yield r
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
