"""The stage-2 generator and its ablation variants: shapes at the three dataset sizes, a gradient into every
parameter, the visibility gating's classes, what each variant reads (flow, parsing), and the registry's errors."""

from __future__ import annotations

import typing

import pytest
import torch
import torch.nn.functional as F

from models.blocks import VisibilityGate
from models.generator import SPGNetGenerator, default_n_scales, scale_sizes
from models.variants import GENERATORS, build_generator
from utils.config import GeneratorVariant

VARIANTS = ("full", "baseline", "baseline_s", "ours_spade", "ours_cc", "patn_s", "sean")
K = 4  # parsing classes in these tests
TINY = dict(
    pose_channels=30, base_channels=4, max_channels=8, n_scales=None, n_res_blocks=2, n_warp_scales=5, style_dim=8,
    norm_hidden=4,
)


def one_hot(labels: torch.Tensor, k: int = K) -> torch.Tensor:
    return F.one_hot(labels, k).permute(0, 3, 1, 2).float()


def inputs(b: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch in the shared generator call's format; every class occurs in both parsings."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, K, (b, h, w), generator=g)
    tgt = torch.randint(0, K, (b, h, w), generator=g)
    src[:, 0, :K] = tgt[:, 0, :K] = torch.arange(K)
    return {
        "src_image": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
        "tgt_pose": torch.rand(b, 30, h, w, generator=g),
        "src_parsing": one_hot(src),
        "tgt_parsing": one_hot(tgt),
        "flow": torch.randn(b, 2, h, w, generator=g) * 2,
        "vis": torch.randint(0, 3, (b, h, w), generator=g),
    }


def build(variant: str, size: tuple[int, int], **overrides) -> torch.nn.Module:
    return build_generator(variant, num_classes=K, image_size=size, **{**TINY, **overrides})


def test_registry_holds_every_configured_variant():
    # "release" (sides divisible by 2^n_scales, 18 joint maps) has its own tests in test_release.py
    assert set(GENERATORS) == set(VARIANTS) | {"release"} == set(typing.get_args(GeneratorVariant))


@pytest.mark.parametrize("size", [(256, 176), (256, 256), (128, 64)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_and_range(variant, size):
    torch.manual_seed(0)
    net = build(variant, size).eval()
    batch = inputs(1, *size)
    with torch.no_grad():
        out = net(**batch)
        other = net(**{**batch, "src_image": -batch["src_image"]})
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    # an image, not a constant, and one that depends on the source person (every variant reads the source)
    assert out.std() > 1e-4
    assert (out - other).abs().max() > 1e-4


def test_default_scales_keep_the_coarsest_map_at_least_2px():
    assert default_n_scales(256) == 7 and default_n_scales(128) == 6
    assert scale_sizes((256, 176), 7)[-1] == (4, 3)  # 176 = 11 * 16: 11 -> 6 -> 3, cropped back in the decoder
    assert scale_sizes((256, 256), 7)[-1] == (4, 4)
    assert scale_sizes((128, 64), 6)[-1] == (4, 2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_l1_gradient_reaches_every_parameter(variant):
    torch.manual_seed(1)
    net = build(variant, (32, 24), n_warp_scales=2)  # 4 scales: two warped, two not
    batch = inputs(2, 32, 24, seed=1)
    F.l1_loss(net(**batch), torch.rand(2, 3, 32, 24) * 2 - 1).backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"{variant}: no gradient reaches {dead}"


def test_visibility_gate_routes_each_class_through_its_own_weights():
    """Channel block v of the split conv must act on exactly the pixels with vis == v (a swap of any two
    classes, e.g. background <-> visible, changes the result since the blocks are random)."""
    torch.manual_seed(2)
    c = 3
    gate = VisibilityGate(c).eval()  # eval: batch norm with its initial running stats, i.e. x / sqrt(1 + eps)
    x = torch.randn(2, c, 5, 4)
    vis = torch.randint(0, 3, (2, 5, 4))
    captured = {}
    gate.side.register_forward_hook(lambda m, i, o: captured.update(a=o))
    gate(x, vis)

    weight = gate.side[0].weight[:, :, 0, 0]  # (C, 3C)
    expected = torch.zeros(2, c, 5, 4)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                v = int(vis[b, i, j])
                expected[b, :, i, j] = weight[:, v * c : (v + 1) * c] @ F.relu(x[b, :, i, j])
    torch.testing.assert_close(captured["a"], expected / (1 + 1e-5) ** 0.5)

    with torch.no_grad():
        gate.side[0].weight[:, 2 * c :] = 0  # background block off: background pixels get nothing
    gate(x, vis)
    assert captured["a"].permute(0, 2, 3, 1)[vis == 2].abs().max() == 0
    assert captured["a"].permute(0, 2, 3, 1)[vis != 2].abs().max() > 0


def test_warping_uses_the_flow_only_when_enabled():
    torch.manual_seed(3)
    batch = inputs(1, 32, 24, seed=3)
    moved = {**batch, "flow": batch["flow"] + 3.0}
    for n_warp, reads_flow in ((2, True), (0, False)):
        net = build("full", (32, 24), n_warp_scales=n_warp).eval()
        with torch.no_grad():
            changed = not torch.allclose(net(**batch), net(**moved))
        assert changed == reads_flow, f"n_warp_scales={n_warp}"


@pytest.mark.parametrize(
    "variant, reads_parsing",
    [("baseline", False), ("baseline_s", True), ("full", True), ("ours_spade", True), ("ours_cc", True)],
)
def test_which_variants_read_the_target_parsing(variant, reads_parsing):
    torch.manual_seed(4)
    net = build(variant, (32, 24)).eval()
    batch = inputs(1, 32, 24, seed=4)
    other = {**batch, "tgt_parsing": inputs(1, 32, 24, seed=5)["tgt_parsing"]}
    with torch.no_grad():
        changed = not torch.allclose(net(**batch), net(**other))
    assert changed == reads_parsing


def test_sean_variant_ignores_pose_and_flow_but_reads_the_source_style():
    torch.manual_seed(5)
    net = build("sean", (32, 24)).eval()
    batch = inputs(1, 32, 24, seed=6)
    with torch.no_grad():
        out = net(**batch)
        same = net(**{**batch, "tgt_pose": torch.rand(1, 30, 32, 24), "flow": torch.zeros(1, 2, 32, 24)})
        restyled = net(**{**batch, "src_image": -batch["src_image"]})
    torch.testing.assert_close(out, same)
    assert not torch.allclose(out, restyled)


def test_baseline_s_pose_encoder_reads_pose_and_parsing_channels():
    net = build("baseline_s", (32, 24))
    assert isinstance(net, SPGNetGenerator)
    assert net.pose_encoder.blocks[0].entry[0].in_channels == 30 + K
    assert build("baseline", (32, 24)).pose_encoder.blocks[0].entry[0].in_channels == 30


def test_bad_configuration_and_inputs_are_named():
    with pytest.raises(ValueError, match="model.generator.variant"):
        build("pix2pix", (32, 24))
    with pytest.raises(ValueError, match="model.generator.n_scales"):
        build("full", (128, 64), n_scales=7)  # 64 px wide -> 1 px at the coarsest scale
    net = build("full", (32, 24))
    batch = inputs(1, 32, 24)
    with pytest.raises(ValueError, match="'vis'"):
        net(**{**batch, "vis": batch["vis"].float()})
    with pytest.raises(ValueError, match="'tgt_pose'"):
        net(**{**batch, "tgt_pose": batch["tgt_pose"][:, :18]})
