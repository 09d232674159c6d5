"""Random batches with every key a PairDataset sample carries, at a config's shapes: for benchmarks, the model
summary and tests that need the shapes, not the content."""

from __future__ import annotations

import torch

from data.parsing import num_labels, one_hot
from data.pose import NUM_JOINTS, encode_pose
from utils.config import Config


def random_keypoints(batch: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(B,18,2) integer-valued (y, x) inside the frame, about one joint in ten missing (-1, -1)."""
    scale = torch.tensor([height, width], dtype=torch.float32)
    kp = (torch.rand(batch, NUM_JOINTS, 2, generator=gen) * scale).floor()
    missing = torch.rand(batch, NUM_JOINTS, 1, generator=gen) < 0.1
    return torch.where(missing, torch.full_like(kp, -1.0), kp)


def random_batch(cfg: Config, batch: int, seed: int = 0) -> dict:
    """A CPU batch with every key a PairDataset sample carries, at the config's shapes."""
    gen = torch.Generator().manual_seed(seed)
    h, w = cfg.data.image_size
    k = num_labels(cfg)
    p = cfg.pose
    out: dict[str, object] = {}
    for side in ("src", "tgt"):
        kp = random_keypoints(batch, h, w, gen)
        labels = torch.randint(0, k, (batch, h, w), generator=gen)
        out[f"{side}_image"] = torch.rand(batch, 3, h, w, generator=gen) * 2 - 1  # (B,3,H,W) in [-1,1]
        out[f"{side}_keypoints"] = kp  # (B,18,2)
        out[f"{side}_pose"] = encode_pose(kp, h, w, p.heatmap, p.sigma, p.radius, p.kappa, p.limbs)  # (B,30|18,H,W)
        out[f"{side}_parsing"] = one_hot(labels, k)  # (B,K,H,W)
        out[f"{side}_name"] = [f"{side}{i}.jpg" for i in range(batch)]
    out["flow"] = torch.randn(batch, 2, h, w, generator=gen) * 8  # (B,2,H,W) pixels
    out["vis"] = torch.randint(0, 3, (batch, h, w), generator=gen)  # (B,H,W)
    return out
