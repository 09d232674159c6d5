"""Per-part colour error: does the generated person wear the ground truth's colours, part by part?

For a generated image G, its ground truth T and the target's ground-truth parsing L (CIHP ids, as the dataset
writes them), each non-background part k with |P_k| >= min_pixels pixels P_k = {x : L(x) = k} gets

    e_k = 1/3 * sum_{c in R,G,B} | mean_{x in P_k} G_c(x) - mean_{x in P_k} T_c(x) |      (grey levels, 0..255)

The set's figures are the mean of e_k over all (pair, part) entries and the share of entries with e_k <= 20.
Mean colours ignore texture and exact placement on purpose: a blurry but correctly coloured person scores
well, a sharp grey one does not. SSIM rewards neither.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_PART_PIXELS = 150  # smaller parts (a shoe seen edge-on) have too few pixels for a stable mean
WITHIN_LEVELS = 20.0


def part_colour_errors(generated: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor, num_labels: int = 20,
                       min_pixels: int = MIN_PART_PIXELS) -> torch.Tensor:
    """(B,3,H,W) generated and ground-truth images (uint8 or float, grey levels 0..255), (B,H,W) integer parsing
    labels in 0..num_labels-1 -> (B, num_labels) e_k; NaN for the background (label 0) and for parts with fewer
    than min_pixels pixels."""
    b, c, h, w = generated.shape
    flat = labels.reshape(b, 1, h * w).long()  # (B,1,HW)
    index = flat.expand(b, c, h * w)  # (B,3,HW)
    diff_sums = torch.zeros(b, c, num_labels, dtype=torch.float64, device=generated.device)
    # sum over a part of G minus the sum of T: both means share the part's pixel count
    diff = generated.reshape(b, c, h * w).double() - truth.reshape(b, c, h * w).double()  # (B,3,HW)
    diff_sums.scatter_add_(2, index, diff)
    counts = torch.zeros(b, 1, num_labels, dtype=torch.float64, device=generated.device)
    counts.scatter_add_(2, flat, torch.ones_like(flat, dtype=torch.float64))  # (B,1,K)
    errors = (diff_sums / counts.clamp(min=1)).abs().mean(dim=1)  # (B,K)
    keep = counts[:, 0] >= min_pixels
    keep[:, 0] = False  # the background is not a part
    return torch.where(keep, errors, torch.full_like(errors, float("nan")))


def summarise(errors: np.ndarray, within: float = WITHIN_LEVELS) -> tuple[float, float, int]:
    """(N,K) e_k with NaN where absent -> (mean over entries, share of entries <= within, number of entries)."""
    valid = errors[np.isfinite(errors)]
    if valid.size == 0:
        return float("nan"), float("nan"), 0
    return float(valid.mean()), float((valid <= within).mean()), int(valid.size)
