"""LPIPS and mask-LPIPS with the `lpips` package (Zhang et al., CVPR 2018): AlexNet trunk, version 0.1, images in
[-1, 1] (x / 127.5 - 1, as the authors' and GFLA's scripts feed it). Which images a protocol scores (the scripts
drop the remainder of batches of 64, the release crops DeepFashion) is metrics/protocols.py's business.

The package's linear calibration layers ship inside the package (lpips/weights/v0.1/alex.pth). Its AlexNet trunk
would normally be downloaded by torchvision; here it never is: the model is always built with pnet_rand=True
(no download) and the trunk is then either loaded from torchvision's AlexNet checkpoint through utils.weights
(weights="imagenet" or a path; a missing file is a MissingWeightsError) or left randomly initialised from a fixed
seed (weights="random", offline tests only, labelled as such wherever it is reported).

Mask-LPIPS follows GFLA's `calculate_mask_lpips`: both images are mapped to [-1, 1] and then multiplied by the
target pose mask, so masked-out pixels are 0 (mid grey), not -1.
"""

from __future__ import annotations

import os
import warnings

import lpips as lpips_package
import torch
from torch import nn

from utils.numerics import ieee_float32
from utils.weights import load_state_dict

RANDOM_SEED = 0


def _alexnet_trunk_state(lp: lpips_package.LPIPS, state: dict[str, torch.Tensor], source: str) -> dict:
    """torchvision AlexNet state dict ("features.<i>.weight") -> keys of lpips' sliced trunk ("slice<k>.<i>.weight")."""
    where = {}
    for k in range(1, lp.net.N_slices + 1):
        for index, _ in getattr(lp.net, f"slice{k}").named_children():
            where[index] = f"slice{k}.{index}"
    out = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        index, param = key[len("features.") :].split(".", 1)
        if index in where:
            out[f"{where[index]}.{param}"] = value
    expected = set(lp.net.state_dict())
    if set(out) != expected:
        raise ValueError(f"{source}: not a torchvision AlexNet state dict (missing {sorted(expected - set(out))[:4]})")
    return out


class LPIPSMetric(nn.Module):
    """LPIPS distance between uint8 (B,3,H,W) batches -> (B,) float.

    weights: "imagenet" (torchvision's alexnet-owt-7be5be79.pth from the torch hub cache), a path to that file,
      or "random" (trunk from torch.manual_seed(RANDOM_SEED), identical to
      `torch.manual_seed(0); lpips.LPIPS(net="alex", version="0.1", pnet_rand=True)`).
    """

    def __init__(self, weights: str | os.PathLike = "imagenet", seed: int = RANDOM_SEED):
        super().__init__()
        random = isinstance(weights, str) and weights == "random"
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation notice inside lpips
            torch.manual_seed(seed)  # so that "random" is one fixed network (and the FID cache key means something)
            self.model = lpips_package.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if random:
            self.weights_source = f"random (seed {seed})"
        else:
            path = None if weights == "imagenet" else os.fspath(weights)
            state = load_state_dict("alexnet", path)
            source = path or "alexnet (torch hub cache)"
            self.model.net.load_state_dict(_alexnet_trunk_state(self.model, state, source))
            self.weights_source = source
        self.random = random
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> LPIPSMetric:
        super().train(mode)
        self.model.eval()
        return self

    @staticmethod
    def to_signed(images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [-1, 1] (lpips.im2tensor's x / 127.5 - 1)."""
        return images.float() / 127.5 - 1

    @torch.no_grad()
    @ieee_float32()
    def forward(self, a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """a, b uint8 (B,3,H,W); masks optional bool (B,H,W) for mask-LPIPS -> (B,) distances, in IEEE float32
        (no TF32: utils.numerics)."""
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"lpips: expected two (B,3,H,W) batches of the same shape, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        device = next(self.model.parameters()).device
        x, y = self.to_signed(a.to(device)), self.to_signed(b.to(device))
        if masks is not None:
            m = masks.to(device=device, dtype=x.dtype).unsqueeze(1)  # (B,1,H,W)
            x, y = x * m, y * m
        return self.model(x, y).flatten()  # (B,1,1,1) spatial averages -> (B,)
