"""Flow-module training pairs rendered on the fly: the synthetic people of a dataset folder in fresh poses.

A synthetic dataset holds 6 poses per person, so stage 0 trained on its flow files sees a few hundred poses;
the renderer knows the exact flow of ANY two poses it draws, so this dataset draws two fresh ones per pair
(`data.synthetic.random_pose_pair`) for the people of the training split, read from the folder's
`synthetic.json` (what `generate_dataset` was called with). No image is drawn: a sample is the two poses'
keypoints (and pose maps) with the exact flow and visibility, like PairDataset's with flow files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data.pose import encode_pose as encode_pose_maps
from data.synthetic import MANIFEST, STYLES, held_out_identities, pose_pair_flow, random_pose_pair
from utils.errors import InputError


class RenderedFlowPairs(torch.utils.data.Dataset):
    """`size` pairs (an epoch; pair i is the same whenever it is drawn). Sample dict, as PairDataset's:

        src_keypoints, tgt_keypoints  (18,2) float32 (y, x), -1 missing
        src_pose, tgt_pose            (30,H,W) pose maps, when encode_pose; (18,H,W) without limbs
        flow                          (2,H,W) float32 target->source offsets (x, y)
        vis                           (H,W) int64: 0 visible, 1 invisible, 2 background
    """

    def __init__(self, root: str | Path, size: int, image_size: tuple[int, int], heatmap: str = "gaussian",
                 sigma: float = 6.0, radius: float = 8.0, kappa: float = -0.1, encode_pose: bool = True,
                 limbs: bool = True):
        super().__init__()
        path = Path(root) / MANIFEST
        try:
            made = json.loads(path.read_text())
            style, seed, people, test_fraction = (made[k] for k in ("style", "seed", "identities", "test_fraction"))
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: cannot read the synthetic dataset's manifest ({err}); rendered flow pairs "
                             "need a dataset written by scripts/make_synthetic.py") from None
        if style not in STYLES:
            raise InputError(f"{path}: style {style!r} is not one of {', '.join(STYLES)}")
        self.style = STYLES[style]
        if (self.style.height, self.style.width) != tuple(image_size):
            raise InputError(f"{path}: style {style} renders {self.style.height}x{self.style.width}, not the "
                             f"{image_size[0]}x{image_size[1]} of data.image_size")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.seed, self.size = int(seed), int(size)
        held_out = held_out_identities(self.seed, people, test_fraction)
        self.identities = [i for i in range(people) if i not in held_out]  # never a test person
        self.heatmap, self.sigma, self.radius, self.kappa = heatmap, sigma, radius, kappa
        self.encode_pose, self.limbs = encode_pose, limbs

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"pair {index} of {self.size}")
        app, source, target = random_pose_pair(self.style, self.seed, self.identities, index)
        keypoints, flow, vis = pose_pair_flow(self.style, app, source, target)
        keypoints = torch.from_numpy(keypoints.astype(np.float32))  # (2,18,2)
        sample = {"src_keypoints": keypoints[0], "tgt_keypoints": keypoints[1], "flow": torch.from_numpy(flow),
                  "vis": torch.from_numpy(vis.astype(np.int64))}
        if self.encode_pose:
            h, w = self.style.height, self.style.width
            pose = encode_pose_maps(keypoints, h, w, mode=self.heatmap, sigma=self.sigma, radius=self.radius,
                                    kappa=self.kappa, limbs=self.limbs)  # (2,30|18,H,W)
            sample["src_pose"], sample["tgt_pose"] = pose[0], pose[1]
        return sample
