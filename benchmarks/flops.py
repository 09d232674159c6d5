"""The arithmetic of a step and the floor it sets: convolution/matmul GFLOP of each step piece, counted on the
meta device (nothing is computed), and the GFLOP/s of one large dense convolution in the same mode. A step's
GFLOP over that rate is a floor for its time: the time if every op ran as fast as that convolution."""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.breakdown import step_parts
from benchmarks.inputs import random_flow_net
from benchmarks.timing import time_calls
from data.parsing import num_labels
from losses import build_loss
from models.build import build_discriminator, build_spatn, build_spgnet, pose_channels
from training.steps import autocast
from utils.config import Config

# SPATN's trunk at 256x256: a 3x3 conv of 256 channels on (4,256,64,64), half of a DeepFashion step's work
REFERENCE_CONV = (4, 256, 64, 64)


def count_flops(cfg: Config, batch_size: int) -> dict[str, float]:
    """GFLOP (2 per multiply-add; convolutions and matmuls, as torch.utils.flop_counter counts) of each piece
    of step_parts at `batch_size`, on the meta device: shapes only, nothing is computed."""
    meta = torch.device("meta")
    with meta, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-init VGG19 warning: already stated in the report
        nets = {"spatn": build_spatn(cfg), "generator": build_spgnet(cfg), "discriminator": build_discriminator(cfg)}
        flow_net = random_flow_net(cfg, meta)
        losses = {"ce": build_loss("ce"), "gan": build_loss("adversarial", mode=cfg.loss.gan_mode),
                  "perceptual": build_loss("perceptual", layers=tuple(cfg.loss.perceptual_layers), weights="random")}
    nets["discriminator_plain"] = nets["discriminator"]
    h, w = cfg.data.image_size
    k = num_labels(cfg)
    shapes = {"image": (3, h, w), "pose": (pose_channels(cfg), h, w), "parsing": (k, h, w)}
    batch = {f"{side}_{kind}": torch.empty(batch_size, *shape, device=meta)
             for side in ("src", "tgt") for kind, shape in shapes.items()}
    batch.update({f"{side}_keypoints": torch.empty(batch_size, 18, 2, device=meta) for side in ("src", "tgt")})
    batch["flow"] = torch.empty(batch_size, 2, h, w, device=meta)
    batch["vis"] = torch.zeros(batch_size, h, w, dtype=torch.long, device=meta)
    out = {}
    for name, fn in step_parts(cfg, nets, flow_net, losses, batch, nullcontext).items():
        with FlopCounterMode(display=False) as counter:
            fn()
        out[name] = counter.get_total_flops() / 1e9
    return out


def flop_summary(cfg: Config, batch_size: int, infer_batch_size: int) -> dict:
    """GFLOP of each step piece, of a whole training step (what its fwd+bwd pieces add up to) and of inference."""
    parts = count_flops(cfg, batch_size)
    flow = parts.get("flow (frozen, no_grad)", 0.0)
    step = flow + sum(v for k, v in parts.items() if k.endswith("fwd+bwd"))
    infer = (flow + parts["spatn fwd"] + parts["generator fwd"]) * infer_batch_size / batch_size  # linear in B
    return {"parts": parts, "train_step": step, "inference_batch": infer}


def reference_conv_rate(cfg: Config, device: torch.device, warmup: int, iters: int) -> dict:
    """GFLOP/s of one large dense convolution (REFERENCE_CONV, forward, in the mode's precision and layout),
    which the backends run near the machine's peak."""
    b, c, h, w = REFERENCE_CONV
    x = torch.randn(b, c, h, w, device=device)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
    if cfg.train.channels_last:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(cfg, device):
        stats = time_calls(lambda: conv(x), warmup, iters, device)
    gflop = 2 * c * c * 9 * b * h * w / 1e9
    return {"shape": list(REFERENCE_CONV), "gflop": gflop, "median_s": stats["median_s"],
            "gflop_per_s": gflop / stats["median_s"]}
