"""Every metric of an evaluation protocol timed as evaluate.py computes it, on natural-looking synthetic pairs.

The images are synthetic but natural-looking (smooth gradients, hard-edged blocks, mild noise; the generated one
a shifted, noised copy), the masks come from plausible random poses, and FID / LPIPS / OpenPose run *randomly
initialised* networks: a network costs the same whatever its weights (OpenPose's grouping depends on the peaks
found, and random maps give few, so real images may add a little). A pool of distinct pairs is cycled in batches.
FID's figure covers the generated set's features and moments; one 2048-d Frechet distance is timed apart (a
fixed cost). Image decoding is not included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

from benchmarks.timing import sync
from data.pose import pose_mask
from metrics.fid import InceptionFeatures, RunningMoments, frechet_distance
from metrics.lpips import LPIPSMetric
from metrics.openpose import BOXSIZE, SCALES, OpenPoseEstimator
from metrics.protocols import Protocol, SSIMSpec

TIMED = ("ssim", "mssim", "fid", "lpips", "mlpips", "pckh")


def natural_pairs(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n,H,W,3) uint8 ground-truth-like images and perturbed 'generated' versions of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / h
    truth = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.stack([rng.uniform(40, 200) + rng.uniform(-80, 80) * yy + rng.uniform(-80, 80) * xx
                        for _ in range(3)], axis=-1)
        for _ in range(6):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            img[y0 : y0 + rng.integers(8, h // 2), x0 : x0 + rng.integers(8, w // 2)] = rng.uniform(0, 255, 3)
        truth[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255)
    shifted = np.roll(truth, rng.integers(-3, 4), axis=2)
    fake = np.clip(shifted.astype(np.int16) + rng.integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    return truth, fake


def random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n,H,W) bool pose masks of jittered standing poses."""
    rng = np.random.default_rng(seed)
    base = np.array([[20, 32], [32, 32], [33, 22], [50, 18], [66, 16], [33, 42], [50, 46], [66, 48], [68, 26],
                     [90, 26], [115, 25], [68, 38], [90, 38], [115, 39], [17, 29], [17, 35], [19, 26], [19, 38]])
    poses = np.round(base * [h / 128, w / 64])[None] + rng.integers(-3, 4, (n, 18, 2))
    return np.stack([pose_mask(p, h, w) for p in poses])


@dataclass
class MetricInputs:
    """A pool of P pairs on the device: generated and ground-truth (P,3,H,W) uint8, pose masks (P,H,W) bool."""

    fake: torch.Tensor
    truth: torch.Tensor
    masks: torch.Tensor

    def batches(self, count: int, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """`count` pairs in batches of `batch`, cycling through the pool."""
        for start in range(0, count, batch):
            idx = torch.arange(start, min(start + batch, count), device=self.fake.device) % len(self.fake)
            yield self.fake[idx], self.truth[idx], self.masks[idx]


def metric_inputs(pool: int, h: int, w: int, device: torch.device) -> MetricInputs:
    truth, fake = natural_pairs(pool, h, w)
    return MetricInputs(fake=torch.from_numpy(fake).permute(0, 3, 1, 2).contiguous().to(device),
                        truth=torch.from_numpy(truth).permute(0, 3, 1, 2).contiguous().to(device),
                        masks=torch.from_numpy(random_masks(pool, h, w)).to(device))


def metric_models(chosen: list[str], protocol: Protocol, device: torch.device, openpose_batch: int,
                  openpose_scales: tuple[float, ...] = SCALES, openpose_boxsize: int = BOXSIZE) -> dict:
    """The random-init networks the chosen metrics run: LPIPS's AlexNet, FID's Inception, PCKh's OpenPose
    (PATN's 368 box and 4 scales unless asked otherwise)."""
    models = {}
    if "lpips" in chosen or "mlpips" in chosen:
        models["lpips"] = LPIPSMetric("random").to(device)
    if "fid" in chosen:
        models["fid"] = InceptionFeatures(protocol.fid.network, "random",
                                          input_transform=protocol.fid.input_transform).to(device)
    if "pckh" in chosen:
        models["pckh"] = OpenPoseEstimator("random", device, boxsize=openpose_boxsize, scales=openpose_scales,
                                           batch_size=openpose_batch)
    return models


def time_metric(metric: str, spec, batches: Callable[[], Iterator], models: dict, device: torch.device) -> float:
    """Seconds to score every batch of (fake, truth, masks) with the metric as evaluate.py computes it."""
    sync(device)
    start = time.perf_counter()
    moments = RunningMoments()  # FID: the generated set's features and moments; the distance is timed apart
    for fake, truth, masks in batches():
        if metric == "ssim":
            spec(fake, truth).cpu()
        elif metric == "mssim":
            spec(fake, truth, masks).cpu()
        elif metric == "lpips":
            models["lpips"](fake, truth).cpu()
        elif metric == "mlpips":
            models["lpips"](fake, truth, masks).cpu()
        elif metric == "fid":
            moments.update(models["fid"](fake))
        elif metric == "pckh":
            models["pckh"](fake.permute(0, 2, 3, 1).cpu().numpy())  # (B,H,W,3) uint8 RGB -> keypoints
    sync(device)
    return time.perf_counter() - start


def time_metrics(protocol: Protocol, inputs: MetricInputs, models: dict, counts: dict[str, int],
                 batch_sizes: dict[str, int], device: torch.device) -> dict[str, float]:
    """Seconds for counts[m] pairs of each metric m, in batches of batch_sizes[m], after one warm-up batch each
    (allocator, kernels, cudnn's choices)."""
    for m in counts:
        warm = min(batch_sizes[m] if m == "pckh" else 2, len(inputs.fake))
        time_metric(m, protocol.spec(m), lambda m=m, warm=warm: inputs.batches(warm, warm), models, device)
    return {m: time_metric(m, protocol.spec(m), lambda m=m: inputs.batches(counts[m], batch_sizes[m]), models,
                           device) for m in counts}


def time_distance(dim: int = 2048, method: str = "sqrtm", seed: int = 0) -> float:
    """Seconds for one Frechet distance between two well-conditioned dim x dim covariances (a fixed cost: it does
    not grow with the number of images)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, dim, dim + 16))
    sigma1, sigma2 = a @ a.T / dim, b @ b.T / dim  # full rank, as with thousands of images
    start = time.perf_counter()
    frechet_distance(np.zeros(dim), sigma1, np.full(dim, 0.1), sigma2, method=method)
    return time.perf_counter() - start


def skimage_kwargs(spec: SSIMSpec) -> dict:
    """The structural_similarity arguments of a protocol's SSIM (data_range filled in per image)."""
    if spec.window == "uniform":
        return {"win_size": 7, "use_sample_covariance": spec.sample_covariance}
    return {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": spec.sample_covariance}


def time_skimage_loop(spec: SSIMSpec, inputs: MetricInputs, n: int) -> float:
    """Seconds per pair of the published scripts' loop: skimage's structural_similarity, one pair at a time, with
    the protocol's SSIM arguments, on the images as the protocol prepares them (padded, quantised)."""
    a, b = (t.permute(0, 2, 3, 1).cpu().numpy() for t in spec.prepare(inputs.fake[:n], inputs.truth[:n]))  # (n,H,W,3)
    start = time.perf_counter()
    for i in range(n):
        rng = float(a[i].max()) - float(a[i].min()) if spec.data_range == "generated" else spec.data_range
        structural_similarity(b[i], a[i], channel_axis=-1, data_range=rng, **skimage_kwargs(spec))
    return (time.perf_counter() - start) / n
