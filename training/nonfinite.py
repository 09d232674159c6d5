"""What a NaN/inf loss does to a run (train.nonfinite), and the check that no checkpoint saves non-finite weights.

    stop  the steps never wait for the device to check their losses. A NaN/inf carries into the logging window's
          device-side sums, which `check` reads at the loop's sync points (log, validation, checkpoint, the end)
          before anything is logged or written; the run stops, naming the terms and the steps since the last check.
    skip  each update reads its terms on the host (one wait for the device per update) and is taken only when all
          are finite on every rank. A step with a skipped update changes nothing: its forward already moved the
          batch-norm running statistics, which are put back. train.max_consecutive_skips such steps in a row stop
          the run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from utils.run import RunLogger


def all_finite(terms: dict[str, torch.Tensor]) -> list[bool]:
    """Per term: finite here and, under DDP, on every rank (so that all ranks take the same branch)."""
    finite = torch.isfinite(torch.stack([v.detach().float() for v in terms.values()])).float()  # (T,)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return [bool(ok) for ok in finite.tolist()]


def nonfinite_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    """The names of the non-finite terms (all ranks agree); reading them waits for the device."""
    return [k for k, ok in zip(terms, all_finite(terms)) if not ok]


class BufferSnapshot:
    """The buffers (batch-norm running statistics) of some modules, to put back when a step is skipped: a
    training-mode forward updates them before the losses can be checked."""

    def __init__(self, modules: Iterable[nn.Module]):
        self.saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)


class NonFinitePolicy:
    """train.nonfinite for one run. Per step the loop calls `begin_step`, hands `allow` to the stage's step as the
    guard of each optimizer update, then `end_step`; at each sync point it calls `check` with the logging window's
    sums.

    mode: "stop" | "skip" (module docstring). modules: the networks whose buffers a skipped step puts back.
    step: the step the run starts at (the steps before it count as checked).
    """

    def __init__(self, mode: str, max_consecutive_skips: int, modules: Iterable[nn.Module], step: int,
                 log: RunLogger):
        self.mode, self.max_consecutive_skips, self.log = mode, max_consecutive_skips, log
        self.modules = list(modules)
        self.checked = step  # stop: the steps up to here had finite losses
        self.skipped: list[str] = []  # skip: the non-finite terms of this step's skipped updates
        self.skipped_in_a_row = 0
        self.before: BufferSnapshot | None = None

    def begin_step(self) -> None:
        """skip: keep the batch-norm statistics that a skipped step puts back."""
        self.skipped.clear()
        if self.mode == "skip":
            self.before = BufferSnapshot(self.modules)

    def allow(self, terms: dict[str, torch.Tensor]) -> bool:
        """Whether the update these terms drive is taken: skip reads them on the host; stop always takes it (the
        sync points check instead)."""
        if self.mode != "skip":
            return True
        bad = nonfinite_terms(terms)
        if bad:
            self.skipped.append(", ".join(bad))
        return not bad

    def end_step(self, step: int) -> bool:
        """Whether step `step` (1-based, just taken) counts. A step with a skipped update is undone, logged and
        does not count; the max_consecutive_skips-th in a row stops the run."""
        if not self.skipped:
            self.skipped_in_a_row = 0
            return True
        self.before.restore()
        self.skipped_in_a_row += 1
        self.log.text(f"non-finite loss at step {step}: {'; '.join(self.skipped)} (step skipped)")
        if self.skipped_in_a_row >= self.max_consecutive_skips:
            raise FloatingPointError(
                f"{self.skipped_in_a_row} steps in a row had non-finite losses (steps "
                f"{step - self.skipped_in_a_row + 1}-{step}, train.max_consecutive_skips); the run stopped, the last "
                "checkpoint is intact. Check the inputs of those steps or lower the learning rate.")
        return False

    def check(self, sums: dict[str, torch.Tensor], step: int) -> None:
        """stop, at a sync point: read the device-side sums of the terms since the last log (one wait for the
        device, one all-reduce) and stop the run if one is NaN/inf, before anything is logged or written."""
        if self.mode != "stop" or not sums:
            return
        bad = nonfinite_terms(sums)
        if not bad:
            self.checked = step
            return
        steps = f"at step {step}" if self.checked + 1 == step else f"in steps {self.checked + 1}-{step}"
        message = f"non-finite loss {steps}: {', '.join(bad)}"
        self.log.text(message + " (run stopped; the last checkpoint is intact)")
        raise FloatingPointError(message + ". The last good checkpoint is untouched; set train.nonfinite=skip to "
                                 "skip such steps instead, or lower the learning rate.")


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
