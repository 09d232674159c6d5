"""Pose masks for mask-SSIM / mask-LPIPS, for a batch of target keypoints.

The mask of one pose is data.pose.pose_mask (Siarohin et al.'s `produce_ma_mask`: thick limbs and joint discs,
then a 5x5 dilation and erosion), drawn with skimage on the CPU. It is a per-pose rasterisation done while
loading the evaluation data, not inside a network's forward.
"""

from __future__ import annotations

import numpy as np
import torch

from data.pose import NUM_JOINTS, pose_mask


def pose_masks(keypoints: torch.Tensor | np.ndarray, height: int, width: int) -> torch.Tensor:
    """(B,18,2) (y, x) keypoints, -1 missing -> (B,H,W) bool masks (CPU tensor)."""
    kp = np.asarray(keypoints.detach().cpu() if torch.is_tensor(keypoints) else keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"pose_masks: keypoints must be (B,{NUM_JOINTS},2), got {kp.shape}")
    if kp.shape[0] == 0:
        return torch.zeros(0, height, width, dtype=torch.bool)
    return torch.from_numpy(np.stack([pose_mask(k, height, width) for k in kp]))
