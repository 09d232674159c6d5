"""The authors' released generator (`DualUnetGenerator_SEAN` of github cszy98/SPGNet), rebuilt from our blocks.

DESIGN.md section 4 lists it line by line; in short, with c_l = min(base (l + 1), max) (32, 64, 96, 128, ...):

    pose / appearance encoders   1x1 conv + BN stem, then per scale l = 0 .. n_scales - 1: n_res ResBlocks at c_l
                                 (*each* output a skip) and a stride-2 DownBlock c_l -> c_{l+1}
    feature warping              at l < n_warp_scales every appearance skip is warped by the flow at that scale
                                 (block mean / 2^l) and passed through its own 2-class VisibilityGate
                                 (visible, invisible; background rows zero); the encoder itself goes on unwarped
    style codes                  the Zencoder (StyleEncoder, reflection padding, 128 -> 256 transposed conv),
                                 raw region means over the *source* parsing, (B,K,128), shared by every layer
    bottleneck                   1x1 conv + BN over [pose, appearance]
    decoder, per scale           DeepFashion: SEAN, then UpBlock (ReLU, conv to 4c, PixelShuffle, BN);
                                 Market (sean_after_upsample): UpBlock without BN, then SEAN;
                                 then n_res SPGBlocks (no bias, spectral norm), block i reads skip i
    output                       reflection pad, 7x7 conv, tanh (the release applies the tanh outside its module)

Every SEAN layer is a ReleaseSEAN (the release's ACE): per-pixel noise, its *own* K per-class linear layers on
the region codes, then the two-branch SEAN of models.normalization. 35 SEAN layers and 87.8M parameters at
DeepFashion (7 scales, 5x5 kernels), 25 at Market (5 scales, 3x3 kernels).

The call is the project's generator call; the pose is the release's 18 binary joint maps of the target.
scripts/import_release.py converts the release's checkpoints (key mapping: models.release_keys).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import DownBlock, ResBlock, SPGBlock, UpBlock, VisibilityGate
from models.flow import downsample_flow, downsample_visibility, warp
from models.generator import check_inputs
from models.normalization import SEAN, match_size
from models.style import PerClassLinear, StyleEncoder


def release_widths(base_channels: int, max_channels: int, n_scales: int) -> list[int]:
    """min(base (l + 1), max) for l = 0 .. n_scales: the skip width of each scale, then the bottleneck's."""
    return [min(base_channels * (level + 1), max_channels) for level in range(n_scales + 1)]


class ReleaseSEAN(nn.Module):
    """The release's SEAN layer ("ACE"): noise injection, per-layer per-class style refinement, SEAN.

        x'       = x + n * s                         n (B,1,h,w) standard normal per pixel, s (C,) learnt, init 0
        codes'_k = ReLU(W_k codes_k + b_k)           this layer's own K Linear(D, D), one batched einsum
        out      = SEAN(x', target parsing, codes')  models.normalization.SEAN, kernel_size 5 (DF) / 3 (Market)

    The release draws the noise as randn(B, W, H, 1) and transposes it; so does this layer, so one seed gives
    one noise field in both. `noise` switches it off (deterministic comparisons); the release adds it in
    training and at test time alike. Switched off, the noise scale is frozen: an unused parameter that asked for a
    gradient would stop DDP at its second step. The release blends with s = sigmoid(b) on the *style* branch; SEAN's
    theta multiplies the parsing branch, so the converter stores SEAN's logit as -b (1 - sigmoid(b) =
    sigmoid(-b)).
    """

    def __init__(
        self, channels: int, num_classes: int = 20, style_dim: int = 128, hidden: int = 64, kernel_size: int = 5,
        noise: bool = True,
    ):
        super().__init__()
        self.noise = noise
        self.noise_scale = nn.Parameter(torch.zeros(channels), requires_grad=noise)
        self.refine = PerClassLinear(num_classes, style_dim, style_dim)
        self.sean = SEAN(channels, num_classes, style_dim, hidden=hidden, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """x (B,C,h,w), target parsing (B,K,.,.), raw region codes (B,K,D) -> (B,C,h,w)."""
        if self.noise:
            b, _, h, w = x.shape
            field = torch.randn(b, w, h, 1, device=x.device, dtype=x.dtype).transpose(1, 3)  # (B,1,h,w)
            x = x + field * self.noise_scale.view(1, -1, 1, 1)
        return self.sean(x, parsing, F.relu(self.refine(codes)))


class ReleaseGenerator(nn.Module):
    """The release's DualUnetGenerator_SEAN (module docstring). DeepFashion: the defaults. Market-1501:
    n_scales=5, n_warp_scales=4, sean_kernel=3, sean_after_upsample=True (input 128x64). Both sides of the
    input must divide by 2^n_scales."""

    def __init__(
        self,
        num_classes: int = 20,
        pose_channels: int = 18,
        base_channels: int = 32,
        max_channels: int = 128,
        n_scales: int = 7,
        n_warp_scales: int = 5,
        n_res_blocks: int = 2,
        style_dim: int = 128,
        norm_hidden: int = 64,
        sean_kernel: int = 5,
        sean_after_upsample: bool = False,
        style_width: int = 32,
        noise: bool = True,
    ):
        super().__init__()
        if n_scales < 1 or not 0 <= n_warp_scales <= n_scales or n_res_blocks < 1:
            raise ValueError(
                f"ReleaseGenerator: need n_scales >= 1, 0 <= n_warp_scales <= n_scales and n_res_blocks >= 1, got "
                f"{n_scales}, {n_warp_scales}, {n_res_blocks}"
            )
        self.num_classes, self.pose_channels = num_classes, pose_channels
        self.n_scales, self.n_warp_scales = n_scales, n_warp_scales
        self.sean_after_upsample = sean_after_upsample
        widths = release_widths(base_channels, max_channels, n_scales)
        self.widths = widths
        scales = range(n_scales)

        def stem(in_channels: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, widths[0], 1, bias=False), nn.BatchNorm2d(widths[0]))

        def res_blocks(level: int) -> nn.ModuleList:
            return nn.ModuleList(ResBlock(widths[level]) for _ in range(n_res_blocks))

        self.pose_stem, self.app_stem = stem(pose_channels), stem(3)
        self.pose_res = nn.ModuleList(res_blocks(level) for level in scales)
        self.pose_down = nn.ModuleList(DownBlock(widths[level], widths[level + 1]) for level in scales)
        self.app_res = nn.ModuleList(res_blocks(level) for level in scales)
        self.app_down = nn.ModuleList(DownBlock(widths[level], widths[level + 1]) for level in scales)
        self.gates = nn.ModuleList(
            nn.ModuleList(VisibilityGate(widths[level], n_classes=2) for _ in range(n_res_blocks))
            for level in range(n_warp_scales)
        )
        self.style_encoder = StyleEncoder(
            num_classes, style_dim, width=style_width, refine=False, padding_mode="reflect",
            up_channels=8 * style_width,  # Zencoder: 32 -> 64 -> 128, transposed conv to 256
        )
        sean = partial(
            ReleaseSEAN, num_classes=num_classes, style_dim=style_dim, hidden=norm_hidden, kernel_size=sean_kernel,
            noise=noise,
        )
        top = widths[n_scales]
        self.fuse = nn.Sequential(nn.Conv2d(2 * top, top, 1, bias=False), nn.BatchNorm2d(top))
        # DeepFashion normalises the coarser feature before upsampling it, Market the upsampled one
        self.up_norms = nn.ModuleList(sean(widths[level + (0 if sean_after_upsample else 1)]) for level in scales)
        self.ups = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], norm=not sean_after_upsample) for level in scales
        )
        self.dec_blocks = nn.ModuleList(
            nn.ModuleList(SPGBlock(widths[level], sean, bias=False, spectral=True) for _ in range(n_res_blocks))
            for level in scales
        )
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(widths[0], 3, 7))

    def set_noise(self, enabled: bool) -> None:
        """Noise injection in every SEAN layer on or off (off, the noise scales are frozen)."""
        for module in self.modules():
            if isinstance(module, ReleaseSEAN):
                module.noise = enabled
                module.noise_scale.requires_grad_(enabled)

    def encode(self, x: torch.Tensor, res: nn.ModuleList, down: nn.ModuleList) -> tuple[list[list[torch.Tensor]],
                                                                                          torch.Tensor]:
        """Stem output (B,c_0,H,W) -> per scale the n_res skips (B,c_l,H/2^l,W/2^l), and the bottleneck input."""
        skips = []
        for level in range(self.n_scales):
            scale = []
            for block in res[level]:
                x = block(x)
                scale.append(x)
            skips.append(scale)
            x = down[level](x)  # (B,c_{l+1},H/2^(l+1),W/2^(l+1))
        return skips, x

    def forward(
        self,
        src_image: torch.Tensor,
        tgt_pose: torch.Tensor,
        src_parsing: torch.Tensor,
        tgt_parsing: torch.Tensor,
        flow: torch.Tensor,
        vis: torch.Tensor,
    ) -> torch.Tensor:
        """src_image (B,3,H,W) in [-1,1], tgt_pose (B,18,H,W) joint maps, src/tgt_parsing one-hot (B,K,H,W),
        flow (B,2,H,W) target->source pixels (x, y), vis (B,H,W) long -> image (B,3,H,W) in [-1,1]."""
        check_inputs(src_image, tgt_pose, src_parsing, tgt_parsing, flow, vis, self.pose_channels, self.num_classes)
        codes = self.style_encoder(src_image, src_parsing)  # (B,K,D) raw region means
        pose_skips, pose_top = self.encode(self.pose_stem(tgt_pose), self.pose_res, self.pose_down)
        app_skips, app_top = self.encode(self.app_stem(src_image), self.app_res, self.app_down)
        for level in range(self.n_warp_scales):
            size = tuple(app_skips[level][0].shape[-2:])
            flow_l, vis_l = downsample_flow(flow, size), downsample_visibility(vis, size)
            app_skips[level] = [
                gate(warp(skip, flow_l), vis_l) for gate, skip in zip(self.gates[level], app_skips[level])
            ]

        x = self.fuse(torch.cat([pose_top, app_top], dim=1))  # (B,c_L,H/2^L,W/2^L)
        for level in reversed(range(self.n_scales)):
            if self.sean_after_upsample:
                x = self.ups[level](x)
                x = self.up_norms[level](x, match_size(tgt_parsing, x.shape[-2:]), codes)
            else:
                x = self.up_norms[level](x, match_size(tgt_parsing, x.shape[-2:]), codes)
                x = self.ups[level](x)  # (B,c_l,H/2^l,W/2^l)
            parsing = match_size(tgt_parsing, x.shape[-2:])  # (B,K,h,w), once per scale
            for i in reversed(range(len(self.dec_blocks[level]))):
                x = self.dec_blocks[level][i](x, pose_skips[level][i], app_skips[level][i], parsing, codes)
        return torch.tanh(self.to_image(x))
