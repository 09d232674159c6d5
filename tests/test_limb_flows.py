"""model.flow.limb_flows: the candidate flows from keypoints (against a per-pixel loop of the geometry, and against
the renderer's exact flow on its people), FlowNet's per-pixel choice between them, and the config's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.pose import LIMBS
from data.synthetic import PARTS, STYLES, part_map, part_specs, pose_figure, pose_pair_flow, random_pose_pair
from models.flow import (
    AFFINE,
    MEMBERSHIP_WIDTH,
    NUM_FACING_FEATURES,
    NUM_LIMB_FLOWS,
    SEGMENTS,
    TORSO_JOINTS,
    TURNS,
    FlowNet,
    facing_features,
    limb_flows,
    occlusion_features,
)
from utils.config import Config, ConfigError, architecture_mismatches, load_config, to_dict

POSE = 30


def reflect(z: complex, a: complex, b: complex) -> complex:
    """Mirror image of z about the line through a and b (geometry, not the module's formula)."""
    axis = (b - a) / abs(b - a)
    along = ((z - a) * axis.conjugate()).real * axis  # projection onto the axis
    return a + 2 * along - (z - a)


def turned(z: complex, a: complex, b: complex, s: float) -> complex:
    """z with its offset across the line through a and b scaled by s (along it kept)."""
    axis = (b - a) / abs(b - a)
    along = ((z - a) * axis.conjugate()).real * axis
    return a + along + s * (z - a - along)


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
    i, j = SEGMENTS[-1]  # the torso's axis: its turns
    if both[i] and both[j] and abs(zt[j] - zt[i]) > 1:
        scale_rotate = (zs[j] - zs[i]) / (zt[j] - zt[i])
        for t, s in enumerate(TURNS):
            flow = np.zeros((2, h, w))
            for y in range(h):
                for x in range(w):
                    source = zs[i] + scale_rotate * (turned(complex(x, y), zt[i], zt[j], s) - zt[i])
                    flow[:, y, x] = source.real - x, source.imag - y
            out[AFFINE + 1 + t] = flow
    torso = [j for j in TORSO_JOINTS if both[j]]
    if len(torso) >= 3:
        design = np.array([[tgt[j, 1], tgt[j, 0], 1.0] for j in torso])
        fit, *_ = np.linalg.lstsq(design, np.array([[src[j, 1], src[j, 0]] for j in torso]), rcond=None)
        ys, xs = np.mgrid[0:h, 0:w]
        mapped = np.stack([xs, ys, np.ones_like(xs)], -1) @ fit  # (h,w,2)
        out[AFFINE] = np.stack([mapped[..., 0] - xs, mapped[..., 1] - ys])
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
    assert not valid[1, 2] and not valid[1, 6] and not valid[0, 0] and not valid[1, 12] and not valid[1, AFFINE + 1]


def test_each_rendered_part_moves_with_its_candidate():
    """On the renderer's people, the candidate of a part's limb (or the torso's affine map) is within a pixel of
    the exact flow on the part's visible pixels: the candidates are the body's motion, up to the keypoints'
    rounding to whole pixels. The torso's affine map alone is off by about 2 px across a side view, where the
    renderer narrows the joints' spread more than the cloth's; one of its turns is not."""
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
            options = ([AFFINE, *range(AFFINE + 1, NUM_LIMB_FLOWS)] if limb is None
                       else [limb, limb + len(SEGMENTS)])
            options = [k for k in options if valid[0, k]]
            if pixels.sum() < 20 or not options:
                continue
            epe = [np.linalg.norm(candidates[0, k].numpy() - flow, axis=0)[pixels].mean() for k in options]
            errors.setdefault("torso" if limb is None else "limbs", []).append(min(epe))
    assert len(errors["limbs"]) > 40 and len(errors["torso"]) > 8
    assert np.mean(errors["limbs"]) < 1.0 and np.mean(errors["torso"]) < 1.0, errors


def slow_facing(keypoints: np.ndarray) -> float:
    """A pose's facing f, joint by joint: the left-minus-right x spread of the shoulders and hips present over the
    neck -> mid-hip length (0 when that axis or both pairs are missing)."""
    (y_n, x_n), (y_rh, x_rh), (y_lh, x_lh) = keypoints[1], keypoints[8], keypoints[11]
    if min(y_n, x_n, y_rh, x_rh, y_lh, x_lh) < 0:
        return 0.0
    length = float(np.hypot(y_n - (y_rh + y_lh) / 2, x_n - (x_rh + x_lh) / 2))
    spreads = [keypoints[left][1] - keypoints[right][1] for left, right in ((5, 2), (11, 8))
               if min(*keypoints[left], *keypoints[right]) >= 0]
    return float(np.mean(spreads)) / length if spreads and length > 1 else 0.0


def test_facing_features_match_a_per_pose_computation():
    rng = np.random.default_rng(1)
    keypoints = rng.uniform(0, 40, (2, 4, 18, 2)).astype(np.float32)  # (source/target, B, 18, 2) (y, x)
    keypoints[0, 1, 2] = -1  # no right shoulder: the hips alone
    keypoints[1, 2, 8] = -1  # no right hip: no torso axis, facing unknown
    features = facing_features(torch.from_numpy(keypoints[0]), torch.from_numpy(keypoints[1])).numpy()
    assert features.shape == (4, NUM_FACING_FEATURES)
    for b in range(4):
        f_s, f_t = slow_facing(keypoints[0, b]), slow_facing(keypoints[1, b])
        t = np.tanh(f_s / 0.05) * np.tanh(f_t / 0.05)
        w_s, w_t = (1 / (1 + np.exp(-(abs(f) - 0.3) / 0.05)) for f in (f_s, f_t))
        want = [w_t, w_s, w_s * w_t, t, t * w_t, t * w_s, t * w_s * w_t]
        np.testing.assert_allclose(features[b], want, atol=1e-5, err_msg=f"pair {b}")
    assert features[2, 3] == 0.0  # unknown facing: neither turned nor not


def test_facing_features_tell_the_rendered_turns_apart():
    """On the renderer's people: the pair's 'turned' feature has the sign of the product of the two poses'
    facings (a limb is seen from its other side exactly when they differ), and a pose is wide exactly when it
    is a front or back view."""
    st = STYLES["deepfashion_small"]
    for index in range(24):
        app, source, target = random_pose_pair(st, 0, list(range(10)), index)
        kp, _, _ = pose_pair_flow(st, app, source, target)
        w_t, w_s, _, t, *_ = facing_features(torch.from_numpy(kp[:1]), torch.from_numpy(kp[1:]))[0].tolist()
        assert t * source.facing * target.facing > 0.8, (index, source, target, t)
        for pose, wide in ((source, w_s), (target, w_t)):
            assert (wide > 0.9) if pose.view != "side" else (wide < 0.1), (index, pose, wide)


def slow_memberships(keypoints: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """(len(points), S) memberships exp(-d^2 / (2 w^2)) of (x, y) points in a pose's segments, point by point:
    the nearest point of each segment found by sampling it finely (geometry, not the module's projection)."""
    joints = [complex(x, y) for y, x in keypoints] + [complex(*keypoints[[8, 11]].mean(0)[::-1])]
    present = list((keypoints >= 0).all(-1)) + [bool((keypoints[[8, 11]] >= 0).all())]
    torso = abs(joints[1] - joints[18])
    out = np.zeros((len(points), len(SEGMENTS)))
    for k, (i, j) in enumerate(SEGMENTS):
        if not (present[i] and present[j] and present[1] and present[18]) or torso <= 1:
            continue
        along = joints[i] + np.linspace(0.0, 1.0, 20001) * (joints[j] - joints[i])
        for n, (x, y) in enumerate(points):
            d = np.abs(along - complex(x, y)).min() / torso
            out[n, k] = np.exp(-0.5 * (d / MEMBERSHIP_WIDTH) ** 2)
    return out


def test_occlusion_features_match_a_per_pixel_computation():
    rng = np.random.default_rng(1)
    h, w = 8, 6
    keypoints = rng.uniform(0, 8, (2, 2, 18, 2)).astype(np.float32)  # (pose pair, B, 18, 2) (y, x)
    keypoints[0, 1, 4] = -1  # a missing wrist in one source: limb 2 has no membership there
    keypoints[1, 0, 11] = -1  # a missing hip in one target: no torso axis, so no scale and no membership at all
    flow = rng.normal(0, 3, (2, 2, h, w)).astype(np.float32)
    features = occlusion_features(torch.from_numpy(keypoints[0]), torch.from_numpy(keypoints[1]),
                                  torch.from_numpy(flow))
    assert features.shape == (2, 2 * len(SEGMENTS), h, w)
    pixels = [(x, y) for y in range(h) for x in range(w)]
    for b in range(2):
        sources = [(x + flow[b, 0, y, x], y + flow[b, 1, y, x]) for x, y in pixels]
        want = np.concatenate([slow_memberships(keypoints[1, b], pixels), slow_memberships(keypoints[0, b], sources)],
                              axis=1)  # (h w, 2S)
        got = features[b].flatten(1).T.numpy()
        np.testing.assert_allclose(got, want, atol=2e-3, err_msg=f"pair {b}")
    assert features[0, : len(SEGMENTS)].abs().max() == 0 and features[1, len(SEGMENTS) + 2].abs().max() == 0


def test_occlusion_features_see_what_covers_a_rendered_source_point():
    """On the renderer's people, with its exact flow, in pairs of one view (front or back: no turn, so an occluded
    torso pixel is one an arm covers in the source): an occluded torso pixel's source point lies on an arm of the
    source pose, a visible one's far less often."""
    st = STYLES["deepfashion_small"]
    arms = [SEGMENTS.index(limb) for limb in LIMBS if limb[0] in (2, 3, 5, 6)]  # the upper arms and forearms
    arm_membership: dict[int, list[float]] = {0: [], 1: []}
    pairs = 0
    for index in range(100):
        app, source, target = random_pose_pair(st, 0, list(range(10)), index)
        if source.view != target.view or source.view == "side":
            continue
        pairs += 1
        kp, flow, vis = pose_pair_flow(st, app, source, target)
        parts = part_map(part_specs(app), pose_figure(app, target, st.height, st.width))
        torso = np.isin(parts, [PARTS.index("torso_front") + 1, PARTS.index("torso_back") + 1])
        features = occlusion_features(torch.from_numpy(kp[:1]), torch.from_numpy(kp[1:]),
                                      torch.from_numpy(flow[None]))[0].numpy()  # (2S,H,W)
        at_source = features[len(SEGMENTS) :][arms].max(axis=0)  # (H,W): the closest source arm
        for label in (0, 1):
            arm_membership[label].extend(at_source[torso & (vis == label)].tolist())
    means = {label: float(np.mean(values)) for label, values in arm_membership.items()}
    assert pairs >= 15 and len(arm_membership[1]) > 300, (pairs, len(arm_membership[1]))
    assert means[1] > 0.6 and means[1] > 2.5 * means[0], means


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
            net.choice_head[-1].bias.fill_(0.0)
            net.choice_head[-1].bias[1 + k] = 6.0  # x CHOICE_GAIN: the softmax puts all its weight on candidate k
        out = net(src_pose, tgt_pose, src_kp, tgt_kp)
        torch.testing.assert_close(out.flow, candidates[:, k])
        assert out.flows[-1] is out.flow and out.flow.shape == (2, 2, 24, 16)
    with pytest.raises(ValueError, match="keypoints"):
        net(src_pose, tgt_pose)


def test_a_new_flownet_starts_from_an_even_mix_of_the_candidates():
    """Both terms of the choice's logits are zero for any input at initialisation (the choice head's last layer and
    the orientation head start at zero), so the softmax weighs every valid candidate and the regressed flow alike."""
    net = tiny().eval()
    features = torch.randn(2, net.widths[0] + POSE, 24, 16)
    with torch.no_grad():
        assert net.choice_head(features).eq(0).all()
        assert net.orientation_head(torch.randn(2, NUM_FACING_FEATURES)).eq(0).all()
    assert any(p.abs().sum() > 0 for p in net.choice_head[:-1].parameters())  # the hidden layers are not zero


def test_the_per_pair_term_chooses_by_how_the_pair_turned():
    """The orientation head's logits are the same at every pixel and follow the facing features: weights that
    favour a segment's mirror image on turned pairs and its similarity otherwise pick each where it applies."""
    net = tiny().eval()
    src_pose, tgt_pose, src_kp, tgt_kp = random_pair()
    tgt_kp[:, [5, 11], 1] = tgt_kp[:, [2, 8], 1] + 6.0  # the left shoulder and hip to the right: facing the camera
    src_kp[0] = tgt_kp[0] + torch.tensor([2.0, 1.0])  # moved: facing as the target, not turned
    src_kp[1] = tgt_kp[1] * torch.tensor([1.0, -1.0]) + torch.tensor([0.0, 15.0])  # mirrored in x: turned
    turned = facing_features(src_kp, tgt_kp)[:, 3]
    assert turned[0] > 0.5 and turned[1] < -0.5, turned
    candidates, _ = limb_flows(src_kp, tgt_kp, 24, 16)
    segment = 4
    with torch.no_grad():
        net.orientation_head.weight[1 + segment + len(SEGMENTS), 3] = -6.0  # x CHOICE_GAIN x turned
        net.orientation_head.weight[1 + segment, 3] = 6.0
    out = net(src_pose, tgt_pose, src_kp, tgt_kp)
    for b in range(2):
        chosen = segment + len(SEGMENTS) if turned[b] < 0 else segment
        torch.testing.assert_close(out.flow[b], candidates[b, chosen], atol=1e-3, rtol=0)


def test_flownet_with_limb_flows_gets_gradient_everywhere():
    torch.manual_seed(4)
    net = tiny()
    with torch.no_grad():
        net.choice_head[-1].weight.normal_(0, 0.1)  # zero at first: the features would get no gradient through it
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
