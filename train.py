"""Train SPGNet: SPATN (stage 1) and the SPGNet generator (stage 2) jointly, or the flow module (stage 0).

    python train.py --config configs/synthetic.yaml                       # joint training
    python train.py --config configs/synthetic.yaml train.stage=flow      # stage 0: the flow module
    python train.py --config configs/deepfashion.yaml --resume auto       # continue the newest run
    torchrun --nproc_per_node=4 train.py --config configs/deepfashion.yaml

One step of the joint stage (paper sec. 3.3, 4.1):
    SPATN(source parsing, source pose, target pose)                  -> target parsing logits   (CE, x10)
    SPGNet(source image, target pose, source/target parsing, flow)    -> target image   (L1 x1, VGG x1, GAN x0.01)
SPGNet takes the ground-truth target parsing while training and SPATN's prediction at test time; the flow
module is frozen. This file reads top to bottom: main (everything that can refuse the run does so before the run
folder is touched), then the one loop both stages share (step, logging, NaN policy, validation, checkpoint,
budget). Each stage's networks, optimizers and step are in training/stages.py.
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
from tqdm import tqdm

from data.loaders import build_loader
from data.visual import comparison_grid, parsing_picture, pose_picture, to_uint8
from training.stages import Stage, build_stage, snapshot
from utils import checkpoint as ck
from utils.cli import run_main
from utils.config import Config, ConfigError, load_config, save_config
from utils.distributed import DistInfo, ShardedEpochSampler, cleanup, setup
from utils.host_memory import keep_freed_memory
from utils.io import ensure_writable_folder, write_image
from utils.run import RunLock, RunLogger, new_run_folder
from utils.training import (
    TermWindow,
    budget_spent,
    elapsed_minutes,
    linear_decay,
    nonfinite_terms,
    resolve_resume,
    run_progress,
    set_lr_factor,
    to_device,
    write_checkpoint,
)

# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file in configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.batch_size=8")
    p.add_argument("--resume", default=None, help="'auto' (newest run of this name), a checkpoint or a run folder")
    p.add_argument("--run-dir", default=None, help="use exactly this run folder instead of runs/<NNNNN>-<name>")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = setup(args.device)
    if info.device.type == "cpu":
        keep_freed_memory()  # activations reuse freed heap memory instead of being page-faulted in every step
    name = cfg.train.name or Path(args.config).stem
    resume_from = resolve_resume(args, cfg, name)

    # ---- everything that can refuse the run does so before the run folder is touched
    ckpt = None
    if resume_from is not None:
        ckpt = ck.load_checkpoint(resume_from)
        ck.check_compatible(ckpt, cfg, resume_from)
        saved_stage = ckpt["config"]["train"]["stage"]
        if saved_stage != cfg.train.stage:
            raise ck.CheckpointError(f"{resume_from} is a train.stage={saved_stage} checkpoint; this run has "
                                     f"train.stage={cfg.train.stage}. Resume it with train.stage={saved_stage}, or "
                                     "start a new run (another --run-dir or train.name)")
    torch.manual_seed(cfg.train.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    stage = build_stage(cfg, info, ckpt)
    train_set, test_set = stage.datasets()
    if len(train_set) < cfg.train.batch_size:
        raise ConfigError(f"key 'train.batch_size' = {cfg.train.batch_size} exceeds the {len(train_set)} training "
                          "pairs")

    # ---- run folder: a resumed run continues in its own folder
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
    # one run per folder (rank 0 holds the lock; the other ranks write nothing), then the folder is checked
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
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
        try:
            train(cfg, info, run, log, stage, train_set, test_set, ckpt)
        finally:
            log.close()
            cleanup()


# --------------------------------------------------------------------------------------------- loop


def train(cfg: Config, info: DistInfo, run: Path, log: RunLogger, stage: Stage, train_set, test_set,
          ckpt: dict | None) -> None:
    """The loop both stages share: step, logging, NaN policy, validation, checkpoints, the wall-clock budget."""
    device, t = info.device, cfg.train
    val_set = torch.utils.data.Subset(test_set, range(min(cfg.data.val_pairs, len(test_set))))
    sampler = ShardedEpochSampler(len(train_set), t.batch_size, info.rank, info.world_size, t.seed)
    local_batch = t.batch_size // info.world_size
    pin = device.type == "cuda"
    loader = build_loader(train_set, local_batch, cfg.data.num_workers, sampler=sampler, pin_memory=pin)
    val_loader = build_loader(val_set, max(local_batch, 4), 0, pin_memory=pin)

    step, epoch, batch_in_epoch = 0, 0, 0
    if ckpt is not None:
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        ck.set_rng_state(ckpt["rng"])
    if cfg.loss.perceptual_weights == "random" and stage.name == "joint":
        log.text("WARNING: the perceptual loss uses a RANDOM-INIT VGG19 (offline mode): not the paper's loss")
    nets = stage.nets if stage.name == "joint" else {"flow": stage.net}
    log.text(f"run folder {run}; stage {stage.name}; {len(train_set)} training pairs, {sampler.batches_per_epoch} "
             "steps/epoch; " + ", ".join(f"{k}: {sum(p.numel() for p in v.parameters()) / 1e6:.2f}M"
                                         for k, v in nets.items()))

    skipped: list[str] = []  # this step's skipped updates (train.nonfinite=skip)
    skipped_in_a_row = 0

    def guard(terms: dict[str, torch.Tensor], update: str) -> bool:
        """train.nonfinite=skip: take an update only when all its terms are finite (one wait for the device);
        stop: always (the window checks at the sync points instead)."""
        if t.nonfinite != "skip":
            return True
        bad = nonfinite_terms(terms)
        if bad:
            skipped.append(", ".join(bad))
        return not bad

    start_time = time.time()
    window = TermWindow(step)
    bar = tqdm(total=t.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True, desc=stage.name)
    done = step >= t.max_steps
    while not done:
        sampler.set_epoch(epoch, batch_in_epoch)
        for batch in loader:
            batch = to_device(batch, device, t.channels_last)
            skipped.clear()
            before = snapshot(stage) if t.nonfinite == "skip" else None
            if t.lr_schedule == "linear":
                minutes = elapsed_minutes(start_time, info) if t.max_minutes is not None else 0.0
                progress = run_progress(step, t.max_steps, minutes, t.max_minutes)
                set_lr_factor(stage.optimizers.values(), linear_decay(progress, t.lr_decay_from))
            terms = stage.step(batch, step, guard)
            step += 1
            batch_in_epoch += 1
            bar.update(1)

            # ---- a skipped step changes nothing: its forward's batch-norm statistics are put back
            if skipped:
                before.restore()
                skipped_in_a_row += 1
                log.text(f"non-finite loss at step {step}: {'; '.join(skipped)} (step skipped)")
                if skipped_in_a_row >= t.max_consecutive_skips:
                    raise FloatingPointError(
                        f"{skipped_in_a_row} steps in a row had non-finite losses (steps {step - skipped_in_a_row + 1}"
                        f"-{step}, train.max_consecutive_skips); the run stopped, the last checkpoint is intact. "
                        "Check the inputs of those steps or lower the learning rate.")
            else:
                skipped_in_a_row = 0
                window.add(terms)

            # ---- logging: device-side sums, one synchronisation per log interval
            out_of_time = budget_spent(start_time, t.max_minutes, info)
            done = step >= t.max_steps or out_of_time  # the last step is always validated and checkpointed
            window.stop_if_nonfinite(step, t, done, log)
            if step % t.log_every == 0 or step == t.max_steps:
                window.log(step, t.batch_size, log, bar, postfix="g/" if stage.name == "joint" else "flow/",
                           extra=stage.log_extra())

            # ---- validation (rank 0 computes; every rank steps the plateau schedule with its result)
            if step % t.val_every == 0 or done:
                val = torch.zeros(1, device=device)
                if info.is_main:
                    values, sample = stage.validate(val_loader)
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

            # ---- checkpoint
            if (step % t.ckpt_every == 0 or done) and info.is_main:
                state = stage.state()
                refuse_nonfinite_weights(state["models"], step)  # never a poisoned checkpoint: the last stays good
                write_checkpoint(run, cfg, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch},
                                 "max_minutes reached" if out_of_time and step < t.max_steps else "periodic",
                                 state, log)
            if done:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    log.text(f"finished at step {step} after {(time.time() - start_time) / 60:.1f} min")


def refuse_nonfinite_weights(models: dict[str, dict[str, torch.Tensor]], step: int) -> None:
    """Stop before a checkpoint would save NaN/inf weights or batch-norm statistics (one wait for the device per
    checkpoint): the newest checkpoint on disk is then always one to resume from."""
    tensors = {f"{name}.{key}": value for name, state in models.items() for key, value in state.items()
               if value.is_floating_point()}
    finite = torch.stack([torch.isfinite(v).all() for v in tensors.values()]).tolist()  # one read
    bad = [name for name, ok in zip(tensors, finite) if not ok]
    if bad:
        raise FloatingPointError(f"non-finite weights at step {step} ({', '.join(bad[:5])}"
                                 f"{', ...' if len(bad) > 5 else ''}); not checkpointed, the last checkpoint is "
                                 "intact. Check the inputs of the last steps or lower the learning rate.")


def grid_picture(sample: dict, rows: int = 4) -> np.ndarray:
    """source | target pose | predicted parsing | generated | ground truth, for the first `rows` pairs."""
    b, out = sample["batch"], sample["rendered"]
    cols = [to_uint8(b["src_image"][:rows]), pose_picture(b["tgt_pose"][:rows]), parsing_picture(out.logits[:rows]),
            to_uint8(out.image[:rows]), to_uint8(b["tgt_image"][:rows])]
    return comparison_grid(cols)


if __name__ == "__main__":
    run_main(main)
