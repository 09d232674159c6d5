"""How long one re-render of the browser app takes: an edited joint -> SPATN's parsing, the warped source and the
generated person, and the pictures the page shows, PNG-encoded as Gradio sends them.

    python scripts/benchmark_app.py                      # the demo's last checkpoint (make demo), the app's threads
    python scripts/benchmark_app.py --threads 2          # torch on both cores of a 2-core machine
    python scripts/benchmark_app.py --checkpoint CKPT --iters 40 --json app-bench.json

The checkpoint is loaded once, as app.py loads it (studio.session.load_studio). The first test person is put in the
first test pose; each iteration then moves the right wrist one pixel (right, then back: no two renders in a row see
the same pose) and times, separately:
  render    Studio.render: the pose checked, pose maps, the flow module, SPATN, SPGNet, the three pictures
  pictures  Studio.outputs: the editor's skeleton and the enlarged pictures
  png       those pictures PNG-encoded (Pillow), as Gradio writes what a gr.Image returns
  total     the three: one edit's work on the server, without HTTP
  cpu       the process's CPU time over the three, all threads together: what an edit costs the machine, which
            other work sharing the cores changes less than the wall time
Median and 90th percentile over --iters after --warmup iterations, in ms, printed with torch's thread count and
the machine. The wall times are the figure on an idle machine only.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from data.pose import JOINT_NAMES  # noqa: E402
from studio.session import Session, default_threads, load_studio  # noqa: E402
from utils.cli import positive_int, run_main  # noqa: E402
from utils.errors import InputError  # noqa: E402
from utils.io import write_json  # noqa: E402

WRIST = JOINT_NAMES.index("right wrist")
PARTS = ("render", "pictures", "png", "total", "cpu")


def png_bytes(pictures: dict[str, np.ndarray | None]) -> int:
    """PNG-encode every picture the page shows (Gradio's cost for a numpy gr.Image); returns the bytes written."""
    written = 0
    for picture in pictures.values():
        if picture is not None:
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG")
            written += buffer.tell()
    return written


def time_edits(studio, session: Session, warmup: int, iters: int) -> dict[str, list[float]]:
    """Seconds per part (module docstring) of each timed edit."""
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    for i in range(warmup + iters):
        session.pose[WRIST, 1] += 1.0 if i % 2 == 0 else -1.0
        cpu, start = time.process_time(), time.perf_counter()
        studio.render(session)
        rendered = time.perf_counter()
        pictures = studio.outputs(session)
        drawn = time.perf_counter()
        png_bytes(pictures)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        if session.message:
            raise InputError(f"the benchmark's pose was refused: {session.message}")
        if i >= warmup:
            for part, seconds in zip(PARTS, (rendered - start, drawn - rendered, done - drawn, done - start, cpu)):
                times[part].append(seconds)
    return times


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))],
            "min_ms": ms[0], "max_ms": ms[-1]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a joint-stage checkpoint (default: the demo's last)")
    p.add_argument("--data-root", default=None, help="the dataset of the test person and pose (default: the "
                   "checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch's CPU threads (default: the app's, all cores but one)")
    p.add_argument("--warmup", type=positive_int, default=5)
    p.add_argument("--iters", type=positive_int, default=30)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    with tempfile.TemporaryDirectory(prefix="spgnet-benchmark-app-") as workdir:
        studio, note = load_studio(Path(args.checkpoint) if args.checkpoint else None, Path(workdir), args.device,
                                   args.data_root, gallery=1)
        if not studio.people:
            raise InputError(f"the benchmark renders a test person: {note}")
        session = studio.pick_person(studio.pick_pose(Session(), 0), 0)
        times = time_edits(studio, session, args.warmup, args.iters)
    frame = "x".join(map(str, studio.frame))
    result = {"checkpoint": str(args.checkpoint or "demo"), "frame": frame, "device": args.device,
              "threads": torch.get_num_threads(), "machine": f"{platform.machine()}, {platform.processor() or '?'}",
              "iters": args.iters, **{part: summary(times[part]) for part in PARTS}}
    print(f"app re-render, {frame} frame, {args.device}, {result['threads']} threads, {args.iters} edits "
          f"(after {args.warmup}):")
    for part in PARTS:
        print(f"  {part:9s} median {result[part]['median_ms']:7.1f} ms   p90 {result[part]['p90_ms']:7.1f} ms")
    if args.json:
        write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    run_main(main)
