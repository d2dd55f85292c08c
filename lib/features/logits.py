"""Logit effects: the paper's direct effect of a direction in MLP space on the logits."""
from __future__ import annotations

import numpy as np
import torch

@torch.no_grad()
def logit_effects(dirs_UM: torch.Tensor, W_out_MD: torch.Tensor, W_U_DV: torch.Tensor,
                  ln_w_D: torch.Tensor | None, ln_scale: float = 1.0, center: bool = True) -> torch.Tensor:
    """Direct logit effect of MLP-space directions (decoder rows, or one-hot neurons), median-centred:

        r = dir · W_out;  r ← (r − mean(r)) · ln_w / ln_scale   (LayerNorm with its scale frozen);  ℓ = r · W_U

    then ℓ − median(ℓ) per direction.  Shape (U, d_vocab)."""
    r = dirs_UM.float() @ W_out_MD.float()
    if ln_w_D is not None:
        if center:
            r = r - r.mean(-1, keepdim=True)
        r = r * ln_w_D.float() / ln_scale
    lg = r @ W_U_DV.float()
    V = lg.shape[-1]
    k1, k2 = (V - 1) // 2, V // 2                     # the two middle order statistics (equal for odd V)
    part = np.partition(lg.numpy(), [k1, k2], axis=-1)
    med = (part[:, k1].astype(np.float64) + part[:, k2]) / 2
    return lg - torch.from_numpy(med).float()[:, None]
