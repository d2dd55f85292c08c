"""Logit effects: the paper's direct effect of a direction in MLP space on the logits."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["logit_effects", "logit_weights"]


@torch.no_grad()
def logit_effects(dirs_UM: torch.Tensor, W_out_MD: torch.Tensor, W_U_DV: torch.Tensor,
                  ln_w_D: torch.Tensor | None, ln_scale: float = 1.0) -> torch.Tensor:
    """Direct logit effect of MLP-space directions (decoder rows, or one-hot neurons), median-centred — the
    paper's, and the one definition every analysis uses:

        r = dir · W_out;  r ← (r − mean(r)) · ln_w / ln_scale   (LayerNorm with its scale frozen);  ℓ = r · W_U

    then ℓ − median(ℓ) per direction (a model without a final LayerNorm: r as is).  Shape (U, d_vocab)."""
    r = dirs_UM.float() @ W_out_MD.float()
    if ln_w_D is not None:
        r = r - r.mean(-1, keepdim=True)
        r = r * ln_w_D.float() / ln_scale
    lg = r @ W_U_DV.float()
    V = lg.shape[-1]
    k1, k2 = (V - 1) // 2, V // 2                     # the two middle order statistics (equal for odd V)
    part = np.partition(lg.numpy(), [k1, k2], axis=-1)
    med = (part[:, k1].astype(np.float64) + part[:, k2]) / 2
    return lg - torch.from_numpy(med).float()[:, None]


@torch.no_grad()
def logit_weights(model, dictionary=None, rows: np.ndarray | None = None, ln_scale: float = 1.0) -> torch.Tensor:
    """``logit_effects`` of a dictionary's decoder rows (``dictionary=None``: of each neuron) through ``model``'s
    W_out, final LayerNorm and W_U; ``rows`` picks some.  Shape (rows, d_vocab).  ``ln_scale`` (the frozen
    LayerNorm scale) divides every row alike: a correlation between rows does not depend on it."""
    W_out = model.W_out.detach().float().cpu()                 # (d_mlp, d_model)
    if dictionary is None:
        dirs = torch.eye(W_out.shape[0])
    else:
        dirs = dictionary.W_dec_FD.detach().float().cpu()
    if rows is not None:
        dirs = dirs[torch.as_tensor(rows, dtype=torch.long)]
    ln_w = model.ln_final_weight
    return logit_effects(dirs, W_out, model.W_U.detach().float().cpu(),
                         None if ln_w is None else ln_w.detach().float().cpu(), ln_scale)
