"""Pose maps computed on the training device from keypoints (paper sec. 3.1).

Used when `pose.encode_on_device` (the loader then ships 18x2 keypoints instead of 30 full-size maps, which
keeps a fast GPU fed) or `pose.learnable_kappa` (the authors' code learns kappa in M = exp(kappa * d);
then kappa is a parameter of this module, trained with the generator).
"""

from __future__ import annotations

import torch
from torch import nn

from data.pose import LIMBS, DistanceMapEncoding, joint_heatmaps, limb_distances


class PoseEncoder(nn.Module):
    def __init__(self, height: int, width: int, heatmap: str = "gaussian", sigma: float = 6.0, radius: float = 8.0,
                 kappa: float = -0.1, learnable_kappa: bool = False, limbs: bool = True):
        super().__init__()
        self.limbs = limbs
        self.height, self.width = height, width
        self.heatmap, self.sigma, self.radius = heatmap, sigma, radius
        self.distance = DistanceMapEncoding(kappa=kappa, learnable=learnable_kappa)
        # the limbs' joint indices on the module's device (not saved): a forward builds no tensor from host data
        self.register_buffer("limbs_index", torch.tensor(LIMBS), persistent=False)  # (12,2)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints (B,18,2) (y, x), -1 missing -> pose maps (B,30,H,W), or (B,18,H,W) without limbs."""
        with torch.no_grad():  # the geometry has no parameters; only kappa may learn
            heat = joint_heatmaps(keypoints, self.height, self.width, mode=self.heatmap, sigma=self.sigma,
                                  radius=self.radius)  # (B,18,H,W)
            if not self.limbs:
                return heat
            dist, valid = limb_distances(keypoints, self.height, self.width, self.limbs_index)  # (B,12,H,W), (B,12)
        return torch.cat([heat, self.distance(dist, valid)], dim=1)
