"""The CMU OpenPose COCO body model (Cao et al., CVPR 2017) and PATN's keypoint extraction, the estimator behind
PCKh (DESIGN.md section 6).

Network, as caffe's `models/pose/coco/pose_deploy_linevec.prototxt` (18 parts):
- VGG19 conv1_1 .. conv4_2 (3x3 convolutions, each followed by ReLU; 2x2 max-pools after conv1_2, conv2_2 and conv3_4:
  stride 8, sizes rounded down as by Keras's default 'valid' pooling in the Keras port PATN ran, where caffe would
  round odd sizes up), conv4_3_CPM (256) and conv4_4_CPM (128), both 3x3 + ReLU: the feature map F;
- stage 1, two branches on F: three 3x3 convolutions (128), a 1x1 (512), a 1x1 output;
- stages 2..6, two branches on cat[L1, L2, F] (38 + 19 + 128 = 185 channels): five 7x7 convolutions (128), a 1x1
  (128), a 1x1 output;
- ReLU after every convolution except each branch's output. Branch L1 gives 38 part-affinity channels (19 limbs x
  (x, y)), branch L2 19 heatmaps (18 parts + background). 52,311,446 parameters.
Parameter names are the caffe layer names (`conv1_1.weight` ... `Mconv7_stage6_L2.bias`), the keys of the
pytorch-openpose project's `body_pose_model.pth` (github Hzzone/pytorch-openpose, a conversion of caffe's COCO
`pose_iter_440000.caffemodel`), so that file loads as is. pytorch-openpose's own module names Mconv7_stage6_L1 twice
in its list of layers without ReLU, and so rectifies the final heatmaps; caffe's model has no ReLU there, and PATN's
Keras port neither: we follow them.

Keypoint extraction, PATN's `tool/compute_coordinates.py` (tengteng95/Pose-Transfer), batched:
1. The image in BGR order; for each scale s of [0.5, 1, 1.5, 2], m = s * 368 / H and the image is resized to
   (int(H m), int(W m)) by skimage's `resize(order=3, preserve_range=True)` as skimage 0.14 computed it (the last
   release for the script's python 2; its defaults: mode 'constant' with cval 0, no anti-aliasing, output clipped
   to the input's range, bicubic = Catmull-Rom convolution), then / 255 - 0.5. The script pads nothing: the network
   sees the resized image as is and returns (h // 8, w // 8) maps.
2. Both outputs are resized back to (H, W) by `resize(order=1, preserve_range=True)` (the same defaults; one clip
   range over all channels of an output). Heatmaps are averaged over the scales, PAFs summed: the script never
   divides them.
3. Peaks of part p (0..17): the averaged heatmap after scipy's `gaussian_filter(sigma=3)` (mode 'reflect', radius
   12) is >= its four neighbours (0 beyond the border) and > 0.1; the peak's score is the unfiltered averaged
   heatmap there. Peaks are numbered in part order, row-major within a part.
4. Limb k joins parts (a, b) through PAF channels (cx, cy). For every candidate pair (i of a, j of b), with
   u = (B - A) / |B - A|: 10 points np.linspace(A, B, 10), rounded as python 2's round (half away from zero),
   s_t = PAF_x u_x + PAF_y u_y there; score = sum(s_t) / 10 + min(0.5 H / |B - A| - 1, 0). A pair counts when
   more than 8 of the s_t exceed 0.05 and score > 0 (|B - A| = 0 never does: the script's 0 / 0). Pairs are taken by
   decreasing score (stable), each candidate once, until min(n_a, n_b) are taken.
5. The script's subset assembly: rows of 18 candidate ids + total score + part count; a connection extends the row
   holding its A (or B), merges two disjoint rows, or (for the 17 limbs that are not shoulder-ear) starts a row.
   Rows with fewer than 4 parts or score / parts < 0.4 are deleted; the row with the highest score is the person:
   18 (y, x), -1 where a part is missing (all -1 when no row is left).
Where the script would stop with an IndexError (a connection matching three rows, possible only after the
"found == 2, not disjoint" branch duplicated a part), we keep the first two matches.

The network runs batched on any device; the resizes are matrices (skimage's taps, out-of-image taps dropped since
cval is 0), so one matmul per axis resizes a whole batch; peaks are found on the device in float64 (skimage and
scipy compute in float64); the grouping (steps 4-5) runs per image on the CPU in numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.pose import NUM_JOINTS
from utils.errors import InputError
from utils.numerics import ieee_float32
from utils.weights import frozen_network, state_dict_problems

WEIGHTS_NAME = "openpose_body_coco"  # utils.weights: body_pose_model.pth
RANDOM_SEED = 0

# PATN's compute_coordinates.py
BOXSIZE = 368
SCALES = (0.5, 1.0, 1.5, 2.0)
STRIDE = 8
PEAK_THRESHOLD = 0.1  # th1
PAF_THRESHOLD = 0.05  # th2
PAF_SAMPLES = 10  # mid_num
GAUSSIAN_SIGMA = 3.0
MIN_PARTS = 4
MIN_MEAN_SCORE = 0.4

NUM_PAFS = 38
NUM_HEATMAPS = 19  # 18 parts + background
# the script's limbSeq (1-based parts) and mapIdx (PAF channels + 19), 0-based here; order matters for the assembly
LIMBS = np.array([[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
                  [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]) - 1  # (19,2) (a, b)
PAF_CHANNELS = np.array([[31, 32], [39, 40], [33, 34], [35, 36], [41, 42], [43, 44], [19, 20], [21, 22], [23, 24],
                         [25, 26], [27, 28], [29, 30], [47, 48], [49, 50], [53, 54], [51, 52], [55, 56], [37, 38],
                         [45, 46]]) - 19  # (19,2) (x channel, y channel)
ROW_LIMBS = 17  # only limbs k < 17 start a new row (shoulder-ear limbs never do)


class OpenPoseWeightsError(InputError):
    """A checkpoint that is not the OpenPose COCO body model (missing, unexpected or mis-shaped keys)."""


# ------------------------------------------------------------------------------------------ network


def _front_layers() -> list[tuple[str, int, int, int] | None]:
    """(name, in, out, kernel) of VGG19 conv1_1..conv4_2 + the two CPM convs; None = 2x2 max-pool."""
    return [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), None,
            ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), None,
            ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3),
            None,
            ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3),
            ("conv4_4_CPM", 256, 128, 3)]


def _branch_layers(stage: int, branch: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of branch L1 (PAFs) or L2 (heatmaps) of stage 1..6; the last has no ReLU."""
    out = NUM_PAFS if branch == 1 else NUM_HEATMAPS
    if stage == 1:
        return [(f"conv5_{i}_CPM_L{branch}", 128, 128, 3) for i in (1, 2, 3)] + [
            (f"conv5_4_CPM_L{branch}", 128, 512, 1), (f"conv5_5_CPM_L{branch}", 512, out, 1)]
    width = NUM_PAFS + NUM_HEATMAPS + 128
    return ([(f"Mconv1_stage{stage}_L{branch}", width, 128, 7)]
            + [(f"Mconv{i}_stage{stage}_L{branch}", 128, 128, 7) for i in (2, 3, 4, 5)]
            + [(f"Mconv6_stage{stage}_L{branch}", 128, 128, 1), (f"Mconv7_stage{stage}_L{branch}", 128, out, 1)])


def _conv_layers() -> list[tuple[str, int, int, int]]:
    """Every convolution of the network, in order."""
    layers = [s for s in _front_layers() if s is not None]
    return layers + [s for t in range(1, OpenPoseBody.STAGES + 1) for b in (1, 2) for s in _branch_layers(t, b)]


def parameter_shapes() -> dict[str, tuple[int, ...]]:
    """The published state dict's keys and shapes: '<caffe layer>.weight' (out, in, k, k), '<layer>.bias' (out,)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, k in _conv_layers():
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)
    return shapes


class OpenPoseBody(nn.Module):
    """(B,3,H,W) BGR images / 255 - 0.5 -> (PAFs (B,38,H//8,W//8), heatmaps (B,19,H//8,W//8)), stage 6's outputs.

    Every convolution is a direct child named after its caffe layer, so state_dict() keys are the published ones.
    """

    STAGES = 6

    def __init__(self):
        super().__init__()
        self.front = [None if spec is None else spec[0] for spec in _front_layers()]
        self.branches = [[[name for name, *_ in _branch_layers(t, b)] for b in (1, 2)]
                         for t in range(1, self.STAGES + 1)]
        for name, cin, cout, k in _conv_layers():
            self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

    def _run(self, names: Sequence[str | None], x: torch.Tensor, last_relu: bool) -> torch.Tensor:
        for n, name in enumerate(names):
            if name is None:
                x = F.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, name)(x)
            if last_relu or n < len(names) - 1:
                x = F.relu(x)
        return x

    @ieee_float32()  # TF32 would move the maps, and the thresholds on them could keep or drop other joints
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._run(self.front, x, last_relu=True)  # (B,128,H/8,W/8)
        h = features
        for paf_names, heat_names in self.branches:
            paf = self._run(paf_names, h, last_relu=False)  # (B,38,H/8,W/8)
            heat = self._run(heat_names, h, last_relu=False)  # (B,19,H/8,W/8)
            h = torch.cat([paf, heat, features], dim=1)  # (B,185,H/8,W/8), caffe's concat_stage order
        return paf, heat


def check_state_dict(state: dict[str, torch.Tensor], source: str) -> None:
    """OpenPoseWeightsError naming the first missing, unexpected or mis-shaped keys of `state`."""
    problems = state_dict_problems(state, parameter_shapes())
    if problems:
        raise OpenPoseWeightsError(f"{source}: not the OpenPose COCO body model (body_pose_model.pth); {problems}")


def build_openpose(weights: str | os.PathLike = "published", seed: int = RANDOM_SEED) -> tuple[OpenPoseBody, str]:
    """(network in eval mode, description of its weights).

    weights: "published" (body_pose_model.pth from the torch hub cache), a path to that file, or "random" (PyTorch's
    default initialisation from `seed`: the same cost as the real model, for tests and benchmarks only).
    """
    def checked(state: dict, source: str) -> dict:
        check_state_dict(state, source)
        return state

    return frozen_network(WEIGHTS_NAME, weights, OpenPoseBody, seed, checked)


# ------------------------------------------------------------------------------------------ resampling as matrices


def skimage_resize_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """(n_out, n_in) weights of skimage 0.14's resize along one axis: output pixel o samples the input at
    r = (n_in / n_out) (o + 0.5) - 0.5 with bilinear (order 1) or Catmull-Rom bicubic (order 3) taps; taps outside
    the input read cval = 0, i.e. are dropped. Separable: the 2-D resize is R_h X R_w^T."""
    r = n_in / n_out * (np.arange(n_out) + 0.5) - 0.5  # (n_out,)
    r0 = np.floor(r)
    x = (r - r0)[:, None]
    if order == 1:
        offsets, w = np.array([0, 1]), np.concatenate([1 - x, x], axis=1)  # (n_out,2)
    elif order == 3:  # skimage's cubic_interpolation(x, f) over f at r0-1 .. r0+2, expanded into tap weights
        offsets = np.array([-1, 0, 1, 2])
        w = 0.5 * np.concatenate([-x + 2 * x**2 - x**3, 2 - 5 * x**2 + 3 * x**3, x + 4 * x**2 - 3 * x**3,
                                  -(x**2) + x**3], axis=1)  # (n_out,4)
    else:
        raise ValueError(f"resize order {order}: only 1 (bilinear) and 3 (bicubic) are used")
    taps = r0.astype(np.int64)[:, None] + offsets  # (n_out,T)
    inside = (taps >= 0) & (taps < n_in)
    matrix = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    np.add.at(matrix, (rows[inside], taps[inside]), w[inside])
    return matrix


def gaussian_matrix(n: int, sigma: float = GAUSSIAN_SIGMA, truncate: float = 4.0) -> np.ndarray:
    """(n, n) matrix of scipy.ndimage.gaussian_filter1d(sigma, mode='reflect') along one axis: the kernel
    exp(-t^2 / (2 sigma^2)) / sum over |t| <= int(truncate sigma + 0.5), indices folded as d c b a | a b c d | d c b a
    (any number of times, so n may be smaller than the radius)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * t**2)
    kernel /= kernel.sum()
    j = (np.arange(n)[:, None] + t) % (2 * n)  # (n,2r+1), period 2n of the symmetric extension
    j = np.where(j >= n, 2 * n - 1 - j, j)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.broadcast_to(np.arange(n)[:, None], j.shape), j), np.broadcast_to(kernel, j.shape))
    return matrix


def _separable(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,H,W) = rows (H,h) @ x @ cols (W,w)^T."""
    r = torch.from_numpy(rows).to(x)
    c = torch.from_numpy(cols).to(x)
    return torch.matmul(torch.matmul(r, x), c.T)


def skimage_resize(x: torch.Tensor, size: tuple[int, int], order: int) -> torch.Tensor:
    """(B,C,h,w) float64 -> (B,C,H,W) as skimage 0.14's resize(x_b (h,w,C), size, order, preserve_range=True) per
    image: separable taps, then clipped to the image's [min, max] over all channels. (0.14 would also keep an output
    that is exactly cval = 0 when 0 lies outside that range; every output has an in-image tap, so an exact 0 there
    needs weights that cancel exactly, and the rule is left out.)"""
    out = _separable(x, skimage_resize_matrix(x.shape[-2], size[0], order),
                     skimage_resize_matrix(x.shape[-1], size[1], order))
    lo = x.amin(dim=(1, 2, 3), keepdim=True)  # (B,1,1,1)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.minimum(torch.maximum(out, lo), hi)


# ------------------------------------------------------------------------------------------ steps 1-3


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.5,1,1.5,2' -> (0.5, 1.0, 1.5, 2.0); ValueError unless every item is a positive number (an argparse type)."""
    scales = tuple(float(t) for t in text.split(","))
    if not all(s > 0 for s in scales):
        raise ValueError(f"scales must be positive, got {text!r}")
    return scales


def scale_sizes(height: int, width: int, boxsize: int = BOXSIZE, scales: Sequence[float] = SCALES
                ) -> list[tuple[int, int]]:
    """The script's network input sizes: multiplier = s * boxsize / H (python float order), size = int(shape * m)."""
    sizes = []
    for s in scales:
        m = s * boxsize / height
        sizes.append((int(np.float64(height) * m), int(np.float64(width) * m)))  # (np.array(shape) * m).astype(int32)
    return sizes


@torch.inference_mode()
def multiscale_maps(net: nn.Module, images: torch.Tensor, boxsize: int = BOXSIZE, scales: Sequence[float] = SCALES
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (B,H,W,3) on the network's device -> averaged heatmaps (B,19,H,W) and summed PAFs (B,38,H,W),
    float64 (steps 1-2)."""
    B, H, W, _ = images.shape
    device = next(net.parameters()).device
    bgr = images.to(device).flip(-1).permute(0, 3, 1, 2).to(torch.float64)  # (B,3,H,W) B,G,R as the script's [::-1]
    heat_sum = torch.zeros(B, NUM_HEATMAPS, H, W, dtype=torch.float64, device=device)
    paf_sum = torch.zeros(B, NUM_PAFS, H, W, dtype=torch.float64, device=device)
    for size in scale_sizes(H, W, boxsize, scales):
        if min(size) < STRIDE:
            raise InputError(f"openpose: a {H}x{W} image at boxsize {boxsize} gives a {size[0]}x{size[1]} network "
                             f"input, smaller than the stride {STRIDE}")
        x = skimage_resize(bgr, size, order=3) / 255 - 0.5  # (B,3,h,w)
        paf, heat = net(x.to(torch.float32))  # (B,38,h/8,w/8), (B,19,h/8,w/8)
        heat_sum += skimage_resize(heat.to(torch.float64), (H, W), order=1)
        paf_sum += skimage_resize(paf.to(torch.float64), (H, W), order=1)
    return heat_sum / len(scales), paf_sum


def find_peaks(heatmaps: torch.Tensor, threshold: float = PEAK_THRESHOLD, sigma: float = GAUSSIAN_SIGMA
               ) -> list[list[np.ndarray]]:
    """Averaged heatmaps (B,>=18,H,W) -> per image, per part, an (n,3) float64 array of (x, y, score), row-major
    (step 3)."""
    parts = heatmaps[:, :NUM_JOINTS]  # (B,18,H,W)
    H, W = parts.shape[-2:]
    blurred = _separable(parts, gaussian_matrix(H, sigma), gaussian_matrix(W, sigma))
    padded = F.pad(blurred, (1, 1, 1, 1))  # the script's shifted copies hold 0 beyond the border
    centre = padded[..., 1:-1, 1:-1]
    is_peak = ((centre >= padded[..., :-2, 1:-1]) & (centre >= padded[..., 2:, 1:-1])
               & (centre >= padded[..., 1:-1, :-2]) & (centre >= padded[..., 1:-1, 2:]) & (centre > threshold))
    b, p, y, x = torch.nonzero(is_peak, as_tuple=True)  # lexicographic: image, part, row, column
    scores = parts[b, p, y, x].cpu().numpy()
    b, p, y, x = (t.cpu().numpy() for t in (b, p, y, x))
    out = []
    for i in range(heatmaps.shape[0]):
        in_image = b == i
        out.append([np.stack([x[sel], y[sel], scores[sel]], axis=1).astype(np.float64)
                    for sel in (in_image & (p == part) for part in range(NUM_JOINTS))])
    return out


# ------------------------------------------------------------------------------------------ steps 4-5 (CPU)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """python 2's round() for v >= 0 (half away from zero; numpy and python 3 round half to even). Between integer
    peaks no sample falls on a half (A + t (B - A) / 9 = k + 1/2 has no integer solution), so this only fixes the
    script's rule, it changes no result."""
    floor = np.floor(v)
    return (floor + (v - floor >= 0.5)).astype(np.int64)


def limb_connections(cand_a: np.ndarray, cand_b: np.ndarray, paf_xy: np.ndarray, image_height: int
                     ) -> list[tuple[int, int, float]]:
    """Step 4 for one limb: (i, j, score) of the connections taken, in the order taken.

    cand_a (nA,3), cand_b (nB,3): (x, y, score) peaks; paf_xy (2,H,W): the limb's summed PAF (x, y channels)."""
    n_a, n_b = len(cand_a), len(cand_b)
    if n_a == 0 or n_b == 0:
        return []
    a = cand_a[:, None, :2]  # (nA,1,2) (x, y)
    b = cand_b[None, :, :2]  # (1,nB,2)
    vec = np.broadcast_to(b - a, (n_a, n_b, 2))
    norm = np.sqrt(vec[..., 0] * vec[..., 0] + vec[..., 1] * vec[..., 1])  # (nA,nB)
    valid = norm > 0  # 0 / 0 in the script: NaN, never passes
    safe = np.where(valid, norm, 1.0)
    unit = vec / safe[..., None]
    # np.linspace(A, B, 10) per coordinate, as the script calls it on scalars: A + t (B - A) / 9, the last = B
    steps = np.arange(PAF_SAMPLES)[:, None] * (vec[..., None, :] / (PAF_SAMPLES - 1))  # (nA,nB,10,2)
    pts = np.broadcast_to(a[..., None, :], steps.shape) + steps
    pts[..., -1, :] = np.broadcast_to(b, vec.shape)
    xs, ys = _round_half_away(pts[..., 0]), _round_half_away(pts[..., 1])  # (nA,nB,10)
    s = paf_xy[0][ys, xs] * unit[..., 0, None] + paf_xy[1][ys, xs] * unit[..., 1, None]  # (nA,nB,10)
    total = np.zeros((n_a, n_b))
    for t in range(PAF_SAMPLES):  # python's sum(): left to right
        total = total + s[..., t]
    score = total / PAF_SAMPLES + np.minimum(0.5 * image_height / safe - 1, 0)
    ok = valid & ((s > PAF_THRESHOLD).sum(axis=-1) > 0.8 * PAF_SAMPLES) & (score > 0)
    i_ok, j_ok = np.nonzero(ok)  # i-major, the script's loop order
    order = np.argsort(-score[i_ok, j_ok], kind="stable")
    taken: list[tuple[int, int, float]] = []
    used_a, used_b = set(), set()
    for c in order:
        i, j = int(i_ok[c]), int(j_ok[c])
        if i not in used_a and j not in used_b:
            taken.append((i, j, float(score[i, j])))
            used_a.add(i)
            used_b.add(j)
            if len(taken) >= min(n_a, n_b):
                break
    return taken


def assemble_people(peaks: list[np.ndarray], paf: np.ndarray, image_height: int) -> np.ndarray:
    """Steps 4-5: the script's subset rows after the deletion rule, (n, 20): 18 candidate ids (-1 none), total
    score, part count. peaks: 18 (n_p,3) (x, y, score) arrays; paf: (38,H,W) summed PAFs."""
    offsets = np.cumsum([0] + [len(p) for p in peaks])  # global candidate id = offset of the part + index
    scores = np.concatenate([p[:, 2] for p in peaks])
    subset = np.full((0, NUM_JOINTS + 2), -1.0)
    for k, ((part_a, part_b), channels) in enumerate(zip(LIMBS, PAF_CHANNELS)):
        for i, j, s in limb_connections(peaks[part_a], peaks[part_b], paf[channels], image_height):
            id_a, id_b = offsets[part_a] + i, offsets[part_b] + j
            rows = np.nonzero((subset[:, part_a] == id_a) | (subset[:, part_b] == id_b))[0][:2]
            if len(rows) == 1:
                row = subset[rows[0]]
                if row[part_b] != id_b:
                    row[part_b] = id_b
                    row[-1] += 1
                    row[-2] += scores[id_b] + s
            elif len(rows) == 2:
                r1, r2 = rows
                both = ((subset[r1, :-2] >= 0) & (subset[r2, :-2] >= 0)).any()
                if not both:  # disjoint: merge r2 into r1
                    subset[r1, :-2] += subset[r2, :-2] + 1
                    subset[r1, -2:] += subset[r2, -2:]
                    subset[r1, -2] += s
                    subset = np.delete(subset, r2, axis=0)
                else:
                    subset[r1, part_b] = id_b
                    subset[r1, -1] += 1
                    subset[r1, -2] += scores[id_b] + s
            elif k < ROW_LIMBS:
                row = np.full(NUM_JOINTS + 2, -1.0)
                row[part_a], row[part_b] = id_a, id_b
                row[-1] = 2
                row[-2] = scores[id_a] + scores[id_b] + s
                subset = np.vstack([subset, row])
    keep = ~((subset[:, -1] < MIN_PARTS) | (subset[:, -2] / subset[:, -1] < MIN_MEAN_SCORE))
    return subset[keep]


def all_people(peaks: list[np.ndarray], paf: np.ndarray, image_height: int) -> np.ndarray:
    """(n,18,2) int64 (y, x) of every person left after the deletion rule, by decreasing score (stable), -1 for
    missing parts."""
    subset = assemble_people(peaks, paf, image_height)
    subset = subset[np.argsort(-subset[:, -2], kind="stable")]
    xy = np.concatenate([p[:, :2] for p in peaks])  # (n,2) (x, y) by candidate id
    out = np.full((len(subset), NUM_JOINTS, 2), -1, np.int64)
    present = subset[:, :NUM_JOINTS] >= 0  # (n,18)
    out[present] = xy[subset[:, :NUM_JOINTS][present].astype(np.int64)][:, ::-1].astype(np.int64)  # (x, y) -> (y, x)
    return out


def best_person(peaks: list[np.ndarray], paf: np.ndarray, image_height: int) -> np.ndarray:
    """(18,2) int64 (y, x) of the highest-scoring person (the first on a tie, np.argmax's), -1 for missing parts
    (all -1 when nobody is left)."""
    people = all_people(peaks, paf, image_height)
    return people[0] if len(people) else np.full((NUM_JOINTS, 2), -1, np.int64)


def keypoints_from_maps(heatmaps: torch.Tensor, pafs: torch.Tensor, image_height: int | None = None) -> np.ndarray:
    """Averaged heatmaps (B,>=18,H,W) and summed PAFs (B,38,H,W) -> (B,18,2) int64 (y, x), -1 missing.

    image_height: the H of the distance prior (the script's oriImg.shape[0]); default the maps' height."""
    height = heatmaps.shape[-2] if image_height is None else image_height
    peaks = find_peaks(heatmaps.to(torch.float64))
    paf = pafs.to(torch.float64).cpu().numpy()
    return np.stack([best_person(peaks[i], paf[i], height) for i in range(len(peaks))])


# ------------------------------------------------------------------------------------------ the estimator


class OpenPoseEstimator:
    """PATN's keypoint estimator as a metrics.estimators callable: uint8 RGB (B,H,W,3) (numpy or torch) ->
    (B,18,2) int64 (y, x), -1 missing.

    weights: "published" (torch hub cache), a path to body_pose_model.pth, or "random" (tests, benchmarks).
    boxsize, scales: PATN's 368 and [0.5, 1, 1.5, 2] define the protocol; others are for quick tests only.
    batch_size: images per network call (memory grows with it: at scale 2 a 256x176 image enters the network at
      736x506, and conv1's outputs alone take 95 MB per image in float32).
    """

    def __init__(self, weights: str | os.PathLike = "published", device: str | torch.device | None = None,
                 boxsize: int = BOXSIZE, scales: Sequence[float] = SCALES, batch_size: int = 8):
        if batch_size < 1:
            raise InputError(f"openpose: batch size must be >= 1, got {batch_size}")
        if boxsize < 1 or not scales or min(scales) <= 0:
            raise InputError(f"openpose: boxsize {boxsize} and scales {list(scales)} must be positive")
        self.net, self.weights_source = build_openpose(weights)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device)
        self.random = isinstance(weights, str) and weights == "random"
        self.boxsize, self.scales, self.batch_size = boxsize, tuple(float(s) for s in scales), batch_size

    @property
    def protocol(self) -> str:
        """One line naming what ran, for reports."""
        scales = ",".join(f"{s:g}" for s in self.scales)
        patn = self.boxsize == BOXSIZE and self.scales == SCALES
        return (f"OpenPose COCO body model, {'PATN compute_coordinates' if patn else 'NOT PATN'}: boxsize "
                f"{self.boxsize}, scales {scales}, weights {self.weights_source}")

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise InputError(f"openpose: expected uint8 RGB images (B,H,W,3), got {images.dtype} "
                             f"{tuple(images.shape)}")
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            heat, paf = multiscale_maps(self.net, chunk, self.boxsize, self.scales)
            out.append(keypoints_from_maps(heat, paf, image_height=chunk.shape[1]))
        return np.concatenate(out) if out else np.zeros((0, NUM_JOINTS, 2), np.int64)

    def people(self, image: np.ndarray) -> list[np.ndarray]:
        """Every person of one uint8 RGB (H,W,3) image, (18,2) float32 (y, x) each, the best-scoring first."""
        heat, paf = multiscale_maps(self.net, torch.as_tensor(image)[None], self.boxsize, self.scales)
        peaks = find_peaks(heat)[0]
        people = all_people(peaks, paf[0].cpu().numpy(), image.shape[0])
        return [p.astype(np.float32) for p in people]
