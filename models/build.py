"""Config -> networks. The networks themselves take explicit constructor arguments; this is the one place
that reads `cfg.model` (EDM's rule: no config object is passed into a layer)."""

from __future__ import annotations

import dataclasses

from torch import nn

from data.parsing import num_labels
from data.pose import NUM_JOINTS, NUM_LIMBS
from models.discriminator import PatchDiscriminator
from models.flow import FlowNet
from models.init import initialize_
from models.pose_encoding import PoseEncoder
from models.release_flow import ReleaseFlowNet
from models.spatn import SPATN
from models.variants import build_generator
from utils.config import Config, GeneratorConfig


def pose_channels(cfg: Config) -> int:
    """30: 18 joint heatmaps + 12 limb distance maps; 18 with pose.limbs = false (the release's joint maps)."""
    return NUM_JOINTS + (NUM_LIMBS if cfg.pose.limbs else 0)


def build_pose_encoder(cfg: Config) -> PoseEncoder:
    """Keypoints -> (B,30,H,W) pose maps on the device (pose.*); (B,18,H,W) with pose.limbs = false."""
    h, w = cfg.data.image_size
    p = cfg.pose
    return PoseEncoder(h, w, p.heatmap, p.sigma, p.radius, p.kappa, p.learnable_kappa, p.limbs)


def build_spatn(cfg: Config) -> SPATN:
    """SPATN (source parsing in) or SPATN* (source image in, `model.spatn.input: image`)."""
    m, k = cfg.model.spatn, num_labels(cfg)
    in_channels = k if m.input == "parsing" else 3
    return SPATN(in_channels=in_channels, num_classes=k, pose_channels=pose_channels(cfg), ngf=m.ngf,
                 n_blocks=m.n_blocks, n_downsampling=m.n_downsampling, norm=m.norm)


def build_flow(cfg: Config) -> FlowNet | ReleaseFlowNet:
    """Our FlowNet, or (model.flow.network: release) Intr-Flow's FlowUnet_v2 as the release loads it."""
    m = cfg.model.flow
    if m.network == "release":
        return ReleaseFlowNet(pose_channels=pose_channels(cfg), nf=m.base_channels, max_nf=m.max_channels,
                              start_scale=m.start_scale, num_scales=m.n_scales, flow_scale=m.flow_scale)
    return FlowNet(pose_channels=pose_channels(cfg), base_channels=m.base_channels, max_channels=m.max_channels,
                   n_scales=m.n_scales, flow_scale=m.flow_scale, norm=m.norm, limb_flows=m.limb_flows)


def build_spgnet(cfg: Config) -> nn.Module:
    """The stage-2 generator of the configured variant (paper Table 3), with the model.generator.* keys."""
    fields = dataclasses.asdict(cfg.model.generator)
    variant = fields.pop("variant")
    defaults = dataclasses.asdict(GeneratorConfig())
    net = build_generator(variant, num_classes=num_labels(cfg), image_size=tuple(cfg.data.image_size),
                          pose_channels=pose_channels(cfg), defaults=defaults, **fields)
    return initialize_(net, cfg.model.init)


def build_discriminator(cfg: Config) -> PatchDiscriminator:
    m = cfg.model.discriminator
    net = PatchDiscriminator(in_channels=3 + 3 + pose_channels(cfg), ndf=m.ndf, n_layers=m.n_layers, norm=m.norm)
    return initialize_(net, cfg.model.init)  # model.init covers G and D, the two networks the release initialises


def build_all(cfg: Config) -> dict[str, nn.Module]:
    """Every network of the joint stage, by checkpoint key."""
    return {"spatn": build_spatn(cfg), "generator": build_spgnet(cfg), "discriminator": build_discriminator(cfg),
            "flow": build_flow(cfg)}
