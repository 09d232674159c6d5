"""The generator variants of the paper's ablation (Table 3) and the registry that builds them by config name.

  full        SPGNet: dual-path UNet, warping + visibility gating, SPGBlocks with SEAN
  baseline    the same UNet with plain batch norm in the SPGBlocks (no conditional normalisation)
  baseline_s  Baseline whose pose encoder also reads the target parsing
  ours_spade  SPADE in place of SEAN (parsing branch only)
  ours_cc     CC-FPSE-style conditional convolutions predicted from the parsing in place of SEAN
  patn_s      PATN (Zhu et al. 2019) with parsing as extra input: cat[source image, source parsing] and
              cat[target pose, target parsing] pathways through PAT blocks (models.spatn) to an image
  sean        the SEAN generator (Zhu et al. 2020): an encoder over the target parsing, then SEAN residual blocks
              that paint the source's region styles onto the target layout; no warping, no pose
  release     the authors' released generator (models.release_generator), 87.8M parameters at DeepFashion; the
              dual-path variants above are our compact design (21M for full)

All share forward(src_image, tgt_pose, src_parsing, tgt_parsing, flow, vis) -> (B,3,H,W) in [-1, 1]; the
variants that do not use an input (PATN-S: flow, vis; SEAN: pose, flow, vis) still take it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from models.blocks import CondResBlock, PyramidEncoder, norm_layer
from models.generator import SPGNetGenerator, channel_widths, check_inputs, default_n_scales, scale_sizes
from models.normalization import match_size, norm_factory
from models.release_generator import ReleaseGenerator
from models.spatn import PATBlock, encoder_pathway
from models.style import StyleEncoder
from utils.config import ConfigError

PATN_BLOCKS = 9  # PATN's DeepFashion setting (and SPATN's)


class SEANGenerator(nn.Module):
    """The SEAN-generator ablation: SPADE's upsampling decoder of SEAN residual blocks (Zhu et al. 2020).

    An encoder of EncoderBlocks over the target parsing gives the code at the coarsest scale (SEAN itself starts
    from a conv of the downsampled layout); per scale, coarse to fine, nearest upsampling to that scale's size
    and a CondResBlock with SEAN (widths[l+1] -> widths[l]); last LeakyReLU, 3x3 conv, tanh (SPADE's output).
    The style codes come from the same StyleEncoder as the full model. No pose input, no warping.
    """

    def __init__(
        self,
        num_classes: int,
        base_channels: int = 32,
        max_channels: int = 128,
        n_scales: int = 7,
        n_res_blocks: int = 2,
        style_dim: int = 128,
        norm_hidden: int = 64,
    ):
        super().__init__()
        self.num_classes, self.n_scales = num_classes, n_scales
        widths = channel_widths(base_channels, max_channels, n_scales)
        self.layout_encoder = PyramidEncoder(num_classes, widths, n_res_blocks)
        self.style_encoder = StyleEncoder(num_classes, style_dim, width=base_channels)
        factory = norm_factory("sean", label_channels=num_classes, style_channels=style_dim, hidden=norm_hidden)
        self.blocks = nn.ModuleList(
            CondResBlock(widths[min(level + 1, n_scales - 1)], widths[level], factory) for level in range(n_scales)
        )
        self.to_image = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh())

    def forward(
        self,
        src_image: torch.Tensor,
        tgt_pose: torch.Tensor,
        src_parsing: torch.Tensor,
        tgt_parsing: torch.Tensor,
        flow: torch.Tensor,
        vis: torch.Tensor,
    ) -> torch.Tensor:
        check_inputs(src_image, tgt_pose, src_parsing, tgt_parsing, flow, vis, tgt_pose.shape[1], self.num_classes)
        sizes = scale_sizes(tuple(src_image.shape[-2:]), self.n_scales)
        x = self.layout_encoder(tgt_parsing)[-1]  # (B,widths[-1],H_L,W_L)
        style = self.style_encoder(src_image, src_parsing)  # (B,K,D)
        for level in reversed(range(self.n_scales)):
            x = match_size(x, sizes[level])  # nearest x2 (a no-op at the coarsest scale)
            x = self.blocks[level](x, match_size(tgt_parsing, sizes[level]), style)
        return self.to_image(x)


class PATNSGenerator(nn.Module):
    """PATN-S: PATN's generator (Zhu et al. 2019) with the parsing maps as extra inputs.

    Image pathway cat[source image, source parsing] (3 + K), pose pathway cat[target pose, target parsing]
    (P + K), each a 7x7 conv then 2 stride-2 convs (models.spatn.encoder_pathway) to 4 ngf channels; n_blocks
    PAT blocks (models.spatn.PATBlock) update the image code under the pose code's attention; two transposed-conv
    upsamplings, a 7x7 conv and tanh. H and W must be multiples of 4.
    """

    def __init__(
        self,
        num_classes: int,
        pose_channels: int = 30,
        base_channels: int = 32,
        n_blocks: int = PATN_BLOCKS,
        norm: str = "batch",
    ):
        super().__init__()
        ngf = base_channels  # PATN's name: PAT blocks run at 4 ngf (128 at the authors' base 32; PATN uses 64)
        self.num_classes, self.pose_channels = num_classes, pose_channels
        self.image_encoder = encoder_pathway(3 + num_classes, ngf, 2, norm)
        self.pose_encoder = encoder_pathway(pose_channels + num_classes, ngf, 2, norm)
        self.blocks = nn.ModuleList(PATBlock(4 * ngf, norm, update_pose=i < n_blocks - 1) for i in range(n_blocks))
        layers: list[nn.Module] = []
        for width in (2 * ngf, ngf):
            layers += [
                nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1, bias=norm != "batch"),
                norm_layer(norm, width),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)

    def forward(
        self,
        src_image: torch.Tensor,
        tgt_pose: torch.Tensor,
        src_parsing: torch.Tensor,
        tgt_parsing: torch.Tensor,
        flow: torch.Tensor,
        vis: torch.Tensor,
    ) -> torch.Tensor:
        check_inputs(src_image, tgt_pose, src_parsing, tgt_parsing, flow, vis, self.pose_channels, self.num_classes)
        h, w = src_image.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"PATNSGenerator: image size {h}x{w} must be a multiple of 4 (two downsamplings)")
        image_code = self.image_encoder(torch.cat([src_image, src_parsing], dim=1))  # (B,4ngf,H/4,W/4)
        pose_code = self.pose_encoder(torch.cat([tgt_pose, tgt_parsing], dim=1))  # (B,4ngf,H/4,W/4)
        for block in self.blocks:
            image_code, pose_code = block(image_code, pose_code)
        return self.decoder(image_code)


GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "full": partial(SPGNetGenerator, norm="sean"),
    "baseline": partial(SPGNetGenerator, norm="batch"),
    "baseline_s": partial(SPGNetGenerator, norm="batch", parsing_in_pose_encoder=True),
    "ours_spade": partial(SPGNetGenerator, norm="spade"),
    "ours_cc": partial(SPGNetGenerator, norm="cc"),
    "patn_s": PATNSGenerator,
    "sean": SEANGenerator,
    "release": ReleaseGenerator,
}


def accepted_arguments(constructor: Callable[..., nn.Module]) -> set[str]:
    """The keyword arguments a registry entry takes (a partial's fixed ones excluded)."""
    fixed = set(constructor.keywords) if isinstance(constructor, partial) else set()
    return set(inspect.signature(constructor).parameters) - fixed


def build_generator(variant: str, *, num_classes: int, image_size: tuple[int, int], pose_channels: int,
                    defaults: dict[str, Any] | None = None, **fields: Any) -> nn.Module:
    """The generator of `variant` (a key of GENERATORS, config `model.generator.variant`).

    `fields` are the config section's keys (model.generator.*), passed once: each variant takes those its
    constructor names. A field the variant does not take must keep its default (`defaults`, the section's
    defaults), so that no key is silently ignored. n_scales None: floor(log2(H / 4)) + 1 (7 at 256 px, 6 at
    128x64). Every scale must keep at least 2 px per side (a 1-px map has no spatial statistics for the coarsest
    convs and batch norm to work with).
    """
    if variant not in GENERATORS:
        raise ConfigError(f"key 'model.generator.variant' = {variant!r} is not one of {', '.join(GENERATORS)}")
    constructor = GENERATORS[variant]
    accepted = accepted_arguments(constructor)
    height, width = (int(s) for s in image_size)
    if fields.get("n_scales", 0) is None:
        fields["n_scales"] = default_n_scales(height)
    if "n_scales" in accepted:
        n_scales = fields["n_scales"]
        coarsest = scale_sizes((height, width), n_scales)[-1]
        if n_scales < 1 or min(coarsest) < 2:
            raise ConfigError(
                f"key 'model.generator.n_scales' = {n_scales} does not fit image_size {height}x{width}: the "
                f"coarsest map would be {coarsest[0]}x{coarsest[1]}; every side must stay >= 2 px"
            )
        if variant == "release" and (height % 2**n_scales or width % 2**n_scales):
            raise ConfigError(
                f"key 'model.generator.n_scales' = {n_scales} does not fit image_size {height}x{width}: the release "
                f"generator halves both sides {n_scales} times, so they must be multiples of {2**n_scales}"
            )
    defaults = defaults or {}
    ignored = [k for k in fields if k not in accepted and k in defaults and fields[k] != defaults[k]
               and not (k == "n_scales" and defaults[k] is None)]
    if ignored:
        raise ConfigError(f"key 'model.generator.variant' = {variant!r} takes no "
                          + ", ".join(f"model.generator.{k} (= {fields[k]!r})" for k in ignored)
                          + ": leave them at their defaults, or they would be ignored")
    context = {"num_classes": num_classes, "pose_channels": pose_channels}
    kwargs = {k: v for k, v in {**context, **fields}.items() if k in accepted}
    return constructor(**kwargs)
