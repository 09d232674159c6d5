"""Run folders (EDM style: runs/00003-deepfashion/) and the run's log files.

A run folder holds: config.yaml (the resolved config), log.txt (human-readable), metrics.jsonl (one JSON
object per logged step, for scripts and tests), TensorBoard events in tb/, checkpoints/ and images/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from utils.checkpoint import step_checkpoints

_RUN = re.compile(r"^(\d{5})-(.+)$")


def numbered_runs(root: str | Path, name: str | None = None) -> list[Path]:
    """Run folders under `root`, oldest first; only those called `name` when given."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _RUN.match(p.name))]
    return [p for _, p in sorted(runs) if name is None or _RUN.match(p.name).group(2) == name]


def new_run_folder(root: str | Path, name: str) -> Path:
    """The next free runs/<NNNNN>-<name> folder (numbered across all names, like EDM)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = [int(m.group(1)) for p in root.iterdir() if (m := _RUN.match(p.name))]
    folder = root / f"{max(existing, default=-1) + 1:05d}-{name}"
    folder.mkdir()
    return folder


def latest_checkpoint(root: str | Path, name: str) -> Path | None:
    """Newest checkpoint of the newest run called `name` that has one (`--resume auto`)."""
    for run in reversed(numbered_runs(root, name)):
        ckpts = step_checkpoints(run / "checkpoints")
        if ckpts:
            return ckpts[-1]
    return None


class RunLogger:
    """log.txt + metrics.jsonl + TensorBoard, written by the main process only."""

    def __init__(self, folder: Path, enabled: bool = True, tensorboard: bool = True):
        self.folder, self.enabled = folder, enabled
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tb"))

    def text(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.folder / "log.txt", "a") as f:
            f.write(f"[{stamp}] {message}\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, image_chw: Any) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image_chw, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(folder: str | Path) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
