"""The parts of the training loop that are not a stage's own: where a run resumes from, the batches epoch after
epoch, the step and wall-clock budget with the learning-rate schedule it drives, the sync points, the logging
window and checkpoint writing."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from training.nonfinite import refuse_nonfinite_weights
from utils import checkpoint as ck
from utils.config import Config, TrainConfig
from utils.distributed import DistInfo, ShardedEpochSampler, all_reduce_mean
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


class EpochBatches:
    """The training batches, epoch after epoch, from the position (epoch, batches taken in it) a checkpoint
    saved: the sampler's seeded permutation per epoch makes a resumed run draw the batches it would have drawn."""

    def __init__(self, loader: torch.utils.data.DataLoader, sampler: ShardedEpochSampler, epoch: int = 0,
                 batch_in_epoch: int = 0):
        self.loader, self.sampler = loader, sampler
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0


def linear_decay(progress: float, decay_from: float) -> float:
    """The learning-rate factor of lr_schedule=linear at run progress p in [0, 1]: 1 until decay_from, then
    linearly to 0 at p = 1:  min(1, (1 - p) / (1 - decay_from)), clipped at 0."""
    return max(0.0, min(1.0, (1.0 - progress) / (1.0 - decay_from)))


def run_progress(step: int, max_steps: int, minutes: float, max_minutes: float | None) -> float:
    """How far a run is: step / max_steps, or under a time budget minutes / max_minutes if that is further."""
    progress = step / max_steps
    return max(progress, minutes / max_minutes) if max_minutes is not None else progress


def set_lr_factor(optimizers: Iterable[torch.optim.Optimizer], factor: float) -> None:
    """Every param group's lr = its initial lr x factor (the initial lr is kept in the group, so it travels with
    the optimizer's state dict across a resume)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


class Budget:
    """How long a run goes: train.max_steps, and train.max_minutes of wall clock when set.

    A single process reads its clock. Under DDP every rank must take the same decisions (the time-based learning
    rate, the step it stops at), so the clock is rank 0's, read at the loop's sync points (`agree`: one
    broadcast per logging interval). Between them every rank extrapolates from the last reading at the pace
    measured so far, from the same numbers, so all agree without a message per step. Until the first sync point
    the minutes count as 0.
    """

    def __init__(self, max_steps: int, max_minutes: float | None, info: DistInfo, step: int = 0):
        self.max_steps, self.max_minutes, self.info = max_steps, max_minutes, info
        self.start, self.start_step = time.time(), step
        self.agreed = (step, 0.0, 0.0)  # under DDP: (step, rank 0's minutes then, minutes per step so far)

    def minutes(self, step: int) -> float:
        """Minutes since the start, at step `step`: this process's clock, or under DDP rank 0's, extrapolated."""
        if not self.info.enabled:
            return (time.time() - self.start) / 60
        at, minutes, pace = self.agreed
        return minutes + (step - at) * pace

    def agree(self, step: int) -> None:
        """At a sync point, under DDP with a time budget: every rank takes rank 0's clock (one broadcast)."""
        if not self.info.enabled or self.max_minutes is None:
            return
        value = torch.tensor([(time.time() - self.start) / 60], dtype=torch.float64, device=self.info.device)
        dist.broadcast(value, src=0)
        minutes = float(value)
        self.agreed = (step, minutes, minutes / (step - self.start_step) if step > self.start_step else 0.0)

    def progress(self, step: int) -> float:
        """Run progress in [0, 1] at `step` (run_progress), for lr_schedule=linear."""
        minutes = self.minutes(step) if self.max_minutes is not None else 0.0
        return run_progress(step, self.max_steps, minutes, self.max_minutes)

    def out_of_time(self, step: int) -> bool:
        return self.max_minutes is not None and self.minutes(step) >= self.max_minutes


@dataclass(frozen=True)
class Due:
    """What the loop does after step `step`. The run's last step is always validated and checkpointed."""

    log: bool
    validate: bool
    checkpoint: bool

    @classmethod
    def at(cls, step: int, t: TrainConfig, done: bool) -> Due:
        return cls(log=step % t.log_every == 0 or step == t.max_steps, validate=step % t.val_every == 0 or done,
                   checkpoint=step % t.ckpt_every == 0 or done)

    @property
    def sync(self) -> bool:
        """A sync point: the loop waits for the device here anyway, so a check of the losses costs little more."""
        return self.log or self.validate or self.checkpoint


class TermWindow:
    """The loss terms of the steps since the last log, summed on the device: the loop reads them (one wait for
    the device, one all-reduce) only at log steps; the non-finite policy checks them at the sync points."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.start = 0, time.time()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.steps += 1

    def log(self, step: int, batch_size: int, log: RunLogger, bar: tqdm, postfix: str = "",
            extra: dict[str, float] | None = None) -> None:
        """Log the window's mean terms (rank-averaged), images/s and `extra`; show the terms whose names start
        with `postfix` on the progress bar; start the next window."""
        if self.steps == 0:  # every step of the window was skipped
            return
        means = all_reduce_mean(torch.stack(list(self.sums.values())) / self.steps)  # (T,): one all-reduce
        values = dict(zip(self.sums, means.tolist()))  # one read
        values["perf/images_per_s"] = self.steps * batch_size / max(time.time() - self.start, 1e-9)
        values.update(extra or {})
        log.scalars(step, values)
        log.text(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in values.items() if k.startswith(postfix)})
        self.reset()


def seed_rank(seed: int, rank: int) -> None:
    """Seed torch's RNGs (the host's and every GPU's) for the steps of rank `rank`: its own stream (the release
    generator's noise), independent of the other ranks' and of the stream that initialised the networks."""
    torch.manual_seed(int(np.random.SeedSequence([seed % 2**64, rank]).generate_state(1, np.uint64)[0]))


def gather_rng_states(info: DistInfo) -> list[dict] | None:
    """Every rank's RNG states (utils.checkpoint.rng_state), in rank order, on rank 0; None on the other ranks.
    Every rank calls it (under DDP, a gather)."""
    state = ck.rng_state()
    if not info.enabled:
        return [state]
    states: list[dict | None] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states if info.is_main else None


def restore_rng_states(saved: list[dict] | dict, info: DistInfo, seed: int) -> str | None:
    """Each rank restores its own saved RNG states; a rank the saving run did not have starts a stream of its
    own (seed_rank). A single dict is an earlier version's checkpoint: rank 0's states. Returns a note for the
    log when the process counts differ (the ranks' random draws then differ from the saving run's)."""
    states = saved if isinstance(saved, list) else [saved]
    if info.rank < len(states):
        ck.set_rng_state(states[info.rank])
    else:
        seed_rank(seed, info.rank)
    if len(states) == info.world_size:
        return None
    return (f"the checkpoint holds the random states of {len(states)} processes, this run has {info.world_size}: "
            "the data order is kept, the random draws of the steps are not")


def write_checkpoint(run: Path, cfg: Config, position: dict[str, int], reason: str, state: dict,
                     rng: list[dict], log: RunLogger) -> Path:
    """Atomically write step-<N>.pt: the loop position (step, epoch, batch_in_epoch), the config, every rank's
    RNG states (gather_rng_states) and `state` (models, optimizers, ...); keep the newest train.keep_checkpoints.
    Non-finite weights are refused before anything is written, so the newest checkpoint is always one to resume
    from."""
    step = position["step"]
    refuse_nonfinite_weights(state["models"], step)
    path = ck.checkpoint_path(run / "checkpoints", step)
    ck.save_checkpoint(path, cfg, **{**position, **state}, rng=rng, reason=reason)
    ck.prune(run / "checkpoints", cfg.train.keep_checkpoints)
    log.text(f"checkpoint at step {step} ({reason})")
    return path
