"""A training forward of every network builds no tensor from host data, reads no value back and makes no
value-shaped output: on a GPU each would make the host wait once per call (tests/host_syncs.py counts them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.build import build_discriminator, build_flow, build_pose_encoder, build_spatn, build_spgnet
from tests import test_generator as generator_variants
from tests.host_syncs import HostSyncs
from tests.test_generator import VARIANTS
from utils.config import load_config

TINY = ["model.spatn.ngf=4", "model.spatn.n_blocks=1", "model.flow.base_channels=4", "model.flow.max_channels=8",
        "model.generator.base_channels=4", "model.generator.max_channels=8", "model.generator.style_dim=8",
        "model.generator.norm_hidden=4", "model.discriminator.ndf=4", "model.discriminator.n_layers=2"]
RELEASE = ["model.generator.variant=release", "model.flow.network=release", "pose.limbs=false",
           "pose.heatmap=binary", "model.generator.n_scales=5", "model.generator.n_warp_scales=4",
           "model.flow.n_scales=3"]
B, H, W = 2, 128, 64


def config(*overrides: str):
    return load_config("configs/synthetic_market.yaml", [*TINY, *overrides])


def keypoints() -> torch.Tensor:
    """(B,18,2) (y, x) joints inside the frame, one of them missing and one limb of length zero."""
    g = torch.Generator().manual_seed(0)
    kp = torch.stack([torch.randint(0, H, (B, 18), generator=g), torch.randint(0, W, (B, 18), generator=g)], -1)
    kp[0, 4] = -1
    kp[1, 3] = kp[1, 2]
    return kp.float()


def batch(cfg) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pose = build_pose_encoder(cfg)(keypoints())  # (B,P,H,W)
    k = 20

    def parsing() -> torch.Tensor:
        return F.one_hot(torch.randint(0, k, (B, H, W), generator=g), k).permute(0, 3, 1, 2).float()

    return {"src_image": torch.rand(B, 3, H, W, generator=g) * 2 - 1, "pose": pose, "src_parsing": parsing(),
            "tgt_parsing": parsing(), "flow": torch.randn(B, 2, H, W, generator=g) * 3,
            "vis": torch.randint(0, 3, (B, H, W), generator=g)}


def assert_no_host_syncs(forward) -> None:
    with HostSyncs() as syncs:
        out = forward()
    assert not syncs.found, f"host syncs in the forward: {dict(syncs.found)}"
    return out


@pytest.mark.parametrize("learnable_kappa", [False, True])
def test_pose_encoder(learnable_kappa):
    encoder, kp = build_pose_encoder(config(f"pose.learnable_kappa={learnable_kappa}")), keypoints()
    pose = assert_no_host_syncs(lambda: encoder(kp))
    assert pose.shape == (B, 30, H, W)


@pytest.mark.parametrize("network", ["ours", "release"])
def test_flow_networks(network):
    cfg = config(*RELEASE) if network == "release" else config()
    net, b = build_flow(cfg).train(), batch(cfg)
    out = assert_no_host_syncs(lambda: net(b["pose"], b["pose"].flip(0)))
    assert out.flow.shape == (B, 2, H, W)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_variants(variant):
    net, b = generator_variants.build(variant, (H, W)).train(), generator_variants.inputs(B, H, W)
    image = assert_no_host_syncs(lambda: net(*b.values()))
    assert image.shape == (B, 3, H, W)


def test_release_generator():
    cfg = config(*RELEASE)
    net, b = build_spgnet(cfg).train(), batch(cfg)
    image = assert_no_host_syncs(lambda: net(b["src_image"], b["pose"], b["src_parsing"], b["tgt_parsing"], b["flow"],
                                             b["vis"]))
    assert image.shape == (B, 3, H, W)


def test_spatn_and_discriminator():
    cfg = config()
    spatn, disc, b = build_spatn(cfg).train(), build_discriminator(cfg).train(), batch(cfg)
    logits = assert_no_host_syncs(lambda: spatn(b["src_parsing"], b["pose"], b["pose"].flip(0)))
    assert_no_host_syncs(lambda: disc(b["src_image"], b["src_image"], b["pose"]))
    assert logits.shape[:2] == (B, 20)
