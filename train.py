"""Train SPGNet: SPATN (stage 1) and the SPGNet generator (stage 2) jointly, or the flow module (stage 0).

    python train.py --config configs/synthetic.yaml                       # joint training
    python train.py --config configs/synthetic.yaml train.stage=flow      # stage 0: the flow module
    python train.py --config configs/deepfashion.yaml --resume auto       # continue the newest run
    torchrun --nproc_per_node=4 train.py --config configs/deepfashion.yaml

One step of the joint stage (paper sec. 3.3, 4.1):
    SPATN(source parsing, source pose, target pose)                  -> target parsing logits   (CE, x10)
    SPGNet(source image, target pose, source/target parsing, flow)    -> target image   (L1 x1, VGG x1, GAN x0.01)
SPGNet takes the ground-truth target parsing while training and SPATN's prediction at test time; the flow
module is frozen. The loop below reads top to bottom: D step, G step, logging, validation, checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from data.loaders import build_dataset, build_loader
from losses import build_loss
from losses.parsing import pixel_accuracy
from metrics.ssim import ssim
from models.build import build_discriminator, build_flow, build_spatn, build_spgnet
from models.pose_encoding import PoseEncoder
from utils import checkpoint as ck
from utils.cli import run_main
from utils.config import Config, ConfigError, TrainConfig, load_config, save_config, to_dict
from utils.distributed import DistInfo, ShardedEpochSampler, all_reduce_mean, cleanup, convert_sync_batchnorm, setup
from utils.host_memory import keep_freed_memory
from utils.run import RunLogger, latest_checkpoint, new_run_folder
from utils.visual import comparison_grid, parsing_picture, pose_picture, to_uint8

# ----------------------------------------------------------------------------------------- batches


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def add_poses(batch: dict, pose_encoder: PoseEncoder | None) -> dict:
    """Pose maps from keypoints on the device, when the loader ships keypoints only."""
    if pose_encoder is not None:
        batch["src_pose"] = pose_encoder(batch["src_keypoints"])  # (B,30,H,W)
        batch["tgt_pose"] = pose_encoder(batch["tgt_keypoints"])
    return batch


@torch.no_grad()
def flow_and_visibility(cfg: Config, flow_net: nn.Module | None, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Target->source flow (B,2,H,W) in pixels and visibility labels (B,H,W), from files or the frozen FlowNet."""
    if flow_net is None:
        return batch["flow"], batch["vis"]
    out = flow_net(batch["src_pose"], batch["tgt_pose"])
    return out.flow.float(), out.vis_logits.argmax(dim=1)


def spatn_input(cfg: Config, batch: dict) -> torch.Tensor:
    return batch["src_parsing"] if cfg.model.spatn.input == "parsing" else batch["src_image"]


def hard_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """SPATN logits (B,K,H,W) -> one-hot of the argmax, the parsing SPGNet sees at test time."""
    return F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


# ------------------------------------------------------------------------------------- set-up pieces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file in configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.batch_size=8")
    p.add_argument("--resume", default=None, help="'auto' (newest run of this name), a checkpoint or a run folder")
    p.add_argument("--run-dir", default=None, help="use exactly this run folder instead of runs/<NNNNN>-<name>")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def resolve_resume(args: argparse.Namespace, cfg: Config, name: str) -> Path | None:
    if args.resume is None:
        if args.run_dir is not None:  # a fixed folder resumes by itself: re-running a command continues it
            ckpts = ck.step_checkpoints(Path(args.run_dir) / "checkpoints")
            return ckpts[-1] if ckpts else None
        return None
    if args.resume == "auto":
        if args.run_dir is not None:
            ckpts = ck.step_checkpoints(Path(args.run_dir) / "checkpoints")
            return ckpts[-1] if ckpts else None
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


def load_frozen_flow(cfg: Config, device: torch.device) -> nn.Module | None:
    """The stage-0 FlowNet, frozen; None when flow comes from files."""
    if cfg.model.flow.source == "files":
        return None
    path = cfg.model.flow.checkpoint
    if path is None:
        raise ConfigError(
            "key 'model.flow.checkpoint' is null: the joint stage needs a trained flow module. Train it first "
            "(python train.py --config <cfg> train.stage=flow) and pass model.flow.checkpoint=<its step-*.pt>, "
            "or use precomputed flow files with model.flow.source=files data.use_flow_files=true"
        )
    ckpt = ck.load_checkpoint(path)
    saved = ckpt["config"]["model"]["flow"]
    ours = to_dict(cfg)["model"]["flow"]
    diffs = [f"model.flow.{k}: {saved[k]!r} -> {ours[k]!r}" for k in ours
             if k not in ("checkpoint", "source") and saved.get(k) != ours[k]]
    if diffs or "flow" not in ckpt["models"]:
        raise ck.CheckpointError(f"flow checkpoint {path} does not fit this config: " + "; ".join(diffs or
                                 ["it holds no flow module"]))
    flow_net = build_flow(cfg)
    flow_net.load_state_dict(ckpt["models"]["flow"])
    return flow_net.to(device).eval().requires_grad_(False)


def autocast(cfg: Config, device: torch.device):
    if cfg.train.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(cfg: Config, nets: dict, flow_net, pose_encoder, loader, losses: dict, device) -> tuple[dict, dict]:
    """Held-out losses with SPATN's predicted parsing (as at test time), SSIM against copying the source."""
    spatn, gen = nets["spatn"], nets["generator"]
    spatn.eval()
    gen.eval()
    sums: dict[str, float] = {}
    count, first = 0, None
    for batch in loader:
        batch = add_poses(to_device(batch, device, cfg.train.channels_last), pose_encoder)
        flow, vis = flow_and_visibility(cfg, flow_net, batch)
        with autocast(cfg, device):
            logits = spatn(spatn_input(cfg, batch), batch["src_pose"], batch["tgt_pose"])
            fake = gen(batch["src_image"], batch["tgt_pose"], batch["src_parsing"], hard_one_hot(logits.float()),
                       flow, vis)
        fake, tgt = fake.float(), batch["tgt_image"]
        n = tgt.shape[0]
        vals = {
            "ce": losses["ce"](logits.float(), batch["tgt_parsing"]),
            "parsing_acc": pixel_accuracy(logits.float(), batch["tgt_parsing"]),
            "l1": (fake - tgt).abs().mean(),
            "perceptual": losses["perceptual"](fake, tgt)["perceptual"],
            "ssim": ssim(to_uint8_tensor(fake), to_uint8_tensor(tgt)).mean(),
            "ssim_copy_source": ssim(to_uint8_tensor(batch["src_image"]), to_uint8_tensor(tgt)).mean(),
        }
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
        if first is None:
            first = {"batch": batch, "logits": logits.float(), "fake": fake}
    spatn.train()
    gen.train()
    out = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
    out["val/recon"] = out["val/l1"] + out["val/perceptual"]  # drives the lr plateau schedule (paper 4.1)
    return out, first


def to_uint8_tensor(images: torch.Tensor) -> torch.Tensor:
    """[-1,1] (B,3,H,W) -> uint8 (B,3,H,W), the quantisation the evaluation protocol sees."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_picture(sample: dict, rows: int = 4) -> object:
    b = sample["batch"]
    cols = [to_uint8(b["src_image"][:rows]), pose_picture(b["tgt_pose"][:rows]),
            parsing_picture(sample["logits"][:rows]), to_uint8(sample["fake"][:rows]), to_uint8(b["tgt_image"][:rows])]
    return comparison_grid(cols)


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = setup(args.device)
    device = info.device
    if device.type == "cpu":
        keep_freed_memory()  # activations reuse freed heap memory instead of being page-faulted in every step
    name = cfg.train.name or Path(args.config).stem
    resume_from = resolve_resume(args, cfg, name)

    # ---- run folder: a resumed run continues in its own folder, with its own saved config for the nets
    ckpt = None
    if resume_from is not None:
        ckpt = ck.load_checkpoint(resume_from)
        ck.check_compatible(ckpt, cfg, resume_from)
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
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "images").mkdir(exist_ok=True)
        save_config(cfg, run / "config.yaml")
    log = RunLogger(run, enabled=info.is_main)
    log.text(f"{'resuming from ' + str(resume_from) if ckpt else 'new run'}: {' '.join(sys.argv)}")

    torch.manual_seed(cfg.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        if cfg.train.stage == "flow":
            train_flow(cfg, info, run, log, ckpt)
        else:
            train_joint(cfg, info, run, log, ckpt)
    finally:
        log.close()
        cleanup()


def make_adam(params, lr: float, betas, device: torch.device) -> torch.optim.Adam:
    fused = device.type == "cuda"  # one kernel per parameter group instead of one per tensor
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=fused)


def wrap(module: nn.Module, info: DistInfo, cfg: Config) -> nn.Module:
    """SyncBN + DDP when distributed, channels_last and torch.compile when configured. Returns the runner."""
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    runner = module
    if info.enabled:
        runner = nn.parallel.DistributedDataParallel(
            module, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    if cfg.train.compile:
        runner = torch.compile(runner)
    return runner


def budget_spent(start_time: float, max_minutes: float | None, info: DistInfo) -> bool:
    """Whether the wall-clock budget is spent; under DDP rank 0's clock decides (a broadcast), so every rank
    stops at the same step. A single process decides on the host: no device round trip in the step."""
    if max_minutes is None:
        return False
    spent = (time.time() - start_time) / 60 >= max_minutes
    if not info.enabled:
        return spent
    flag = torch.tensor([float(spent)], device=info.device)
    dist.broadcast(flag, src=0)
    return bool(flag)


def all_finite(terms: dict[str, torch.Tensor]) -> list[bool]:
    """Per term: finite here and, under DDP, on every rank (so that all ranks take the same branch)."""
    finite = torch.isfinite(torch.stack([v.detach().float() for v in terms.values()])).float()  # (T,)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return [bool(ok) for ok in finite.tolist()]


def check_finite(terms: dict[str, torch.Tensor], step: int, cfg: Config, log: RunLogger | None) -> bool:
    """train.nonfinite=skip, before an optimizer step: True when every term is finite, else a logged skip.
    It reads the losses on the host, so it waits for the device once per step: the price of skipping.
    `step` counts the steps done before this one; the log names this one as the loop does, step + 1."""
    if cfg.train.nonfinite != "skip":
        return True  # stop: `TermWindow.stop_if_nonfinite` checks at the loop's sync points instead
    finite = all_finite(terms)
    if all(finite):
        return True
    if log is not None:
        bad = [k for k, ok in zip(terms, finite) if not ok]
        log.text(f"non-finite loss at step {step + 1}: {', '.join(bad)} (step skipped)")
    return False


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
        finite = all_finite(self.sums)
        if all(finite):
            self.checked = step
            return
        steps = f"at step {step}" if self.checked + 1 == step else f"in steps {self.checked + 1}-{step}"
        bad = ", ".join(k for k, ok in zip(self.sums, finite) if not ok)
        message = f"non-finite loss {steps}: {bad}"
        log.text(message + " (run stopped; the last checkpoint is intact)")
        raise FloatingPointError(message + ". The last good checkpoint is untouched; set train.nonfinite=skip to "
                                 "skip such steps instead, or lower the learning rate.")

    def log(self, step: int, batch_size: int, log: RunLogger, bar: tqdm, prefix: str = "", postfix: str = "",
            extra: dict[str, float] | None = None) -> None:
        """Log the window's mean terms (rank-averaged, names prefixed), images/s and `extra`; show the terms
        whose names start with `postfix` on the progress bar; start the next window."""
        values = {f"{prefix}{k}": float(all_reduce_mean(v / self.steps)) for k, v in self.sums.items()}
        values["perf/images_per_s"] = self.steps * batch_size / max(time.time() - self.start, 1e-9)
        values.update(extra or {})
        log.scalars(step, values)
        log.text(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in values.items() if k.startswith(postfix)})
        self.reset()


def write_checkpoint(run: Path, cfg: Config, position: dict[str, int], reason: str, state: dict,
                     log: RunLogger) -> None:
    """Atomically write step-<N>.pt: the loop position (step, epoch, batch_in_epoch), the config, the RNG
    states and `state` (models, optimizers, ...); keep the newest train.keep_checkpoints."""
    step = position["step"]
    ck.atomic_save({"format": ck.FORMAT, **position, "config": to_dict(cfg), "rng": ck.rng_state(),
                    "reason": reason, **state}, ck.checkpoint_path(run / "checkpoints", step))
    ck.prune(run / "checkpoints", cfg.train.keep_checkpoints)
    log.text(f"checkpoint at step {step} ({reason})")


@dataclass
class Joint:
    """Everything one joint-stage step touches. `nets` holds the plain modules (saved in checkpoints);
    spatn/gen/disc are the runners (DDP / compiled wrappers of the same modules)."""

    nets: dict[str, nn.Module]
    spatn: nn.Module
    gen: nn.Module
    disc: nn.Module
    flow_net: nn.Module | None
    pose_encoder: PoseEncoder | None
    losses: dict[str, nn.Module]
    weights: dict[str, float]
    g_params: list[torch.Tensor]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.ReduceLROnPlateau
    sched_d: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler

    def state(self) -> dict:
        models = {k: v.state_dict() for k, v in self.nets.items()}
        if self.pose_encoder is not None:
            models["pose_encoder"] = self.pose_encoder.state_dict()
        if self.flow_net is not None:  # the frozen flow travels with the checkpoint: test.py needs nothing else
            models["flow"] = self.flow_net.state_dict()
        return {"models": models, "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
                "schedulers": {"g": self.sched_g.state_dict(), "d": self.sched_d.state_dict()},
                "scaler": self.scaler.state_dict()}

    def load(self, ckpt: dict) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(ckpt["models"][k])
        if self.pose_encoder is not None:
            self.pose_encoder.load_state_dict(ckpt["models"]["pose_encoder"])
        self.opt_g.load_state_dict(ckpt["optimizers"]["g"])
        self.opt_d.load_state_dict(ckpt["optimizers"]["d"])
        self.sched_g.load_state_dict(ckpt["schedulers"]["g"])
        self.sched_d.load_state_dict(ckpt["schedulers"]["d"])
        self.scaler.load_state_dict(ckpt["scaler"])


def build_joint(cfg: Config, info: DistInfo, flow_net: nn.Module | None, ckpt: dict | None = None) -> Joint:
    """Networks, losses, optimizers and schedules of the joint stage; restored from `ckpt` when given."""
    device, t = info.device, cfg.train
    h, w = cfg.data.image_size
    pose_encoder = None
    if cfg.pose.encode_on_device or cfg.pose.learnable_kappa:
        pose_encoder = PoseEncoder(h, w, cfg.pose.heatmap, cfg.pose.sigma, cfg.pose.radius, cfg.pose.kappa,
                                   cfg.pose.learnable_kappa).to(device)
    nets = {"spatn": build_spatn(cfg), "generator": build_spgnet(cfg), "discriminator": build_discriminator(cfg)}
    if info.enabled:
        nets = {k: convert_sync_batchnorm(v, device) for k, v in nets.items()}
    nets = {k: v.to(device) for k, v in nets.items()}
    losses = {
        "ce": build_loss("ce").to(device),
        "l1": build_loss("l1").to(device),
        "perceptual": build_loss("perceptual", layers=tuple(cfg.loss.perceptual_layers),
                                 weights=cfg.loss.perceptual_weights).to(device),
        "gan": build_loss("adversarial", mode=cfg.loss.gan_mode).to(device),
    }
    g_params = list(nets["spatn"].parameters()) + list(nets["generator"].parameters())
    if pose_encoder is not None:
        g_params += [p for p in pose_encoder.parameters() if p.requires_grad]
    opt_g = make_adam(g_params, t.lr, t.betas, device)
    opt_d = make_adam(nets["discriminator"].parameters(), t.lr_d, t.betas, device)
    joint = Joint(
        nets=nets, spatn=nets["spatn"], gen=nets["generator"], disc=nets["discriminator"], flow_net=flow_net,
        pose_encoder=pose_encoder, losses=losses,
        weights={"ce": cfg.loss.ce, "l1": cfg.loss.l1, "perceptual": cfg.loss.perceptual,
                 "adversarial": cfg.loss.adversarial},
        g_params=g_params, opt_g=opt_g, opt_d=opt_d,
        sched_g=torch.optim.lr_scheduler.ReduceLROnPlateau(opt_g, factor=t.lr_factor, patience=t.lr_patience),
        sched_d=torch.optim.lr_scheduler.ReduceLROnPlateau(opt_d, factor=t.lr_factor, patience=t.lr_patience),
        scaler=torch.amp.GradScaler(device.type, enabled=t.amp == "fp16"),
    )
    if ckpt is not None:
        joint.load(ckpt)
    joint.spatn, joint.gen, joint.disc = (wrap(nets[k], info, cfg) for k in ("spatn", "generator", "discriminator"))
    return joint


def joint_step(cfg: Config, j: Joint, batch: dict, step: int, log: RunLogger | None = None) -> dict[str, torch.Tensor]:
    """One training step of the joint stage on a device batch: D step, then G step. Returns detached terms."""
    src, tgt, tgt_pose = batch["src_image"], batch["tgt_image"], batch["tgt_pose"]
    flow, vis = flow_and_visibility(cfg, j.flow_net, batch)
    adversarial_on = step >= cfg.train.adv_start_step and cfg.loss.adversarial > 0
    device = src.device

    # ---- forward: stage 1 predicts the target parsing; stage 2 renders with the GROUND-TRUTH parsing
    with autocast(cfg, device):
        logits = j.spatn(spatn_input(cfg, batch), batch["src_pose"], tgt_pose)  # (B,K,H,W)
        fake = j.gen(src, tgt_pose, batch["src_parsing"], batch["tgt_parsing"], flow, vis)  # (B,3,H,W)

    # ---- D step: real and generated triplets in one forward (one DDP hook pass)
    terms: dict[str, torch.Tensor] = {}
    if adversarial_on:
        with autocast(cfg, device):
            both = j.disc(torch.cat([src, src]), torch.cat([tgt, fake.detach()]), torch.cat([tgt_pose, tgt_pose]))
            real_logits, fake_logits = both.float().chunk(2)  # (B,1,h,w) each
            d_terms = j.losses["gan"].discriminator_loss(real_logits, fake_logits)
        j.opt_d.zero_grad(set_to_none=True)
        if check_finite(d_terms, step, cfg, log):
            j.scaler.scale(sum(d_terms.values())).backward()
            j.scaler.step(j.opt_d)
        terms.update({f"d/{k}": v.detach() for k, v in d_terms.items()})

    # ---- G step: SPATN and SPGNet together, each term weighted from the config
    with autocast(cfg, device):
        g_terms = {"ce": j.losses["ce"](logits.float(), batch["tgt_parsing"]),
                   "l1": j.losses["l1"](fake.float(), tgt)}
        g_terms.update(j.losses["perceptual"](fake.float(), tgt))  # "perceptual" + one term per VGG layer
        if adversarial_on:
            disc = j.nets["discriminator"]  # the plain module: D is not updated here, so no DDP hooks
            disc.requires_grad_(False)
            g_terms["adversarial"] = j.losses["gan"].generator_loss(disc(src, fake, tgt_pose).float())
            disc.requires_grad_(True)
    g_total = sum(j.weights[k] * v for k, v in g_terms.items() if k in j.weights)
    j.opt_g.zero_grad(set_to_none=True)
    if check_finite(g_terms, step, cfg, log):
        j.scaler.scale(g_total).backward()
        if cfg.train.grad_clip is not None:
            j.scaler.unscale_(j.opt_g)
            torch.nn.utils.clip_grad_norm_(j.g_params, cfg.train.grad_clip)
        j.scaler.step(j.opt_g)
    j.scaler.update()
    terms.update({f"g/{k}": v.detach() for k, v in g_terms.items()})
    terms["g/total"] = g_total.detach()
    return terms


def train_joint(cfg: Config, info: DistInfo, run: Path, log: RunLogger, ckpt: dict | None) -> None:
    device, t = info.device, cfg.train
    # ---- data
    use_files = cfg.model.flow.source == "files"
    train_set = build_dataset(cfg, "train", with_flow=use_files, augment=True)
    test_set = build_dataset(cfg, "test", with_flow=use_files)
    val_set = torch.utils.data.Subset(test_set, range(min(cfg.data.val_pairs, len(test_set))))
    sampler = ShardedEpochSampler(len(train_set), t.batch_size, info.rank, info.world_size, t.seed)
    local_batch = t.batch_size // info.world_size
    pin = device.type == "cuda"
    loader = build_loader(train_set, local_batch, cfg.data.num_workers, sampler=sampler, pin_memory=pin)
    val_loader = build_loader(val_set, max(local_batch, 4), 0, pin_memory=pin)

    # ---- networks, losses, optimizers (restored when resuming)
    j = build_joint(cfg, info, load_frozen_flow(cfg, device), ckpt)
    step, epoch, batch_in_epoch = 0, 0, 0
    if ckpt is not None:
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        ck.set_rng_state(ckpt["rng"])
    if cfg.loss.perceptual_weights == "random":
        log.text("WARNING: the perceptual loss uses a RANDOM-INIT VGG19 (offline mode): not the paper's loss")
    log.text(f"run folder {run}; {len(train_set)} training pairs, {sampler.batches_per_epoch} steps/epoch; "
             + ", ".join(f"{k}: {sum(p.numel() for p in v.parameters()) / 1e6:.2f}M" for k, v in j.nets.items()))

    def save(reason: str) -> None:
        if info.is_main:
            write_checkpoint(run, cfg, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}, reason,
                             j.state(), log)

    start_time = time.time()
    window = TermWindow(step)
    bar = tqdm(total=t.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True, desc="train")
    done = step >= t.max_steps
    while not done:
        sampler.set_epoch(epoch, batch_in_epoch)
        for batch in loader:
            batch = add_poses(to_device(batch, device, t.channels_last), j.pose_encoder)
            terms = joint_step(cfg, j, batch, step, log)
            step += 1
            batch_in_epoch += 1
            bar.update(1)

            # ---- logging: device-side sums, one synchronisation per log interval
            window.add(terms)
            # the last step (max_steps or the wall-clock budget) is always validated and checkpointed
            out_of_time = budget_spent(start_time, t.max_minutes, info)
            done = step >= t.max_steps or out_of_time
            window.stop_if_nonfinite(step, t, done, log)
            if step % t.log_every == 0 or step == t.max_steps:
                extra = {"lr/g": j.opt_g.param_groups[0]["lr"], "lr/d": j.opt_d.param_groups[0]["lr"]}
                if j.pose_encoder is not None and cfg.pose.learnable_kappa:
                    extra["pose/kappa"] = float(j.pose_encoder.distance.kappa)
                window.log(step, t.batch_size, log, bar, postfix="g/", extra=extra)

            # ---- validation (rank 0 computes; every rank steps the plateau schedule with its result)
            if step % t.val_every == 0 or done:
                val = torch.zeros(1, device=device)
                if info.is_main:
                    values, sample = validate(cfg, j.nets, j.flow_net, j.pose_encoder, val_loader, j.losses, device)
                    log.scalars(step, values)
                    log.text(f"validation at step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in values.items()))
                    val[0] = values["val/recon"]
                    picture = grid_picture(sample)
                    cv2.imwrite(str(run / "images" / f"step-{step:08d}.png"), picture[..., ::-1])
                    log.image(step, "val/source|pose|parsing|generated|target", picture.transpose(2, 0, 1))
                if info.enabled:
                    dist.broadcast(val, src=0)
                j.sched_g.step(float(val))
                j.sched_d.step(float(val))

            # ---- checkpoint
            if step % t.ckpt_every == 0 or done:
                save("max_minutes reached" if out_of_time and step < t.max_steps else "periodic")
            if done:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    log.text(f"finished at step {step} after {(time.time() - start_time) / 60:.1f} min")


def train_flow(cfg: Config, info: DistInfo, run: Path, log: RunLogger, ckpt: dict | None) -> None:
    """Stage 0: the flow module on exact flow targets (multi-scale end-point error + visibility CE)."""
    device, t = info.device, cfg.train
    train_set = build_dataset(cfg, "train", with_flow=True, augment=True)
    test_set = build_dataset(cfg, "test", with_flow=True)
    val_set = torch.utils.data.Subset(test_set, range(min(cfg.data.val_pairs, len(test_set))))
    sampler = ShardedEpochSampler(len(train_set), t.batch_size, info.rank, info.world_size, t.seed)
    local_batch = t.batch_size // info.world_size
    loader = build_loader(train_set, local_batch, cfg.data.num_workers, sampler=sampler,
                          pin_memory=device.type == "cuda")
    val_loader = build_loader(val_set, max(local_batch, 4), 0)
    h, w = cfg.data.image_size
    on_device_pose = cfg.pose.encode_on_device or cfg.pose.learnable_kappa
    pose_encoder = (PoseEncoder(h, w, cfg.pose.heatmap, cfg.pose.sigma, cfg.pose.radius, cfg.pose.kappa,
                                False).to(device) if on_device_pose else None)
    net = build_flow(cfg)
    if info.enabled:
        net = convert_sync_batchnorm(net, device)
    net = net.to(device)
    epe_loss = build_loss("flow_epe").to(device)
    vis_loss = build_loss("visibility").to(device)
    opt = make_adam(net.parameters(), t.lr, t.betas, device)
    step, epoch, batch_in_epoch = 0, 0, 0
    if ckpt is not None:
        net.load_state_dict(ckpt["models"]["flow"])
        opt.load_state_dict(ckpt["optimizers"]["flow"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        ck.set_rng_state(ckpt["rng"])
    runner = wrap(net, info, cfg)
    weights = {"flow_epe": cfg.loss.flow_epe, "visibility": cfg.loss.visibility}

    def save(reason: str) -> None:
        if info.is_main:
            write_checkpoint(run, cfg, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}, reason,
                             {"models": {"flow": net.state_dict()}, "optimizers": {"flow": opt.state_dict()}}, log)

    start_time = time.time()
    window = TermWindow(step)
    bar = tqdm(total=t.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True, desc="flow")
    done = step >= t.max_steps
    while not done:
        sampler.set_epoch(epoch, batch_in_epoch)
        for batch in loader:
            batch = add_poses(to_device(batch, device, t.channels_last), pose_encoder)
            with autocast(cfg, device):
                out = runner(batch["src_pose"], batch["tgt_pose"])
                terms = {"flow_epe": epe_loss([f.float() for f in out.flows], batch["flow"], batch["vis"]),
                         "visibility": vis_loss(out.vis_logits.float(), batch["vis"])}
            total = sum(weights[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            if check_finite(terms, step, cfg, log):
                total.backward()
                opt.step()
            step += 1
            batch_in_epoch += 1
            bar.update(1)
            window.add(terms)
            out_of_time = budget_spent(start_time, t.max_minutes, info)
            done = step >= t.max_steps or out_of_time
            window.stop_if_nonfinite(step, t, done, log)
            if step % t.log_every == 0 or step == t.max_steps:
                window.log(step, t.batch_size, log, bar, prefix="flow/")
            if info.is_main and (step % t.val_every == 0 or done):
                values = validate_flow(net, val_loader, pose_encoder, device, cfg)
                log.scalars(step, values)
                log.text(f"validation at step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in values.items()))
            if step % t.ckpt_every == 0 or done:
                save("max_minutes reached" if out_of_time and step < t.max_steps else "periodic")
            if done:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()


@torch.no_grad()
def validate_flow(net: nn.Module, loader, pose_encoder, device, cfg: Config) -> dict[str, float]:
    """End-point error on visible target pixels, against the zero-flow baseline, and visibility accuracy."""
    net.eval()
    epe = zero = acc = 0.0
    count = 0
    for batch in loader:
        batch = add_poses(to_device(batch, device, cfg.train.channels_last), pose_encoder)
        out = net(batch["src_pose"], batch["tgt_pose"])
        visible = (batch["vis"] == 0).float()
        n_vis = visible.sum().clamp_min(1)
        epe += float(((out.flow.float() - batch["flow"]).norm(dim=1) * visible).sum() / n_vis)
        zero += float((batch["flow"].norm(dim=1) * visible).sum() / n_vis)
        acc += float((out.vis_logits.argmax(dim=1) == batch["vis"]).float().mean())
        count += 1
    net.train()
    return {"val/flow_epe": epe / count, "val/flow_epe_zero_flow": zero / count, "val/visibility_acc": acc / count}


if __name__ == "__main__":
    run_main(main)
