"""The flow network the authors' release loads: Intr-Flow's flow-regression UNet (`networks.FlowUnet_v2`, the
`which_model: unet_v2` of its `FlowReg_deepfashion` / `FlowReg_market` checkpoints), rebuilt from our blocks.

With c_j = min(nf (j + 1), max_nf) and s = log2(start_scale):

    stem        1x1 conv + BN over cat[source joints, target joints] (2 x 18 binary maps)
    pre levels  j < s: ResBlock(c_j), DownBlock c_j -> c_{j+1}            (the prediction starts at H / 2^s)
    encoder     level l = 0 .. num_scales - 1 at c_{s+l}: n_res ResBlocks (each a skip), DownBlock
    decoder     per level, coarse to fine: UpBlock c_{s+l+1} -> c_{s+l}, n_res SideResBlocks over the skips
                (block i reads skip i), and a raw flow head ReLU -> 3x3 conv -> 2
    visibility  ReLU -> 3x3 conv -> 3 logits on the finest decoder feature

The finest raw flow and the logits are upsampled bilinearly by start_scale (align_corners=False, as the
release). A raw flow r is the flow in full-resolution pixels divided by flow_scale (20) at every level, as in
models.flow.FlowNet, so FlowOutput.flows (coarse to fine, finest at H / start_scale) hold r * 20 * (w_l / W,
h_l / H) in each level's own pixels: the multi-scale targets of stage-0 training. FlowOutput.flow is what the
release feeds its generator: the upsampled r * 20, zero where the predicted visibility is background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import DownBlock, ResBlock, SideResBlock, UpBlock
from models.flow import FlowOutput, float32_head, scale_flow


class ReleaseFlowNet(nn.Module):
    """Intr-Flow's FlowUnet_v2 with batch norm and ReLU (the options of its train_opt.json as arguments:
    nf, max_nf, start_scale, num_scale; Market-1501 uses num_scales=4)."""

    def __init__(
        self,
        pose_channels: int = 18,
        nf: int = 32,
        max_nf: int = 128,
        start_scale: int = 2,
        num_scales: int = 5,
        n_res_blocks: int = 2,
        flow_scale: float = 20.0,
    ):
        super().__init__()
        start_level = int(round(math.log2(start_scale)))
        if 2**start_level != start_scale or num_scales < 1 or n_res_blocks < 1:
            raise ValueError(
                f"ReleaseFlowNet: need a power-of-two start_scale, num_scales >= 1 and n_res_blocks >= 1, got "
                f"{start_scale}, {num_scales}, {n_res_blocks}"
            )
        self.start_scale, self.num_scales, self.flow_scale = start_scale, num_scales, float(flow_scale)
        width = [min(nf * (j + 1), max_nf) for j in range(start_level + num_scales + 1)]
        levels = range(num_scales)

        def res_blocks(channels: int) -> nn.ModuleList:
            return nn.ModuleList(ResBlock(channels) for _ in range(n_res_blocks))

        self.stem = nn.Sequential(nn.Conv2d(2 * pose_channels, nf, 1, bias=False), nn.BatchNorm2d(nf))
        self.pre_res = nn.ModuleList(ResBlock(width[j]) for j in range(start_level))
        self.pre_down = nn.ModuleList(DownBlock(width[j], width[j + 1]) for j in range(start_level))
        c = width[start_level:]  # c[l]: level l's width, c[num_scales]: the bottom's
        self.enc_res = nn.ModuleList(res_blocks(c[level]) for level in levels)
        self.enc_down = nn.ModuleList(DownBlock(c[level], c[level + 1]) for level in levels)
        self.dec_up = nn.ModuleList(UpBlock(c[level + 1], c[level]) for level in levels)
        self.dec_res = nn.ModuleList(
            nn.ModuleList(SideResBlock(c[level], c[level]) for _ in range(n_res_blocks)) for level in levels
        )
        self.flow_heads = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(c[level], 2, 3, padding=1)) for level in levels
        )
        self.vis_head = nn.Sequential(nn.ReLU(), nn.Conv2d(c[0], 3, 3, padding=1))

    def forward(self, src_pose: torch.Tensor, tgt_pose: torch.Tensor, src_keypoints: torch.Tensor | None = None,
                tgt_keypoints: torch.Tensor | None = None) -> FlowOutput:
        """src_pose, tgt_pose (B,18,H,W) joint maps -> FlowOutput (module docstring). The keypoints, which every flow
        module is handed, are not read: Intr-Flow's network sees the joint maps alone."""
        if src_pose.shape != tgt_pose.shape:
            raise ValueError(f"ReleaseFlowNet: source pose {tuple(src_pose.shape)} and target pose "
                             f"{tuple(tgt_pose.shape)} differ")
        height, width = src_pose.shape[2:]
        x = self.stem(torch.cat([src_pose, tgt_pose], dim=1))  # (B,nf,H,W)
        for res, down in zip(self.pre_res, self.pre_down):
            x = down(res(x))
        skips = []
        for res, down in zip(self.enc_res, self.enc_down):
            for block in res:
                x = block(x)
                skips.append(x)
            x = down(x)
        raws = []  # coarse to fine
        for level in reversed(range(self.num_scales)):
            x = self.dec_up[level](x)
            for block in reversed(self.dec_res[level]):
                x = block(x, skips.pop())
            raws.append(float32_head(self.flow_heads[level], x))  # (B,2,h_l,w_l) float32, also under autocast

        up = {"scale_factor": self.start_scale, "mode": "bilinear", "align_corners": False}
        vis_logits = F.interpolate(self.vis_head(x), **up)  # (B,3,H,W)
        foreground = (vis_logits.argmax(dim=1, keepdim=True) < 2).float()  # (B,1,H,W)
        flow = F.interpolate(raws[-1], **up) * self.flow_scale * foreground  # (B,2,H,W) full-resolution pixels
        flows = [scale_flow(r, self.flow_scale * r.shape[3] / width, self.flow_scale * r.shape[2] / height)
                 for r in raws]
        return FlowOutput(flow=flow, flows=flows, vis_logits=vis_logits)
