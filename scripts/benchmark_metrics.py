"""Time batched SSIM (metrics/ssim.py) against the field's per-pair skimage loop, and check they agree.

    python scripts/benchmark_metrics.py                       # DeepFashion test set size: 8,570 pairs at 256x176
    python scripts/benchmark_metrics.py --pairs 12000 --size 128x64 --device cuda
    python scripts/benchmark_metrics.py --no-ssim --openpose-images 4 --threads 2   # PCKh's OpenPose: 4 images timed

The images are synthetic but natural-looking (smooth gradients, hard-edged blocks, mild noise); a pool of
--pool distinct pairs is cycled to reach --pairs without holding thousands of images in memory (SSIM's cost does
not depend on the content). The skimage loop (single process, as PATN's and GFLA's scripts run it) is timed on
the first --loop-pairs pairs and extrapolated per pair to --pairs; the output says so. The maximum absolute
difference is taken over those pairs.

--openpose-images N times PCKh's keypoint estimator (metrics/openpose.py, PATN's 4 scales at box size 368) on N
images of --size, --openpose-batch at a time, after one warm-up batch, and extrapolates per image to --pairs. Its
network has random weights: the cost is that of the real ones (same layers and shapes; the grouping's cost
depends on the peaks found, and random maps give few, so real images may add a little).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics.openpose import OpenPoseEstimator  # noqa: E402
from metrics.ssim import ssim  # noqa: E402


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


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=255)


def benchmark_openpose(images: int, batch: int, pairs: int, h: int, w: int, device: torch.device) -> dict:
    """Seconds per image of the built-in OpenPose (network + PATN's post-processing), extrapolated to `pairs`."""
    truth, _ = natural_pairs(min(images, 64), h, w, seed=1)
    estimator = OpenPoseEstimator("random", device, batch_size=batch)
    estimator(truth[:batch])  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for s in range(0, images, batch):
        estimator(truth[np.arange(s, min(s + batch, images)) % len(truth)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_image = (time.perf_counter() - start) / images
    print(f"OpenPose keypoints (PCKh) at {h}x{w}, PATN's scales, random weights ({device}, {torch.get_num_threads()} "
          f"threads, batch {batch}): {per_image:.2f} s/image measured on {images} images, extrapolated to "
          f"{per_image * pairs / 3600:.2f} h for {pairs}")
    return {"openpose_s_per_image": per_image, "openpose_s_extrapolated": per_image * pairs}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=8570, help="pairs to score with the batched SSIM")
    p.add_argument("--loop-pairs", type=int, default=200, help="pairs timed with the skimage loop (extrapolated)")
    p.add_argument("--size", default="256x176", help="HxW")
    p.add_argument("--pool", type=int, default=64, help="distinct image pairs generated and cycled")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-ssim", action="store_true", help="skip the SSIM timing")
    p.add_argument("--openpose-images", type=int, default=0, help="images to time PCKh's OpenPose on (0: skip)")
    p.add_argument("--openpose-batch", type=int, default=2, help="images per OpenPose network call")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    results = {}
    if args.openpose_images > 0:
        results.update(benchmark_openpose(args.openpose_images, args.openpose_batch, args.pairs, h, w, device))
    if args.no_ssim:
        return results
    truth, fake = natural_pairs(args.pool, h, w)
    t_truth = torch.from_numpy(truth).permute(0, 3, 1, 2).contiguous().to(device)  # (P,3,H,W)
    t_fake = torch.from_numpy(fake).permute(0, 3, 1, 2).contiguous().to(device)

    loop_n = min(args.loop_pairs, args.pairs)
    start = time.perf_counter()
    reference = np.array([skimage_ssim(fake[i % args.pool], truth[i % args.pool]) for i in range(loop_n)])
    loop_per_pair = (time.perf_counter() - start) / loop_n

    ssim(t_fake[:2], t_truth[:2])  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    values = np.empty(args.pairs)
    start = time.perf_counter()
    for s in range(0, args.pairs, args.batch_size):
        idx = torch.arange(s, min(s + args.batch_size, args.pairs), device=device) % args.pool
        values[s : s + len(idx)] = ssim(t_fake[idx], t_truth[idx]).cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize()
    batched = time.perf_counter() - start
    max_diff = float(np.abs(values[:loop_n] - reference).max())
    loop_total = loop_per_pair * args.pairs
    print(f"SSIM over {args.pairs} pairs at {h}x{w}:")
    print(f"  batched torch ({device}, {torch.get_num_threads()} threads, batch {args.batch_size}): "
          f"{batched:.1f} s ({batched / args.pairs * 1e3:.2f} ms/pair)")
    print(f"  skimage loop, single process: {loop_per_pair * 1e3:.2f} ms/pair measured on {loop_n} pairs, "
          f"extrapolated to {loop_total:.1f} s for {args.pairs}")
    print(f"  speed-up: {loop_total / batched:.2f}x; max |batched - skimage| over {loop_n} pairs: {max_diff:.2e}")
    return {**results, "batched_s": batched, "loop_s_extrapolated": loop_total,
            "loop_ms_per_pair": loop_per_pair * 1e3, "speedup": loop_total / batched, "max_diff": max_diff}


if __name__ == "__main__":
    main()
