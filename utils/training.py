"""The pieces of the training loop that are not a stage's own: resuming, the wall-clock budget, the non-finite
checks, device-side logging windows, checkpoint writing, mixed precision and wrapping for DDP / compile."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from utils import checkpoint as ck
from utils.config import Config, TrainConfig
from utils.distributed import DistInfo, all_reduce_mean
from utils.run import RunLogger, latest_checkpoint


def resolve_resume(args: argparse.Namespace, cfg: Config, name: str) -> Path | None:
    """The checkpoint a run continues from: --resume auto | CHECKPOINT | RUN_FOLDER, or a fixed --run-dir's
    newest (re-running a command continues it); None starts anew."""
    if args.resume is None or args.resume == "auto":
        if args.run_dir is not None:
            ckpts = ck.step_checkpoints(Path(args.run_dir) / "checkpoints")
            return ckpts[-1] if ckpts else None
        if args.resume is None:
            return None
        found = latest_checkpoint(cfg.train.run_dir, name)
        if found is None:
            print(f"--resume auto: no checkpoint of a run named '{name}' under {cfg.train.run_dir}/; starting anew")
        return found
    path = Path(args.resume)
    if path.is_dir():
        ckpts = ck.step_checkpoints(path / "checkpoints")
        if not ckpts:
            raise ck.CheckpointError(f"--resume {path}: no checkpoints in {path / 'checkpoints'}")
        return ckpts[-1]
    return path


def autocast(cfg: Config, device: torch.device):
    """The configured mixed precision (train.amp), or nothing."""
    if cfg.train.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_adam(params: Any, lr: float, betas: tuple[float, float], device: torch.device,
              weight_decay: float = 0.0) -> torch.optim.Adam:
    fused = device.type == "cuda"  # one kernel per parameter group instead of one per tensor
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


def wrap(module: nn.Module, info: DistInfo, cfg: Config) -> nn.Module:
    """channels_last, DDP when distributed and torch.compile when configured. Returns the runner; the plain
    module stays what checkpoints save."""
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    runner = module
    if info.enabled:
        runner = nn.parallel.DistributedDataParallel(
            module, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    if cfg.train.compile:
        runner = torch.compile(runner)
    return runner


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def linear_decay(progress: float, decay_from: float) -> float:
    """The learning-rate factor of lr_schedule=linear at run progress p in [0, 1]: 1 until decay_from, then
    linearly to 0 at p = 1:  min(1, (1 - p) / (1 - decay_from)), clipped at 0."""
    return max(0.0, min(1.0, (1.0 - progress) / (1.0 - decay_from)))


def run_progress(step: int, max_steps: int, minutes: float, max_minutes: float | None) -> float:
    """How far a run is: step / max_steps, or under a time budget minutes / max_minutes if that is further."""
    progress = step / max_steps
    return max(progress, minutes / max_minutes) if max_minutes is not None else progress


def elapsed_minutes(start_time: float, info: DistInfo) -> float:
    """Minutes since start_time; under DDP rank 0's clock (a broadcast), so that every rank sets the same
    time-based learning rate and the replicas stay identical."""
    minutes = (time.time() - start_time) / 60
    if not info.enabled:
        return minutes
    value = torch.tensor([minutes], dtype=torch.float64, device=info.device)
    dist.broadcast(value, src=0)
    return float(value)


def set_lr_factor(optimizers: Iterable[torch.optim.Optimizer], factor: float) -> None:
    """Every param group's lr = its initial lr x factor (the initial lr is kept in the group, so it travels with
    the optimizer's state dict across a resume)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def budget_spent(start_time: float, max_minutes: float | None, info: DistInfo) -> bool:
    """Whether the wall-clock budget is spent, on rank 0's clock under DDP (elapsed_minutes), so every rank stops
    at the same step. A single process decides on the host: no device round trip in the step."""
    return max_minutes is not None and elapsed_minutes(start_time, info) >= max_minutes


def all_finite(terms: dict[str, torch.Tensor]) -> list[bool]:
    """Per term: finite here and, under DDP, on every rank (so that all ranks take the same branch)."""
    finite = torch.isfinite(torch.stack([v.detach().float() for v in terms.values()])).float()  # (T,)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return [bool(ok) for ok in finite.tolist()]


def nonfinite_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    """The names of the non-finite terms (all ranks agree); reading them waits for the device."""
    return [k for k, ok in zip(terms, all_finite(terms)) if not ok]


class BufferSnapshot:
    """The buffers (batch-norm running statistics) of some modules, to put back when a step is skipped: a
    training-mode forward updates them before the losses can be checked (train.nonfinite=skip)."""

    def __init__(self, modules: list[nn.Module]):
        self.saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: list[torch.Tensor], grad_clip: float | None) -> None:
    """backward, optional gradient clipping (on unscaled gradients), and the (scaled) optimizer step."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)


class TermWindow:
    """The loss terms of the steps since the last log, summed on the device: the loop reads them (one wait for
    the device, one all-reduce) only at log steps, and checks them for NaN/inf at its sync points."""

    def __init__(self, step: int):
        self.checked = step  # the steps up to here had finite losses (train.nonfinite=stop)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.start = 0, time.time()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.steps += 1

    def stop_if_nonfinite(self, step: int, t: TrainConfig, done: bool, log: RunLogger) -> None:
        """train.nonfinite=stop: the steps never wait for the device to check their losses. A NaN/inf carries
        into the sums, read here at the loop's sync points (log, validation, checkpoint, the end) before anything
        is written; the run stops naming the terms and the steps since the last check."""
        if t.nonfinite != "stop" or not self.sums or not (step % t.log_every == 0 or step % t.val_every == 0
                                                           or step % t.ckpt_every == 0 or done):
            return
        bad = nonfinite_terms(self.sums)
        if not bad:
            self.checked = step
            return
        steps = f"at step {step}" if self.checked + 1 == step else f"in steps {self.checked + 1}-{step}"
        message = f"non-finite loss {steps}: {', '.join(bad)}"
        log.text(message + " (run stopped; the last checkpoint is intact)")
        raise FloatingPointError(message + ". The last good checkpoint is untouched; set train.nonfinite=skip to "
                                 "skip such steps instead, or lower the learning rate.")

    def log(self, step: int, batch_size: int, log: RunLogger, bar: tqdm, postfix: str = "",
            extra: dict[str, float] | None = None) -> None:
        """Log the window's mean terms (rank-averaged), images/s and `extra`; show the terms whose names start
        with `postfix` on the progress bar; start the next window."""
        if self.steps == 0:  # every step of the window was skipped
            return
        values = {k: float(all_reduce_mean(v / self.steps)) for k, v in self.sums.items()}
        values["perf/images_per_s"] = self.steps * batch_size / max(time.time() - self.start, 1e-9)
        values.update(extra or {})
        log.scalars(step, values)
        log.text(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in values.items() if k.startswith(postfix)})
        self.reset()


def write_checkpoint(run: Path, cfg: Config, position: dict[str, int], reason: str, state: dict,
                     log: RunLogger) -> Path:
    """Atomically write step-<N>.pt: the loop position (step, epoch, batch_in_epoch), the config, the RNG
    states and `state` (models, optimizers, ...); keep the newest train.keep_checkpoints."""
    step = position["step"]
    path = ck.checkpoint_path(run / "checkpoints", step)
    ck.save_checkpoint(path, cfg, **{**position, **state}, rng=ck.rng_state(), reason=reason)
    ck.prune(run / "checkpoints", cfg.train.keep_checkpoints)
    log.text(f"checkpoint at step {step} ({reason})")
    return path
