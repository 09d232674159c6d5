"""Pose encoding (data.pose.encode_pose): one pose at a time on one CPU thread (what a loader worker does),
batched on the CPU, batched on the device."""

from __future__ import annotations

import torch

from benchmarks.timing import time_calls
from data.fake_batch import random_keypoints
from data.pose import encode_pose
from utils.config import Config


def bench_pose(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """encode_pose throughput: per pose on one thread (a loader worker), batched on the CPU, on the device."""
    h, w = cfg.data.image_size
    p = cfg.pose
    kp = random_keypoints(batch_size, h, w, torch.Generator().manual_seed(2))

    def encode(keypoints: torch.Tensor) -> torch.Tensor:
        return encode_pose(keypoints, h, w, p.heatmap, p.sigma, p.radius, p.kappa, p.limbs)

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = time_calls(lambda: [encode(k) for k in kp], warmup, iters, cpu)
    finally:
        torch.set_num_threads(threads)
    batched = time_calls(lambda: encode(kp), warmup, iters, cpu)
    kp_dev = kp.to(device)
    on_device = time_calls(lambda: encode(kp_dev), warmup, iters, device)
    return {
        "image_size": [h, w], "batch_size": batch_size,
        "cpu_single_thread_per_pose": {**single, "poses_per_s": batch_size / single["median_s"]},
        "cpu_batched": {**batched, "threads": threads, "poses_per_s": batch_size / batched["median_s"]},
        "device_batched": {**on_device, "device": str(device), "poses_per_s": batch_size / on_device["median_s"]},
    }
