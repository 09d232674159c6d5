"""Time every metric of one evaluation protocol over N pairs, as evaluate.py computes them.

    python scripts/benchmark_metrics.py --protocol release                  # 8,570 pairs at 256x176 (DeepFashion)
    python scripts/benchmark_metrics.py --protocol patn --pairs 12000 --size 128x64 --metrics ssim,mssim
    python scripts/benchmark_metrics.py --protocol clean --measure 8570 --threads 2  # time every pair, no estimate
    python scripts/benchmark_metrics.py --metrics pckh --openpose-images 2 --openpose-batch 1 --threads 1

Run from the repository root once `make venv` has installed the project; the measurements are benchmarks.metrics.
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

import torch

from benchmarks.metrics import TIMED, metric_inputs, metric_models, time_distance, time_metrics, time_skimage_loop
from metrics.protocols import PROTOCOLS, Protocol, get_protocol
from utils.cli import run_main


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Protocol]:
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
    args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    protocol = get_protocol(args.protocol, (args.height, args.width))
    args.chosen = chosen_metrics(p, args, protocol)
    return args, protocol


def chosen_metrics(p: argparse.ArgumentParser, args: argparse.Namespace, protocol: Protocol) -> list[str]:
    """--metrics, or every metric the protocol has (PCKh only with --openpose-images); usage errors otherwise."""
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
    return chosen


def report_metrics(args: argparse.Namespace, seconds: dict[str, float], counts: dict[str, int]) -> dict:
    """The table: per metric the pairs timed, seconds, ms/pair and the seconds for --pairs; FID's distance."""
    print("| metric | pairs timed | seconds | ms/pair | seconds for the pairs |")
    print("|---|---:|---:|---:|---|")
    results, total = {}, 0.0
    for m, spent in seconds.items():
        count = counts[m]
        full = spent / count * args.pairs
        total += full
        how = "measured" if count == args.pairs else f"extrapolated from {count}"
        print(f"| {m} | {count} | {spent:.2f} | {spent / count * 1e3:.2f} | {full:.1f} ({how}) |")
        results[m] = {"timed_pairs": count, "seconds": spent, "seconds_for_pairs": full}
    if "fid" in seconds:
        distance = time_distance(method=args.fid_method)
        total += distance
        print(f"| fid: one Frechet distance, 2048-d, {args.fid_method} | - | {distance:.2f} | - | {distance:.1f} "
              f"(once) |")
        results["fid_distance_seconds"] = distance
    extrapolated = any(c < args.pairs for c in counts.values())
    print(f"all {len(seconds)} metrics: {total:.1f} s for {args.pairs} pairs"
          f"{' (extrapolated)' if extrapolated else ''}")
    return results


def main(argv: list[str] | None = None) -> dict:
    args, protocol = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    inputs = metric_inputs(args.pool, args.height, args.width, device)
    counts = {m: min(args.openpose_images if m == "pckh" else args.measure, args.pairs) for m in args.chosen}
    batch_sizes = {m: args.openpose_batch if m == "pckh" else args.batch_size for m in args.chosen}
    models = metric_models(args.chosen, protocol, device, args.openpose_batch)
    seconds = time_metrics(protocol, inputs, models, counts, batch_sizes, device)

    print(f"protocol {protocol.name} ({protocol.reproduces}), {args.pairs} pairs at {args.height}x{args.width}, "
          f"{device}, {torch.get_num_threads()} threads, batch {args.batch_size}; FID/LPIPS/OpenPose with RANDOM-INIT "
          "networks")
    results = report_metrics(args, seconds, counts)
    if "ssim" in args.chosen and args.skimage_pairs > 0:
        n = min(args.skimage_pairs, args.pool)
        loop = time_skimage_loop(protocol.ssim, inputs, n)
        print(f"skimage loop with the protocol's SSIM arguments, single process: {loop * 1e3:.2f} ms/pair on {n} "
              f"pairs, {loop * args.pairs:.1f} s for {args.pairs} (extrapolated)")
        results["skimage_ssim_ms_per_pair"] = loop * 1e3
    return results


if __name__ == "__main__":
    run_main(main)
