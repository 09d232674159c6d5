"""The full joint training step (JointStage.step: SPATN + generator + discriminator, all losses, both optimizer
steps, adversarial term on) on one fixed device batch, as train.py's loop runs it; and a profile of one step."""

from __future__ import annotations

import itertools

import torch

from benchmarks.flops import reference_conv_rate
from benchmarks.inputs import first_adversarial_step, joint_setup, take_every_update
from benchmarks.timing import peak_memory, reset_peak_memory, sync, time_calls
from utils.config import Config


def bench_train_step(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """JointStage.step on one fixed device batch: seconds per step, images/s, peak memory, the reference rate."""
    j, batch = joint_setup(cfg, device, batch_size)
    steps = itertools.count(first_adversarial_step(cfg))
    host_reset = reset_peak_memory(device)
    stats = time_calls(lambda: j.step(dict(batch), next(steps), take_every_update), warmup, iters, device)
    memory = peak_memory(device, host_reset)
    return {"step": stats, "images_per_s": batch_size / stats["median_s"], "memory": memory,
            "reference_conv": reference_conv_rate(cfg, device, warmup=1, iters=max(iters, 3))}


def profile_step(cfg: Config, device: torch.device, batch_size: int, top: int) -> list[dict]:
    """torch.profiler over one joint step (after one warm-up step): the top ops by self time."""
    j, batch = joint_setup(cfg, device, batch_size)
    step = first_adversarial_step(cfg)
    j.step(dict(batch), step, take_every_update)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        j.step(dict(batch), step + 1, take_every_update)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000} for e in events]
