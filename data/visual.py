"""Images between the networks' [-1, 1] and uint8, and pictures for people: pose maps, parsing maps and the
comparison grid used by train.py, test.py, infer.py and the report.

Grid columns (one row per pair): source | target pose | predicted parsing | generated | ground truth.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from data.parsing import colorize
from utils.io import read_image as read_bgr


def read_image(path: Path) -> np.ndarray:
    """(h,w,3) uint8 RGB of a complete image file (utils.io.read_image: a missing, truncated or corrupt file is
    an ImageReadError naming it)."""
    return read_bgr(path, cv2.IMREAD_COLOR)[..., ::-1].copy()


def border_colour(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost pixel ring of an (h,w,3) image: the background to continue."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])  # (2w + 2h, 3)
    return np.median(ring, axis=0).round().astype(np.uint8)


def from_uint8(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H,W,3) uint8 RGB -> (3,H,W) float32 in [-1, 1]: x / 127.5 - 1, the networks' input range."""
    chw = torch.as_tensor(image).permute(2, 0, 1)  # (3,H,W) uint8 view
    return chw.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)


def to_uint8_tensor(images: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    """(B,3,H,W) in [-1,1] -> (B,3,H,W) uint8 from (x+1)*127.5: rounded, or truncated as the authors' test script
    does (((x + 1) * 127.5).clip(0, 255).astype(np.uint8), in float32)."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return (x if truncate else x.round()).to(torch.uint8)  # .to(uint8) truncates the non-negative values


def to_uint8(images: torch.Tensor, truncate: bool = False) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> (B,H,W,3) uint8 numpy (the inverse of `from_uint8`, up to rounding)."""
    return to_uint8_tensor(images, truncate).permute(0, 2, 3, 1).cpu().numpy()


def pose_picture(pose: torch.Tensor) -> np.ndarray:
    """(B,30,H,W) pose maps -> (B,H,W,3) uint8: joints in red over the limb distance maps in grey (black
    without limb maps, (B,18,H,W))."""
    pose = pose.detach().float().cpu()
    joints = pose[:, :18].amax(dim=1)  # (B,H,W)
    limbs = pose[:, 18:].amax(dim=1) if pose.shape[1] > 18 else torch.zeros_like(joints)
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
