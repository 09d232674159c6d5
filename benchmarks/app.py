"""The browser app's re-render: one edited joint -> SPATN's parsing, the warped source and the generated person
(studio.session.Studio.render), the pictures the page shows (Studio.outputs) and their PNG encoding (what Gradio
sends for a gr.Image), on a real checkpoint and a test person; scripts/benchmark_app.py is its command line."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from benchmarks.timing import summarize
from data.pose import JOINT_NAMES
from studio.session import Session, Studio
from utils.errors import InputError

WRIST = JOINT_NAMES.index("right wrist")
PARTS = ("render", "pictures", "png", "total")


def png_bytes(pictures: dict[str, np.ndarray | None]) -> int:
    """PNG-encode every picture the page shows, as Gradio does for a numpy gr.Image; returns the bytes written."""
    written = 0
    for picture in pictures.values():
        if picture is not None:
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG")
            written += buffer.tell()
    return written


def bench_edits(studio: Studio, warmup: int, iters: int) -> dict:
    """The first test person in the first test pose; each edit moves the right wrist one pixel (right, then back:
    no two renders in a row see the same pose). Seconds per edit of each part (PARTS: render, pictures, png, and
    their total) and the process's CPU time over the total."""
    if not studio.people or not studio.poses:
        raise InputError("the app benchmark renders a test person in a test pose: the checkpoint's dataset (or "
                         "--data-root) has none")
    session = studio.pick_person(studio.pick_pose(Session(), 0), 0)
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    cpu = []
    for i in range(warmup + iters):
        session.pose[WRIST, 1] += 1.0 if i % 2 == 0 else -1.0
        start_cpu, start = time.process_time(), time.perf_counter()
        studio.render(session)
        rendered = time.perf_counter()
        pictures = studio.outputs(session)
        drawn = time.perf_counter()
        png_bytes(pictures)
        done = time.perf_counter()
        if session.message:
            raise InputError(f"the benchmark's pose was refused: {session.message}")
        if i >= warmup:
            for part, seconds in zip(PARTS, (rendered - start, drawn - rendered, done - drawn, done - start)):
                times[part].append(seconds)
            cpu.append(time.process_time() - start_cpu)
    return {**{part: summarize(times[part]) for part in PARTS}, "cpu": summarize(cpu)}
