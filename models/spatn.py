"""SPATN, the semantic pose-attentional transfer network (paper sec. 3.1, eq. 1; after PATN, Zhu et al. 2019).

Stage 1 predicts the target parsing map from the source parsing map (or, for SPATN*, the source image) and the
source and target poses:  S_t = F_SN(S_s, p_s, p_t).  Two pathways, a parsing code and a pose code, are
downsampled, then refined together by a chain of pose-attentional transfer (PAT) blocks, and the parsing code
is decoded to K-class logits (no softmax: the cross-entropy of eq. 8 takes logits).
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import NORMS, conv_norm_relu, norm_layer


class PATBlock(nn.Module):
    """Pose-attentional transfer block (PATN's PATB), one step of SPATN's progressive transfer.

    The pose code, through conv-norm-ReLU and a conv, gives attention logits A; the mask sigmoid(A) in (0, 1)
    gates a residual update of the parsing code, so the pose decides WHERE the parsing changes:
        parsing' = parsing + sigmoid(A) * U(parsing)          U = conv-norm-ReLU, conv-norm
        pose'    = conv-norm-ReLU(cat[A, parsing'])           (PATN concatenates A with the new parsing code)
    With `update_pose=False` (the last block, whose pose code nothing reads) the pose code is returned as is.
    """

    def __init__(self, channels: int, norm: str = "batch", update_pose: bool = True):
        super().__init__()
        bias = norm == "none"
        self.parsing_update = nn.Sequential(
            conv_norm_relu(channels, channels, 3, norm),
            nn.Conv2d(channels, channels, 3, padding=1, bias=bias),
            norm_layer(norm, channels),
        )
        self.attention = nn.Sequential(
            conv_norm_relu(channels, channels, 3, norm),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.pose_update = conv_norm_relu(2 * channels, channels, 1, norm) if update_pose else None

    def forward(self, parsing_code: torch.Tensor, pose_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """parsing_code, pose_code (B,C,h,w) -> the updated (parsing_code, pose_code), same shapes."""
        logits = self.attention(pose_code)  # (B,C,h,w) attention logits A
        parsing_code = parsing_code + torch.sigmoid(logits) * self.parsing_update(parsing_code)
        if self.pose_update is not None:
            pose_code = self.pose_update(torch.cat([logits, parsing_code], dim=1))  # (B,C,h,w)
        return parsing_code, pose_code


def encoder_pathway(in_channels: int, ngf: int, n_downsampling: int, norm: str) -> nn.Sequential:
    """7x7 conv (reflection padding, as pix2pix/PATN) then n stride-2 3x3 convs doubling the width."""
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(in_channels, ngf, 7, bias=norm == "none"),
        norm_layer(norm, ngf),
        nn.ReLU(inplace=True),
    ]
    for i in range(n_downsampling):
        layers.append(conv_norm_relu(ngf * 2**i, ngf * 2 ** (i + 1), 3, norm, stride=2))
    return nn.Sequential(*layers)


class SPATN(nn.Module):
    """Stage 1 (paper eq. 1): (source parsing or image, source pose, target pose) -> target parsing logits.

    in_channels: K for SPATN (one-hot source parsing), 3 for SPATN* (the source image, Market-1501).
    The pose pathway takes cat[source pose, target pose] (2 * pose_channels). Both pathways: 7x7 conv, then
    n_downsampling stride-2 convs to ngf * 2^n_downsampling channels; n_blocks PAT blocks; n_downsampling
    transposed-conv upsamplings of the parsing code; a 7x7 conv to num_classes logits (B,K,H,W).
    H and W must be multiples of 2^n_downsampling so the upsampled map lands on the input size.
    """

    def __init__(self, in_channels: int, num_classes: int, pose_channels: int = 30, ngf: int = 64, n_blocks: int = 9,
                 n_downsampling: int = 2, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"SPATN: unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        if n_blocks < 1:
            raise ValueError(f"SPATN: n_blocks must be >= 1, got {n_blocks}")
        self.in_channels, self.pose_channels, self.n_downsampling = in_channels, pose_channels, n_downsampling
        width = ngf * 2**n_downsampling
        self.parsing_encoder = encoder_pathway(in_channels, ngf, n_downsampling, norm)
        self.pose_encoder = encoder_pathway(2 * pose_channels, ngf, n_downsampling, norm)
        self.blocks = nn.ModuleList(PATBlock(width, norm, update_pose=i < n_blocks - 1) for i in range(n_blocks))

        layers: list[nn.Module] = []
        for i in reversed(range(n_downsampling)):
            # kernel 3, stride 2, padding 1, output_padding 1: exactly doubles each side (PATN's upsampling)
            layers += [nn.ConvTranspose2d(ngf * 2 ** (i + 1), ngf * 2**i, 3, stride=2, padding=1, output_padding=1,
                                          bias=norm == "none"),
                       norm_layer(norm, ngf * 2**i),
                       nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, num_classes, 7)]
        self.decoder = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, src_pose: torch.Tensor, tgt_pose: torch.Tensor) -> torch.Tensor:
        """source (B,Cin,H,W), src_pose and tgt_pose (B,P,H,W) -> target parsing logits (B,K,H,W)."""
        b, c, h, w = source.shape
        if c != self.in_channels:
            raise ValueError(f"SPATN: source has {c} channels, the network was built for {self.in_channels}")
        expected = (b, self.pose_channels, h, w)
        if tuple(src_pose.shape) != expected or tuple(tgt_pose.shape) != expected:
            raise ValueError(f"SPATN: poses must be {expected}, got {tuple(src_pose.shape)} and "
                             f"{tuple(tgt_pose.shape)}")
        factor = 2**self.n_downsampling
        if h % factor or w % factor:
            raise ValueError(f"SPATN: image size {h}x{w} must be a multiple of 2^n_downsampling = {factor}")
        parsing_code = self.parsing_encoder(source)  # (B,ngf*2^n,H/2^n,W/2^n)
        pose_code = self.pose_encoder(torch.cat([src_pose, tgt_pose], dim=1))  # (B,ngf*2^n,H/2^n,W/2^n)
        for block in self.blocks:
            parsing_code, pose_code = block(parsing_code, pose_code)
        return self.decoder(parsing_code)  # (B,K,H,W)
