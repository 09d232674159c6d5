"""The built-in OpenPose estimator (metrics/openpose.py): the network against caffe's layer table of the COCO model,
loading the published key names, the resampling against skimage and scipy, PATN's post-processing on hand-made
heatmaps and PAFs with known answers and against a loop transcription of tool/compute_coordinates.py, and
scripts/estimate_keypoints.py end to end with random weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from skimage.transform import warp

from data.annotations import read_annotations
from metrics import openpose
from scripts import estimate_keypoints
from utils.errors import InputError
from utils.weights import MissingWeightsError, weights_info

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ the published network

# caffe's models/pose/coco/pose_deploy_linevec.prototxt, layer by layer: (name, input channels, num_output, kernel)
# for every Convolution; "pool" = 2x2 stride-2 max pooling; "relu" follows a convolution where the prototxt has one.
# Stage t >= 2 reads concat_stage<t> = [Mconv7_stage<t-1>_L1 (38), Mconv7_stage<t-1>_L2 (19), conv4_4_CPM (128)].
VGG = [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool", ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
       "pool", ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
       ("conv3_4", 256, 256, 3), "pool", ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
       ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3)]


def stage_table(t: int, branch: int) -> list[tuple[str, int, int, int]]:
    out = {1: 38, 2: 19}[branch]
    if t == 1:
        return [(f"conv5_1_CPM_L{branch}", 128, 128, 3), (f"conv5_2_CPM_L{branch}", 128, 128, 3),
                (f"conv5_3_CPM_L{branch}", 128, 128, 3), (f"conv5_4_CPM_L{branch}", 128, 512, 1),
                (f"conv5_5_CPM_L{branch}", 512, out, 1)]
    name = f"_stage{t}_L{branch}"
    return [(f"Mconv1{name}", 185, 128, 7), (f"Mconv2{name}", 128, 128, 7), (f"Mconv3{name}", 128, 128, 7),
            (f"Mconv4{name}", 128, 128, 7), (f"Mconv5{name}", 128, 128, 7), (f"Mconv6{name}", 128, 128, 1),
            (f"Mconv7{name}", 128, out, 1)]


def published_layers() -> list[tuple[str, int, int, int]]:
    layers = [v for v in VGG if v != "pool"]
    for t in range(1, 7):
        layers += stage_table(t, 1) + stage_table(t, 2)
    return layers


def published_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with body_pose_model.pth's key names and shapes (caffe names + .weight/.bias)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, k in published_layers():
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototxt's graph, run layer by layer from the table: ReLU after every conv but conv5_5 / Mconv7."""

    def conv(name: str, h: torch.Tensor, relu: bool) -> torch.Tensor:
        w = state[f"{name}.weight"]
        h = F.conv2d(h, w, state[f"{name}.bias"], padding=w.shape[-1] // 2)
        return F.relu(h) if relu else h

    h = x
    for layer in VGG:
        h = F.max_pool2d(h, 2, 2) if layer == "pool" else conv(layer[0], h, True)
    features = h
    for t in range(1, 7):
        outs = []
        for branch in (1, 2):
            b = h
            names = [n for n, *_ in stage_table(t, branch)]
            for i, name in enumerate(names):
                b = conv(name, b, i < len(names) - 1)
            outs.append(b)
        h = torch.cat([outs[0], outs[1], features], 1)
    return outs[0], outs[1]


def test_network_layers_and_parameter_count_equal_the_published_model():
    net = openpose.OpenPoseBody()
    expected = {}
    for name, cin, cout, k in published_layers():
        expected[f"{name}.weight"] = (cout, cin, k, k)
        expected[f"{name}.bias"] = (cout,)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == expected
    count = sum(cin * cout * k * k + cout for _, cin, cout, k in published_layers())
    assert count == 52_311_446  # 4 bytes each: 209,245,784 of body_pose_model.pth's 209,267,595 bytes
    assert sum(p.numel() for p in net.parameters()) == count


def test_published_key_names_load_and_forward_matches_the_prototxt_graph(tmp_path, monkeypatch):
    state = published_state_dict()
    path = tmp_path / "body_pose_model.pth"
    torch.save(state, path)
    net, source = openpose.build_openpose(path)
    assert source == str(path)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 24, 16)
    paf, heat = net(x)
    ref_paf, ref_heat = reference_forward(state, x)
    assert paf.shape == (1, 38, 3, 2) and heat.shape == (1, 19, 3, 2)
    torch.testing.assert_close(paf, ref_paf, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(heat, ref_heat, rtol=1e-4, atol=1e-5)
    assert (ref_heat < 0).any()  # no ReLU on the final heatmaps (pytorch-openpose's module has one)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))  # "published": the torch hub cache
    cache = tmp_path / "home" / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as info:
        openpose.build_openpose("published")
    message = str(info.value)
    assert "body_pose_model.pth" in message and str(cache) in message
    assert "download_weights.py openpose_body_coco" in message
    info = weights_info("openpose_body_coco")  # what download_weights.py fetches and checks
    assert info.filename == "body_pose_model.pth" and info.sha256_prefix.startswith("25a948c16078b0f0")
    cache.mkdir(parents=True)
    path.rename(cache / "body_pose_model.pth")
    net, _ = openpose.build_openpose("published")
    assert torch.equal(net.state_dict()["Mconv7_stage6_L2.bias"], state["Mconv7_stage6_L2.bias"])


def test_foreign_state_dicts_are_refused_with_the_keys(tmp_path):
    names = [f"{name}.{kind}" for name, *_ in published_layers() for kind in ("weight", "bias")]
    prefixed = {f"model0.{k}": torch.zeros(1) for k in names}  # pytorch-openpose's module keys, not the file's
    torch.save(prefixed, tmp_path / "a.pth")
    with pytest.raises(openpose.OpenPoseWeightsError, match=r"a\.pth: .*missing: conv1_1\.weight.*unexpected: "
                                                            r"model0\.conv1_1\.weight"):
        openpose.build_openpose(tmp_path / "a.pth")
    torch.save(dict.fromkeys(names, torch.zeros(1)), tmp_path / "b.pth")
    with pytest.raises(openpose.OpenPoseWeightsError, match=r"wrong shape: conv1_1\.weight \(1,\) \(expected "
                                                            r"\(64, 3, 3, 3\)\)"):
        openpose.build_openpose(tmp_path / "b.pth")
    (tmp_path / "c.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"c\.pth: cannot be read"):
        openpose.build_openpose(tmp_path / "c.pth")


# ------------------------------------------------------------------------------------------ resampling


def skimage014_resize(x: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """skimage 0.14's resize(x, size, order, preserve_range=True) path: warp() with the metric transform that
    resize builds (r_in = (h / H)(r + 0.5) - 0.5), mode 'constant', cval 0, clip. skimage's warp still runs the
    same Cython bilinear / Catmull-Rom code; its clip rule differs from 0.14's only when 0 is outside the input
    range, which these inputs avoid."""
    h, w = x.shape[:2]
    H, W = size
    matrix = np.array([[w / W, 0, 0.5 * w / W - 0.5], [0, h / H, 0.5 * h / H - 0.5], [0, 0, 1]])
    return warp(x, matrix, output_shape=size, order=order, mode="constant", cval=0, clip=True, preserve_range=True)


@pytest.mark.parametrize("shape,size,order", [((23, 15, 19), (256, 176), 1), ((256, 176, 3), (184, 126), 3),
                                              ((64, 44, 3), (230, 158), 3), ((5, 4, 2), (13, 3), 3)])
def test_resize_matches_skimage(shape, size, order):
    x = np.random.default_rng(0).normal(size=shape)  # network outputs: both signs
    if order == 3:
        x = np.abs(x) * 100  # images: >= 0
    x.flat[0] = 0.0  # 0 inside the input range (see skimage014_resize)
    ours = openpose.skimage_resize(torch.from_numpy(x).permute(2, 0, 1)[None], size, order)[0].permute(1, 2, 0)
    np.testing.assert_allclose(ours.numpy(), skimage014_resize(x, size, order), atol=1e-10)


@pytest.mark.parametrize("shape", [(40, 31), (7, 5)])
def test_gaussian_matrix_is_scipys_filter(shape):
    x = np.random.default_rng(1).normal(size=shape)
    ours = openpose.gaussian_matrix(shape[0]) @ x @ openpose.gaussian_matrix(shape[1]).T
    np.testing.assert_allclose(ours, gaussian_filter(x, sigma=3), atol=1e-14)


def test_scale_sizes_follow_the_script():
    # multiplier = s * 368 / 256; (np.array([256, 176]) * m).astype(int32)
    assert openpose.scale_sizes(256, 176) == [(184, 126), (368, 253), (552, 379), (736, 506)]
    assert openpose.scale_sizes(128, 64) == [(184, 92), (368, 184), (552, 276), (736, 368)]


class StubNet(torch.nn.Module):
    """Stands in for the network: records its inputs, returns stride-8 maps that depend on them."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device for multiscale_maps to read
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.inputs.append(x)
        pooled = F.avg_pool2d(x, 8)  # (B,3,h/8,w/8)
        heat = torch.cat([pooled * (c + 1) for c in range(7)], 1)[:, :19]  # (B,19,...)
        paf = torch.cat([pooled * -(c + 1) for c in range(13)], 1)[:, :38]  # (B,38,...)
        return paf, heat


def test_multiscale_maps_resize_average_heatmaps_and_sum_pafs():
    """The script's loop over scales, redone with skimage (warp with resize's transform) on the BGR image."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    images[:, 0, 0] = 0  # 0 in range: skimage014_resize's clip is then 0.14's
    net = StubNet()
    scales = (0.5, 1.0, 1.5)
    heat, paf = openpose.multiscale_maps(net, torch.from_numpy(images), boxsize=48, scales=scales)
    for b in range(2):
        bgr = images[b, :, :, ::-1].astype(np.float64)
        heat_ref, paf_ref = np.zeros((40, 30, 19)), np.zeros((40, 30, 38))
        for s, seen in zip(scales, net.inputs):
            m = s * 48 / 40
            size = (int(40 * m), int(30 * m))
            x = skimage014_resize(bgr, size, 3) / 255 - 0.5
            np.testing.assert_allclose(seen[b].permute(1, 2, 0).numpy(), x, atol=1e-6)  # float32 input
            paf_s, heat_s = (t[0].permute(1, 2, 0).double().numpy()
                             for t in StubNet()(torch.from_numpy(x).permute(2, 0, 1)[None].float()))
            heat_ref += skimage014_resize(heat_s, (40, 30), 1)
            paf_ref += skimage014_resize(paf_s, (40, 30), 1)
        np.testing.assert_allclose(heat[b].permute(1, 2, 0).numpy(), heat_ref / len(scales), atol=1e-6)
        np.testing.assert_allclose(paf[b].permute(1, 2, 0).numpy(), paf_ref, atol=1e-6)  # summed, not averaged


# ------------------------------------------------------------------------------------------ hand-made maps

H, W = 128, 96
# the script's limbSeq (1-based) and mapIdx, transcribed independently of the module
LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13], [13, 14],
            [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]
MAP_IDX = [[31, 32], [39, 40], [33, 34], [35, 36], [41, 42], [43, 44], [19, 20], [21, 22], [23, 24], [25, 26],
           [27, 28], [29, 30], [47, 48], [49, 50], [53, 54], [51, 52], [55, 56], [37, 38], [45, 46]]
# a standing person, (y, x), OpenPose COCO order
PERSON = np.array([[20, 40], [34, 40], [34, 30], [52, 27], [68, 25], [34, 50], [52, 53], [68, 55], [70, 34],
                   [92, 33], [114, 33], [70, 46], [92, 47], [114, 47], [17, 37], [17, 43], [19, 33], [19, 47]])


def draw(heat: np.ndarray, paf: np.ndarray, joints: np.ndarray, amp: float = 1.0, paf_value: float = 1.0,
         sigma: float = 2.0) -> None:
    """Add a person: a Gaussian bump of height amp per present joint (y, x), and paf_value * the unit vector on the
    pixels within 1 px of each limb whose ends are both present."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    for part, (y, x) in enumerate(joints):
        if y >= 0:
            heat[part] += amp * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    for (a, b), (cx, cy) in zip(LIMB_SEQ, MAP_IDX):
        (ya, xa), (yb, xb) = joints[a - 1], joints[b - 1]
        if ya < 0 or yb < 0:
            continue
        d = np.array([xb - xa, yb - ya], np.float64)
        length = np.hypot(*d)
        if length == 0:
            continue
        u = d / length
        t = np.clip(((xx - xa) * u[0] + (yy - ya) * u[1]) / length, 0, 1)
        dist = np.hypot(xx - (xa + t * d[0]), yy - (ya + t * d[1]))
        band = dist <= 1.0
        paf[cx - 19][band] += paf_value * u[0]
        paf[cy - 19][band] += paf_value * u[1]


def empty_maps() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((19, H, W)), np.zeros((38, H, W))


def extract(heat: np.ndarray, paf: np.ndarray) -> np.ndarray:
    return openpose.keypoints_from_maps(torch.from_numpy(heat)[None], torch.from_numpy(paf)[None])[0]


def test_one_person():
    heat, paf = empty_maps()
    draw(heat, paf, PERSON)
    np.testing.assert_array_equal(extract(heat, paf), PERSON)


def test_two_people_the_better_scoring_one_wins():
    heat, paf = empty_maps()
    weak = PERSON + [-6, -18]  # higher and to the left: equal limb scores, so its row is made first
    strong = PERSON + [0, 30]
    draw(heat, paf, weak, amp=0.7)
    draw(heat, paf, strong)
    peaks = openpose.find_peaks(torch.from_numpy(heat)[None])[0]
    rows = openpose.assemble_people(peaks, paf, H)
    assert len(rows) == 2 and (rows[:, -1] == 18).all()  # both complete and kept
    assert rows[0, -2] == pytest.approx(18 * 0.7 + 17) and rows[1, -2] == pytest.approx(18 + 17)
    np.testing.assert_array_equal(extract(heat, paf), strong)
    people = openpose.all_people(peaks, paf, H)  # every person, the best-scoring first (photos count them)
    assert people.shape == (2, 18, 2)
    np.testing.assert_array_equal(people[0], strong)
    np.testing.assert_array_equal(people[1], weak)


def test_a_missing_part_is_minus_one():
    joints = PERSON.copy()
    joints[[4, 17]] = -1  # right wrist, left ear
    heat, paf = empty_maps()
    draw(heat, paf, joints)
    np.testing.assert_array_equal(extract(heat, paf), joints)


def test_deletion_rule_parts_and_mean_score():
    chain = np.full((18, 2), -1)
    chain[[1, 2, 3, 4]] = PERSON[[1, 2, 3, 4]]  # neck - r-shoulder - r-elbow - r-wrist: 4 parts, 3 limbs
    three = chain.copy()
    three[4] = -1
    heat, paf = empty_maps()
    draw(heat, paf, three)
    assert (extract(heat, paf) == -1).all()  # 3 parts: deleted
    heat, paf = empty_maps()
    draw(heat, paf, chain)
    np.testing.assert_array_equal(extract(heat, paf), chain)  # 4 parts: kept
    # mean score = (4 peaks of 0.2 + 3 limbs of paf_value) / 4: 0.425 >= 0.4 kept, 0.35 < 0.4 deleted
    for paf_value, kept in ((0.3, True), (0.2, False)):
        heat, paf = empty_maps()
        draw(heat, paf, chain, amp=0.2, paf_value=paf_value, sigma=6.0)  # wide bumps: blurred peaks above 0.1
        rows = openpose.assemble_people(openpose.find_peaks(torch.from_numpy(heat)[None])[0], paf, H)
        assert len(rows) == 1 or not kept
        if kept:
            assert rows[0, -1] == 4 and rows[0, -2] / 4 == pytest.approx((0.8 + 3 * paf_value) / 4)
            np.testing.assert_array_equal(extract(heat, paf), chain)
        else:
            assert len(rows) == 0 and (extract(heat, paf) == -1).all()


def test_limb_score_distance_prior():
    """score = mean(PAF . u) + min(0.5 H / |AB| - 1, 0): a limb of 80 px in a 128-px image loses 0.2."""
    joints = np.full((18, 2), -1)
    joints[1], joints[2] = (20, 48), (100, 48)  # neck above r-shoulder: 80 px
    for paf_value, expected in ((0.3, [(0, 0, 0.1)]), (0.15, [])):
        heat, paf = empty_maps()
        draw(heat, paf, joints, paf_value=paf_value)
        a, b = np.array([[48, 20, 1.0]]), np.array([[48, 100, 1.0]])  # (x, y, score)
        taken = openpose.limb_connections(a, b, paf[[12, 13]], H)  # limb 0 = mapIdx [31, 32]
        assert [(i, j) for i, j, _ in taken] == [(i, j) for i, j, _ in expected]
        if expected:
            assert taken[0][2] == pytest.approx(expected[0][2])


def test_limb_needs_more_than_80_percent_of_samples_above_threshold():
    """10 samples at y = 20, 25, ..., 65 on a vertical limb: 9 above 0.05 pass (score 0.9), 8 do not."""
    a, b = np.array([[48, 20, 1.0]]), np.array([[48, 65, 1.0]])
    for zeros, expected in ((1, [(0, 0, 0.9)]), (2, [])):
        paf = np.zeros((2, H, W))
        paf[1, 20:66, 48] = 1.0  # (x, y) channels; u = (0, 1)
        paf[1, [25, 50][:zeros], 48] = 0.0
        taken = openpose.limb_connections(a, b, paf, H)
        assert [(i, j) for i, j, _ in taken] == [(i, j) for i, j, _ in expected]
        if expected:
            assert taken[0][2] == pytest.approx(0.9)


def test_peaks_merged_by_the_sigma3_filter():
    heat = np.zeros((19, H, W))
    yy, xx = np.mgrid[0:H, 0:W]
    for x in (50, 54):  # two maxima 4 px apart: the sigma-3 blur leaves one, halfway
        heat[0] += np.exp(-((yy - 60) ** 2 + (xx - x) ** 2) / 2.0)
    raw = heat[0]
    raw_maxima = (raw[1:-1, 1:-1] >= np.maximum.reduce([raw[:-2, 1:-1], raw[2:, 1:-1], raw[1:-1, :-2],
                                                         raw[1:-1, 2:]])) & (raw[1:-1, 1:-1] > 0.1)
    assert raw_maxima.sum() == 2
    peaks = openpose.find_peaks(torch.from_numpy(heat)[None])[0]
    assert [len(p) for p in peaks] == [1] + [0] * 17
    x, y, score = peaks[0][0]
    assert (x, y) == (52, 60) and score == pytest.approx(raw[60, 52])  # the unfiltered map's value


# ------------------------------------------------------------------------------------------ against the script


def script_coordinates(heatmap_avg: np.ndarray, paf_avg: np.ndarray, height: int, branches: dict) -> np.ndarray:
    """compute_cordinates() of PATN's tool/compute_coordinates.py, written out in loops from reading it (python 3:
    zip is a list, round is python 2's half-away-from-zero). Maps are (H, W, C) as the script holds them.
    `branches` counts the assembly branches taken ("extend", "merge", "overlap", "new", "deleted")."""
    all_peaks, counter = [], 0
    for part in range(18):
        original = heatmap_avg[:, :, part]
        m = gaussian_filter(original, sigma=3)
        left, right, up, down = (np.zeros(m.shape) for _ in range(4))
        left[1:, :], right[:-1, :], up[:, 1:], down[:, :-1] = m[:-1, :], m[1:, :], m[:, :-1], m[:, 1:]
        binary = (m >= left) & (m >= right) & (m >= up) & (m >= down) & (m > 0.1)
        peaks = list(zip(np.nonzero(binary)[1], np.nonzero(binary)[0]))
        all_peaks.append([(x, y, original[y, x], counter + i) for i, (x, y) in enumerate(peaks)])
        counter += len(peaks)

    def round2(v: float) -> int:
        return int(np.floor(v + 0.5))

    connection_all, special_k = [], []
    for k in range(19):
        score_mid = paf_avg[:, :, [x - 19 for x in MAP_IDX[k]]]
        cand_a, cand_b = all_peaks[LIMB_SEQ[k][0] - 1], all_peaks[LIMB_SEQ[k][1] - 1]
        if not cand_a or not cand_b:
            special_k.append(k)
            connection_all.append([])
            continue
        candidates = []
        for i in range(len(cand_a)):
            for j in range(len(cand_b)):
                vec = np.subtract(cand_b[j][:2], cand_a[i][:2]).astype(float)
                norm = np.sqrt(vec[0] ** 2 + vec[1] ** 2)
                if norm == 0:
                    continue
                vec = vec / norm
                xs = np.linspace(cand_a[i][0], cand_b[j][0], num=10)
                ys = np.linspace(cand_a[i][1], cand_b[j][1], num=10)
                s = np.array([score_mid[round2(ys[t]), round2(xs[t]), 0] * vec[0]
                              + score_mid[round2(ys[t]), round2(xs[t]), 1] * vec[1] for t in range(10)])
                prior = sum(s) / len(s) + min(0.5 * height / norm - 1, 0)
                if len(np.nonzero(s > 0.05)[0]) > 0.8 * len(s) and prior > 0:
                    candidates.append([i, j, prior])
        candidates.sort(key=lambda c: c[2], reverse=True)
        connection = np.zeros((0, 5))
        for i, j, s in candidates:
            if i not in connection[:, 3] and j not in connection[:, 4]:
                connection = np.vstack([connection, [cand_a[i][3], cand_b[j][3], s, i, j]])
                if len(connection) >= min(len(cand_a), len(cand_b)):
                    break
        connection_all.append(connection)

    subset = -1 * np.ones((0, 20))
    candidate = np.array([p for peaks in all_peaks for p in peaks])
    for k in range(19):
        if k in special_k:
            continue
        part_as, part_bs = connection_all[k][:, 0], connection_all[k][:, 1]
        index_a, index_b = np.array(LIMB_SEQ[k]) - 1
        for i in range(len(connection_all[k])):
            found, idx = 0, [-1, -1]
            for j in range(len(subset)):
                if subset[j][index_a] == part_as[i] or subset[j][index_b] == part_bs[i]:
                    idx[found] = j
                    found += 1
            branches[{0: "new", 1: "extend", 2: "two"}[found]] += 1
            if found == 1:
                j = idx[0]
                if subset[j][index_b] != part_bs[i]:
                    subset[j][index_b] = part_bs[i]
                    subset[j][-1] += 1
                    subset[j][-2] += candidate[part_bs[i].astype(int), 2] + connection_all[k][i][2]
            elif found == 2:
                j1, j2 = idx
                membership = ((subset[j1] >= 0).astype(int) + (subset[j2] >= 0).astype(int))[:-2]
                if len(np.nonzero(membership == 2)[0]) == 0:
                    branches["merge"] += 1
                    subset[j1][:-2] += subset[j2][:-2] + 1
                    subset[j1][-2:] += subset[j2][-2:]
                    subset[j1][-2] += connection_all[k][i][2]
                    subset = np.delete(subset, j2, 0)
                else:
                    subset[j1][index_b] = part_bs[i]
                    subset[j1][-1] += 1
                    subset[j1][-2] += candidate[part_bs[i].astype(int), 2] + connection_all[k][i][2]
            elif not found and k < 17:
                row = -1 * np.ones(20)
                row[index_a], row[index_b] = part_as[i], part_bs[i]
                row[-1] = 2
                row[-2] = sum(candidate[connection_all[k][i, :2].astype(int), 2]) + connection_all[k][i][2]
                subset = np.vstack([subset, row])
    delete = [i for i in range(len(subset)) if subset[i][-1] < 4 or subset[i][-2] / subset[i][-1] < 0.4]
    branches["deleted"] += len(delete)
    branches["kept"] += len(subset) - len(delete)
    subset = np.delete(subset, delete, axis=0)
    if len(subset) == 0:
        return np.array([[-1, -1]] * 18).astype(int)
    best = subset[np.argmax(subset[:, -2])]
    return np.array([[-1, -1] if p == -1 else [candidate[int(p), 1], candidate[int(p), 0]] for p in best[:18]],
                    dtype=int)


def test_grouping_matches_a_transcription_of_the_script():
    """Crowded random scenes: 2-4 jittered people with random missing joints, amplitudes and PAF strengths, plus
    spurious peaks and PAF noise, so that candidates compete, rows merge and the deletion rule bites."""
    branches = dict.fromkeys(("new", "extend", "two", "merge", "deleted", "kept"), 0)
    found = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        heat, paf = empty_maps()
        for _ in range(rng.integers(2, 5)):
            joints = PERSON + rng.integers(-6, 7, (18, 2)) + [rng.integers(-10, 11), rng.integers(-30, 31)]
            joints = np.clip(joints, 4, [H - 5, W - 5])
            joints[rng.random(18) < 0.25] = -1
            draw(heat, paf, joints, amp=rng.uniform(0.3, 1.0), paf_value=rng.uniform(0.2, 1.0))
        spurious = np.full((18, 2), -1)
        for _ in range(2):
            spurious[:] = -1
            chosen = rng.random(18) < 0.3
            spurious[chosen] = np.stack([rng.integers(4, H - 4, 18), rng.integers(4, W - 4, 18)], 1)[chosen]
            draw(heat, paf, spurious, amp=rng.uniform(0.3, 1.0), paf_value=0.0)
        paf += 0.01 * rng.normal(size=paf.shape)
        ours = extract(heat, paf)
        expected = script_coordinates(heat.transpose(1, 2, 0), paf.transpose(1, 2, 0), H, branches)
        np.testing.assert_array_equal(ours, expected, err_msg=f"seed {seed}")
        found += int((ours != -1).any())
    assert found >= 20 and all(v > 0 for v in branches.values()), branches  # every branch was exercised


# ------------------------------------------------------------------------------------------ end to end


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """From another folder: the script must find the repository's packages itself."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / "estimate_keypoints.py"), *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow  # two interpreter start-ups with torch: about 10 s each on a loaded 2-core machine
def test_estimate_keypoints_script_random_weights(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = ["a.png", "b.jpg", "c.png", "d.png"]
    for i, name in enumerate(names):
        size = (40, 32) if i < 3 else (36, 40)  # two sizes: two batches
        assert cv2.imwrite(str(images / name), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    out = tmp_path / "csv" / "keypoints.csv"
    common = ["--weights", "random", "--boxsize", "32", "--scales", "0.5,1", "--device", "cpu", "--quiet"]
    done = run_script(str(images), "--out", str(out), "--batch-size", "2", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    keypoints = read_annotations(out)
    assert list(keypoints) == names
    for name, kp in keypoints.items():
        h, w = (40, 32) if name != "d.png" else (36, 40)
        present = kp[:, 0] != -1
        assert ((kp[present] >= 0) & (kp[present] < [h, w])).all()
        assert (kp[~present] == -1).all()
    # the estimator over the same images, in one process: the script wrote what it computes
    estimator = openpose.OpenPoseEstimator("random", "cpu", boxsize=32, scales=(0.5, 1))
    first = np.stack([cv2.imread(str(images / n))[..., ::-1] for n in names[:3]])
    np.testing.assert_array_equal(estimator(first), np.stack([keypoints[n] for n in names[:3]]))

    before = out.read_text()
    (images / "e.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"e\.png: cannot be read as an image"):
        estimate_keypoints.main([str(images), "--out", str(out), *common])
    assert out.read_text() == before  # nothing already written is lost
    assert not list(out.parent.glob("*.part"))
    bad = run_script(str(tmp_path / "nowhere"), "--out", str(out), cwd=tmp_path)  # fails before the network
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such "
                                                                       "image or folder"]


def test_estimate_keypoints_help(capsys):
    with pytest.raises(SystemExit) as e:
        estimate_keypoints.main(["--help"])
    assert e.value.code == 0 and estimate_keypoints.__doc__.splitlines()[0] in capsys.readouterr().out


def test_estimate_keypoints_script_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        assert cv2.imwrite(str(tmp_path / folder / "same.png"), np.zeros((16, 16, 3), np.uint8))
    out = str(tmp_path / "k.csv")
    with pytest.raises(InputError, match="empty: no .jpg"):
        estimate_keypoints.main([str(tmp_path / "empty"), "--out", out])
    with pytest.raises(InputError, match=r"y/same\.png: same file name as .*x/same\.png"):
        estimate_keypoints.main([str(tmp_path / "x"), str(tmp_path / "y"), "--out", out])
    with pytest.raises(MissingWeightsError, match="body_pose_model.pth not found"):
        estimate_keypoints.main([str(tmp_path / "x"), "--out", out, "--weights", str(tmp_path / "none.pth")])
    with pytest.raises(InputError, match="--batch-size must be >= 1"):
        estimate_keypoints.main([str(tmp_path / "x"), "--out", out, "--batch-size", "0"])
    assert not Path(out).exists()


def test_people_agrees_with_the_estimators_best_person():
    """OpenPoseEstimator.people lists every person of one image, the one __call__ returns first (none: all -1)."""
    estimator = openpose.OpenPoseEstimator("random", "cpu", boxsize=64, scales=(1.0,))
    image = np.random.default_rng(0).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    people = estimator.people(image)
    best = estimator(image[None])[0]
    if people:
        np.testing.assert_array_equal(people[0], best)
    else:
        assert (best == -1).all()
    assert all(p.shape == (18, 2) and p.dtype == np.float32 for p in people)
