"""Feature ↔ neuron correlations (targeted: a few features over part of the token set)."""
from __future__ import annotations

from typing import Iterable

import torch

from .config import stats_config
from .passes import token_set_contexts
from .threads import intra_op_threads, pipelined, worker_count

__all__ = ["correlated_neurons"]

@torch.no_grad()
def correlated_neurons(run, dict_id: str, features: Iterable[int], n_tokens: int = 200_000, top: int = 5,
                       split: str | None = None, progress: bool = False):
    """Pearson correlation of each given feature with every MLP neuron over the first ``n_tokens`` of the
    statistics token set; returns a DataFrame (feature, neuron, corr) of the ``top`` neurons per feature."""
    import pandas as pd
    from tqdm.auto import tqdm

    feats = [int(f) for f in features]
    cfg = stats_config(run, None)
    sp = run.split(split or cfg.split)
    model = run.model(dict_id.split("/")[0])
    sae = run.dictionary(dict_id)
    if any(not 0 <= f < sae.d_sae for f in feats):
        raise IndexError(f"features {feats} out of range for {dict_id} (0 … {sae.d_sae - 1})")
    ctx = token_set_contexts(sp, min(n_tokens, cfg.n_tokens))
    W = sae.W_enc_DF.detach()[:, feats]
    c = sae.b_enc_F.detach()[feats] - sae.input_offset_D.detach() @ W
    D, k = model.d_mlp, len(feats)
    n = 0
    sf = torch.zeros(k, dtype=torch.float64); sff = torch.zeros(k, dtype=torch.float64)
    sx = torch.zeros(D, dtype=torch.float64); sxx = torch.zeros(D, dtype=torch.float64)
    sfx = torch.zeros(k, D, dtype=torch.float64)
    fwd = model.mlp_acts_function(torch.from_numpy(sp.contexts(ctx[:8])))
    B = cfg.batch_contexts

    def produce(i: int):  # in a worker thread: the chunk's neurons and the chosen features
        x = fwd(torch.from_numpy(sp.contexts(ctx[i:i + B])))[:, 1:].reshape(-1, D).float()
        f = torch.relu(x @ W + c).double()
        xd = x.double()
        return x.shape[0], f.sum(0), (f * f).sum(0), xd.sum(0), (xd * xd).sum(0), f.T @ xd

    steps = range(0, len(ctx), B)
    with intra_op_threads(1):
        chunks = pipelined(produce, steps, worker_count(cfg.workers, fwd))
        for m, a, b, cx, d, e in tqdm(chunks, total=len(steps),
                                      disable=not progress, desc="correlations"):
            n += m
            sf += a; sff += b; sx += cx; sxx += d; sfx += e
    cov = sfx / n - (sf / n)[:, None] * (sx / n)[None, :]
    vf = (sff / n - (sf / n) ** 2).clamp_min(0); vx = (sxx / n - (sx / n) ** 2).clamp_min(0)
    den = (vf[:, None] * vx[None, :]).sqrt()
    corr = torch.where(den > 0, cov / den.clamp_min(1e-30), torch.zeros_like(cov))
    rows = []
    for a, fid in enumerate(feats):
        t = corr[a].topk(min(top, D))
        rows += [{"feature": fid, "neuron": int(j), "corr": float(v)} for v, j in zip(t.values, t.indices)]
    return pd.DataFrame(rows)
