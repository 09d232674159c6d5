"""Pose encoding (paper sec. 3.1) against slow per-pixel Python loops written straight from the definitions, and
the mask-SSIM pose mask against a hand-drawn case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data.pose import (
    LIMBS,
    NUM_JOINTS,
    NUM_LIMBS,
    DistanceMapEncoding,
    encode_pose,
    is_missing,
    joint_heatmaps,
    limb_distances,
    pose_mask,
)

H, W = 24, 20


def random_poses(batch: int, seed: int) -> torch.Tensor:
    """(B,18,2) poses with fractional and integer joints, joints outside the frame on every side, missing
    joints (both or one coordinate -1) and a zero-length limb."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.empty(batch, NUM_JOINTS, 2)
    kp[..., 0] = torch.rand(batch, NUM_JOINTS, generator=g) * (H + 16) - 8  # rows in [-8, H+8)
    kp[..., 1] = torch.rand(batch, NUM_JOINTS, generator=g) * (W + 16) - 8
    kp[:, ::3] = kp[:, ::3].round()  # some integer joints, as in the release files
    kp[0, 4] = torch.tensor([-1.0, -1.0])  # missing: r-wrist, so limb (3,4) is invalid
    kp[1, 11] = torch.tensor([5.0, -1.0])  # missing by its x only: l-hip, limbs (1,11), (11,12)
    kp[1, 12] = torch.tensor([-1.0, 7.0])  # missing by its y only
    kp[0, 9] = kp[0, 8]  # r-hip == r-knee: a zero-length limb (8,9)
    kp[-1, 2] = torch.tensor([-5.0, W + 3.0])  # far outside: above and right of the frame
    return kp


def slow_missing(joint) -> bool:
    return joint[0] == -1 or joint[1] == -1


def slow_heatmaps(kp: torch.Tensor, mode: str, sigma: float, radius: float) -> torch.Tensor:
    out = torch.zeros(kp.shape[0], NUM_JOINTS, H, W, dtype=torch.float64)
    for b in range(kp.shape[0]):
        for k in range(NUM_JOINTS):
            y, x = kp[b, k].tolist()
            if slow_missing((y, x)):
                continue
            for i in range(H):
                for j in range(W):
                    d2 = (i - y) ** 2 + (j - x) ** 2
                    if mode == "gaussian":
                        out[b, k, i, j] = math.exp(-d2 / (2 * sigma**2))
                    else:
                        out[b, k, i, j] = float(math.sqrt(d2) <= radius)
    return out


def slow_segment_distance(py: float, px: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Textbook point-to-segment distance via the clamped projection parameter."""
    vy, vx = b[0] - a[0], b[1] - a[1]
    len2 = vy * vy + vx * vx
    t = 0.0 if len2 == 0 else max(0.0, min(1.0, ((py - a[0]) * vy + (px - a[1]) * vx) / len2))
    cy, cx = a[0] + t * vy, a[1] + t * vx
    return math.hypot(py - cy, px - cx)


def slow_limbs(kp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = torch.zeros(kp.shape[0], NUM_LIMBS, H, W, dtype=torch.float64)
    valid = torch.zeros(kp.shape[0], NUM_LIMBS, dtype=torch.bool)
    for b in range(kp.shape[0]):
        for m, (f, t) in enumerate(LIMBS):
            a, e = tuple(kp[b, f].tolist()), tuple(kp[b, t].tolist())
            valid[b, m] = not (slow_missing(a) or slow_missing(e))
            for i in range(H):
                for j in range(W):
                    dist[b, m, i, j] = slow_segment_distance(i, j, a, e)
    return dist, valid


@pytest.fixture(scope="module")
def poses() -> torch.Tensor:
    return random_poses(4, seed=0)


@pytest.fixture(scope="module")
def slow(poses):
    return {
        "gaussian6": slow_heatmaps(poses, "gaussian", 6.0, 8.0),
        "gaussian3": slow_heatmaps(poses, "gaussian", 3.0, 8.0),
        "binary8": slow_heatmaps(poses, "binary", 6.0, 8.0),
        "binary5": slow_heatmaps(poses, "binary", 6.0, 5.5),
        "limbs": slow_limbs(poses),
    }


def test_constants():
    assert NUM_JOINTS == 18 and NUM_LIMBS == 12 and len(LIMBS) == NUM_LIMBS
    assert LIMBS == ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                     (12, 13))


def test_is_missing_numpy_and_torch(poses):
    expected = [[slow_missing(j) for j in pose.tolist()] for pose in poses]
    assert is_missing(poses).tolist() == expected
    assert is_missing(poses.numpy()).tolist() == expected


@pytest.mark.parametrize("mode, sigma, radius, key", [
    ("gaussian", 6.0, 8.0, "gaussian6"), ("gaussian", 3.0, 8.0, "gaussian3"),
    ("binary", 6.0, 8.0, "binary8"), ("binary", 6.0, 5.5, "binary5"),
])
def test_heatmaps_match_slow_loop(poses, slow, mode, sigma, radius, key):
    out = joint_heatmaps(poses, H, W, mode=mode, sigma=sigma, radius=radius)
    assert out.shape == (4, NUM_JOINTS, H, W) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), slow[key], atol=1e-6, rtol=1e-5)
    assert out[0, 4].abs().max() == 0 and out[1, 11].abs().max() == 0 and out[1, 12].abs().max() == 0


def test_heatmap_peak_at_integer_joint():
    kp = torch.full((1, NUM_JOINTS, 2), -1.0)
    kp[0, 0] = torch.tensor([7.0, 3.0])
    out = joint_heatmaps(kp, H, W)
    assert out[0, 0, 7, 3] == 1.0 and out[0, 0].argmax() == 7 * W + 3  # pixel (i, j) has centre (y=i, x=j)
    assert out[0, 1:].abs().max() == 0


def test_limb_distances_match_slow_segment_distance(poses, slow):
    dist, valid = limb_distances(poses, H, W)
    ref_dist, ref_valid = slow["limbs"]
    assert dist.shape == (4, NUM_LIMBS, H, W) and dist.dtype == torch.float32
    assert valid.dtype == torch.bool and valid.tolist() == ref_valid.tolist()
    assert not valid[0, 2] and not valid[1, 9] and not valid[1, 10] and not valid[1, 11]
    mask = ref_valid[..., None, None].expand_as(ref_dist)  # dist is only defined on valid limbs
    torch.testing.assert_close(dist.double()[mask], ref_dist[mask], atol=1e-4, rtol=1e-5)


def test_limb_distance_is_to_the_segment_not_the_line():
    kp = torch.full((1, NUM_JOINTS, 2), -1.0)
    kp[0, 1], kp[0, 2] = torch.tensor([5.0, 5.0]), torch.tensor([5.0, 10.0])  # horizontal limb (1,2)
    dist, valid = limb_distances(kp, H, W)
    assert valid[0, 0] and valid.sum() == 1
    assert dist[0, 0, 5, 7] == 0  # on the segment
    assert dist[0, 0, 8, 7] == pytest.approx(3.0)  # beside it
    assert dist[0, 0, 5, 15] == pytest.approx(5.0)  # on the line, beyond the end: distance to the end point
    assert dist[0, 0, 9, 13] == pytest.approx(5.0)  # 3-4-5 from the end point (5, 10)


@pytest.mark.parametrize("mode, sigma, radius, kappa, key", [("gaussian", 6.0, 8.0, -0.1, "gaussian6"),
                                                             ("binary", 6.0, 8.0, -0.25, "binary8")])
def test_encode_pose_matches_slow_loop(poses, slow, mode, sigma, radius, kappa, key):
    ref_dist, ref_valid = slow["limbs"]
    ref_maps = torch.exp(kappa * ref_dist) * ref_valid[..., None, None]
    expected = torch.cat([slow[key], ref_maps], dim=1)  # (B,30,H,W)
    out = encode_pose(poses, H, W, mode=mode, sigma=sigma, radius=radius, kappa=kappa)
    assert out.shape == (4, 30, H, W) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    single = encode_pose(poses[2], H, W, mode=mode, sigma=sigma, radius=radius, kappa=kappa)
    assert single.shape == (30, H, W)
    torch.testing.assert_close(single.double(), expected[2], atol=1e-5, rtol=1e-5)


def test_encode_pose_takes_integer_numpy_keypoints():
    """Keypoints as read from the CSVs: (18,2) int64 numpy."""
    kp = random_poses(2, seed=3)[1:].round()  # the pose with joints missing by one coordinate
    ref_dist, ref_valid = slow_limbs(kp)
    ref_maps = torch.exp(-0.1 * ref_dist) * ref_valid[..., None, None]
    expected = torch.cat([slow_heatmaps(kp, "gaussian", 6.0, 8.0), ref_maps], dim=1)
    out = encode_pose(kp[0].numpy().astype(np.int64), H, W)
    assert out.shape == (30, H, W) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected[0], atol=1e-5, rtol=1e-5)


def test_encode_pose_equals_the_module_path(poses):
    """encode_pose (the loader) and joint_heatmaps + DistanceMapEncoding (models/pose_encoding.py) agree."""
    dist, valid = limb_distances(poses, H, W)
    module = torch.cat([joint_heatmaps(poses, H, W), DistanceMapEncoding(-0.1)(dist, valid)], dim=1)
    torch.testing.assert_close(encode_pose(poses, H, W), module)


def test_distance_encoding_fixed_and_learnable(poses):
    dist, valid = limb_distances(poses, H, W)
    fixed = DistanceMapEncoding(kappa=-0.1)
    assert not list(fixed.parameters()) and "kappa" in dict(fixed.named_buffers())
    assert "kappa" in fixed.state_dict()

    learn = DistanceMapEncoding(kappa=-0.2, learnable=True)
    assert isinstance(learn.kappa, torch.nn.Parameter)
    out = learn(dist, valid)
    out.sum().backward()
    # d/dkappa sum exp(kappa d) over valid limbs = sum d exp(kappa d)
    d = dist.double()[valid[..., None, None].expand_as(dist)]
    expected = float((d * torch.exp(-0.2 * d)).sum())
    assert learn.kappa.grad is not None and float(learn.kappa.grad) == pytest.approx(expected, rel=1e-4)
    assert out.detach()[~valid].abs().max() == 0


def test_encode_pose_keeps_device_and_dtype(poses):
    out = encode_pose(poses.double(), H, W)
    assert out.dtype == torch.float64
    if torch.cuda.is_available():
        gpu = encode_pose(poses.cuda(), H, W)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), encode_pose(poses, H, W), atol=1e-5, rtol=1e-5)


def test_bad_shapes_and_modes():
    with pytest.raises(ValueError, match="shape"):
        joint_heatmaps(torch.zeros(2, 17, 2), H, W)
    with pytest.raises(ValueError, match="heatmap mode"):
        encode_pose(torch.zeros(18, 2), H, W, mode="disc")


# ------------------------------------------------------------------------------------------ pose mask


def slow_closing(mask: np.ndarray) -> np.ndarray:
    """Dilation then erosion with a 5x5 square, pixel by pixel (shapes in the test stay clear of the border)."""
    h, w = mask.shape

    def window(m, i, j):
        return [m[y][x] for y in range(i - 2, i + 3) for x in range(j - 2, j + 3) if 0 <= y < h and 0 <= x < w]

    dilated = [[any(window(mask, i, j)) for j in range(w)] for i in range(h)]
    return np.array([[all(window(dilated, i, j)) for j in range(w)] for i in range(h)])


def raw_drawing(h: int, w: int, rect: tuple[int, int, int, int] | None, centres: list[tuple[int, int]]) -> np.ndarray:
    """Pixels inside the closed rectangle rows r0..r1 x cols c0..c1 (skimage.draw.polygon fills the edges of an
    axis-aligned polygon) or closer than 4 to a disc centre."""
    raw = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            in_rect = rect is not None and rect[0] <= i <= rect[1] and rect[2] <= j <= rect[3]
            raw[i, j] = in_rect or any((i - y) ** 2 + (j - x) ** 2 < 16 for y, x in centres)
    return raw


def test_pose_mask_hand_case():
    """Neck (10, 8) and right shoulder (10, 14): limb (2, 3) of the reference is the rectangle rows 6..14 x
    cols 8..14 (half-width 4), each joint a disc; this shape is already closed under the 5x5 closing."""
    kp = np.full((18, 2), -1)
    kp[1], kp[2] = (10, 8), (10, 14)
    h, w = 22, 26
    raw = raw_drawing(h, w, (6, 14, 8, 14), [(10, 8), (10, 14)])
    mask = pose_mask(kp, h, w)
    assert mask.dtype == bool and mask.shape == (h, w)
    np.testing.assert_array_equal(mask, slow_closing(raw))
    assert mask.sum() == 7 + 11 + 13 * 5 + 11 + 7  # rows 6..14, counted by hand


def test_pose_mask_closing_bridges_a_gap():
    """Nose (10, 6) and right wrist (10, 14) share no limb: two discs one column apart, which the 5x5 closing
    joins."""
    kp = np.full((18, 2), -1)
    kp[0], kp[4] = (10, 6), (10, 14)
    h, w = 22, 22
    raw = raw_drawing(h, w, None, [(10, 6), (10, 14)])
    mask = pose_mask(kp, h, w)
    np.testing.assert_array_equal(mask, slow_closing(raw))
    assert mask[10, 10] and not raw[10, 10]


def test_pose_mask_limbs_and_missing_joints():
    h, w = 40, 30
    assert not pose_mask(np.full((18, 2), -1), h, w).any()
    kp = np.full((18, 2), -1)
    kp[8], kp[11] = (20, 5), (20, 25)  # r-hip and l-hip: the hip cross link (9, 12) of the reference
    mask = pose_mask(torch.as_tensor(kp), h, w)
    assert mask[20, 15] and mask[17, 15] and not mask[13, 15]
    kp[11] = (20, -1)  # l-hip missing: only the r-hip disc remains
    mask = pose_mask(kp, h, w)
    assert mask[20, 5] and not mask[20, 15]
    kp[11] = (-6, 50)  # far outside the frame: clipped, no error
    assert pose_mask(kp, h, w).shape == (h, w)
