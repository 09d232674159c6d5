"""Distributed data parallel helpers: process-group set-up from torchrun's environment, a sampler that shards
each global batch across ranks and can resume mid-epoch, and synchronised batch norm that also runs on CPU.

Batch semantics: `train.batch_size` is the GLOBAL batch. With N processes each rank takes batch_size / N
consecutive samples of every global batch, so a torchrun run sees the same samples per step as a
single-process run with the same config, and (with synchronised batch norm and mean-reduced losses) takes
the same optimisation steps up to floating-point reduction order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        dev = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        dev = torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedEpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch; this rank's share of each global batch; optional mid-epoch start.

    Epoch e is permuted by a generator seeded with (seed, e), so every rank (and a resumed run) agrees on
    the order without communication. Incomplete final global batches are dropped.
    """

    def __init__(self, size: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"train.batch_size={global_batch} is not divisible by the {world_size} processes")
        if size < global_batch:
            raise ValueError(f"the dataset has {size} pairs, fewer than one batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world = size, global_batch, rank, world_size
        self.seed, self.epoch, self.start_batch = seed, 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        local = self.global_batch // self.world
        for b in range(self.start_batch, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * local
            yield from order[start : start + local].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * (self.global_batch // self.world)


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are reduced over all processes; works on CPU (gloo) as well.

    torch's SyncBatchNorm only accepts GPU tensors; this one all-reduces [sum, sum of squares, count] with
    the autograd-aware collective, so gradients flow through the global statistics exactly as they do
    through the local ones in a single-process run with the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.full((1,), x.numel() / x.shape[1], device=x.device, dtype=x.dtype)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])  # (2C + 1,)
        stats = dist_fn.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean  # biased, used to normalise
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA; GlooSyncBatchNorm on CPU. Parameters and buffers are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child, device))
    return module


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a (detached) tensor over processes, for logging."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t
