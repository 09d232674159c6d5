"""The frozen flow module's output per training pair, computed once and kept in host memory (train.flow_cache_mb).

In the joint stage the flow module is frozen and in eval mode, so its (flow, visibility) for a pair depends on the
pair alone, as long as the pair's inputs do not change between visits (no flip, no target augmentation, a fixed
kappa: utils.config refuses the cache otherwise). A pair seen again then needs no forward of the module: the
step computes what it computed before (up to the float rounding of a different batch composition). On the demo's
128x88 a step whose pairs are all cached is about a ninth faster, and every training pair comes back several times.
An entry is (2,H,W) float32 flow and (H,W) uint8 labels, 9 bytes a pixel: 101 KiB at 128x88, 396 KiB at 256x176.
Pairs beyond the budget are computed at every visit.
"""

from __future__ import annotations

import torch
from torch import nn

from models.pipeline import flow_and_visibility

FLOW_INPUTS = ("src_pose", "tgt_pose", "src_keypoints", "tgt_keypoints")  # what the flow module reads of a batch


class FlowCache:
    """flow_and_visibility(flow_net, batch) with each training pair's result remembered, by (source, target) name."""

    def __init__(self, flow_net: nn.Module, max_bytes: int):
        self.flow_net, self.max_bytes = flow_net, max_bytes
        self.entries: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # on the CPU
        self.bytes = 0
        self.hits = self.lookups = 0

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A device batch -> target->source flow (B,2,H,W) float32 and visibility labels (B,H,W) long, on the
        batch's device; the module runs on the batch's pairs that are not cached, once for all of them."""
        device = batch["src_pose"].device
        keys = list(zip(batch["src_name"], batch["tgt_name"]))
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        computed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:
            rows = torch.tensor(missing, device=device)
            flow, vis = flow_and_visibility(self.flow_net, {k: batch[k][rows] for k in FLOW_INPUTS})
            computed = dict(zip(missing, zip(flow, vis)))
            for i, (f, v) in computed.items():
                self._store(keys[i], f, v)
        self.lookups += len(keys)
        self.hits += len(keys) - len(missing)
        pairs = [computed[i] if i in computed else self._load(keys[i], device) for i in range(len(keys))]
        return torch.stack([f for f, _ in pairs]), torch.stack([v for _, v in pairs])  # (B,2,H,W), (B,H,W)

    def _store(self, key: tuple[str, str], flow: torch.Tensor, vis: torch.Tensor) -> None:
        size = flow.numel() * 4 + vis.numel()  # float32 flow, uint8 labels (0 visible, 1 invisible, 2 background)
        if key in self.entries or self.bytes + size > self.max_bytes:
            return
        # clone: on the CPU, .cpu() is a view of the whole batch's output, which the entry would keep alive
        self.entries[key] = (flow.cpu().clone(), vis.to(torch.uint8).cpu())
        self.bytes += size

    def _load(self, key: tuple[str, str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        flow, vis = self.entries[key]
        return flow.to(device, non_blocking=True), vis.to(device).long()

    def stats(self) -> dict[str, float]:
        """What the log shows: the share of lookups served from memory so far, and the memory held (MiB)."""
        return {"flow_cache/hit_rate": self.hits / max(self.lookups, 1), "flow_cache/mib": self.bytes / 2**20}
