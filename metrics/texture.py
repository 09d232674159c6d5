"""Per-part texture: is the clothes' pattern (stripes, checks, a logo) in place, not only their mean colour?

For a generated image G, its ground truth T and the target's ground-truth parsing L (CIHP ids, as the dataset
writes them), each clothing part k in {5 upper-clothes, 6 dress, 7 coat, 9 pants, 12 skirt} with pixels
P_k = {x : L(x) = k} counts when |P_k| >= 150 and the true grey level varies inside it, std_{P_k}(t) >= 8 (a
plain part has no texture to carry). With the grey levels g, t of G, T (ITU-R BT.601 luma,
0.299 R + 0.587 G + 0.114 B) and the residuals r_g = g - mean_{P_k}(g), r_t = t - mean_{P_k}(t) over P_k:

    correlation_k = sum r_g r_t / sqrt(sum r_g^2 * sum r_t^2)      (Pearson; 0 for a flat generated part)
    contrast_k    = std(r_g) / std(r_t)                              (0: flat, 1: the true contrast)

Correlation 1 is the pattern in place, 0 none (or a flat part), -1 the pattern inverted; a pattern shifted by
half its period scores near -1 too, so the measure asks for placement, as a viewer does. Subtracting each part's
mean leaves the colour to metrics/colour.py. The set's figures: the mean correlation over all counted (pair,
part) entries, the share of entries with correlation > 0.5, and the mean contrast (all population std, ddof 0).
"""

from __future__ import annotations

import numpy as np
import torch

from metrics.colour import MIN_PART_PIXELS

TEXTURE_PARTS = (5, 6, 7, 9, 12)  # CIHP upper-clothes, dress, coat, pants, skirt
MIN_TEXTURE_STD = 8.0  # grey levels: below this the true part is plain
ABOVE = 0.5  # a part "carries its pattern" above this correlation
# BT.601 luma in thousandths: grey * 1000 of uint8 pixels is an integer, so every per-part sum below is exact in
# float64 and a flat part's mean is exactly its value (its residuals exactly 0, not 1e-13)
LUMA_1000 = (299.0, 587.0, 114.0)


def grey_1000(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 RGB -> (B,H*W) float64 1000 x BT.601 luma (integers 0..255000)."""
    weights = torch.tensor(LUMA_1000, dtype=torch.float64, device=images.device).view(1, 3, 1)
    return (images.flatten(2).double() * weights).sum(dim=1)


def part_texture(generated: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor,
                 min_pixels: int = MIN_PART_PIXELS, min_std: float = MIN_TEXTURE_STD
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,3,H,W) uint8 RGB generated and ground-truth images, (B,H,W) CIHP ids of the target's ground-truth parsing
    -> (correlation, contrast), each (B,5) float64 for TEXTURE_PARTS in that order; NaN where the part does not
    count (fewer than min_pixels pixels, or a true grey-level std below min_std)."""
    b = generated.shape[0]
    k = len(TEXTURE_PARTS)
    lookup = torch.full((256,), k, dtype=torch.long, device=labels.device)  # every other label -> slot k
    lookup[list(TEXTURE_PARTS)] = torch.arange(k, device=labels.device)
    slot = lookup[labels.reshape(b, -1).long()]  # (B,HW) in 0..k

    def part_sums(values: torch.Tensor) -> torch.Tensor:  # (B,HW) -> (B,k+1) sum over each part's pixels
        return torch.zeros(b, k + 1, dtype=torch.float64, device=values.device).scatter_add_(1, slot, values)

    g, t = grey_1000(generated), grey_1000(truth)  # (B,HW)
    count = part_sums(torch.ones_like(g))  # (B,k+1)
    size = count.clamp(min=1)
    r_g = g - (part_sums(g) / size).gather(1, slot)  # residuals around each pixel's own part mean
    r_t = t - (part_sums(t) / size).gather(1, slot)
    gg, tt, gt = part_sums(r_g * r_g), part_sums(r_t * r_t), part_sums(r_g * r_t)  # (B,k+1)
    correlation = torch.where(gg > 0, gt / (gg * tt).sqrt(), torch.zeros_like(gt))
    contrast = (gg / tt).sqrt()  # the two std share the pixel count
    std_t = (tt / size).sqrt() / 1000  # grey levels
    keep = (count >= min_pixels) & (std_t >= min_std)
    nan = torch.full_like(correlation, float("nan"))
    return torch.where(keep, correlation, nan)[:, :k], torch.where(keep, contrast, nan)[:, :k]


def summarise(correlation: np.ndarray, contrast: np.ndarray, above: float = ABOVE) -> tuple[float, float, float, int]:
    """(N,5) correlations and contrasts, NaN where a part does not count -> (mean correlation, share of entries with
    correlation > above, mean contrast, number of entries); NaN figures when no entry counts."""
    valid = np.isfinite(correlation)
    if not valid.any():
        return float("nan"), float("nan"), float("nan"), 0
    return (float(correlation[valid].mean()), float((correlation[valid] > above).mean()),
            float(contrast[valid].mean()), int(valid.sum()))
