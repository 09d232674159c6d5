"""Train SPGNet: SPATN (stage 1) and the SPGNet generator (stage 2) jointly, or the flow module (stage 0).

    python train.py --config configs/synthetic.yaml                       # joint training
    python train.py --config configs/synthetic.yaml train.stage=flow      # stage 0: the flow module
    python train.py --config configs/deepfashion.yaml --resume auto       # continue the newest run
    python train.py --config configs/deepfashion.yaml --dry-run           # check all, print, touch nothing
    torchrun --nproc_per_node=4 train.py --config configs/deepfashion.yaml

One step of the joint stage (paper sec. 3.3, 4.1):
    SPATN(source parsing, source pose, target pose)                  -> target parsing logits   (CE, x10)
    SPGNet(source image, target pose, source/target parsing, flow)    -> target image   (L1 x1, VGG x1, GAN x0.01)
SPGNet takes the ground-truth target parsing while training and SPATN's prediction at test time; the flow
module is frozen. This file reads top to bottom: main (everything that can refuse the run does so before the run
folder is touched; --dry-run stops there), then the one loop both stages share (batch, learning rate, step, NaN
policy, logging, validation, checkpoint, budget). Each stage's networks, optimizers and step are in
training/stages.py; the loop's parts in training/loop.py and training/nonfinite.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from tqdm import tqdm

from data.loaders import build_loader, training_loader
from data.visual import comparison_grid, parsing_picture, pose_picture, to_uint8
from training.loop import (
    Budget,
    Due,
    EpochBatches,
    StopRequest,
    TermWindow,
    gather_rng_states,
    linear_decay,
    resolve_resume,
    restore_rng_states,
    seed_rank,
    set_lr_factor,
    write_checkpoint,
)
from training.nonfinite import NonFinitePolicy
from training.stages import Stage, build_stage
from training.steps import precision, to_device
from utils import checkpoint as ck
from utils.cli import SIGNAL_NAMES, Interrupted, run_main
from utils.config import (
    Config,
    ConfigError,
    differences_from_defaults,
    load_config,
    resume_mismatches,
    save_config,
)
from utils.distributed import DistInfo, check_same_on_every_rank, cleanup, setup
from utils.host_memory import keep_freed_memory
from utils.io import ensure_writable_folder, write_image
from utils.run import RunLock, RunLogger, new_run_folder

# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file in configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.batch_size=8")
    p.add_argument("--resume", default=None, help="'auto' (newest run of this name), a checkpoint or a run folder")
    p.add_argument("--run-dir", default=None, help="use exactly this run folder instead of runs/<NNNNN>-<name>")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available); under "
                   "torchrun each process takes the GPU of its LOCAL_RANK")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything a run checks (config, checkpoint, networks, every data file), print the "
                        "settings that differ from the defaults, the network sizes and the pairs, and exit "
                        "without touching a run folder")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = setup(args.device, cfg.train.dist_timeout_minutes)
    if info.device.type == "cpu":
        keep_freed_memory()  # activations reuse freed heap memory instead of being page-faulted in every step
    name = cfg.train.name or Path(args.config).stem
    resume_from = resolve_resume(args, cfg, name)
    check_same_on_every_rank(None if resume_from is None else str(resume_from), "--resume", info)

    # ---- everything that can refuse the run does so before the run folder is touched
    ckpt = None if resume_from is None else load_resumed(resume_from, cfg)
    torch.manual_seed(cfg.train.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    stage = build_stage(cfg, info, ckpt)
    train_set, test_set = stage.datasets()
    if len(train_set) < cfg.train.batch_size:
        raise ConfigError(f"key 'train.batch_size' = {cfg.train.batch_size} exceeds the {len(train_set)} training "
                          "pairs")
    if args.dry_run:
        if info.is_main:
            print_dry_run(args.config, cfg, stage, train_set, test_set, resume_from)
        cleanup()
        return

    # ---- one run per folder (rank 0 holds the lock; the other ranks write nothing), then the folder is checked
    run = run_folder(args, cfg, info, name, resume_from)
    with RunLock(run) if info.is_main else nullcontext():
        if info.is_main:
            for sub in ("checkpoints", "images"):
                ensure_writable_folder(run / sub, "run folder")
            removed = ck.remove_orphans(run / "checkpoints")
            if removed:
                print(f"note: removed {removed} temporary checkpoint files left by an interrupted save")
            save_config(cfg, run / "config.yaml")
        log = RunLogger(run, enabled=info.is_main)
        log.text(f"{'resuming from ' + str(resume_from) if ckpt else 'new run'}: {' '.join(sys.argv)}")
        log.text(f"precision: {precision_line(cfg, info.device)}")
        try:
            train(cfg, info, run, log, stage, train_set, test_set, ckpt)
        finally:
            log.close()
            cleanup()


def load_resumed(path: Path, cfg: Config) -> dict:
    """The checkpoint a run resumes from, refused unless its networks and its stage are this run's."""
    ckpt = ck.load_checkpoint(path)
    ck.check_compatible(ckpt, cfg, path)
    saved_stage = ckpt["config"]["train"]["stage"]
    if saved_stage != cfg.train.stage:
        raise ck.CheckpointError(f"{path} is a train.stage={saved_stage} checkpoint; this run has "
                                 f"train.stage={cfg.train.stage}. Resume it with train.stage={saved_stage}, or "
                                 "start a new run (another --run-dir or train.name)")
    changed = resume_mismatches(ckpt["config"], cfg)
    if changed:
        raise ConfigError(f"resuming from {path} with other settings than it was trained with ({'; '.join(changed)}; "
                          "checkpoint -> now): a resumed run continues with its checkpoint's optimizer state and data "
                          "order, so these keys keep their values; drop the overrides, or start a new run")
    return ckpt


def run_folder(args: argparse.Namespace, cfg: Config, info: DistInfo, name: str, resume_from: Path | None) -> Path:
    """The run's folder, created: a resumed run continues in its own, --run-dir names one, else rank 0 numbers a
    new runs/<NNNNN>-<name> and every rank learns its name."""
    if resume_from is not None:
        run = resume_from.parent.parent
    elif args.run_dir is not None:
        run = Path(args.run_dir)
    else:
        run = new_run_folder(cfg.train.run_dir, name) if info.is_main else None
    if info.enabled:  # every rank needs the folder name rank 0 chose
        box = [str(run) if run is not None else None]
        dist.broadcast_object_list(box, src=0)
        run = Path(box[0])
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
    return run


def precision_line(cfg: Config, device: torch.device) -> str:
    """'bf16 (train.amp=auto: cpu computes bf16 natively)': the precision the run's forwards take, and why."""
    amp = precision(cfg, device)
    if cfg.train.amp != "auto":
        return amp
    why = "computes bf16 natively" if amp == "bf16" else "has no native bf16, so float32"
    return f"{amp} (train.amp=auto: {device.type} {why})"


def network_sizes(stage: Stage) -> str:
    """'spatn: 1,234,567, ..., flow: 45,678 (frozen)': the parameter counts of the stage's networks."""
    def count(net: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in net.parameters()):,}"
    return ", ".join([f"{k}: {count(v)}" for k, v in stage.nets.items()]
                     + [f"{k}: {count(v)} (frozen)" for k, v in stage.frozen.items()])


def print_dry_run(config: str, cfg: Config, stage: Stage, train_set: Dataset, test_set: Dataset,
                  resume_from: Path | None) -> None:
    """What --dry-run checked: the settings that differ from the defaults, the networks and the data."""
    changed = differences_from_defaults(cfg)
    print(f"{config}: {len(changed)} settings differ from the defaults")
    for key, default, value in changed:
        print(f"  {key}: {default!r} -> {value!r}")
    for warning in stage.warnings:
        print(f"WARNING: {warning}")
    print(f"stage {stage.name} on {stage.device}; {'resuming from ' + str(resume_from) if resume_from else 'new run'}")
    print(f"precision: {precision_line(cfg, stage.device)}")
    print(f"parameters: {network_sizes(stage)}")
    print(f"data: {len(train_set)} training pairs ({len(train_set) // cfg.train.batch_size} steps per epoch), "
          f"{len(test_set)} test pairs; every file of every pair is present")
    print("dry run: nothing written")


# --------------------------------------------------------------------------------------------- loop


def train(cfg: Config, info: DistInfo, run: Path, log: RunLogger, stage: Stage, train_set: Dataset,
          test_set: Dataset, ckpt: dict | None) -> None:
    """The loop both stages share: fetch a batch, set the learning rate, step, apply the non-finite policy, log,
    validate, checkpoint, and stop at the step or wall-clock budget, or on SIGTERM / Ctrl-C (StopRequest)."""
    device, t = info.device, cfg.train
    local_batch, pin = t.batch_size // info.world_size, device.type == "cuda"
    loader, sampler = training_loader(cfg, train_set, info.rank, info.world_size, pin_memory=pin)
    val_set = torch.utils.data.Subset(test_set, range(min(cfg.data.val_pairs, len(test_set))))
    val_loader = build_loader(val_set, max(local_batch, 4), 0, pin_memory=pin)
    step, epoch, batch_in_epoch = 0, 0, 0
    if ckpt is not None:  # each rank continues its own random stream
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        note = restore_rng_states(ckpt["rng"], info, t.seed)
        if note:
            log.text(f"note: {note}")
    else:
        seed_rank(t.seed, info.rank)
    batches = EpochBatches(loader, sampler, epoch, batch_in_epoch)
    for warning in stage.warnings:
        log.text(f"WARNING: {warning}")
    log.text(f"run folder {run}; stage {stage.name}; {len(train_set)} training pairs, {sampler.batches_per_epoch} "
             f"steps/epoch; parameters: {network_sizes(stage)}")

    budget = Budget(t.max_steps, t.max_minutes, info, step)
    policy = NonFinitePolicy(t.nonfinite, t.max_consecutive_skips, stage.nets.values(), step, log)
    window = TermWindow()
    bar = tqdm(total=t.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True, desc=stage.name)
    done, stop = step >= t.max_steps, 0
    stream = iter(batches)
    with StopRequest(info) as stop_request:
        while not done:
            batch = to_device(next(stream), device, t.channels_last)
            if t.lr_schedule == "linear":
                set_lr_factor(stage.optimizers.values(), linear_decay(budget.progress(step), t.lr_decay_from))
            policy.begin_step()
            terms = stage.step(batch, step, policy.allow)
            step += 1
            bar.update(1)
            if policy.end_step(step):  # a skipped step was undone: its terms are not logged
                window.add(terms)

            out_of_time = budget.out_of_time(step)
            done = step >= t.max_steps or out_of_time
            due = Due.at(step, t, done)
            stop = 0 if done else stop_request.agreed(due.sync)  # a signal: checkpoint this step, then stop
            if stop:  # validated when due anyway (the plateau schedule steps on it, as in an uninterrupted run)
                done, due = True, Due(log=due.log, validate=due.validate, checkpoint=True)
            if due.sync:
                budget.agree(step)  # under DDP: rank 0's clock, once per sync point
                policy.check(window.sums, step)  # train.nonfinite=stop: nothing is logged or written after a NaN/inf
            if due.log:
                window.log(step, t.batch_size, log, bar, postfix=stage.bar_terms, extra=stage.log_extra())
            if due.validate:
                validate(stage, val_loader, step, run, log, info)
            if due.checkpoint:
                reason = (SIGNAL_NAMES[stop] if stop else
                          "max_minutes reached" if out_of_time and step < t.max_steps else "periodic")
                rng = gather_rng_states(info)  # every rank's: each resumes its own
                if info.is_main:
                    position = {"step": step, "epoch": batches.epoch, "batch_in_epoch": batches.batch_in_epoch}
                    write_checkpoint(run, cfg, position, reason, stage.state(), rng, log)
    bar.close()
    if stop:
        log.text(f"stopped at step {step}: {SIGNAL_NAMES[stop]}")
        raise Interrupted(f"the checkpoint of step {step} is written; the same command with --resume auto continues "
                          "the run exactly", signum=stop)
    log.text(f"finished at step {step} after {(time.time() - budget.start) / 60:.1f} min")


def validate(stage: Stage, loader: torch.utils.data.DataLoader, step: int, run: Path, log: RunLogger,
             info: DistInfo) -> None:
    """Rank 0 validates, logs and writes the picture of the first pairs; every rank steps the plateau schedule
    with its result. The validation's random draws (the release generator's noise) come from a fork of the
    RNGs: the training stream goes on as if there had been none, so a run that validates at its last step
    resumes exactly as one that did not."""
    val = torch.zeros(1, device=info.device)
    if info.is_main:
        with torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else []):
            values, sample = stage.validate(loader)
        log.scalars(step, values)
        log.text(f"validation at step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in values.items()))
        val[0] = values.get("val/recon", 0.0)
        if sample is not None:
            picture = grid_picture(sample)
            write_image(run / "images" / f"step-{step:08d}.png", picture)
            log.image(step, "val/source|pose|parsing|generated|target", picture.transpose(2, 0, 1))
    if info.enabled:
        dist.broadcast(val, src=0)
    stage.on_validation(float(val))


def grid_picture(sample: dict, rows: int = 4) -> np.ndarray:
    """source | target pose | predicted parsing | generated | ground truth, for the first `rows` pairs."""
    b, out = sample["batch"], sample["rendered"]
    cols = [to_uint8(b["src_image"][:rows]), pose_picture(b["tgt_pose"][:rows]), parsing_picture(out.logits[:rows]),
            to_uint8(out.image[:rows]), to_uint8(b["tgt_image"][:rows])]
    return comparison_grid(cols)


if __name__ == "__main__":
    run_main(main)
