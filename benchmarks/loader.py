"""The data side: the training DataLoader alone (samples/s in steady state), and the joint step fed by it as
train.py feeds it, with the time the loop spends blocked waiting for the next batch."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import torch

from benchmarks.inputs import first_adversarial_step, joint_stage, take_every_update
from benchmarks.timing import peak_memory, reset_peak_memory, sync
from data.loaders import build_dataset, build_loader
from training.stages import JointStage
from training.steps import to_device
from utils.config import Config
from utils.distributed import ShardedEpochSampler

PREFETCH_FACTOR = 4  # data.loaders.build_loader: batches each worker prepares ahead


def endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def bench_loader(cfg: Config, batch_size: int, workers: int, batches: int) -> dict:
    """The training DataLoader alone (augmentation as configured for training), samples/s in steady state.

    The first `workers` batches are taken untimed: they were prepared while the workers started, and would
    flatter the rate. Then `batches` batches are timed back to back, as fast as the loader delivers them.
    """
    dataset = build_dataset(cfg, "train", with_flow=cfg.model.flow.source == "files", augment=True)
    loader = build_loader(dataset, batch_size, workers, shuffle=True, drop_last=True)
    batches = max(batches, 4 * workers)
    start = time.perf_counter()
    stream = endless(loader)
    next(stream)
    first = time.perf_counter() - start
    for _ in range(max(workers - 1, 0)):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    per_batch = (time.perf_counter() - start) / batches
    del stream, loader
    return {"pairs": len(dataset), "workers": workers, "batch_size": batch_size, "batches_timed": batches,
            "first_batch_s": first, "s_per_batch": per_batch, "samples_per_s": batch_size / per_batch}


def training_batches(cfg: Config, train_set: torch.utils.data.Dataset, device: torch.device) -> Iterator[dict]:
    """Batches as train.py's loop draws them: its loader settings (data.num_workers, pinned memory on CUDA, the
    seeded epoch sampler), epoch after epoch."""
    sampler = ShardedEpochSampler(len(train_set), cfg.train.batch_size, seed=cfg.train.seed)
    loader = build_loader(train_set, cfg.train.batch_size, cfg.data.num_workers, sampler=sampler,
                          pin_memory=device.type == "cuda")
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def run_steps(stage: JointStage, batches: Iterator[dict], steps: Iterator[int], n: int) -> tuple[float, float]:
    """`n` joint steps on loader batches, with no synchronisation between them (as train.py); (seconds blocked
    in the loader's next(), wall seconds from a device sync before the first to one after the last)."""
    device, channels_last = stage.device, stage.cfg.train.channels_last
    waited = 0.0
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        stage.step(to_device(batch, device, channels_last), next(steps), take_every_update)
    sync(device)
    return waited, time.perf_counter() - start


def bench_fed_step(cfg: Config, device: torch.device, warmup: int, steps: int, queue_steps: int | None = None) -> dict:
    """The joint step fed by the training loader, as train.py runs it (data.num_workers, train.batch_size).

    Three phases: `warmup` steps (the workers' start, compilation, cudnn's autotuning) timed apart; `queue_steps`
    untimed steps, by default as many as the loader's prefetch queue holds (workers x 4 batches, filled during the
    warm-up), so that the timed steps meet the loader's steady state; then `steps` timed steps. The data wait is
    measured, not estimated: the time the loop spent blocked in the loader's next() over the timed steps' wall time.
    """
    stage = joint_stage(cfg, device)
    train_set, _ = stage.datasets()
    batches = training_batches(cfg, train_set, device)
    numbers = itertools.count(first_adversarial_step(cfg))
    _, warmup_s = run_steps(stage, batches, numbers, warmup)
    queued = cfg.data.num_workers * PREFETCH_FACTOR if queue_steps is None else queue_steps
    run_steps(stage, batches, numbers, queued)
    host_reset = reset_peak_memory(device)
    waited, wall = run_steps(stage, batches, numbers, steps)
    memory = peak_memory(device, host_reset)
    batches.close()  # the loader's workers stop here, not at garbage collection
    batch_size = cfg.train.batch_size
    return {"batch_size": batch_size, "workers": cfg.data.num_workers, "pin_memory": device.type == "cuda",
            "warmup_steps": warmup, "warmup_s": warmup_s, "queue_steps": queued, "steps": steps,
            "step_s": wall / steps, "images_per_s": steps * batch_size / wall, "data_wait_s": waited,
            "data_wait_share": waited / wall, "memory": memory}
