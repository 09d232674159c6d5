"""SPGNet generator (paper 3.2, eq. 4-7, Fig. 1 (b)): the dual-path UNet of stage 2.

    I_t = F_SPG(p_t, I_s, S_t)

Scale l = 0 (full resolution) .. n_scales - 1 (coarsest) has widths[l] = min(base * 2^l, max) channels and
sides ceil(H / 2^l) x ceil(W / 2^l) (stride-2 3x3 convs with padding 1).
- PE encoder over the target pose (+ the target parsing for Baseline-S) and AE encoder over the source image:
  per scale an EncoderBlock (stride-2 DownBlock, n_res_blocks ResBlocks).
- Feature deformation (eq. 5) at the finest n_warp_scales scales: the AE features are warped by the flow
  brought to the scale (models.flow.downsample_flow: area mean, rescaled to the scale's pixels) and gated by the
  min-pooled visibility (visible > invisible > background, models.flow.downsample_visibility). Coarser scales
  pass the source features as they are (too coarse to warp, as the authors' release); n_warp_scales = 0 turns
  deformation off, n_warp_scales >= n_scales warps every scale.
- Style codes (models.style) computed once from the source image and parsing; every SEAN layer paints them onto
  the target parsing at its scale (the style map C, eq. 7).
- Decoder: a 1x1 fusion of the two coarsest features, an SPGBlock at the coarsest scale, then per finer scale an
  UpBlock (x2 by pixel shuffle) and an SPGBlock; last ReLU, 7x7 conv, tanh.

Odd sides (256x176 gives 11 -> 6 -> 3 at the coarse end): the UpBlock doubles 3 -> 6 -> 12 and the decoder
crops the trailing row/column to the encoder's 11. No interpolation is needed: a stride-2 conv centres coarse
pixel j on fine pixel 2j and the pixel shuffle writes coarse pixel j to fine pixels 2j and 2j+1, so after the
crop every decoder pixel sits on its encoder skip pixel; only the extra pixel beyond the border is dropped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.blocks import PyramidEncoder, SPGBlock, UpBlock, VisibilityGate
from models.flow import downsample_flow, downsample_visibility, warp
from models.normalization import NORM_KINDS, match_size, norm_factory
from models.style import StyleEncoder


def default_n_scales(height: int) -> int:
    """floor(log2(H / 4)) + 1: the coarsest scale is 4 px high (7 scales at 256 px, 6 at 128 px)."""
    return int(math.floor(math.log2(height / 4))) + 1


def scale_sizes(image_size: tuple[int, int], n_scales: int) -> list[tuple[int, int]]:
    """(h, w) of each scale, finest first: repeated ceil-halving, as a stride-2 3x3 conv with padding 1."""
    sizes = [tuple(image_size)]
    for _ in range(n_scales - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def channel_widths(base_channels: int, max_channels: int, n_scales: int) -> list[int]:
    """min(base * 2^l, max) for l = 0 .. n_scales - 1 (32, 64, 128, 128, ... at the authors' sizes)."""
    return [min(base_channels * 2**level, max_channels) for level in range(n_scales)]


def check_inputs(
    src_image: torch.Tensor,
    tgt_pose: torch.Tensor,
    src_parsing: torch.Tensor,
    tgt_parsing: torch.Tensor,
    flow: torch.Tensor,
    vis: torch.Tensor,
    pose_channels: int,
    num_classes: int,
) -> None:
    """Shapes and dtypes of the shared generator call; a mismatch names the argument."""
    b, _, h, w = src_image.shape
    channels = {
        "src_image": 3,
        "tgt_pose": pose_channels,
        "src_parsing": num_classes,
        "tgt_parsing": num_classes,
        "flow": 2,
    }
    given = {
        "src_image": src_image,
        "tgt_pose": tgt_pose,
        "src_parsing": src_parsing,
        "tgt_parsing": tgt_parsing,
        "flow": flow,
        "vis": vis,
    }
    for name, tensor in given.items():
        expected = (b, h, w) if name == "vis" else (b, channels[name], h, w)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"generator input '{name}' has shape {tuple(tensor.shape)}, expected {expected}")
    if vis.dtype != torch.long:
        raise ValueError(f"generator input 'vis' must hold int64 labels 0/1/2, got {vis.dtype}")


class SPGNetGenerator(nn.Module):
    """The stage-2 generator and its dual-path-UNet ablations (paper Table 3).

    norm: "sean" (full model), "spade" (Ours-SPADE), "cc" (Ours-CC), "batch" (Baseline: plain batch norm).
    parsing_in_pose_encoder: the pose encoder reads cat[target pose, target parsing] (Baseline-S).
    norm_hidden: hidden width of the parsing branch of SEAN/SPADE/CC (64 in SPADE and the authors' code).
    """

    def __init__(
        self,
        num_classes: int,
        pose_channels: int = 30,
        base_channels: int = 32,
        max_channels: int = 128,
        n_scales: int = 7,
        n_res_blocks: int = 2,
        n_warp_scales: int = 5,
        style_dim: int = 128,
        norm: str = "sean",
        parsing_in_pose_encoder: bool = False,
        norm_hidden: int = 64,
    ):
        super().__init__()
        if norm not in NORM_KINDS:
            raise ValueError(f"SPGNetGenerator: unknown norm {norm!r}; expected one of {', '.join(NORM_KINDS)}")
        if n_scales < 1 or n_warp_scales < 0 or n_res_blocks < 0:
            raise ValueError(
                f"SPGNetGenerator: need n_scales >= 1, n_warp_scales >= 0 and n_res_blocks >= 0, got "
                f"{n_scales}, {n_warp_scales}, {n_res_blocks}"
            )
        self.num_classes, self.pose_channels = num_classes, pose_channels
        self.n_scales, self.n_warp_scales = n_scales, min(n_warp_scales, n_scales)
        self.parsing_in_pose_encoder = parsing_in_pose_encoder
        widths = channel_widths(base_channels, max_channels, n_scales)
        self.widths = widths

        pose_in = pose_channels + (num_classes if parsing_in_pose_encoder else 0)
        self.pose_encoder = PyramidEncoder(pose_in, widths, n_res_blocks)  # PEBlocks
        self.appearance_encoder = PyramidEncoder(3, widths, n_res_blocks)  # AEBlocks
        self.gates = nn.ModuleList(VisibilityGate(widths[level]) for level in range(self.n_warp_scales))
        # only SEAN reads the style codes; the other variants have no style encoder at all
        self.style_encoder = StyleEncoder(num_classes, style_dim, width=base_channels) if norm == "sean" else None
        factory = norm_factory(norm, label_channels=num_classes, style_channels=style_dim, hidden=norm_hidden)

        top = widths[-1]
        self.fuse = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * top, top, 1, bias=False), nn.BatchNorm2d(top))
        self.ups = nn.ModuleList(UpBlock(widths[level + 1], widths[level]) for level in range(n_scales - 1))
        self.spg_blocks = nn.ModuleList(SPGBlock(width, factory) for width in widths)
        self.to_image = nn.Sequential(nn.ReLU(), nn.ReflectionPad2d(3), nn.Conv2d(widths[0], 3, 7), nn.Tanh())

    def deform(self, level: int, features: torch.Tensor, flow: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Paper eq. 5 at one scale: warp (B,C,h,w) AE features by the flow at (h, w), then gate by visibility."""
        size = tuple(features.shape[-2:])
        warped = warp(features, downsample_flow(flow, size))  # (B,C,h,w)
        return self.gates[level](warped, downsample_visibility(vis, size))

    def forward(
        self,
        src_image: torch.Tensor,
        tgt_pose: torch.Tensor,
        src_parsing: torch.Tensor,
        tgt_parsing: torch.Tensor,
        flow: torch.Tensor,
        vis: torch.Tensor,
    ) -> torch.Tensor:
        """src_image (B,3,H,W) in [-1,1], tgt_pose (B,P,H,W), src/tgt_parsing one-hot (B,K,H,W), flow (B,2,H,W)
        target->source pixels (x, y), vis (B,H,W) long -> image (B,3,H,W) in [-1,1]."""
        check_inputs(src_image, tgt_pose, src_parsing, tgt_parsing, flow, vis, self.pose_channels, self.num_classes)
        pose_in = torch.cat([tgt_pose, tgt_parsing], dim=1) if self.parsing_in_pose_encoder else tgt_pose
        pose_feats = self.pose_encoder(pose_in)  # finest first, (B,widths[l],H_l,W_l)
        app_feats = self.appearance_encoder(src_image)
        app_feats = [
            self.deform(level, f, flow, vis) if level < self.n_warp_scales else f for level, f in enumerate(app_feats)
        ]
        style = None if self.style_encoder is None else self.style_encoder(src_image, src_parsing)  # (B,K,D)

        x = self.fuse(torch.cat([pose_feats[-1], app_feats[-1]], dim=1))  # (B,widths[-1],H_L,W_L)
        for level in reversed(range(self.n_scales)):
            h, w = pose_feats[level].shape[-2:]
            if level < self.n_scales - 1:
                x = self.ups[level](x)[..., :h, :w]  # x2, cropped to the encoder's size (module docstring)
            parsing = match_size(tgt_parsing, (h, w))  # (B,K,h,w), once per scale for both norms
            x = self.spg_blocks[level](x, pose_feats[level], app_feats[level], parsing, style)
        return self.to_image(x)
