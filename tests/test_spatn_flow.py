"""SPATN, the flow module and the PatchGAN discriminator: shapes at the datasets' sizes, warping against
array slicing and a slow bilinear loop, min-pooled visibility against a slow loop, the flow-scale convention
against its formula, gradients to every parameter, and two learning checks on the synthetic people."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data.loaders import build_dataset
from data.synthetic import generate_dataset
from losses.flow import MultiScaleEPE, VisibilityCrossEntropy
from losses.parsing import ParsingCrossEntropy
from models.discriminator import PatchDiscriminator
from models.flow import FlowNet, FlowOutput, downsample_flow, downsample_visibility, warp
from models.pose_encoding import PoseEncoder
from models.spatn import SPATN, PATBlock
from utils.config import load_config

SIZES = [(256, 176), (256, 256), (128, 64)]
POSE = 30


def tiny_spatn(in_channels: int, num_classes: int, norm: str = "instance") -> SPATN:
    return SPATN(in_channels, num_classes, POSE, ngf=4, n_blocks=2, n_downsampling=2, norm=norm)


def tiny_flownet(norm: str = "instance", n_scales: int = 5) -> FlowNet:
    return FlowNet(POSE, base_channels=4, max_channels=8, n_scales=n_scales, flow_scale=20.0, norm=norm)


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("size", SIZES)
def test_spatn_shapes(size):
    h, w = size
    torch.manual_seed(0)
    poses = torch.rand(2, 1, POSE, h, w)
    parsing = F.one_hot(torch.randint(0, 8, (1, h, w)), 8).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert tiny_spatn(8, 8)(parsing, poses[0], poses[1]).shape == (1, 8, h, w)  # SPATN
        assert tiny_spatn(3, 8)(torch.rand(1, 3, h, w) * 2 - 1, poses[0], poses[1]).shape == (1, 8, h, w)  # SPATN*


def test_pat_block_keeps_shapes_and_last_block_passes_pose_through():
    torch.manual_seed(0)
    parsing, pose = torch.randn(2, 2, 6, 5, 7)
    new_parsing, new_pose = PATBlock(6, "batch")(parsing, pose)
    assert new_parsing.shape == new_pose.shape == (2, 6, 5, 7)
    _, same = PATBlock(6, "batch", update_pose=False)(parsing, pose)
    assert same is pose


@pytest.mark.parametrize("size", SIZES + [(132, 68)])  # 132x68: sides not divisible by 2^4
def test_flownet_shapes(size):
    h, w = size
    torch.manual_seed(0)
    with torch.no_grad():
        out = tiny_flownet()(torch.rand(1, POSE, h, w), torch.rand(1, POSE, h, w))
    assert isinstance(out, FlowOutput)
    assert out.flow.shape == (1, 2, h, w) and out.vis_logits.shape == (1, 3, h, w)
    # coarse to fine: level l has the size of l stride-2 convs (kernel 3, padding 1): ceil halving
    expected = []
    hh, ww = h, w
    for _ in range(5):
        expected.append((hh, ww))
        hh, ww = (hh + 1) // 2, (ww + 1) // 2
    assert [tuple(f.shape[2:]) for f in out.flows] == expected[::-1]
    assert out.flows[-1] is out.flow


@pytest.mark.parametrize("size", SIZES)
def test_discriminator_shapes(size):
    h, w = size
    disc = PatchDiscriminator(3 + 3 + POSE, ndf=4, n_layers=3, norm="instance")
    with torch.no_grad():
        out = disc(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w), torch.rand(2, POSE, h, w))
    # three stride-2 4x4 convs (pad 1) halve each side, then two stride-1 4x4 convs (pad 1) take one pixel each
    assert out.shape == (2, 1, h // 8 - 2, w // 8 - 2)


def test_flow_scale_convention():
    """With every head silenced except the coarsest one's bias (a, b), the raw output is (a, b) everywhere;
    level l must then hold (a, b) * flow_scale / 2^l pixels of its own map (x by w_l/W, y by h_l/H)."""
    net = tiny_flownet(n_scales=4)
    with torch.no_grad():
        for head in net.flow_heads:
            head.weight.zero_()
            head.bias.zero_()
        net.flow_heads[-1].bias.copy_(torch.tensor([0.3, -0.2]))
        out = net(torch.rand(1, POSE, 64, 48), torch.rand(1, POSE, 64, 48))
    for level, flow in zip(range(3, -1, -1), out.flows):
        assert flow.shape[2:] == (64 >> level, 48 >> level)
        torch.testing.assert_close(flow[0, 0], torch.full_like(flow[0, 0], 0.3 * 20 / 2**level))
        torch.testing.assert_close(flow[0, 1], torch.full_like(flow[0, 1], -0.2 * 20 / 2**level))


def test_bad_inputs_are_named():
    net = tiny_spatn(8, 8)
    pose = torch.rand(1, POSE, 64, 48)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.rand(1, 3, 64, 48), pose, pose)
    with pytest.raises(ValueError, match="multiple of"):
        net(torch.rand(1, 8, 62, 48), torch.rand(1, POSE, 62, 48), torch.rand(1, POSE, 62, 48))
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        SPATN(8, 8, POSE, 4, 1, 2, "group")
    with pytest.raises(ValueError, match="differ"):
        tiny_flownet()(pose, torch.rand(1, POSE, 64, 40))
    with pytest.raises(ValueError, match="36"):
        PatchDiscriminator(36, 4, 3, "none")(torch.rand(1, 3, 64, 48), torch.rand(1, 3, 64, 48), pose[:, :18])
    with pytest.raises(ValueError, match="does not match"):
        warp(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 7))


# ------------------------------------------------------------------------------------------------- warp


def test_warp_zero_flow_is_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(warp(x, torch.zeros(2, 2, 7, 9)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(warp(x.float(), torch.zeros(2, 2, 7, 9)), x.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -3), (-1, 2), (4, 5)])
def test_warp_integer_shift_matches_slicing(dx, dy):
    """out[i, j] = x[i + dy, j + dx], zero where that lies outside."""
    torch.manual_seed(1)
    h, w = 7, 9
    x = torch.randn(1, 3, h, w)
    flow = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, h, w)
    expected = torch.zeros_like(x)
    rows = slice(max(0, -dy), min(h, h - dy))
    cols = slice(max(0, -dx), min(w, w - dx))
    src_rows = slice(rows.start + dy, rows.stop + dy)
    src_cols = slice(cols.start + dx, cols.stop + dx)
    expected[:, :, rows, cols] = x[:, :, src_rows, src_cols]
    torch.testing.assert_close(warp(x, flow), expected, rtol=0, atol=1e-5)


def slow_bilinear_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Textbook bilinear interpolation at (i + fy, j + fx), pixels outside the map read as zero."""
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                sy, sx = i + float(flow[n, 1, i, j]), j + float(flow[n, 0, i, j])
                y0, x0 = math.floor(sy), math.floor(sx)
                for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                    for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[n, :, i, j] += wy * wx * x[n, :, yy, xx]
    return out


def test_warp_matches_slow_bilinear_loop():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    flow = torch.randn(2, 2, 5, 6, dtype=torch.float64) * 2.5  # fractional, some samples fall outside
    torch.testing.assert_close(warp(x, flow), slow_bilinear_warp(x, flow))
    # a one-pixel-high map: offsets along y must still leave the map (zeros) or stay on it
    x1, f1 = torch.randn(1, 2, 1, 6, dtype=torch.float64), torch.randn(1, 2, 1, 6, dtype=torch.float64)
    torch.testing.assert_close(warp(x1, f1), slow_bilinear_warp(x1, f1))


# ------------------------------------------------------------------------------------- downsampling


def adaptive_window(i: int, small: int, big: int) -> range:
    """The input window of output cell i in adaptive pooling: [floor(i*big/small), ceil((i+1)*big/small))."""
    return range((i * big) // small, -((-(i + 1) * big) // small))


@pytest.mark.parametrize("size", [(4, 3), (3, 5)])  # integer and non-integer ratios of (12, 15)
def test_downsample_visibility_priority(size):
    torch.manual_seed(3)
    vis = torch.randint(0, 3, (2, 12, 15))
    vis[0, :4] = 2  # whole cells of background, and some with invisible but no visible pixel
    vis[1, :, :5] = torch.randint(1, 3, (12, 5))
    h, w = size
    expected = torch.empty(2, h, w, dtype=torch.long)
    for n in range(2):
        for i in range(h):
            for j in range(w):
                cell = {int(vis[n, y, x]) for y in adaptive_window(i, h, 12) for x in adaptive_window(j, w, 15)}
                expected[n, i, j] = 0 if 0 in cell else (1 if 1 in cell else 2)
    out = downsample_visibility(vis, size)
    assert out.dtype == torch.long
    torch.testing.assert_close(out, expected)
    assert set(expected.unique().tolist()) == {0, 1, 2}  # every priority case occurred


def test_downsample_flow_block_mean_scaled_per_axis():
    torch.manual_seed(4)
    flow = torch.randn(1, 2, 8, 12)
    out = downsample_flow(flow, (2, 6))  # blocks of 4 rows x 2 columns
    for i in range(2):
        for j in range(6):
            block = flow[0, :, 4 * i : 4 * i + 4, 2 * j : 2 * j + 2].mean(dim=(1, 2))
            torch.testing.assert_close(out[0, :, i, j], block * torch.tensor([1 / 2, 1 / 4]))


# -------------------------------------------------------------------------------------------- gradients


def assert_every_parameter_gets_gradient(module: torch.nn.Module) -> None:
    dead = [name for name, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_gradients_reach_every_parameter(norm):
    torch.manual_seed(5)
    h, w = 32, 24
    poses = torch.rand(2, 2, POSE, h, w)

    spatn = tiny_spatn(3, 5, norm)
    spatn(torch.randn(2, 3, h, w), poses[0], poses[1]).square().mean().backward()
    assert_every_parameter_gets_gradient(spatn)

    flow_net = tiny_flownet(norm, n_scales=3)
    out = flow_net(poses[0], poses[1])
    (sum(f.square().mean() for f in out.flows) + out.vis_logits.square().mean()).backward()
    assert_every_parameter_gets_gradient(flow_net)

    disc = PatchDiscriminator(3 + 3 + POSE, ndf=4, n_layers=2, norm=norm, spectral_norm=norm == "none")
    disc(torch.randn(2, 3, h, w), torch.randn(2, 3, h, w), poses[0]).mean().backward()
    assert_every_parameter_gets_gradient(disc)


# ------------------------------------------------------------------------------ learning on synthetic people

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def market_cfg(tmp_path_factory):
    """A tiny Market-like synthetic set (128x64): 12 identities x 4 poses, identities split train/test."""
    root = tmp_path_factory.mktemp("synthetic_market")
    generate_dataset(root, style="market", identities=12, poses=4, seed=0, test_fraction=0.2)
    return load_config(CONFIGS / "synthetic_market.yaml",
                       [f"data.root={root}", "pose.encode_on_device=true"])


def load_pairs(cfg, split: str, indices=None, with_flow: bool = True) -> dict:
    """Stack dataset samples (PairDataset through the config) and encode their poses in one batch."""
    dataset = build_dataset(cfg, split, with_flow=with_flow)
    indices = range(len(dataset)) if indices is None else indices
    items = [dataset[i] for i in indices]
    keys = ["src_keypoints", "tgt_keypoints", "src_parsing", "tgt_parsing"] + (["flow", "vis"] if with_flow else [])
    batch = {k: torch.stack([item[k] for item in items]) for k in keys}
    encoder = PoseEncoder(*cfg.data.image_size, cfg.pose.heatmap, cfg.pose.sigma, cfg.pose.radius, cfg.pose.kappa)
    batch["src_pose"], batch["tgt_pose"] = encoder(batch["src_keypoints"]), encoder(batch["tgt_keypoints"])
    batch["names"] = {name for item in items for name in (item["src_name"], item["tgt_name"])}
    return batch


def visible_epe(flow: torch.Tensor, target: torch.Tensor, vis: torch.Tensor) -> float:
    """Mean end-point error over the visible target pixels (vis == 0), in full-resolution pixels."""
    visible = vis == 0
    return float(torch.linalg.vector_norm(flow - target, dim=1)[visible].mean())


FLOW_STEPS, FLOW_RATIO = 240, 0.7


@pytest.mark.slow
def test_flownet_learns_held_out_flow(market_cfg):
    """240 steps (batch 4, Adam 3e-3 one-cycle) on 120 training pairs: the end-point error on the 24 pairs of
    held-out identities, on visible target pixels, falls below 0.7 x that of the zero flow (~13.7 px)."""
    train, test = load_pairs(market_cfg, "train"), load_pairs(market_cfg, "test")
    assert not train["names"] & test["names"]
    torch.manual_seed(0)
    net = FlowNet(POSE, base_channels=8, max_channels=32, n_scales=4, flow_scale=20.0, norm="instance")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=FLOW_STEPS, pct_start=0.1)
    epe_loss, vis_loss = MultiScaleEPE(), VisibilityCrossEntropy()
    order = torch.Generator().manual_seed(0)
    for _ in range(FLOW_STEPS):
        idx = torch.randint(0, len(train["flow"]), (4,), generator=order)
        out = net(train["src_pose"][idx], train["tgt_pose"][idx])
        loss = epe_loss(out.flows, train["flow"][idx], train["vis"][idx]) + vis_loss(out.vis_logits, train["vis"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()

    net.eval()
    with torch.no_grad():
        out = net(test["src_pose"], test["tgt_pose"])
    zero = visible_epe(torch.zeros_like(test["flow"]), test["flow"], test["vis"])
    learned = visible_epe(out.flow, test["flow"], test["vis"])
    vis_acc = float((out.vis_logits.argmax(dim=1) == test["vis"]).float().mean())
    print(f"held-out EPE {learned:.3f} px vs zero flow {zero:.3f} px (ratio {learned / zero:.3f}); "
          f"visibility accuracy {vis_acc:.3f}")
    assert zero > 2.0  # the pairs do move: the zero flow is a real baseline
    assert learned < FLOW_RATIO * zero


SPATN_STEPS = 100


@pytest.mark.slow
def test_spatn_overfits_four_pairs(market_cfg):
    """100 full-batch Adam steps (2e-3) on 4 pairs of 4 identities reach > 90% pixel accuracy on them (the
    all-background answer scores ~73%)."""
    data = load_pairs(market_cfg, "train", indices=[0, 12, 24, 36], with_flow=False)
    labels = data["tgt_parsing"].argmax(dim=1)  # (4,H,W)
    background = float((labels == 0).float().mean())
    torch.manual_seed(0)
    net = SPATN(20, 20, POSE, ngf=8, n_blocks=2, n_downsampling=2, norm="instance")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    ce = ParsingCrossEntropy()
    for _ in range(SPATN_STEPS):
        loss = ce(net(data["src_parsing"], data["src_pose"], data["tgt_pose"]), data["tgt_parsing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(data["src_parsing"], data["src_pose"], data["tgt_pose"]).argmax(dim=1) == labels)
                         .float().mean())
    print(f"SPATN pixel accuracy {accuracy:.3f} after {SPATN_STEPS} steps (all background: {background:.3f})")
    assert background < 0.85
    assert accuracy > 0.9
