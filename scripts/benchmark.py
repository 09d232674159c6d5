"""How fast is SPGNet training and inference on this machine, and where does the time go?

    python scripts/benchmark.py                                          # configs/deepfashion.yaml, authors' widths
    python scripts/benchmark.py --config configs/deepfashion_256.yaml --modes fp32,channels_last,bf16
    python scripts/benchmark.py --device cuda --json bench.json          # all modes, fp16 and compile included
    python scripts/benchmark.py --quick --json out.json                  # tiny widths, seconds (the test uses it)

Run from the repository root once `make venv` has installed the project. Each section is a module of the
benchmarks package (benchmarks/__init__.py lists them); this file is their command line.

Model timings use RANDOM inputs of the config's shapes and randomly initialised networks at the config's
widths, so no dataset or pretrained weight is needed: the perceptual loss runs a random-init VGG19
(`loss.perceptual_weights=random`, the same cost as the ImageNet weights) and a random-init FlowNet stands in
for the frozen stage-0 flow module. Sections (each: warm-up iterations, then timed ones; median and spread):

  flops      convolution/matmul GFLOP of each piece of a step, counted on the meta device (nothing computed),
             so every timing also reads as achieved GFLOP/s
  train      the full joint training step (JointStage.step: SPATN + generator + discriminator, all losses, both
             optimizer steps, adversarial term on) at --batch-size, once per mode
  infer      generator inference (pose maps + SPATN + flow + SPGNet, eval, no_grad) at --infer-batch-size
  breakdown  the same networks, losses and optimizers timed one component at a time (where a step's time goes)
  pose       data.pose.encode_pose: one pose at a time on one CPU thread (what a loader worker does), batched on
             the CPU, batched on the device
  loader     the training DataLoader alone over a synthetic set, with the configured workers, and the fraction of
             a training step the device would wait on it
  test       test.py end to end (a subprocess, from start-up to the last PNG) on --test-pairs pairs

Modes: fp32 (eager), channels_last, bf16 / fp16 (autocast; fp16 on CUDA only), compile (torch.compile); '+'
combines them (bf16+channels_last). A mode that fails reports its error in the table; the others still run.
The loader and test sections need a dataset: --data ROOT, else a small synthetic set is generated (data.synthetic,
as scripts/make_synthetic.py) when the config's image size is one the renderer draws (256x176 or 128x64); otherwise
they are skipped with a note.
Peak memory: torch.cuda.max_memory_allocated on a GPU; the host's peak resident set size (VmHWM, reset before
each mode where the kernel allows, else the process-lifetime ru_maxrss) on the CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.inputs import MODES
from benchmarks.report import markdown, profile_table
from benchmarks.suite import SECTIONS, run
from utils.cli import run_main
from utils.errors import InputError
from utils.io import write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/deepfashion.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="tiny widths (configs/unit_test/tiny.yaml), 128x64, 1 warm-up + 2 timed iterations, "
                        "no compile (for tests)")
    p.add_argument("--modes", default=None, help=f"comma-separated subset of {','.join(MODES)} (default: all); "
                   "'+' combines modes, e.g. bf16+channels_last")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--breakdown-modes", default=None, help="modes to break down (default: the first mode)")
    p.add_argument("--batch-size", type=int, default=4, help="training batch")
    p.add_argument("--infer-batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 5; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2; --quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--data", default=None, help="dataset root for the loader and test.py sections")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: data.num_workers)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed in the loader section")
    p.add_argument("--test-pairs", type=int, default=32, help="pairs test.py generates")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile one training step of the first mode with torch.profiler: top N ops")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        report = run(args, device)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)
    print(markdown(report))
    if "top_ops" in report.get("profile", {}):
        print("\n".join(profile_table(report["profile"], args.profile)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    run_main(main)
