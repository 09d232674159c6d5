"""Metrics against independent computations: skimage's SSIM, pytorch-fid's Frechet distance and Inception
wrapper, torchvision's Inception forward, the lpips package called directly, hand-worked PCKh cases; plus the
weights loader and the download script with urllib stubbed out (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import urllib.error

import cv2
import lpips as lpips_package
import numpy as np
import pytest
import torch
import torchvision
from pytorch_fid import inception as pf_inception
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import structural_similarity

from data.pose import pose_mask
from metrics import estimators
from metrics.fid import InceptionFeatures, RunningMoments, frechet_distance, real_statistics
from metrics.lpips import LPIPSMetric
from metrics.masks import pose_masks
from metrics.pckh import pckh, pckh_counts
from metrics.ssim import apply_mask, masked_ssim, ssim
from scripts import download_weights
from utils import weights
from utils.weights import MissingWeightsError, load_state_dict


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The field's call, on (H,W,3) uint8."""
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=255)


def natural_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """(n,H,W,3) uint8 'real-looking' images: smooth gradients, hard-edged blocks and discs, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        img = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * yy + rng.uniform(-60, 60) * xx
                        for _ in range(3)], axis=-1)
        for _ in range(4):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            img[y0 : y0 + rng.integers(4, h // 2), x0 : x0 + rng.integers(4, w // 2)] = rng.uniform(0, 255, 3)
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, max(4, w // 4))
        img[(np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return np.stack(out)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (B,3,H,W)


# ------------------------------------------------------------------------------------------ SSIM


@pytest.mark.parametrize("size", [(256, 176), (128, 64), (37, 23)])
def test_ssim_matches_skimage_on_natural_images(size):
    h, w = size
    a = natural_images(3, h, w, seed=1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    b[1] = natural_images(1, h, w, seed=3)[0]  # an unrelated image too
    ours = ssim(to_tensor(a), to_tensor(b))
    assert ours.dtype == torch.float64 and ours.shape == (3,)
    expected = [skimage_ssim(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-4)


def test_ssim_matches_skimage_on_random_and_extreme_images():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    a[2], b[2] = 255, 0  # flat opposite images: the constants C1, C2 decide
    b[1] = a[1]  # identical: exactly 1
    ours = ssim(to_tensor(a), to_tensor(b), chunk=2).numpy()
    expected = [skimage_ssim(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
    assert ours[1] == pytest.approx(1.0, abs=1e-6)


SSIM_VARIANTS = [  # (our arguments, skimage's arguments but data_range, tolerance)
    (dict(window="uniform", sample_covariance=True), dict(win_size=7, use_sample_covariance=True), 1e-9),
    (dict(data_range="generated", dtype=torch.float64),
     dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False), 1e-9),
    (dict(data_range="generated"), dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False), 5e-6),
    (dict(window="uniform", win_size=5, sample_covariance=False), dict(win_size=5, use_sample_covariance=False), 1e-9),
]


@pytest.mark.parametrize("ours, theirs, tol", SSIM_VARIANTS)
def test_ssim_variants_match_skimage(ours, theirs, tol):
    """Each published call (the authors' skimage defaults; PATN's / GFLA's data range = generated max - min) on
    natural, masked, random, flat and identical pairs."""
    a = natural_images(4, 128, 64, seed=5)
    b = np.clip(a.astype(int) + np.random.default_rng(6).integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    mask = pose_mask(market_keypoints(7), 128, 64)[..., None]
    a[1], b[1] = a[1] * mask, b[1] * mask  # masked: large equal zero regions
    a[2] = np.random.default_rng(8).integers(0, 256, a[2].shape)
    a[3], b[3] = 200, 30  # flat
    values = ssim(to_tensor(a), to_tensor(b), **ours).numpy()
    generated = "data_range" in ours
    expected = [structural_similarity(y, x, channel_axis=-1, **theirs,
                                      data_range=float(x.max()) - float(x.min()) if generated else 255)
                for x, y in zip(a, b)]
    np.testing.assert_allclose(values, expected, rtol=0, atol=tol)
    flat = a[3:4].copy()
    flat[..., 0] = 0  # a generated image spanning 0..200
    assert ssim(to_tensor(flat), to_tensor(flat), **ours).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_bad_inputs():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        ssim(x.float(), x)
    with pytest.raises(TypeError, match="uint8"):
        ssim(x.long(), x.long())
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, torch.zeros(1, 3, 32, 31, dtype=torch.uint8))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(x[..., :10, :10], x[..., :10, :10])


def market_keypoints(seed: int) -> np.ndarray:
    """A plausible 128x64 pose with a few joints missing."""
    rng = np.random.default_rng(seed)
    base = np.array([[20, 32], [32, 32], [33, 22], [50, 18], [66, 16], [33, 42], [50, 46], [66, 48], [68, 26],
                     [90, 26], [115, 25], [68, 38], [90, 38], [115, 39], [17, 29], [17, 35], [19, 26], [19, 38]])
    kp = base + rng.integers(-3, 4, base.shape)
    kp[rng.choice(18, 3, replace=False)] = -1
    return kp


def test_mask_ssim_matches_skimage_on_masked_images():
    a = natural_images(2, 128, 64, seed=5)
    b = natural_images(2, 128, 64, seed=6)
    kps = np.stack([market_keypoints(0), market_keypoints(1)])
    masks = pose_masks(kps, 128, 64)
    assert masks.dtype == torch.bool and masks.shape == (2, 128, 64)
    for m, kp in zip(masks, kps):
        np.testing.assert_array_equal(m.numpy(), pose_mask(kp, 128, 64))  # the per-pose function, stacked
    ours = masked_ssim(to_tensor(a), to_tensor(b), masks).numpy()
    expected = []
    for x, y, kp in zip(a, b, kps):
        m = pose_mask(kp, 128, 64)[..., np.newaxis]  # PATN: image * mask[..., np.newaxis]
        expected.append(skimage_ssim(x * m, y * m))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
    masked = apply_mask(to_tensor(a), masks)
    assert masked.dtype == torch.uint8 and int(masked[0, :, ~masks[0]].max()) == 0


# ------------------------------------------------------------------------------------------ Frechet distance, FID


def random_stats(rng: np.random.Generator, n: int, d: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + shift
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("n", [500, 20])  # full-rank and rank-deficient covariances
@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_matches_pytorch_fid(n, method):
    rng = np.random.default_rng(7)
    mu1, s1 = random_stats(rng, n, 48, 0.0)
    mu2, s2 = random_stats(rng, n + 7, 48, 0.4)
    expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-6)
    # the distance to itself is 0 up to the rounding of Tr(S) (the matrix root of a rank-deficient product)
    assert frechet_distance(mu1, s1, mu1, s1, method=method) == pytest.approx(0.0, abs=1e-7 * np.trace(s1))


def test_frechet_distance_closed_form_and_shape_error():
    # diagonal Gaussians: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, np.diag(a), mu2[:2], np.diag(b[:2]))


def test_running_moments_match_numpy_cov():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(37, 5)) * 3 + 100  # a large offset: the shifted sums must not cancel
    moments = RunningMoments()
    for chunk in np.array_split(x, [10, 11, 30]):
        moments.update(torch.from_numpy(chunk).float())
    mu, sigma = moments.statistics()
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, x32.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x32, rowvar=False), rtol=1e-9)


@pytest.fixture(scope="module")
def two_images() -> torch.Tensor:
    return to_tensor(natural_images(2, 96, 64, seed=9))


def test_standard_inception_matches_pytorch_fid_wrapper(two_images, monkeypatch):
    ours = InceptionFeatures("standard", "random")
    state = {k: v.clone() for k, v in ours.blocks.state_dict().items()}
    # pytorch-fid builds its FID Inception and loads the checkpoint by URL: hand it our random weights instead,
    # keyed as its network names them (the Sequential's indices -> the Inception3 attribute names)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None, "Conv2d_3b_1x1", "Conv2d_4a_3x3", None,
             "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
             "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    remapped = {}
    for key, value in state.items():
        index, rest = key.split(".", 1)
        remapped[f"{names[int(index)]}.{rest}"] = value
    fc = torch.nn.Linear(2048, 1008)
    remapped.update({"fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()})
    monkeypatch.setattr(pf_inception, "load_state_dict_from_url", lambda *a, **k: remapped)
    reference = pf_inception.InceptionV3([3]).eval()
    with torch.no_grad():
        expected = reference(two_images[:1].float() / 255)[0].flatten(1)
    torch.testing.assert_close(ours(two_images[:1]), expected, rtol=1e-4, atol=1e-5)


def test_torchvision_inception_matches_torchvision_forward(two_images, tmp_path):
    torch.manual_seed(10)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=False)
    path = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(tv.state_dict(), path)
    ours = InceptionFeatures("torchvision", str(path))
    assert ours.weights_source == str(path) and not ours.random
    tv.fc = torch.nn.Identity()  # torchvision's forward then returns the pooled (dropout is off in eval) features
    tv.eval()
    x = torch.nn.functional.interpolate(two_images[:1].float() / 255, size=(299, 299), mode="bilinear",
                                        align_corners=False) * 2 - 1
    with torch.no_grad():
        expected = tv(x)
    torch.testing.assert_close(ours(two_images[:1]), expected, rtol=1e-4, atol=1e-5)


def test_inception_imagenet_weights_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_torch_home"))
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        InceptionFeatures("standard", "imagenet")
    with pytest.raises(MissingWeightsError, match="inception_v3_google-0cc3c7bd.pth"):
        InceptionFeatures("torchvision", "imagenet")


class MeanColour:
    """A cheap stand-in extractor for the cache logic: per-image channel means."""

    identity = "mean-colour|v1"

    def __init__(self):
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images.float().mean(dim=(2, 3))


def test_fid_real_statistics_cache_hit_miss_and_invalidation(tmp_path):
    folder, cache = tmp_path / "train", tmp_path / "cache"
    folder.mkdir()
    images = natural_images(5, 24, 16, seed=11)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"img{i}.png"), img[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    extractor = MeanColour()
    first = real_statistics(folder, extractor, cache, batch_size=2)
    assert not first.cache_hit and first.count == 5 and first.cache_file.is_file() and extractor.calls == 3
    feats = images.reshape(5, -1, 3).mean(axis=1)
    np.testing.assert_allclose(first.mu, feats.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(first.sigma, np.cov(feats, rowvar=False), rtol=1e-5)

    second = real_statistics(folder, extractor, cache, batch_size=2)
    assert second.cache_hit and extractor.calls == 3 and second.cache_file == first.cache_file
    np.testing.assert_array_equal(second.sigma, first.sigma)

    other = MeanColour()
    other.identity = "mean-colour|other-weights"
    assert not real_statistics(folder, other, cache).cache_hit  # other weights: other key

    changed = images[0].copy()
    changed[:4] = 255
    cv2.imwrite(str(folder / "img0.png"), changed[..., ::-1])
    os.utime(folder / "img0.png", ns=(1, 1))  # even with an old mtime, the size/mtime pair differs
    third = real_statistics(folder, extractor, cache, batch_size=2)
    assert not third.cache_hit and third.cache_file != first.cache_file and extractor.calls == 6
    assert not np.allclose(third.mu, first.mu)


def test_fid_real_statistics_errors_name_the_file(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.zeros((24, 16, 3), np.uint8))
    cv2.imwrite(str(folder / "small.png"), np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="small.png.*20x16.*expected 24x16"):
        real_statistics(folder, MeanColour(), None, size=(24, 16))
    with pytest.raises(FileNotFoundError, match="missing"):
        real_statistics(tmp_path / "missing", MeanColour(), None)


# ------------------------------------------------------------------------------------------ LPIPS


def test_lpips_random_matches_lpips_package(two_images):
    ours = LPIPSMetric("random")
    assert ours.random and "random" in ours.weights_source
    torch.manual_seed(0)
    reference = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    a, b = two_images, two_images.flip(0)
    signed = lambda x: x.float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        expected = reference(signed(a), signed(b)).flatten()
    torch.testing.assert_close(ours(a, b), expected, rtol=1e-5, atol=1e-6)
    assert ours(a, a).abs().max().item() < 1e-6

    masks = torch.zeros(2, 96, 64, dtype=torch.bool)
    masks[:, 20:70, 10:50] = True
    m = masks.float().unsqueeze(1)
    with torch.no_grad():
        expected_masked = reference(signed(a) * m, signed(b) * m).flatten()  # GFLA: mask on the [-1,1] images
    torch.testing.assert_close(ours(a, b, masks), expected_masked, rtol=1e-5, atol=1e-6)


def test_lpips_trunk_loads_torchvision_alexnet(tmp_path, monkeypatch):
    torch.manual_seed(12)
    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    ours = LPIPSMetric(str(path))
    torch.testing.assert_close(ours.model.net.slice1[0].weight, tv.features[0].weight)
    torch.testing.assert_close(getattr(ours.model.net.slice5, "10").bias, tv.features[10].bias)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPSMetric("imagenet")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="foreign.pth"):
        LPIPSMetric(str(tmp_path / "foreign.pth"))


# ------------------------------------------------------------------------------------------ PCKh


def pose(points: dict[int, tuple[int, int]]) -> np.ndarray:
    kp = np.full((18, 2), -1, dtype=np.int64)
    for j, yx in points.items():
        kp[j] = yx
    return kp


def test_pckh_hand_worked():
    # head joints 0 (10,10) and 1 (30,20): box w = 10, h = 20 -> thresholds |dx| < 5, |dy| < 10
    target = pose({0: (10, 10), 1: (30, 20), 2: (50, 50), 3: (70, 40), 4: (90, 40)})
    pred = pose({0: (10, 10), 1: (39, 24), 2: (60, 50), 3: (70, 45)})
    # joint 0 exact: right; 1: dy 9 < 10, dx 4 < 5: right; 2: dy 10 = threshold: wrong (strict <);
    # 3: dx 5 = threshold: wrong; 4: missing in the prediction: wrong but counted
    counts = pckh_counts(pred[None], target[None])
    assert counts["right"].tolist() == [2] and counts["valid"].tolist() == [5] and counts["used"].tolist() == [True]
    pred_in = pred.copy()
    pred_in[2], pred_in[3] = (59, 50), (70, 44)  # just inside
    assert pckh_counts(pred_in[None], target[None])["right"].tolist() == [4]


def test_pckh_skips_pairs_with_fewer_than_two_head_joints():
    good_t = pose({14: (10, 10), 16: (14, 30), 5: (40, 40)})  # eye + ear: box w 20, h 4
    good_p = pose({14: (11, 12), 16: (14, 30), 5: (45, 40)})  # 5: dy 5 >= 2: wrong
    skip_t = pose({0: (10, 10), 2: (30, 30), 3: (50, 30)})  # only one head joint: skipped entirely
    skip_p = skip_t.copy()
    zero_t = pose({0: (10, 10), 1: (30, 10), 8: (60, 10)})  # head box of width 0: nothing can be right in x
    zero_p = zero_t.copy()
    counts = pckh_counts(np.stack([good_p, skip_p, zero_p]), np.stack([good_t, skip_t, zero_t]))
    assert counts["used"].tolist() == [True, False, True]
    assert counts["right"].tolist() == [2, 0, 0]
    assert counts["valid"].tolist() == [3, 0, 3]
    assert pckh(np.stack([good_p, skip_p, zero_p]), np.stack([good_t, skip_t, zero_t])) == pytest.approx(2 / 6)
    # a target joint that is missing is not counted, whatever the prediction says
    assert pckh_counts(pose({0: (10, 10), 1: (30, 20), 7: (5, 5)})[None], good_t[None])["valid"].tolist() == [3]
    assert np.isnan(pckh(skip_p[None], skip_t[None]))


# ------------------------------------------------------------------------------------------ estimators


class Fixed:
    def __call__(self, images: np.ndarray) -> torch.Tensor:
        out = torch.full((images.shape[0], 18, 2), 3.4)
        out[:, 1] = torch.tensor([-1.0, 7.0])  # one coordinate missing -> the joint is missing
        return out


def test_estimator_loading_and_normalisation():
    est = estimators.load_estimator("tests.test_metrics:Fixed")  # a class is instantiated
    kp = estimators.predict_keypoints(est, [(["a.png", "b.png"], np.zeros((2, 8, 8, 3), np.uint8))])
    assert sorted(kp) == ["a.png", "b.png"]
    assert kp["a.png"].dtype == np.int64 and kp["a.png"][0].tolist() == [3, 3] and kp["a.png"][1].tolist() == [-1, -1]
    with pytest.raises(estimators.EstimatorError, match="module.path:attr"):
        estimators.load_estimator("no_colon")
    with pytest.raises(estimators.EstimatorError, match="no attribute 'Nope'"):
        estimators.load_estimator("tests.test_metrics:Nope")
    with pytest.raises(estimators.EstimatorError, match=r"shape \(2, 17, 2\)"):
        estimators.normalise_keypoints(np.zeros((2, 17, 2)), 2, "est")


# ------------------------------------------------------------------------------------------ weights


def test_weights_table_names_and_hash_prefixes():
    assert weights.KNOWN_WEIGHTS["vgg19"].filename == "vgg19-dcbb9e9d.pth"
    assert weights.KNOWN_WEIGHTS["vgg19"].sha256_prefix == "dcbb9e9d"
    assert weights.KNOWN_WEIGHTS["inception_fid"].sha256_prefix == "6726825d"
    assert weights.KNOWN_WEIGHTS["inception_torchvision"].sha256_prefix == "0cc3c7bd"
    assert weights.KNOWN_WEIGHTS["alexnet"].sha256_prefix == "7be5be79"
    for info in weights.KNOWN_WEIGHTS.values():
        assert info.url.endswith("/" + info.filename) or info.sha256_prefix is None
    assert weights.KNOWN_WEIGHTS["schp_lip"].sha256_prefix is None  # SCHP publishes no digest


def test_load_state_dict_cache_explicit_and_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    checkpoints = tmp_path / "home" / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as info:
        load_state_dict("alexnet")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(checkpoints) in message
    assert "python scripts/download_weights.py alexnet" in message
    assert isinstance(info.value, FileNotFoundError)
    checkpoints.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, checkpoints / "alexnet-owt-7be5be79.pth")
    assert torch.equal(load_state_dict("alexnet")["w"], torch.ones(2))
    explicit = tmp_path / "mine.pth"
    torch.save({"w": torch.zeros(3)}, explicit)
    assert torch.equal(load_state_dict("alexnet", explicit)["w"], torch.zeros(3))
    with pytest.raises(MissingWeightsError, match="nowhere.pth"):
        load_state_dict("alexnet", tmp_path / "nowhere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_state_dict("alexnet", tmp_path / "junk.pth")
    with pytest.raises(KeyError, match="unknown weights"):
        load_state_dict("resnet")


def test_download_help():
    with pytest.raises(SystemExit) as info:
        download_weights.main(["--help"])
    assert info.value.code == 0


def _fake_weights(monkeypatch, prefix: str) -> None:
    info = dataclasses.replace(weights.KNOWN_WEIGHTS["alexnet"], sha256_prefix=prefix)
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "alexnet", info)


def test_download_reports_fetch_error_without_network(monkeypatch, tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(download_weights.urllib.request, "urlopen", refuse)
    with pytest.raises(download_weights.DownloadError, match="1 of 1 downloads failed: alexnet"):
        download_weights.main(["alexnet", "--dir", str(tmp_path)])  # run_main: exit status 2
    err = capsys.readouterr().err
    assert "alexnet: download of" in err and "no route to host" in err and "alexnet-owt-7be5be79.pth" in err
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_verifies_hash_and_removes_bad_file(monkeypatch, tmp_path, capsys):
    payload = b"pretend checkpoint bytes"
    monkeypatch.setattr(download_weights.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))
    _fake_weights(monkeypatch, "0000dead")
    with pytest.raises(download_weights.DownloadError, match="1 of 1 downloads failed"):
        download_weights.main(["alexnet", "--dir", str(tmp_path)])
    assert "checksum mismatch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    _fake_weights(monkeypatch, hashlib.sha256(payload).hexdigest()[:8])
    fetched = tmp_path / "alexnet-owt-7be5be79.pth"
    assert download_weights.main(["alexnet", "--dir", str(tmp_path)]) == [fetched]
    assert fetched.read_bytes() == payload
    assert download_weights.main(["alexnet", "--dir", str(tmp_path)]) == [fetched]  # present and verified: no fetch
    assert "present, checksum ok" in capsys.readouterr().out
