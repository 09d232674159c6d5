"""Time every metric of one evaluation protocol over N pairs, as evaluate.py computes them.

    python scripts/benchmark_metrics.py --protocol release                  # 8,570 pairs at 256x176 (DeepFashion)
    python scripts/benchmark_metrics.py --protocol patn --pairs 12000 --size 128x64 --metrics ssim,mssim
    python scripts/benchmark_metrics.py --protocol clean --measure 8570 --threads 2  # time every pair, no estimate
    python scripts/benchmark_metrics.py --metrics pckh --openpose-images 2 --openpose-batch 1 --threads 1

The images are synthetic but natural-looking (smooth gradients, hard-edged blocks, mild noise; the generated one
a shifted, noised copy), the masks come from plausible random poses, and FID / LPIPS run *randomly initialised*
Inception / AlexNet trunks (labelled so below): a network costs the same whatever its weights. A pool of --pool
distinct pairs is cycled, in batches of --batch-size. Each metric is timed on the first --measure pairs; when that
is fewer than --pairs the time is extrapolated per pair to --pairs and the output says "extrapolated". FID's row
covers the generated set's features and moments; one 2048-d Frechet distance is timed apart (a fixed cost); the
real set's statistics are cached by evaluate.py and cost the same per image as the generated set. The skimage
loop that the published scripts run is timed on --skimage-pairs pairs (at most --pool) with the protocol's SSIM
arguments, on the images as the protocol prepares them (padded, quantised), for comparison. Image decoding is not
included.

PCKh is timed only with --openpose-images N (its estimator takes tens of seconds per image on a CPU): the built-in
OpenPose (metrics/openpose.py, PATN's 4 scales at box size 368, network and grouping) on N generated images,
--openpose-batch at a time, after one warm-up batch, extrapolated per image to --pairs. Its network has random
weights: the cost is that of the real ones (same layers and shapes; the grouping's cost depends on the peaks
found, and random maps give few, so real images may add a little).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.metrics import structural_similarity

from data.pose import pose_mask
from metrics.fid import InceptionFeatures, RunningMoments, frechet_distance
from metrics.lpips import LPIPSMetric
from metrics.openpose import OpenPoseEstimator
from metrics.protocols import PROTOCOLS, SSIMSpec, get_protocol

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


def skimage_kwargs(spec: SSIMSpec) -> dict:
    """The structural_similarity arguments of a protocol's SSIM (data_range filled in per image)."""
    if spec.window == "uniform":
        return {"win_size": 7, "use_sample_covariance": spec.sample_covariance}
    return {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": spec.sample_covariance}


def time_metric(metric: str, spec, batches, models: dict, device: torch.device) -> float:
    """Seconds to score every batch of (fake, truth, masks) with the metric as evaluate.py computes it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
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
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_distance(dim: int = 2048, method: str = "sqrtm", seed: int = 0) -> float:
    """Seconds for one Frechet distance between two well-conditioned dim x dim covariances (a fixed cost: it does
    not grow with the number of images)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, dim, dim + 16))
    sigma1, sigma2 = a @ a.T / dim, b @ b.T / dim  # full rank, as with thousands of images
    start = time.perf_counter()
    frechet_distance(np.zeros(dim), sigma1, np.full(dim, 0.1), sigma2, method=method)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=PROTOCOLS, default="release")
    p.add_argument("--metrics", default=None, help=f"comma list of {','.join(TIMED)} (default: all the protocol has)")
    p.add_argument("--pairs", type=int, default=8570, help="pairs the figures are given for")
    p.add_argument("--measure", type=int, default=256, help="pairs actually timed per metric (extrapolated)")
    p.add_argument("--skimage-pairs", type=int, default=50, help="pairs timed with the skimage loop")
    p.add_argument("--size", default="256x176", help="HxW")
    p.add_argument("--pool", type=int, default=64, help="distinct image pairs generated and cycled")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--fid-method", choices=("sqrtm", "eigh"), default="sqrtm", help="as evaluate.py --fid-method")
    p.add_argument("--openpose-images", type=int, default=0, help="images to time PCKh's OpenPose on (0: skip)")
    p.add_argument("--openpose-batch", type=int, default=2, help="images per OpenPose network call")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    protocol = get_protocol(args.protocol, (h, w))
    offered = [m for m in TIMED if getattr(protocol, m) is not None]
    if args.metrics is None:
        chosen = [m for m in offered if m != "pckh" or args.openpose_images > 0]
        if "pckh" in offered and "pckh" not in chosen:
            print("note: PCKh not timed (its OpenPose takes tens of seconds per image on a CPU): --openpose-images N")
    else:
        chosen = [m.strip() for m in args.metrics.split(",")]
    unknown = [m for m in chosen if m not in offered]
    if unknown:
        p.error(f"--metrics: protocol {args.protocol} has {','.join(offered)}, not {','.join(unknown)}")
    if "pckh" in chosen and args.openpose_images < 1:
        p.error("--metrics pckh needs --openpose-images N (N >= 1)")
    truth, fake = natural_pairs(args.pool, h, w)
    t_truth = torch.from_numpy(truth).permute(0, 3, 1, 2).contiguous().to(device)  # (P,3,H,W)
    t_fake = torch.from_numpy(fake).permute(0, 3, 1, 2).contiguous().to(device)
    t_masks = torch.from_numpy(random_masks(args.pool, h, w)).to(device)  # (P,H,W)
    counts = {m: min(args.openpose_images if m == "pckh" else args.measure, args.pairs) for m in chosen}

    def batches_of(metric: str):
        count, batch = counts[metric], args.openpose_batch if metric == "pckh" else args.batch_size
        for s in range(0, count, batch):
            idx = torch.arange(s, min(s + batch, count), device=device) % args.pool
            yield t_fake[idx], t_truth[idx], t_masks[idx]

    models = {}
    if "lpips" in chosen or "mlpips" in chosen:
        models["lpips"] = LPIPSMetric("random").to(device)
    if "fid" in chosen:
        models["fid"] = InceptionFeatures(protocol.fid.network, "random",
                                          input_transform=protocol.fid.input_transform).to(device)
    if "pckh" in chosen:
        models["pckh"] = OpenPoseEstimator("random", device, batch_size=args.openpose_batch)
    for m in chosen:  # warm-up: allocator, kernels
        warm = [t[: min(args.openpose_batch if m == "pckh" else 2, args.pool)] for t in (t_fake, t_truth, t_masks)]
        time_metric(m, protocol.spec(m), lambda warm=warm: iter([warm]), models, device)

    print(f"protocol {protocol.name} ({protocol.reproduces}), {args.pairs} pairs at {h}x{w}, {device}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}; FID/LPIPS/OpenPose with RANDOM-INIT networks")
    print("| metric | pairs timed | seconds | ms/pair | seconds for the pairs |")
    print("|---|---:|---:|---:|---|")
    results, total = {}, 0.0
    for m in chosen:
        seconds = time_metric(m, protocol.spec(m), lambda m=m: batches_of(m), models, device)
        count = counts[m]
        full = seconds / count * args.pairs
        total += full
        how = "measured" if count == args.pairs else f"extrapolated from {count}"
        print(f"| {m} | {count} | {seconds:.2f} | {seconds / count * 1e3:.2f} | {full:.1f} ({how}) |")
        results[m] = {"timed_pairs": count, "seconds": seconds, "seconds_for_pairs": full}
    if "fid" in chosen:
        distance = time_distance(method=args.fid_method)
        total += distance
        print(f"| fid: one Frechet distance, 2048-d, {args.fid_method} | - | {distance:.2f} | - | {distance:.1f} "
              f"(once) |")
        results["fid_distance_seconds"] = distance
    extrapolated = any(c < args.pairs for c in counts.values())
    print(f"all {len(chosen)} metrics: {total:.1f} s for {args.pairs} pairs{' (extrapolated)' if extrapolated else ''}")

    if "ssim" in chosen and args.skimage_pairs > 0:
        spec = protocol.ssim
        n = min(args.skimage_pairs, args.pool)
        a, b = (t.permute(0, 2, 3, 1).cpu().numpy() for t in spec.prepare(t_fake[:n], t_truth[:n]))  # (n,H,W,3)
        start = time.perf_counter()
        for i in range(n):
            rng = float(a[i].max()) - float(a[i].min()) if spec.data_range == "generated" else spec.data_range
            structural_similarity(b[i], a[i], channel_axis=-1, data_range=rng, **skimage_kwargs(spec))
        loop = (time.perf_counter() - start) / n
        print(f"skimage loop with the protocol's SSIM arguments, single process: {loop * 1e3:.2f} ms/pair on {n} "
              f"pairs, {loop * args.pairs:.1f} s for {args.pairs} (extrapolated)")
        results["skimage_ssim_ms_per_pair"] = loop * 1e3
    return results


if __name__ == "__main__":
    main()
