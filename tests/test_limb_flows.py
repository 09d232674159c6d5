"""model.flow.limb_flows: the candidate flows from keypoints (against a per-pixel loop of the geometry, and against
the renderer's exact flow on its people), FlowNet's per-pixel choice between them, and the config's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.pose import LIMBS
from data.synthetic import PARTS, STYLES, part_map, part_specs, pose_figure, pose_pair_flow, random_pose_pair
from models.flow import NUM_LIMB_FLOWS, SEGMENTS, TORSO_JOINTS, FlowNet, limb_flows
from utils.config import Config, ConfigError, architecture_mismatches, load_config, to_dict

POSE = 30


def reflect(z: complex, a: complex, b: complex) -> complex:
    """Mirror image of z about the line through a and b (geometry, not the module's formula)."""
    axis = (b - a) / abs(b - a)
    along = ((z - a) * axis.conjugate()).real * axis  # projection onto the axis
    return a + 2 * along - (z - a)


def slow_candidates(src: np.ndarray, tgt: np.ndarray, h: int, w: int) -> dict[int, np.ndarray]:
    """{candidate index: (2,h,w) flow} of the valid candidates, pixel by pixel."""
    out = {}
    both = list((src >= 0).all(-1) & (tgt >= 0).all(-1))
    both.append(both[8] and both[11])  # the mid-hip
    zs = [complex(x, y) for y, x in src] + [complex(*src[[8, 11]].mean(0)[::-1])]
    zt = [complex(x, y) for y, x in tgt] + [complex(*tgt[[8, 11]].mean(0)[::-1])]
    for k, (i, j) in enumerate([*LIMBS, (1, 18)]):
        if not (both[i] and both[j]) or abs(zt[j] - zt[i]) <= 1:
            continue
        scale_rotate = (zs[j] - zs[i]) / (zt[j] - zt[i])
        for index, mirror in ((k, False), (k + len(SEGMENTS), True)):
            flow = np.zeros((2, h, w))
            for y in range(h):
                for x in range(w):
                    z = complex(x, y)
                    source = zs[i] + scale_rotate * ((reflect(z, zt[i], zt[j]) if mirror else z) - zt[i])
                    flow[:, y, x] = source.real - x, source.imag - y
            out[index] = flow
    torso = [j for j in TORSO_JOINTS if both[j]]
    if len(torso) >= 3:
        design = np.array([[tgt[j, 1], tgt[j, 0], 1.0] for j in torso])
        fit, *_ = np.linalg.lstsq(design, np.array([[src[j, 1], src[j, 0]] for j in torso]), rcond=None)
        ys, xs = np.mgrid[0:h, 0:w]
        mapped = np.stack([xs, ys, np.ones_like(xs)], -1) @ fit  # (h,w,2)
        out[NUM_LIMB_FLOWS - 1] = np.stack([mapped[..., 0] - xs, mapped[..., 1] - ys])
    return out


def test_limb_flows_match_a_per_pixel_loop():
    rng = np.random.default_rng(0)
    h, w = 9, 7
    keypoints = rng.uniform(-2, 10, (2, 2, 18, 2)).astype(np.float32)  # (pose pair, B, 18, 2) (y, x)
    keypoints[0, 1, [4, 8]] = -1  # a missing wrist (limb 2) and hip (limbs 6, 7, the torso's axis 12, a torso joint)
    keypoints[1, 0, 2] = -1  # a missing right shoulder
    candidates, valid = limb_flows(torch.from_numpy(keypoints[0]), torch.from_numpy(keypoints[1]), h, w)
    assert candidates.shape == (2, NUM_LIMB_FLOWS, 2, h, w) and valid.shape == (2, NUM_LIMB_FLOWS)
    for b in range(2):
        expected = slow_candidates(keypoints[0, b], keypoints[1, b], h, w)
        assert sorted(expected) == torch.nonzero(valid[b]).flatten().tolist()
        for k in range(NUM_LIMB_FLOWS):
            want = expected.get(k, np.zeros((2, h, w)))
            np.testing.assert_allclose(candidates[b, k].numpy(), want, atol=2e-3, err_msg=f"pair {b} candidate {k}")
    assert not valid[1, 2] and not valid[1, 6] and not valid[0, 0] and not valid[1, 12]


def test_each_rendered_part_moves_with_its_candidate():
    """On the renderer's people, the candidate of a part's limb (or the torso's affine map) is within a pixel of
    the exact flow on the part's visible pixels: the candidates are the body's motion, up to the keypoints'
    rounding to whole pixels. (The torso's is off by several pixels across a side view: there the renderer
    narrows the joints' spread more than the cloth's, so the network's own flow has that to correct.)"""
    st = STYLES["deepfashion_small"]
    limb_of = {"r_upper_arm": 1, "r_forearm": 2, "l_upper_arm": 4, "l_forearm": 5, "r_thigh": 7, "r_shin": 8,
               "l_thigh": 10, "l_shin": 11}
    errors: dict[str, list[float]] = {}
    for index in range(12):
        app, source, target = random_pose_pair(st, 0, list(range(10)), index)
        kp, flow, vis = pose_pair_flow(st, app, source, target)
        parts = part_map(part_specs(app), pose_figure(app, target, st.height, st.width))
        candidates, valid = limb_flows(torch.from_numpy(kp[:1]), torch.from_numpy(kp[1:]), st.height, st.width)
        for name, limb in [*limb_of.items(), ("torso_front", None), ("torso_back", None)]:
            pixels = (parts == PARTS.index(name) + 1) & (vis == 0)
            options = [NUM_LIMB_FLOWS - 1] if limb is None else [limb, limb + len(SEGMENTS)]
            options = [k for k in options if valid[0, k]]
            if pixels.sum() < 20 or not options:
                continue
            epe = [np.linalg.norm(candidates[0, k].numpy() - flow, axis=0)[pixels].mean() for k in options]
            errors.setdefault("torso" if limb is None else "limbs", []).append(min(epe))
    assert len(errors["limbs"]) > 40 and len(errors["torso"]) > 8
    assert np.mean(errors["limbs"]) < 1.0 and np.median(errors["torso"]) < 1.0, errors


def tiny(limb_flows: bool = True) -> FlowNet:
    return FlowNet(POSE, base_channels=4, max_channels=8, n_scales=3, norm="instance", limb_flows=limb_flows)


def random_pair(h: int = 24, w: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    keypoints = torch.rand(2, 2, 18, 2, generator=gen) * torch.tensor([h, w])
    return torch.rand(2, 2, POSE, h, w, generator=gen).unbind(0) + keypoints.unbind(0)


def test_flownet_full_resolution_flow_is_the_chosen_candidate():
    net = tiny().eval()
    src_pose, tgt_pose, src_kp, tgt_kp = random_pair()
    candidates, _ = limb_flows(src_kp, tgt_kp, 24, 16)
    for k in (3, 15, NUM_LIMB_FLOWS - 1):
        with torch.no_grad():
            net.choice_head.bias.fill_(0.0)
            net.choice_head.bias[1 + k] = 6.0  # x CHOICE_GAIN: the softmax puts all its weight on candidate k
        out = net(src_pose, tgt_pose, src_kp, tgt_kp)
        torch.testing.assert_close(out.flow, candidates[:, k])
        assert out.flows[-1] is out.flow and out.flow.shape == (2, 2, 24, 16)
    with pytest.raises(ValueError, match="keypoints"):
        net(src_pose, tgt_pose)


def test_flownet_with_limb_flows_gets_gradient_everywhere():
    torch.manual_seed(4)
    net = tiny()
    with torch.no_grad():
        net.choice_head.weight.normal_(0, 0.1)  # zero at first: the features would get no gradient through it
    src_pose, tgt_pose, src_kp, tgt_kp = random_pair()
    out = net(src_pose, tgt_pose, src_kp, tgt_kp)
    (sum(f.square().mean() for f in out.flows) + out.vis_logits.square().mean()).backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, dead


def test_config_rules_and_older_checkpoints():
    with pytest.raises(ConfigError, match="limb_flows"):
        load_config(None, ["model.flow.network=release", "model.flow.limb_flows=true"])
    saved = to_dict(Config())
    del saved["model"]["flow"]["limb_flows"]  # a checkpoint older than the key: trained without limb flows
    assert architecture_mismatches(saved, Config()) == []
    cfg = Config()
    cfg.model.flow.limb_flows = True
    assert architecture_mismatches(saved, cfg) == ["model.flow.limb_flows: False -> True"]
