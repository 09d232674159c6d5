"""How long one re-render of the browser app takes: an edited joint -> SPATN's parsing, the warped source and the
generated person, and the pictures the page shows, PNG-encoded as Gradio sends them (benchmarks/app.py).

    python scripts/benchmark_app.py                      # the demo's last checkpoint (make demo), the app's threads
    python scripts/benchmark_app.py --threads 2          # torch on both cores of a 2-core machine
    python scripts/benchmark_app.py --checkpoint CKPT --iters 40 --json app-bench.json

The checkpoint is loaded once, as app.py loads it (studio.session.load_studio). Each of --iters edits (after
--warmup) is timed in parts:
  render    Studio.render: the pose checked, pose maps, the flow module, SPATN, SPGNet, the three pictures
  pictures  Studio.outputs: the editor's skeleton and the enlarged pictures
  png       those pictures PNG-encoded (Pillow)
  total     the three: one edit's work on the server, without HTTP
  cpu       the process's CPU time over the total, all threads together: what an edit costs the machine
Medians and quartiles in ms, with torch's thread count and the machine (its load average included). The wall times
are a figure on an idle machine only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.app import bench_edits
from benchmarks.timing import machine_info
from studio.session import default_threads, load_studio
from utils.cli import positive_int, run_main
from utils.io import write_json


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a joint-stage checkpoint (default: the demo's last)")
    p.add_argument("--data-root", default=None, help="the test person's dataset (default: the checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch's CPU threads (default: the app's, all cores but one)")
    p.add_argument("--warmup", type=positive_int, default=5)
    p.add_argument("--iters", type=positive_int, default=30)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads())
    try:
        with tempfile.TemporaryDirectory(prefix="spgnet-benchmark-app-") as workdir:
            studio, _ = load_studio(Path(args.checkpoint) if args.checkpoint else None, Path(workdir), args.device,
                                    args.data_root, gallery=1)
            result = {"frame": "x".join(map(str, studio.frame)), "device": args.device, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "machine": machine_info(torch.device(args.device)),
                      "warmup": args.warmup, **bench_edits(studio, args.warmup, args.iters)}
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)
    machine = result["machine"]
    processor = machine.get("gpu_name", machine["cpu_model"])
    cores = f"{machine.get('cpu_cores_usable', machine['cpu_cores'])} of {machine['cpu_cores']} cores usable"
    load = " ".join(f"{x:.1f}" for x in machine.get("load_average") or []) or "unknown"
    print(f"app re-render, {result['frame']} frame, {args.device}, {result['threads']} torch threads, {args.iters} "
          f"edits after {args.warmup}")
    print(f"machine: {processor}, {cores}, {machine['platform']}, python {machine['python']}, torch "
          f"{result['torch']}; load average {load} (wall times are a figure on an idle machine only)")
    for part in ("render", "pictures", "png", "total", "cpu"):
        t = result[part]
        print(f"  {part:9s} median {1000 * t['median_s']:7.1f} ms   quartiles {1000 * t['q1_s']:.1f}-"
              f"{1000 * t['q3_s']:.1f} ms")
    if args.json:
        write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    run_main(main)
