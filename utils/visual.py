"""Pictures for people: pose maps, parsing maps and the comparison grid used by train.py, test.py and the report.

Grid columns (one row per pair): source | target pose | predicted parsing | generated | ground truth.
"""

from __future__ import annotations

import numpy as np
import torch

from data.parsing import colorize


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> (B,H,W,3) uint8, rounding as the field's scripts do ((x+1)*127.5)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def pose_picture(pose: torch.Tensor) -> np.ndarray:
    """(B,30,H,W) pose maps -> (B,H,W,3) uint8: joints in red over the limb distance maps in grey."""
    pose = pose.detach().float().cpu()
    joints = pose[:, :18].amax(dim=1)  # (B,H,W)
    limbs = pose[:, 18:].amax(dim=1)
    grey = (limbs.clamp(0, 1) * 160).numpy()
    out = np.repeat(grey[..., None], 3, axis=-1)
    out[..., 0] = np.maximum(out[..., 0], joints.clamp(0, 1).numpy() * 255)
    return out.astype(np.uint8)


def parsing_picture(parsing: torch.Tensor) -> np.ndarray:
    """(B,K,H,W) logits or one-hot -> (B,H,W,3) uint8 in the CIHP palette."""
    labels = parsing.detach().argmax(dim=1).cpu().numpy()
    return np.stack([colorize(lab) for lab in labels])


def comparison_grid(columns: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack equally sized (B,H,W,3) uint8 columns into one (B*H + gaps, C*W + gaps, 3) picture."""
    b, h, w, _ = columns[0].shape
    grid = np.full((b * h + (b - 1) * gap, len(columns) * w + (len(columns) - 1) * gap, 3), 255, np.uint8)
    for c, col in enumerate(columns):
        for r in range(b):
            grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = col[r]
    return grid
