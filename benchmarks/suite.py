"""scripts/benchmark.py's run: the chosen sections over the chosen modes, each failure a result rather than a
crash, into one JSON-ready report.

Model sections (flops, train, infer, breakdown, pose, and the profile) use random inputs and random-init
networks; the data sections (loader, test) a dataset, --data or a small synthetic one generated for the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from benchmarks.breakdown import bench_breakdown
from benchmarks.end_to_end import bench_test_script
from benchmarks.flops import REFERENCE_CONV, flop_summary
from benchmarks.inference import bench_inference
from benchmarks.inputs import ALWAYS, MODES, dataset_overrides, mode_overrides, synthetic_dataset, tiny_overrides
from benchmarks.loader import bench_loader
from benchmarks.pose import bench_pose
from benchmarks.timing import attempt, machine_info
from benchmarks.train_step import bench_train_step, profile_step
from utils.config import Config, load_config
from utils.errors import InputError
from utils.host_memory import keep_freed_memory

SECTIONS = ("flops", "train", "infer", "breakdown", "pose", "loader", "test")
QUICK_IMAGE_SIZE = (128, 64)  # --quick: tiny widths at 128x64, every code path of the step in well under a second


def selected(text: str, allowed: tuple[str, ...], flag: str, combine: bool = False) -> list[str]:
    """Comma-separated names from `allowed` (each may join several with '+' when `combine`)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if not all(part in allowed for part in (n.split("+") if combine else [n]))]
    if unknown:
        raise InputError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


@dataclass
class Plan:
    """What a run measures: the config with its overrides, the modes, the sections and the iteration counts."""

    config: Path
    overrides: list[str]
    base: Config
    modes: list[str]
    sections: list[str]
    warmup: int
    iters: int
    workers: int

    def mode_config(self, mode: str) -> Config:
        return load_config(self.config, self.overrides + mode_overrides(mode))


def make_plan(args: argparse.Namespace) -> Plan:
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    iters = args.iters if args.iters is not None else (2 if args.quick else 5)
    if iters < 1 or warmup < 0:
        raise InputError("--iters must be >= 1 and --warmup >= 0")
    default_modes = [m for m in MODES if not (args.quick and m == "compile")]  # --quick: no minutes of compiling
    modes = selected(args.modes, MODES, "--modes", combine=True) if args.modes else default_modes
    sections = selected(args.sections, SECTIONS, "--sections")
    config = Path(args.config).resolve()
    tiny = tiny_overrides(load_config(config, [*ALWAYS, *args.overrides])) if args.quick else []
    overrides = [*ALWAYS, *(o for o in tiny if o not in ALWAYS), *args.overrides]
    image_size = args.image_size or (QUICK_IMAGE_SIZE if args.quick else None)
    if image_size is not None:
        overrides.append(f"data.image_size=[{image_size[0]},{image_size[1]}]")
    base = load_config(config, overrides)
    workers = args.workers if args.workers is not None else (min(base.data.num_workers, 1) if args.quick
                                                             else base.data.num_workers)
    return Plan(config, overrides, base, modes, sections, warmup, iters, workers)


def new_report(args: argparse.Namespace, plan: Plan, device: torch.device) -> dict:
    """The report's settings, machine and notes, before any section has run."""
    base = plan.base
    notes = ["Model timings use random inputs and random-init networks at the configured widths; the perceptual "
             "loss uses a RANDOM-INIT VGG19 (weights=random), which costs the same as the ImageNet one.",
             "floor: the step's GFLOP over the GFLOP/s of one large convolution (3x3, 256 channels, input "
             f"{'x'.join(map(str, REFERENCE_CONV))}, forward) in the same mode: the step time if every op ran at that "
             "rate, about the machine's peak (needs the flops section)."]
    machine = machine_info(device)
    allocator = "default"
    if device.type == "cpu":
        load = ", ".join(f"{x:.1f}" for x in machine["load_average"] or [])
        notes.append(f"CPU run: load average at start {load} on {machine['cpu_cores']} cores; other processes on "
                     "the same cores inflate (and scatter) the timings.")
        if keep_freed_memory():  # as train.py and test.py do on the CPU
            allocator = "glibc malloc keeps freed memory (utils/host_memory.py, as train.py and test.py)"
            notes.append(f"Host allocator: {allocator}. The process keeps what a mode freed, so the peak RSS of a "
                         "mode after the first includes the heap earlier modes left: run one mode per process "
                         "for its own peak.")
    return {
        "machine": machine, "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": str(device), "threads": torch.get_num_threads(), "config": args.config,
        "overrides": plan.overrides, "quick": args.quick, "batch_size": args.batch_size,
        "infer_batch_size": args.infer_batch_size, "image_size": list(base.data.image_size),
        "warmup": plan.warmup, "iters": plan.iters, "sections": plan.sections,
        "perceptual_weights": "random", "host_allocator": allocator,
        "flow": ("random-init FlowNet (frozen), standing in for the stage-0 one" if base.model.flow.source == "net"
                 else "flow/visibility tensors as loaded from files"),
        "discriminator_on": base.loss.weights.adversarial > 0, "modes": {}, "notes": notes, "wall_s": {},
    }


def model_sections(report: dict, plan: Plan, args: argparse.Namespace, device: torch.device) -> None:
    """flops, then train and infer per mode, then the breakdown, the profile and pose encoding."""
    wall, sections, warmup, iters = report["wall_s"], plan.sections, plan.warmup, plan.iters
    if "flops" in sections:
        report["gflop"] = attempt(wall, "flop count", partial(flop_summary, plan.base, args.batch_size,
                                                              args.infer_batch_size))
    for mode in plan.modes:
        entry: dict = {}
        report["modes"][mode] = entry
        if "fp16" in mode.split("+") and device.type != "cuda":
            entry["error"] = "skipped: fp16 autocast is benchmarked on CUDA only"
            continue
        cfg = plan.mode_config(mode)
        if "train" in sections:
            result = attempt(wall, f"{mode}/train", partial(bench_train_step, cfg, device, args.batch_size, warmup,
                                                            iters))
            entry.update({"error": result["error"]} if "error" in result else {"train": result})
        if "infer" in sections:
            entry["infer"] = attempt(wall, f"{mode}/infer", partial(bench_inference, cfg, device,
                                                                    args.infer_batch_size, warmup, iters))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "breakdown" in sections:
        names = (selected(args.breakdown_modes, MODES, "--breakdown-modes", combine=True) if args.breakdown_modes
                 else [m for m in plan.modes if "train" in report["modes"][m]][:1])
        report["breakdown"] = {m: attempt(wall, f"{m}/breakdown", lambda m=m: bench_breakdown(
            plan.mode_config(m), device, args.batch_size, warmup, iters)) for m in names}
    if args.profile > 0 and plan.modes:
        first = plan.modes[0]
        report["profile"] = {"mode": first, **attempt(wall, f"{first}/profile", lambda: {"top_ops": profile_step(
            plan.mode_config(first), device, args.batch_size, args.profile)})}
    if "pose" in sections:
        report["pose"] = attempt(wall, "pose", lambda: bench_pose(plan.base, device, args.infer_batch_size, warmup,
                                                                  max(iters, 3)))


def data_sections(report: dict, plan: Plan, args: argparse.Namespace, device: torch.device) -> None:
    """loader and test on --data, or on a synthetic set generated into a temporary folder for the run."""
    wall, sections = report["wall_s"], plan.sections
    if not {"loader", "test"} & set(sections):
        return
    with tempfile.TemporaryDirectory(prefix="spgnet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        root, data_note = (Path(args.data).resolve(), f"dataset {args.data}") if args.data else (None, None)
        if root is None:
            started = time.perf_counter()
            print("generating a synthetic set ...", flush=True)
            root, data_note = synthetic_dataset(plan.base, tmp, *((4, 3) if args.quick else (8, 4)))
            wall["synthetic set"] = time.perf_counter() - started
        report["notes"].append(data_note)
        if root is not None:
            data_overrides = plan.overrides + dataset_overrides(plan.base, root)
            data_cfg = load_config(plan.config, data_overrides)
        if "loader" in sections:
            report["loader"] = ({"skipped": data_note} if root is None else attempt(
                wall, "loader", lambda: bench_loader(data_cfg, args.batch_size, plan.workers, args.loader_batches)))
            if "s_per_batch" in report["loader"]:
                report["loader"]["wait_fraction"] = {
                    m: report["loader"]["s_per_batch"] / e["train"]["step"]["median_s"]
                    for m, e in report["modes"].items() if "train" in e}
        if "test" in sections:
            report["test"] = ({"skipped": data_note} if root is None else attempt(
                wall, "test", lambda: bench_test_script(plan.config, data_overrides, data_cfg, device,
                                                        args.test_pairs, data_cfg.test.batch_size, plan.workers,
                                                        tmp)))


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Every chosen section over every chosen mode: the report."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py
    plan = make_plan(args)
    report = new_report(args, plan, device)
    model_sections(report, plan, args, device)
    data_sections(report, plan, args, device)
    if hasattr(os, "getloadavg"):
        report["machine"]["load_average_end"] = list(os.getloadavg())
        report["notes"].append("load average at the end: "
                               + ", ".join(f"{x:.1f}" for x in report["machine"]["load_average_end"]))
    return report
