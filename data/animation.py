"""Pose sequences and their animations: the poses between two poses, and frames written as a GIF or an mp4 (infer.py's
sequences, app.py's "animate").

Interpolation: a joint present in both poses moves on the straight line between them, (1 - t) a + t b for
t = 0, 1/(n-1), ..., 1; a joint present in one pose only (added or removed while editing) stays where that pose has
it and is shown in the half of the sequence nearer that pose (t < 1/2: the first pose's joints, t >= 1/2: the
last's), so no joint slides in from a corner.

Both writers go through a temporary file and a rename (utils.io.atomic_path): a failed write leaves no partial file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data.pose import is_missing
from utils.errors import InputError
from utils.io import WriteError, atomic_path


class VideoWriterError(InputError):
    """This OpenCV build cannot encode the asked video format."""


def interpolate_poses(start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """(18,2) start and end keypoints (y, x), -1 missing -> (n,18,2) float32 poses from start to end (n >= 2)."""
    if n < 2:
        raise ValueError(f"interpolate_poses: need at least 2 poses, got {n}")
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None, None]  # (n,1,1)
    moving = (start + t * (end - start)).astype(np.float32)  # (n,18,2)
    in_start, in_end = ~is_missing(start), ~is_missing(end)  # (18,)
    first_half = t[:, :, 0] < 0.5  # (n,1)
    one_sided = np.where(first_half[..., None], start, end)  # (n,18,2): the nearer pose's joint, or -1
    both = (in_start & in_end)[None, :, None]  # (1,18,1)
    return np.where(both, moving, one_sided).astype(np.float32)


def write_gif(frames: np.ndarray, path: Path, fps: float) -> Path:
    """(N,H,W,3) uint8 RGB frames -> an endlessly looping GIF (Pillow), `fps` frames per second."""
    pictures = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps),
                         loop=0)
    return path


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> Path:
    """(N,H,W,3) uint8 RGB frames -> mp4v through OpenCV, into a temporary file that is read back before the rename:
    the writer reports no write errors (a full disk gives a short file), so the frame count is the check."""
    h, w = frames.shape[1:3]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise VideoWriterError(f"{path}: this OpenCV build cannot write mp4v video; write a GIF instead")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        reader = cv2.VideoCapture(str(tmp))
        count = 0
        while reader.grab():
            count += 1
        reader.release()
        if count != len(frames):
            raise WriteError(f"cannot write {path}: the video holds {count} of {len(frames)} frames (disk full?)")
    return path
