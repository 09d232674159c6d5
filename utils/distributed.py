"""Distributed data parallel helpers: process-group set-up from torchrun's environment, a sampler that shards
each global batch across ranks and can resume mid-epoch, synchronised batch norm (GPU and CPU alike) and the
averaging of gradients that no DDP wrapper holds.

Batch semantics: `train.batch_size` is the GLOBAL batch. With N processes each rank takes batch_size / N
consecutive samples of every global batch, so a torchrun run sees the same samples per step as a
single-process run with the same config, and (with synchronised batch norm and mean-reduced losses) takes
the same optimisation steps up to floating-point reduction order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn

from utils.errors import InputError


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


def parse_device(text: str | None) -> torch.device:
    """--device: None (cuda when available, else cpu), cpu, cuda (the current GPU) or cuda:N. Anything else, or a
    GPU this host does not have, is an InputError."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    found = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text.strip())
    if found is None or (found.group(1) == "cpu" and found.group(2) is not None):
        raise InputError(f"--device {text!r}: expected cpu, cuda or cuda:N")
    if found.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"--device {text}: this host has no CUDA GPU that torch can use")
    index = None if found.group(2) is None else int(found.group(2))
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise InputError(f"--device {text}: this host has {count} GPU{'s' if count > 1 else ''} "
                         f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def setup(device: str | None = None, timeout_minutes: float | None = None) -> DistInfo:
    """The device and, when launched by torchrun, the process group (NCCL on GPUs, gloo on CPU).

    Single process: the device --device names (parse_device), made the current one. Under torchrun (one or many
    nodes) RANK is the global rank (rank 0 alone writes) and each process takes the GPU of its LOCAL_RANK on its
    node, so --device says only cpu or cuda. timeout_minutes: how long a collective waits for the other
    processes (train.dist_timeout_minutes; None: torch's default).
    """
    requested = parse_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if requested.type == "cuda":  # the current GPU: what torch.cuda's defaults (RNG, streams) act on
            index = torch.cuda.current_device() if requested.index is None else requested.index
            torch.cuda.set_device(index)
            requested = torch.device("cuda", index)
        return DistInfo(device=requested)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    timeout = None if timeout_minutes is None else timedelta(minutes=timeout_minutes)
    if requested.type == "cpu":
        dist.init_process_group("gloo", timeout=timeout)
        return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=requested)
    if requested.index is not None:
        raise InputError(f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; say "
                         "--device cuda, and choose a node's GPUs with CUDA_VISIBLE_DEVICES")
    if local_rank >= torch.cuda.device_count():
        raise InputError(f"process {rank} has LOCAL_RANK {local_rank}, but its node shows "
                         f"{torch.cuda.device_count()} GPUs: start at most that many processes per node "
                         "(torchrun --nproc_per_node)")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", timeout=timeout, device_id=dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def check_same_on_every_rank(value: str | None, what: str, info: DistInfo) -> None:
    """Refuse a run whose processes see different `value`s (e.g. the checkpoint --resume found), naming rank 0's
    and this one's: the nodes of a run must share its folders, or they would train from different states."""
    if not info.enabled:
        return
    box = [value]
    dist.broadcast_object_list(box, src=0)
    if box[0] != value:
        raise InputError(f"{what}: process {info.rank} finds {value}, process 0 finds {box[0]}; every node must see "
                         "the run folders (train.run_dir, --run-dir) on one shared file system")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedEpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """A seeded permutation per epoch; this rank's share of each global batch; optional mid-epoch start.

    Epoch e is permuted by a generator seeded with (seed, e), so every rank (and a resumed run) agrees on
    the order without communication. Incomplete final global batches are dropped. Each sample comes as
    (index, augmentation seed): the same generator draws one seed per position of the epoch, from which the
    sample's random augmentation is drawn (data.loaders.SeededSamples). The draws then depend on the sample and
    the epoch alone, as the order does: every rank draws its own, and a run on N processes, a single process and
    a resumed run draw the same.
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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        seeds = torch.randint(2**62, (self.size,), generator=g)  # one augmentation seed per position
        local = self.global_batch // self.world
        for b in range(self.start_batch, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * local
            yield from zip(order[start : start + local].tolist(), seeds[start : start + local].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * (self.global_batch // self.world)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are the global batch's, from one all-reduce per layer, on CUDA
    (NCCL) and on CPU (gloo) alike, in float32 whatever the input's dtype.

        rank r      n_r, mean_r, m2_r = sum (x - mean_r)^2              per channel, two passes over its own batch
        all ranks   every rank's (n_r, mean_r, m2_r) in its own row of a (W, 2C+1) zero tensor, all-reduced
                    (summed): each rank holds all rows; autograd-aware, so gradients flow through the global
                    statistics as through a single process's
        combined    N = sum n_r,  mean = sum n_r mean_r / N,  var = sum (m2_r + n_r (mean_r - mean)^2) / N
                    (Chan et al.'s pairwise update: no cancellation, whatever the mean; biased, it normalises,
                    and the running variance takes N / (N - 1))
        y = (x - mean) / sqrt(var + eps) * weight + bias   in float32, returned in x's dtype

    torch's SyncBatchNorm takes CUDA tensors only, and drops the rows of empty ranks with a boolean mask: a host
    synchronisation per layer, and a graph break under torch.compile. Here a rank's emptiness is known on the
    host (its shape), its row is zero and adds nothing, and nothing waits for the device. In eval mode, or in a
    single process, it is nn.BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_statistics = self.training or not self.track_running_stats
        if not (batch_statistics and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c, world, rank = x.shape[1], dist.get_world_size(), dist.get_rank()
        xf = x.float()
        n = x.numel() // c
        var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0) if n else (xf.new_zeros(c), xf.new_zeros(c))
        row = torch.cat([xf.new_full((1,), n), mean, var * n])  # (2C+1,): count, mean, sum of squared deviations
        rows = funcol.all_reduce(F.pad(row[None], (0, 0, rank, world - 1 - rank)), "sum", dist.group.WORLD)
        counts, means, m2 = rows[:, :1], rows[:, 1 : c + 1], rows[:, c + 1 :]  # (W,1), (W,C), (W,C)
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # (C,)
        var = (m2 + counts * (means - mean).square()).sum(0) / total  # (C,) biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                weight = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight)
                self.running_var.lerp_((var * total / (total - 1)).to(self.running_var.dtype), weight)
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.float().view(1, c, 1, 1) + self.bias.float().view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every nn.BatchNorm2d of `module` replaced by a SyncBatchNorm2d with its parameters and buffers."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average over the processes the gradients of parameters that no DDP wrapper holds (a learnable kappa), as
    DDP averages its own; nothing in a single process. Every rank must call it with the same parameters."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(dist.get_world_size())


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a (detached) tensor over processes, for logging."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t
