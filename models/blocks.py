"""Building blocks of the networks: SPGNet's generator (paper 3.2, Fig. 1 (b)), its ablation variants, and
the normalisation layers the other networks share.

`norm_layer` (batch | instance | none, by name) and `conv_norm_relu`: the unit SPATN, the flow module, the
PatchGAN discriminator and the PATN-style ablation are built from.

Generator: encoders (PEBlock / AEBlock, one `EncoderBlock` class: the paper gives both the same architecture),
the visibility gating of the warped appearance features (after Intr-Flow, paper eq. 5), the UpBlock of the
decoder, and the two conditional residual blocks, `SPGBlock` (the decoder) and `CondResBlock` (SPADE/SEAN's ResBlk
for the SEAN-generator ablation). The conditional blocks take a normalisation factory (models.normalization), so
the full model, Ours-SPADE, Ours-CC and the Baseline share one block and differ in that layer only.

The generator's unconditional layers use batch norm, as the authors' release; residual blocks have one 3x3 conv
each as there (the Variational-U-Net block Intr-Flow and the authors reuse): out = x + BN(conv(ReLU(x))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.normalization import NormFactory

NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """2-D normalisation by name: batch | instance (pix2pix's, no affine, no running stats) | none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: str, stride: int = 1) -> nn.Sequential:
    """Conv (zero padding k//2) -> norm -> ReLU. The conv has a bias only without a norm: batch and instance
    norm subtract the per-channel mean, which cancels a bias exactly (its gradient would be zero)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                  bias=norm == "none"),
        norm_layer(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """out = x + BN(conv3x3(ReLU(x))), width-preserving."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DownBlock(nn.Sequential):
    """ReLU -> stride-2 3x3 conv -> BN: (B,Cin,H,W) -> (B,Cout,ceil(H/2),ceil(W/2)). Coarse pixel j is centred
    on fine pixel 2j, which is what `UpBlock` + cropping in the decoder relies on."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class UpBlock(nn.Sequential):
    """ReLU -> 3x3 conv to 4 Cout -> PixelShuffle(2) -> BN: (B,Cin,h,w) -> (B,Cout,2h,2w) (paper's UpBlock).
    norm=False drops the BN (the release's Market generator, whose SEAN follows the upsampling instead)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True):
        layers: list[nn.Module] = [
            nn.ReLU(),
            nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1, bias=False),
            nn.PixelShuffle(2),
        ]
        super().__init__(*layers, *([nn.BatchNorm2d(out_channels)] if norm else []))


class EncoderBlock(nn.Module):
    """One scale of a PE/AE encoder (the paper's PEBlock/AEBlock): a stride-2 DownBlock (or, at the finest
    scale, a 3x3 stem conv + BN at full resolution), then n_res_blocks ResBlocks."""

    def __init__(self, in_channels: int, out_channels: int, n_res_blocks: int, downsample: bool):
        super().__init__()
        if downsample:
            self.entry: nn.Module = DownBlock(in_channels, out_channels)
        else:
            self.entry = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.res = nn.Sequential(*(ResBlock(out_channels) for _ in range(n_res_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.entry(x))


class PyramidEncoder(nn.Module):
    """A stack of EncoderBlocks, scale l at ceil(H / 2^l) with widths[l] channels; returns every scale's
    features, finest first (the skip connections of the dual-path UNet)."""

    def __init__(self, in_channels: int, widths: list[int], n_res_blocks: int):
        super().__init__()
        ins = [in_channels] + widths[:-1]
        self.blocks = nn.ModuleList(
            EncoderBlock(cin, cout, n_res_blocks, downsample=level > 0)
            for level, (cin, cout) in enumerate(zip(ins, widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)  # (B,widths[l],H_l,W_l)
            features.append(x)
        return features


class SideResBlock(nn.Module):
    """A residual block with a side input (the Variational-U-Net block of Intr-Flow and the authors' release):

        a   = BN(conv1x1(ReLU(side)))                     side (B,S,h,w) -> (B,C,h,w)
        out = x + BN(conv3x3(ReLU(cat[x, a])))
    """

    def __init__(self, channels: int, side_channels: int):
        super().__init__()
        self.side = nn.Sequential(nn.Conv2d(side_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.fuse = nn.Sequential(
            nn.ReLU(), nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        """x (B,C,h,w), side (B,S,h,w) -> (B,C,h,w)."""
        return x + self.fuse(torch.cat([x, self.side(F.relu(side))], dim=1))


class VisibilityGate(SideResBlock):
    """Visibility gating of warped appearance features (Intr-Flow's residual gate, paper 3.2 "gating layer").

    The warped features are split by visibility class, x * [vis == v] for v < n_classes (0 visible, 1 invisible,
    2 background), stacked class-major into (B,n_classes C,h,w) (channel block v holds the features of class-v
    pixels, zero elsewhere), and fed to a SideResBlock as its side input: one 1x1 conv over the stack is a
    separate 1x1 conv per class, summed, in a single op:
        a   = BN(conv1x1(ReLU(split)))                     class v's pixels see only weight block v
        out = x + BN(conv3x3(ReLU(cat[x, a])))
    so visible, occluded and background pixels are transformed differently, and the result stays residual.
    n_classes = 2 is the release's gate: background pixels get no block of their own (their rows are zero).
    """

    def __init__(self, channels: int, n_classes: int = 3):
        super().__init__(channels, n_classes * channels)
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """x (B,C,h,w) warped features, vis (B,h,w) long in {0,1,2} -> (B,C,h,w)."""
        classes = torch.arange(self.n_classes, device=vis.device).view(1, -1, 1, 1)
        onehot = (vis.unsqueeze(1) == classes).to(x.dtype)  # (B,n_classes,h,w)
        split = (x.unsqueeze(1) * onehot.unsqueeze(2)).flatten(1, 2)  # (B,n_classes C,h,w), class-major
        return super().forward(x, split)


class SPGBlock(nn.Module):
    """Semantic person generation block (paper 3.2, Fig. 1 (b)), after the authors' residual SEAN block:

        pre = conv1x1(ReLU(N1(cat[f_p, f_a^w])))           the preliminary target feature (SEAN #1)
        out = f_t + conv3x3(ReLU(N2(cat[f_t, pre])))       a residual on the decoder feature (SEAN #2)

    f_p pose feature, f_a^w warped appearance feature, f_t decoder feature, all (B,C,h,w); N1, N2 come from
    `norm_factory` (SEAN for the full model) and read the target parsing and the style codes (B,K,D).
    bias=False, spectral=True: the release's ResidualBlock_SEAN (models.release_generator).
    """

    def __init__(self, channels: int, norm_factory: NormFactory, bias: bool = True, spectral: bool = False):
        super().__init__()
        # the release's block: no conv biases, spectral norm on both convs with one power iteration per training
        # forward. nn.utils.spectral_norm, not the parametrization: that one updates u before v, so a training
        # step would differ from the release's (eval, which reuses the stored u and v, agrees either way)
        wrap = nn.utils.spectral_norm if spectral else (lambda conv: conv)
        self.norm_in = norm_factory(2 * channels)
        self.conv_in = wrap(nn.Conv2d(2 * channels, channels, 1, bias=bias))
        self.norm_out = norm_factory(2 * channels)
        self.conv_out = wrap(nn.Conv2d(2 * channels, channels, 3, padding=1, bias=bias))

    def forward(
        self,
        x: torch.Tensor,
        pose_feature: torch.Tensor,
        appearance_feature: torch.Tensor,
        parsing: torch.Tensor,
        style: torch.Tensor | None,
    ) -> torch.Tensor:
        """x, pose_feature, appearance_feature (B,C,h,w); parsing (B,K,h,w); style codes (B,K,D) | None."""
        pre = torch.cat([pose_feature, appearance_feature], dim=1)  # (B,2C,h,w)
        pre = self.conv_in(F.relu(self.norm_in(pre, parsing, style)))  # (B,C,h,w)
        return x + self.conv_out(F.relu(self.norm_out(torch.cat([x, pre], dim=1), parsing, style)))


class CondResBlock(nn.Module):
    """SPADE's / SEAN's residual block (Park et al. 2019): two conditional norm -> LeakyReLU(0.2) -> 3x3 conv
    steps, and a conditional norm -> 1x1 conv shortcut when the width changes. (B,Cin,h,w) -> (B,Cout,h,w)."""

    def __init__(self, in_channels: int, out_channels: int, norm_factory: NormFactory):
        super().__init__()
        middle = min(in_channels, out_channels)
        self.norm_0 = norm_factory(in_channels)
        self.conv_0 = nn.Conv2d(in_channels, middle, 3, padding=1)
        self.norm_1 = norm_factory(middle)
        self.conv_1 = nn.Conv2d(middle, out_channels, 3, padding=1)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = norm_factory(in_channels)
            self.conv_s = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, parsing, style)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, parsing, style), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, parsing, style), 0.2))
        return shortcut + dx
