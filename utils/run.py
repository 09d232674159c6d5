"""Run folders (EDM style: runs/00003-deepfashion/) and the run's log files.

A run folder holds: config.yaml (the resolved config), log.txt (human-readable), metrics.jsonl (one JSON
object per logged step, for scripts and tests), TensorBoard events in tb/, checkpoints/ and images/, and
while a run uses it, the lock file `run.lock` (RunLock: one run per folder).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from utils.checkpoint import step_checkpoints
from utils.errors import InputError
from utils.io import append_text, process_alive

_RUN = re.compile(r"^(\d{5})-(.+)$")


def numbered_runs(root: str | Path, name: str | None = None) -> list[Path]:
    """Run folders under `root`, oldest first; only those called `name` when given."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _RUN.match(p.name))]
    return [p for _, p in sorted(runs) if name is None or _RUN.match(p.name).group(2) == name]


def new_run_folder(root: str | Path, name: str) -> Path:
    """The next free runs/<NNNNN>-<name> folder (numbered across all names, like EDM). Two runs started at
    once may pick the same number: mkdir is the arbiter, and the loser takes the next number."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        existing = [int(m.group(1)) for p in root.iterdir() if (m := _RUN.match(p.name))]
        folder = root / f"{max(existing, default=-1) + 1:05d}-{name}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # another run took this number between the listing and the mkdir
        return folder


class RunLockError(InputError):
    """The run folder is in use by another run; the message names its PID and host."""


class RunLock:
    """One run per run folder: an exclusive lock on `<folder>/run.lock`, which holds the owner's PID and host.

        with RunLock(run_folder):
            ...train...

    The lock is an flock(2) on the file, so the kernel releases it when the owner dies, however it dies; a
    second run on the folder fails at once with RunLockError naming the owner. A lock file left by a dead
    owner (SIGKILL, power loss) is stale: it is taken over, with a message on stderr naming the dead PID.
    A clean release deletes the file.
    """

    NAME = "run.lock"

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockError(f"run folder {self.path.parent} is in use by {self._holder()} (lock file "
                                   f"{self.path}); wait for that run to end, or use another run folder") from None
            # the previous owner may have deleted the file between our open and our lock: lock the file the
            # path names now, or two runs would each hold a lock on a different file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if stale:
            print(f"note: taking over the stale lock {self.path} of {self._describe(stale)}, which no longer "
                  "holds it (killed or crashed)", file=sys.stderr)
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode() + b"\n", 0)
        self._fd = fd

    def _holder(self) -> str:
        """The owner named in the lock file; it writes its name right after locking, so retry briefly."""
        for _ in range(20):
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text:
                return self._describe(text)
            time.sleep(0.05)
        return "another process (its PID is not yet written to the lock file)"

    @staticmethod
    def _describe(text: str) -> str:
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (ValueError, KeyError, TypeError):
            return f"an unknown owner ({text[:80]!r})"
        state = ""
        if host == socket.gethostname() and not process_alive(pid):
            state = ", no longer running"
        return f"PID {pid} on host {host} (since {owner.get('started', '?')}{state})"

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: a waiting opener re-checks the inode
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        append_text(self.folder / "log.txt", f"[{stamp}] {message}\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        append_text(self.folder / "metrics.jsonl", json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, image_chw: Any) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image_chw, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MetricsFileError(InputError):
    """A metrics.jsonl line that is not JSON (other than a last line cut short by a kill)."""


def read_metrics(folder: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl. A run killed while appending can leave its last line cut short: that
    line is dropped (its values are re-logged when the run resumes); any other malformed line is an error."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines) and not path.read_text().endswith("\n"):
                break  # the unfinished last append of a killed run
            raise MetricsFileError(f"{path}, line {number}: not a JSON row ({err.msg})") from None
    return rows
