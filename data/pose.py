"""Keypoints -> pose maps (paper sec. 3.1) and the mask-SSIM pose mask.

A pose is 18 OpenPose-COCO joints in (y, x) = (row, column) order of the image frame; a joint is missing when
either coordinate is -1. Joints may lie outside the frame (negative or >= the size): their heatmaps and limbs
are still drawn where they reach into the image. Pixel (i, j) has its centre at (y=i, x=j).

The encoding is 30 channels: 18 joint heatmaps and 12 limb distance maps M = exp(kappa * d) (paper eq. 2-3),
where d is the Euclidean distance from the pixel centre to the limb *segment*. Every function here is one
broadcast tensor computation over batch, joints/limbs and pixels, on whatever device the keypoints live.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_JOINTS = 18
NUM_LIMBS = 12
MISSING = -1
# 0 nose, 1 neck, 2 r-shoulder, 3 r-elbow, 4 r-wrist, 5 l-shoulder, 6 l-elbow, 7 l-wrist, 8 r-hip, 9 r-knee,
# 10 r-ankle, 11 l-hip, 12 l-knee, 13 l-ankle, 14 r-eye, 15 l-eye, 16 r-ear, 17 l-ear
LIMBS = ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13))
# joint index of the mirror-image joint: what a horizontal flip turns each joint into
FLIP_JOINTS = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

# DESIGN.md section 3, keypoint validity: a usable pose has at least 4 present joints and a torso
MIN_PRESENT_JOINTS = 4
NECK = 1
HIPS = (8, 11)


def pose_problems(keypoints: np.ndarray) -> list[str | None]:
    """(N,18,2) keypoints -> per pose None when usable, else why not: fewer than MIN_PRESENT_JOINTS present
    joints, or no torso (the neck and at least one hip)."""
    present = ~is_missing(np.asarray(keypoints))  # (N,18)
    count = present.sum(axis=1)  # (N,)
    torso = present[:, NECK] & present[:, list(HIPS)].any(axis=1)  # (N,)
    return [f"{c} present joints ({MIN_PRESENT_JOINTS} needed)" if c < MIN_PRESENT_JOINTS
            else None if t else "no torso (the neck and a hip)" for c, t in zip(count.tolist(), torso.tolist())]


# Siarohin et al.'s produce_ma_mask limb list (1-based there), with the face, shoulder-ear and hip cross links
MASK_LIMBS = tuple((f - 1, t - 1) for f, t in (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
    (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (2, 17), (2, 18), (9, 12), (12, 6), (9, 3), (17, 18)))


def is_missing(keypoints: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(..., 18, 2) keypoints -> (..., 18) bool: True where either coordinate is -1."""
    return (keypoints[..., 0] == MISSING) | (keypoints[..., 1] == MISSING)


def _as_keypoints(keypoints: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Keypoints as a floating tensor (integers from files become float32), checked to be (B, 18, 2)."""
    kp = torch.as_tensor(keypoints)
    if not kp.is_floating_point():
        kp = kp.to(torch.float32)
    if kp.dim() != 3 or kp.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"keypoints must have shape (B, {NUM_JOINTS}, 2), got {tuple(kp.shape)}")
    return kp


def _pixel_axes(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column pixel centres, shaped (H, 1) and (1, W) to broadcast against each other."""
    rows = torch.arange(height, device=like.device, dtype=like.dtype).view(height, 1)
    cols = torch.arange(width, device=like.device, dtype=like.dtype).view(1, width)
    return rows, cols


def _gaussian_profiles(kp: torch.Tensor, height: int, width: int,
                       sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable factors of the Gaussian heatmaps: column profile (B,18,H,1), zero for a missing joint,
    and row profile (B,18,1,W). Their outer product costs one multiply per pixel instead of an add and an exp."""
    present = (~is_missing(kp)).to(kp.dtype)[..., None, None]  # (B,18,1,1)
    rows, cols = _pixel_axes(height, width, kp)
    scale = -0.5 / sigma**2
    gy = torch.exp((rows - kp[..., 0, None, None]).square() * scale) * present  # (B,18,H,1)
    gx = torch.exp((cols - kp[..., 1, None, None]).square() * scale)  # (B,18,1,W)
    return gy, gx


def joint_heatmaps(keypoints: torch.Tensor, height: int, width: int, mode: str = "gaussian", sigma: float = 6.0,
                   radius: float = 8.0) -> torch.Tensor:
    """(B,18,2) keypoints -> (B,18,H,W) joint heatmaps; a missing joint gives an all-zero channel.

    gaussian: exp(-((i-y)^2 + (j-x)^2) / (2 sigma^2)) (PATN, sigma 6); binary: 1 where the distance <= radius
    (the authors' code, radius 8).
    """
    kp = _as_keypoints(keypoints)
    if mode == "gaussian":
        gy, gx = _gaussian_profiles(kp, height, width, sigma)
        return gy * gx  # (B,18,H,W)
    if mode == "binary":
        present = (~is_missing(kp)).to(kp.dtype)[..., None, None]  # (B,18,1,1)
        rows, cols = _pixel_axes(height, width, kp)
        d2 = (rows - kp[..., 0, None, None]).square() + (cols - kp[..., 1, None, None]).square()  # (B,18,H,W)
        return (d2 <= radius**2).to(kp.dtype) * present
    raise ValueError(f"heatmap mode must be 'gaussian' or 'binary', got {mode!r}")


def limb_distances(keypoints: torch.Tensor, height: int, width: int,
                   limbs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,18,2) keypoints -> (dist (B,12,H,W), valid (B,12) bool), paper eq. 2.

    dist is the Euclidean distance from each pixel centre p to the limb segment [a, b]. In the limb's own
    frame (unit direction u = (b - a) / L), p - a has the coordinate s = (p - a).u along the limb and
    n = (p - a) x u across it. The nearest segment point is at the clamped projection clamp(s, 0, L), so
    d = hypot(n, s - clamp(s, 0, L)), and |s - clamp(s, 0, L)| = max(|s - L/2| - L/2, 0): measuring s from the
    limb's midpoint turns the per-limb clamp into abs / subtract / clamp_min, three cheap in-place passes.
    Both coordinates are sums of a per-row and a per-column term, so each costs one broadcast add. A
    zero-length limb (a = b) takes u = (1, 0), which gives d = |p - a|. valid is False where an end joint is
    missing; dist is then computed from the -1 placeholders and must be ignored (the encodings zero it).
    limbs: LIMBS as a (12,2) long tensor on the keypoints' device (models.pose_encoding.PoseEncoder keeps one, so
    that a forward on a GPU copies nothing from the host); made here when None.
    """
    return _limb_distances(_as_keypoints(keypoints), height, width, limbs=limbs)


def _limb_distances(kp: torch.Tensor, height: int, width: int, out: torch.Tensor | None = None,
                    limbs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """limb_distances, optionally written into `out` (B,12,H,W): encode_pose passes its output slice, which
    saves allocating (and page-faulting) a full-size temporary per call."""
    if limbs is None:
        limbs = torch.tensor(LIMBS, device=kp.device)  # (12,2)
    a, b = kp[:, limbs[:, 0]], kp[:, limbs[:, 1]]  # (B,12,2) each
    missing = is_missing(kp)  # (B,18)
    valid = ~(missing[:, limbs[:, 0]] | missing[:, limbs[:, 1]])  # (B,12)
    v = b - a  # (B,12,2)
    length = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # (B,12,1)
    unit = v / length.clamp_min(1e-12) + F.pad((length == 0).to(v.dtype), (0, 1))  # (B,12,2); (1, 0) if L = 0
    uy, ux = unit[..., 0, None, None], unit[..., 1, None, None]  # (B,12,1,1)
    half = 0.5 * length[..., None]  # (B,12,1,1)
    rows, cols = _pixel_axes(height, width, kp)
    py = rows - a[..., 0, None, None]  # (B,12,H,1): p - a, row part
    px = cols - a[..., 1, None, None]  # (B,12,1,W): p - a, column part
    beyond = (py * uy - half) + px * ux  # (B,12,H,W): s - L/2
    beyond.abs_().sub_(half).clamp_min_(0.0)  # s - clamp(s, 0, L), up to sign
    across = torch.sub(py * ux, px * uy, out=out)  # (B,12,H,W): n
    dist = across.square_().addcmul_(beyond, beyond).sqrt_()  # (B,12,H,W)
    return dist, valid


def distance_maps(dist: torch.Tensor, valid: torch.Tensor, kappa: torch.Tensor | float) -> torch.Tensor:
    """M = exp(kappa * d) (paper eq. 3), zero on limbs that are not valid. (B,12,H,W), (B,12) -> (B,12,H,W)."""
    return torch.where(valid[..., None, None], torch.exp(kappa * dist), 0.0)


class DistanceMapEncoding(nn.Module):
    """Limb distance maps M = exp(kappa * d), paper eq. 3: kappa = -0.1 fixed, or learnable as in the authors'
    code (then `.kappa` is a Parameter trained with the network that consumes the maps)."""

    def __init__(self, kappa: float = -0.1, learnable: bool = False):
        super().__init__()
        value = torch.tensor(float(kappa))
        if learnable:
            self.kappa = nn.Parameter(value)
        else:
            self.register_buffer("kappa", value)

    def forward(self, dist: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """dist (B,12,H,W), valid (B,12) bool -> (B,12,H,W)."""
        return distance_maps(dist, valid, self.kappa.to(dist.dtype))

    def extra_repr(self) -> str:
        return f"kappa={float(self.kappa):.4g}, learnable={isinstance(self.kappa, nn.Parameter)}"


def encode_pose(keypoints: torch.Tensor | np.ndarray, height: int, width: int, mode: str = "gaussian",
                sigma: float = 6.0, radius: float = 8.0, kappa: float = -0.1, limbs: bool = True) -> torch.Tensor:
    """(B,18,2) or (18,2) keypoints -> (B,30,H,W) or (30,H,W): [18 joint heatmaps, 12 limb distance maps];
    limbs=False: the 18 joint heatmaps only, (B,18,H,W) (the release's input, binary discs).

    The same maps as joint_heatmaps and DistanceMapEncoding(kappa)(*limb_distances(...)), written straight into
    one output tensor (no concatenation copy) because the data loader calls this for every sample.
    """
    kp = torch.as_tensor(keypoints)
    single = kp.dim() == 2
    kp = _as_keypoints(kp[None] if single else kp)
    pose = kp.new_empty(kp.shape[0], NUM_JOINTS + (NUM_LIMBS if limbs else 0), height, width)  # (B,30|18,H,W)
    if mode == "gaussian":
        gy, gx = _gaussian_profiles(kp, height, width, sigma)
        torch.mul(gy, gx, out=pose[:, :NUM_JOINTS])
    else:
        pose[:, :NUM_JOINTS] = joint_heatmaps(kp, height, width, mode=mode, radius=radius)
    if not limbs:
        return pose[0] if single else pose
    maps, valid = _limb_distances(kp, height, width, out=pose[:, NUM_JOINTS:])  # (B,12,H,W) view, (B,12)
    maps.mul_(kappa).exp_()
    batch, limb = torch.nonzero(~valid, as_tuple=True)
    maps[batch, limb] = 0.0  # touches only the invalid channels
    return pose[0] if single else pose


def pose_mask(keypoints: torch.Tensor | np.ndarray, height: int, width: int, point_radius: int = 4) -> np.ndarray:
    """The mask-SSIM / mask-LPIPS pose mask: (18,2) keypoints -> (H,W) bool.

    Follows Siarohin et al. (Deformable GANs, CVPR 2018), `produce_ma_mask` in pose-gan's pose_utils.py, the
    copy every pose-transfer evaluation reuses (e.g. PATN's tool/pose_utils.py): each limb of their 23-limb
    list (incl. face, shoulder-ear and hip cross links) whose ends are both present is filled as a rectangle
    of half-width point_radius (skimage.draw.polygon), every present joint as a disc of radius point_radius,
    then dilation and erosion with a 5x5 square. A zero-length limb is left to its joint discs (the
    reference would divide by zero there).
    """
    from skimage.draw import disk, polygon
    from skimage.morphology import dilation, erosion

    kp = np.asarray(keypoints.detach().cpu() if torch.is_tensor(keypoints) else keypoints, dtype=np.float64)
    if kp.shape != (NUM_JOINTS, 2):
        raise ValueError(f"keypoints must have shape ({NUM_JOINTS}, 2), got {kp.shape}")
    present = ~is_missing(kp)
    mask = np.zeros((height, width), dtype=bool)
    for f, t in MASK_LIMBS:
        if not (present[f] and present[t]):
            continue
        along = kp[f] - kp[t]
        length = np.hypot(*along)
        if length == 0:
            continue
        normal = point_radius * np.array([-along[1], along[0]]) / length  # perpendicular, (y, x)
        corners = np.stack([kp[f] + normal, kp[f] - normal, kp[t] - normal, kp[t] + normal])  # (4,2)
        rr, cc = polygon(corners[:, 0], corners[:, 1], shape=mask.shape)
        mask[rr, cc] = True
    for y, x in kp[present]:
        rr, cc = disk((y, x), point_radius, shape=mask.shape)
        mask[rr, cc] = True
    square = np.ones((5, 5), dtype=bool)  # skimage.morphology.square(5)
    return erosion(dilation(mask, square), square)
