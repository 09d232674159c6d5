"""The style encoder of SPGNet (paper 3.2, Fig. 1 (a) right): per-region style codes of the source image,
refined per class; broadcast onto the target parsing they form the style map C read by every SEAN layer.

    features = E(source image)                 small encoder-decoder, style_dim channels at H/2 (tanh)
    codes_k  = mean of features over source region k               (B,K,D)   region-wise average pooling
    codes_k  = ReLU(W_k codes_k + b_k)                             (B,K,D)   one linear layer per class
    C        = sum_k target_parsing_k * codes_k                    (B,D,H,W) broadcast onto the target layout

The codes are computed once per forward and shared by every SEAN layer. C at a decoder scale is the broadcast
onto the parsing resized (nearest) to that scale, i.e. exactly C resized (nearest); SEAN convolves it straight
from the codes (models.normalization.conv_broadcast_codes), so the (B,D,H,W) map is never stored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.normalization import broadcast_codes, region_average


class PerClassLinear(nn.Module):
    """K independent linear layers D_in -> D_out applied to K codes in one batched einsum.

    codes (B,K,D_in) -> (B,K,D_out), out[:, k] = codes[:, k] @ weight[k].T + bias[k]. The weight is stored as
    (K, D_out, D_in) like nn.Linear's and initialised like it, so it equals K separate nn.Linear layers.
    """

    def __init__(self, num_classes: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_classes, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default (kaiming_uniform with a = sqrt(5))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bki,koi->bko", codes, self.weight) + self.bias


class StyleEncoder(nn.Module):
    """Source image + source parsing -> K refined region style codes (B,K,style_dim).

    The encoder-decoder follows SEAN's (3x3 convs, instance norm, LeakyReLU 0.2): a stem at `width`,
    n_downsampling stride-2 convs doubling the width, one transposed-conv upsampling, a 3x3 conv to style_dim and
    tanh; the code map is at H / 2^(n_downsampling - 1). Any input size works: the pooling resizes the parsing
    to the code map.

    The release's Zencoder is this encoder with padding_mode="reflect" (its stride-1 convs reflect-pad, its
    stride-2 convs zero-pad), up_channels = 2 x the top width (its transposed conv widens 128 -> 256 where ours
    halves it; the default is half the top width) and refine=False: its codes are the raw region means, and
    every SEAN layer refines them with its own per-class layers (models.release_generator.ReleaseSEAN).
    """

    def __init__(
        self,
        num_classes: int,
        style_dim: int = 128,
        in_channels: int = 3,
        width: int = 32,
        n_downsampling: int = 2,
        refine: bool = True,
        padding_mode: str = "zeros",
        up_channels: int | None = None,
    ):
        super().__init__()
        if n_downsampling < 1:
            raise ValueError(f"StyleEncoder: n_downsampling must be >= 1, got {n_downsampling}")

        def conv_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            mode = padding_mode if stride == 1 else "zeros"
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=mode)
            return [conv, nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2)]

        layers = conv_block(in_channels, width, 1)
        for i in range(n_downsampling):
            layers += conv_block(width * 2**i, width * 2 ** (i + 1), 2)
        top = width * 2**n_downsampling
        up = top // 2 if up_channels is None else up_channels
        layers += [
            nn.ConvTranspose2d(top, up, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(up),
            nn.LeakyReLU(0.2),
            nn.Conv2d(up, style_dim, 3, padding=1, padding_mode=padding_mode),
            nn.Tanh(),
        ]
        self.features = nn.Sequential(*layers)
        self.refine = PerClassLinear(num_classes, style_dim, style_dim) if refine else None

    def forward(self, image: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        """image (B,3,H,W), one-hot source parsing (B,K,H,W) -> style codes (B,K,style_dim), refined unless
        refine=False."""
        codes = region_average(self.features(image), parsing)  # (B,K,D)
        return codes if self.refine is None else F.relu(self.refine(codes))

    def style_map(self, image: torch.Tensor, src_parsing: torch.Tensor, tgt_parsing: torch.Tensor) -> torch.Tensor:
        """The style map C (B,style_dim,H,W) on the target layout (for inspection; SEAN reads the codes)."""
        return broadcast_codes(self(image, src_parsing), tgt_parsing)
