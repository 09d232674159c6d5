"""PatchGAN discriminator (pix2pix's NLayerDiscriminator) on the triplet [source image, image, target pose].

As in the authors' release: 64 filters, 3 layers; the adversarial term of the objective (paper eq. 12) judges
whether the image is a plausible rendering of the source person in the target pose, one logit per overlapping patch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from models.blocks import NORMS, norm_layer


class PatchDiscriminator(nn.Module):
    """4x4 convs with LeakyReLU(0.2): a stride-2 conv without norm, n_layers - 1 further stride-2 convs and one
    stride-1 conv (width ndf * min(2^n, 8)), each followed by norm, then a stride-1 conv to one logit map.
    At 256x176 with n_layers=3 the output is (B,1,30,20), each logit seeing a 70x70 patch.

    spectral_norm: wrap every conv in spectral normalisation (off by default, as pix2pix).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"PatchDiscriminator: unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        self.in_channels = in_channels
        bias = norm == "none"  # a norm subtracts the channel mean, which cancels a conv bias exactly

        def conv(cin: int, cout: int, stride: int, with_bias: bool) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=with_bias)
            return apply_spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = [conv(in_channels, ndf, 2, True), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution (pix2pix)
            out = ndf * min(2**n, 8)
            layers += [conv(width, out, stride, bias), norm_layer(norm, out), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        layers.append(conv(width, 1, 1, True))
        self.model = nn.Sequential(*layers)

    def forward(self, src: torch.Tensor, img: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """src, img (B,3,H,W) in [-1, 1], pose (B,P,H,W) -> patch logits (B,1,h,w) (no sigmoid)."""
        x = torch.cat([src, img, pose], dim=1)  # (B,6+P,H,W)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"PatchDiscriminator: source {tuple(src.shape)}, image {tuple(img.shape)} and pose "
                             f"{tuple(pose.shape)} give {x.shape[1]} channels, the network expects {self.in_channels}")
        return self.model(x)
