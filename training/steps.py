"""What a stage's step is made of, beside its networks and losses: the batch on the device, mixed precision, Adam,
the optimizer step, and the runner a module trains through (channels_last, DDP, torch.compile)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from utils.config import Config
from utils.distributed import DistInfo, average_gradients


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """The batch's tensors on `device` (4-D ones in channels_last when asked); other entries (names) as they are."""
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU with bf16 units (Ampere and later), a CPU with AMX or
    AVX-512 BF16. Elsewhere bf16 is emulated, and slower than float32: on a 2-core AVX2 CPU the demo's step took 7
    to 10 times as long under bf16 autocast (docs/speed.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch.cpu's capability checks (the ones its own bf16 kernels dispatch on) are private; absent, say no
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def precision(cfg: Config, device: torch.device) -> str:
    """train.amp as it runs on `device`: 'auto' is 'bf16' where the device computes bf16 natively, else 'off'."""
    if cfg.train.amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    return cfg.train.amp


def autocast(cfg: Config, device: torch.device):
    """The configured mixed precision (train.amp, resolved on `device`), or nothing."""
    amp = precision(cfg, device)
    if amp == "off":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def make_adam(params: Any, lr: float, betas: tuple[float, float], device: torch.device,
              weight_decay: float = 0.0) -> torch.optim.Adam:
    fused = device.type == "cuda"  # one kernel per parameter group instead of one per tensor
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


# The optimizer's implementation, not its state: a resumed run keeps its own (a CPU run's checkpoint says fused=False)
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict(state), keeping this optimizer's implementation flags (IMPLEMENTATION_KEYS). A state
    dict carries the saving run's flags: a CPU run's fused=False, loaded into a CUDA run's fused Adam, would make
    the step slower and, under an fp16 GradScaler, fail ("Expected grad_scale and found_inf to be None"). The flags
    are set before the load, because they decide where the load puts Adam's step counters."""
    groups = [{**saved, **{k: group[k] for k in IMPLEMENTATION_KEYS if k in group}}
              for saved, group in zip(state["param_groups"], opt.param_groups)]
    opt.load_state_dict({**state, "param_groups": groups})


def load_scaler(scaler: torch.amp.GradScaler, state: dict) -> None:
    """The GradScaler's state from a checkpoint. A run without fp16 saves an empty state (a disabled scaler's):
    an fp16 run resumed from it starts a fresh scale, as a new run would."""
    if state:
        scaler.load_state_dict(state)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: list[torch.Tensor], grad_clip: float | None, outside_ddp: Iterable[torch.Tensor] = ()
                   ) -> None:
    """backward, optional gradient clipping (on unscaled gradients), and the (scaled) optimizer step. The
    gradients of `outside_ddp` (parameters of `params` that no DDP wrapper averages) are averaged over the ranks
    after the backward, as DDP's are during it."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    average_gradients(outside_ddp)
    if grad_clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)


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
