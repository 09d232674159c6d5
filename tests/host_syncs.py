"""A dispatch mode that records what makes a forward wait for a GPU, run on the CPU where tests run.

On a GPU these operations stall the host until the device has caught up, or copy host memory to it:
- a read of a tensor's value into Python (.item(), float(), bool(), `if tensor:`): aten._local_scalar_dense;
- an output whose shape depends on the values (nonzero, boolean-mask indexing, masked_select, unique);
- a tensor built from Python data (torch.tensor, new_tensor, as_tensor of a list): aten.lift_fresh, a copy from
  the host (and, from pageable memory, a wait) per call.
The CPU runs the same operators, so counting them here counts what the GPU would wait for.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default}
VALUE_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
                aten.repeat_interleave.Tensor}
FROM_HOST = {aten.lift_fresh.default}


def _is_mask_index(func, args) -> bool:
    return func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1])


class HostSyncs(TorchDispatchMode):
    """with HostSyncs() as syncs: ...  then syncs.found: Counter of the offending operators by name."""

    def __init__(self):
        super().__init__()
        self.found: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS or func in VALUE_SHAPED or func in FROM_HOST or _is_mask_index(func, args):
            self.found[str(func)] += 1
        return func(*args, **(kwargs or {}))
