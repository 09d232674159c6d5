"""Pixel reconstruction loss (paper eq. 9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class L1Loss(nn.Module):
    """L_L1 = ||I_hat - I||_1 / (C H W) per image (eq. 9), averaged over the batch: one mean over B*C*H*W."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"L1Loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        return F.l1_loss(pred, target.to(pred.dtype))
