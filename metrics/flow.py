"""A flow module's flow against the exact one, on held-out pairs (scripts/diagnose_flow.py).

Per pair, as sums that add up over any group of pairs (a group's figure is its sum over its pixel count):

    epe_l   = sum over the valid pixels of scale l of |f_l - F_l|      F_l = the exact flow brought to scale l
    zero_l  = sum over the same pixels of |F_l|                         (the zero flow's error: no motion)
    count_l = the number of those pixels

with flows in each scale's own pixels, F_l and the valid pixels as the stage-0 loss builds them
(losses.flow: area-averaged flow, a coarse pixel valid only when every pixel under it is visible). Visibility:
the pixels whose predicted label (argmax of the logits) is the exact one, over the whole image and over the
target's body (exact label visible or invisible).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from losses.flow import downsample_valid
from models.flow import downsample_flow

VISIBLE, INVISIBLE, BACKGROUND = 0, 1, 2


def flow_error_sums(flows: Sequence[torch.Tensor], target: torch.Tensor,
                    vis: torch.Tensor) -> dict[str, torch.Tensor]:
    """flows coarse to fine, (B,2,h_l,w_l) each in its own scale's pixels; the exact target (B,2,H,W) and its
    visibility labels (B,H,W) -> {"epe", "zero", "count"}, each (B,L) float64 per pair and scale, in the order of
    `flows`."""
    valid = vis == VISIBLE  # (B,H,W)
    target = torch.where(valid.unsqueeze(1), target.float(), 0.0)  # invisible pixels never reach a valid one
    sums: dict[str, list[torch.Tensor]] = {"epe": [], "zero": [], "count": []}
    for flow in flows:
        size = (flow.shape[2], flow.shape[3])
        exact = downsample_flow(target, size)  # (B,2,h,w)
        mask = downsample_valid(valid, size).double()  # (B,h,w)
        sums["epe"].append((torch.linalg.vector_norm(flow.float() - exact, dim=1).double() * mask).sum((1, 2)))
        sums["zero"].append((torch.linalg.vector_norm(exact, dim=1).double() * mask).sum((1, 2)))
        sums["count"].append(mask.sum((1, 2)))
    return {k: torch.stack(v, dim=1) for k, v in sums.items()}  # (B,L) each


def visibility_sums(logits: torch.Tensor, vis: torch.Tensor) -> dict[str, torch.Tensor]:
    """Visibility logits (B,3,H,W) and exact labels (B,H,W) -> per pair (B,) float64 counts: "correct" / "pixels"
    over the image, "body_correct" / "body_pixels" over the target's body."""
    right = (logits.argmax(dim=1) == vis).flatten(1)  # (B,HW)
    body = (vis != BACKGROUND).flatten(1)
    return {"correct": right.sum(1).double(), "pixels": torch.ones_like(right, dtype=torch.float64).sum(1),
            "body_correct": (right & body).sum(1).double(), "body_pixels": body.sum(1).double()}
