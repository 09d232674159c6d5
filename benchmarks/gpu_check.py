"""A first session on a CUDA machine in one command: scripts/gpu_check.sh runs the CUDA-only tests, then this, which
writes one Markdown table (gpu_check.md) and every raw figure (gpu_check.json) into --out.

    row                        what
    CUDA-only tests            pytest -m cuda, run by gpu_check.sh; read from its JUnit XML
    train <config> <mode>      configs/deepfashion.yaml and configs/release/deepfashion.yaml in fp32, bf16 and
                               bf16+compile: the joint step fed by train.py's loader (data.num_workers, pinned memory
                               on CUDA): time per step, images/s, peak memory, and the share of the time the loop
                               was blocked in the loader's next() (measured: benchmarks.loader.bench_fed_step)
    test.py                    images/s through test.py on the same set (two runs, start-up and loading cancelled)
    metrics <protocol>         every metric of each evaluation protocol, PCKh's OpenPose included: ms per pair
                               each, pairs/s all together (benchmarks.metrics)
    FID distance               one Frechet distance between 2048-d statistics: a fixed cost per evaluation

Data: a synthetic DeepFashion-like set at 256x176, generated here. release/deepfashion.yaml trains at its own
256x256 on the same set padded to square (background columns on each side, the keypoints moved along: PATN's
256x176 DeepFashion is the 256x256 one with 40 columns cut from each side). Networks are random-init at the
configs' widths (a random VGG19 for the perceptual loss, a random frozen flow module): the cost of trained ones.

--quick: tiny networks (configs/unit_test/tiny.yaml) on a 128x64 set, a few steps, one thread, no compile, OpenPose
at one scale: the same rows on a CPU in about a minute (tests/test_gpu_check.py runs it). Rows start while the time
budget (--budget-s) lasts, the compile rows last; a row that fails reports its error and the others still run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.end_to_end import bench_test_rate
from benchmarks.inputs import (
    ALWAYS,
    ROOT,
    dataset_overrides,
    mode_overrides,
    synthetic_dataset,
    tiny_overrides,
)
from benchmarks.loader import bench_fed_step
from benchmarks.metrics import TIMED, metric_inputs, metric_models, time_distance, time_metrics
from benchmarks.report import fmt, memory_text
from benchmarks.timing import error_text, machine_info
from data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from data.pose import is_missing
from metrics.openpose import SCALES
from metrics.protocols import PROTOCOLS, get_protocol
from training.steps import native_bf16
from utils.cli import run_main
from utils.config import Config, load_config
from utils.distributed import parse_device
from utils.errors import InputError
from utils.host_memory import keep_freed_memory
from utils.io import ensure_writable_folder, read_image, write_image, write_json, write_text

TRAIN_CONFIGS = ("configs/deepfashion.yaml", "configs/release/deepfashion.yaml")
TRAIN_MODES = ("fp32", "bf16", "bf16+compile")
SKIPPED_EMULATED_BF16 = "skipped: --quick on a device without bf16 units (emulated, 13-45 s a tiny step)"
COLUMNS = ("check", "setting", "result", "time", "throughput", "peak memory", "data wait", "note")


@dataclass(frozen=True)
class Settings:
    """How much a run measures: the full check on a GPU, or --quick's smoke run of the same rows."""

    image_size: tuple[int, int]  # the synthetic set's (H, W)
    identities: int  # the set's people (half held out for the test split) and images per person
    poses: int
    warmup: int  # training steps timed apart (start-up, compilation), then the loader's queue, then `steps`
    steps: int
    queue_steps: int | None  # None: the loader's prefetch depth (workers x 4)
    workers: int | None  # None: each config's data.num_workers
    batch_size: int | None  # None: each config's train.batch_size
    test_pairs: tuple[int, int]  # test.py's two runs
    metric_pairs: int  # pairs timed per metric, in batches of metric_batch
    metric_batch: int
    openpose_images: int
    openpose_scales: tuple[float, ...]
    distance_dim: int
    compile: bool
    tiny: bool
    emulated_bf16: bool  # run the bf16 rows on a device without bf16 units (minutes a step on such a CPU)


FULL = Settings(image_size=(256, 176), identities=16, poses=6, warmup=3, steps=40, queue_steps=None, workers=None,
                batch_size=None, test_pairs=(16, 96), metric_pairs=256, metric_batch=64, openpose_images=8,
                openpose_scales=SCALES, distance_dim=2048, compile=True, tiny=False,
                emulated_bf16=True)
QUICK = Settings(image_size=(128, 64), identities=4, poses=3, warmup=1, steps=2, queue_steps=1, workers=1,
                 batch_size=2, test_pairs=(2, 6), metric_pairs=4, metric_batch=2, openpose_images=1,
                 openpose_scales=(0.5,), distance_dim=256, compile=False, tiny=True,
                 emulated_bf16=False)


# ------------------------------------------------------------------------------------------------ data


def pad_to_square(root: Path, out: Path) -> Path:
    """A copy of a synthetic set with every image padded to square: edge columns repeated on both sides of the
    pictures, background (label 0) beside the parsing maps, the keypoints' x moved by the left padding."""
    h, w = read_image(next((root / "train").glob("*.jpg"))).shape[:2]
    left = (h - w) // 2
    for split in ("train", "test"):
        for sub in (split, f"{split}_parsing"):
            ensure_writable_folder(out / sub)
        for path in (root / split).glob("*.jpg"):
            padded = cv2.copyMakeBorder(read_image(path), 0, 0, left, h - w - left, cv2.BORDER_REPLICATE)
            write_image(out / split / path.name, padded, rgb=False)
        for path in (root / f"{split}_parsing").glob("*.png"):
            labels = read_image(path, cv2.IMREAD_UNCHANGED)
            write_image(out / f"{split}_parsing" / path.name, np.pad(labels, ((0, 0), (left, h - w - left))))
    for path in root.glob("*-annotation-*.csv"):
        keypoints = read_annotations(path)  # {name: (18,2) (y, x)}
        write_annotations(out / path.name, {name: np.where(is_missing(kp)[:, None], kp, kp + [0, left])
                                            for name, kp in keypoints.items()})
    for path in root.glob("*-pairs-*.csv"):
        write_pairs(out / path.name, read_pairs(path))
    return out


def make_data(folder: Path, s: Settings) -> dict[str, Path]:
    """The synthetic set at s.image_size ("narrow") and its square copy ("square")."""
    base = load_config(None, [f"data.image_size=[{s.image_size[0]},{s.image_size[1]}]"])
    narrow, note = synthetic_dataset(base, folder, s.identities, s.poses)
    if narrow is None:
        raise InputError(note)
    return {"narrow": narrow, "square": pad_to_square(narrow, folder / "square")}


def data_overrides(config: str, data: dict[str, Path], s: Settings, *extra: str) -> list[str]:
    """Overrides that put `config` on the synthetic set: its own image size where the set has it padded (256x256
    configs), the set's layout, a random VGG19, tiny networks under --quick; then `extra`."""
    path = ROOT / config
    own = load_config(path, ALWAYS)
    square = own.data.image_size[0] == own.data.image_size[1]
    h = s.image_size[0]
    overrides = [*ALWAYS, f"data.image_size=[{h},{h if square else s.image_size[1]}]", "data.parsing_dir=null"]
    overrides += [] if s.workers is None else [f"data.num_workers={s.workers}"]
    overrides += [] if s.batch_size is None else [f"train.batch_size={s.batch_size}", f"test.batch_size={s.batch_size}"]
    overrides += tiny_overrides(own) if s.tiny else []
    cfg = load_config(path, overrides)
    return [*overrides, *fitting_scales(cfg), *dataset_overrides(cfg, data["square" if square else "narrow"]), *extra]


def fitting_scales(cfg: Config) -> list[str]:
    """The release generator halves both sides n_scales times down to >= 2 px: on --quick's small images its
    n_scales (and n_warp_scales) come down to the most that fit."""
    g = cfg.model.generator
    if g.variant != "release" or g.n_scales is None:
        return []
    h, w = cfg.data.image_size
    n = g.n_scales
    while n > 1 and (h % 2**n or w % 2**n or min(h, w) // 2**n < 2):
        n -= 1
    if n == g.n_scales:
        return []
    return [f"model.generator.n_scales={n}", f"model.generator.n_warp_scales={min(g.n_warp_scales, n)}"]


# ------------------------------------------------------------------------------------------------ rows


def row(check: str, setting: str, result: str = "ok", **figures: str) -> dict[str, str]:
    """One line of the table: COLUMNS, "-" where a row has no figure."""
    keys = {"time": "time", "throughput": "throughput", "memory": "peak memory", "wait": "data wait", "note": "note"}
    return {"check": check, "setting": setting, "result": result,
            **{column: figures.get(key, "-") for key, column in keys.items()}}


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def tests_row(xml: Path | None) -> dict[str, str]:
    """The CUDA-only tests' counts, from the JUnit XML gpu_check.sh had pytest write."""
    if xml is None or not xml.is_file():
        return row("CUDA-only tests", "pytest -m cuda", "not run (no --tests-xml)")
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    result = "ok" if n["failures"] + n["errors"] == 0 else "FAILED"
    return row("CUDA-only tests", "pytest -m cuda", result, note=f"{passed} passed, {n['failures']} failed, "
               f"{n['errors']} errors, {n['skipped']} skipped", time=f"{float(suite.get('time', 0)):.1f} s")


def train_row(config: str, mode: str, data: dict[str, Path], s: Settings, device: torch.device) -> tuple[dict, dict]:
    """The joint step of `config` in `mode` fed by its training loader: (table row, raw figures)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the previous row's cached blocks go back to the device
    cfg = load_config(ROOT / config, data_overrides(config, data, s, *mode_overrides(mode)))
    raw = bench_fed_step(cfg, device, s.warmup, s.steps, s.queue_steps)
    h, w = cfg.data.image_size
    setting = (f"{h}x{w}, batch {raw['batch_size']}, {plural(raw['workers'], 'worker')}"
               f"{', pinned' if raw['pin_memory'] else ''}, {plural(raw['steps'], 'step')}")
    return row(f"train {config} {mode}", setting, time=f"{fmt(raw['step_s'])}/step",
               throughput=f"{raw['images_per_s']:.1f} images/s", memory=memory_text(raw["memory"]),
               wait=f"{100 * raw['data_wait_share']:.1f}%",
               note=f"warm-up {plural(raw['warmup_steps'], 'step')}: {fmt(raw['warmup_s'])}"), raw


def test_script_row(data: dict[str, Path], s: Settings, device: torch.device, tmp: Path) -> tuple[dict, dict]:
    """test.py over random-init networks of configs/deepfashion.yaml on the set's test pairs."""
    config = TRAIN_CONFIGS[0]
    overrides = data_overrides(config, data, s)
    cfg = load_config(ROOT / config, overrides)
    raw = bench_test_rate(ROOT / config, overrides, cfg, device, s.test_pairs, cfg.test.batch_size,
                          cfg.data.num_workers, tmp)
    steady = raw["images_per_s"]
    return row("test.py", f"{config}, batch {raw['batch_size']}, {plural(raw['workers'], 'worker')}, "
               f"{raw['images'][0]} then {raw['images'][1]} images",
               time=f"{fmt(1 / steady)}/image" if steady else "-",
               throughput=f"{steady:.1f} images/s" if steady else "- (lost in the noise)",
               note=f"end to end with start-up: {raw['end_to_end_images_per_s']:.2f} images/s"), raw


def metrics_row(name: str, s: Settings, device: torch.device) -> tuple[dict, dict]:
    """Every metric of protocol `name` at the set's size on random-init networks: ms per pair each, pairs/s all."""
    protocol = get_protocol(name, s.image_size)
    chosen = [m for m in TIMED if getattr(protocol, m) is not None]
    counts = {m: s.openpose_images if m == "pckh" else s.metric_pairs for m in chosen}
    batches = {m: min(s.openpose_images, 4) if m == "pckh" else s.metric_batch for m in chosen}
    inputs = metric_inputs(min(s.metric_pairs, 64), *s.image_size, device)
    models = metric_models(chosen, protocol, device, batches.get("pckh", 1), openpose_scales=s.openpose_scales)
    seconds = time_metrics(protocol, inputs, models, counts, batches, device)
    per_pair = {m: seconds[m] / counts[m] for m in chosen}
    h, w = s.image_size
    scales = ",".join(f"{x:g}" for x in s.openpose_scales)
    return row(f"metrics {name}", f"{h}x{w}, {s.metric_pairs} pairs in batches of {s.metric_batch}"
               + (f"; OpenPose {plural(s.openpose_images, 'image')}, scales {scales}" if "pckh" in chosen else ""),
               time=", ".join(f"{m} {1e3 * v:.1f}" for m, v in per_pair.items()) + " ms/pair",
               throughput=f"{1 / sum(per_pair.values()):.2f} pairs/s, all {len(chosen)} metrics"), {
        "seconds": seconds, "counts": counts, "ms_per_pair": {m: 1e3 * v for m, v in per_pair.items()}}


def distance_row(s: Settings) -> tuple[dict, dict]:
    seconds = time_distance(dim=s.distance_dim)
    return row("FID distance", f"{s.distance_dim}-d statistics, sqrtm (evaluate.py's default)",
               time=fmt(seconds), note="once per evaluation"), {"seconds": seconds, "dim": s.distance_dim}


# ------------------------------------------------------------------------------------------------- run


class Session:
    """The rows in order, each started only when it can end within the time budget; a failing row reports its
    error and the next one runs."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s
        self.rows: list[dict[str, str]] = []
        self.raw: dict[str, dict] = {}

    def add(self, check: str, measure: Callable[[], tuple[dict, dict]], needs_s: float = 30.0) -> None:
        """Run `measure` unless fewer than `needs_s` seconds of the budget are left."""
        if time.monotonic() + needs_s > self.deadline:
            self.rows.append(row(check, "-", f"skipped: less than {needs_s:.0f} s of the time budget left"))
            return
        print(f"{check} ...", flush=True)
        started, started_cpu = time.perf_counter(), time.process_time()
        try:
            line, raw = measure()
        except Exception as err:  # a failing row is a result, not a crash
            traceback.print_exc()
            line, raw = row(check, "-", f"error: {error_text(err)}"), {"error": error_text(err)}
        self.rows.append(line)
        self.raw[check] = {**raw, "wall_s": time.perf_counter() - started,
                           "cpu_s": time.process_time() - started_cpu}  # this process's threads, not the workers


def measure_all(session: Session, s: Settings, device: torch.device, tmp: Path) -> None:
    """Data, then the eager training rows, test.py, the metrics, the FID distance, and the compiled rows last (the
    slowest to start: each waits for a few minutes of budget)."""
    data = make_data(tmp / "data", s)
    skip_bf16 = not (s.emulated_bf16 or native_bf16(device))
    for config, mode in [(c, m) for c in TRAIN_CONFIGS for m in TRAIN_MODES if "compile" not in m]:
        if skip_bf16 and "bf16" in mode:
            session.rows.append(row(f"train {config} {mode}", "-", SKIPPED_EMULATED_BF16))
            continue
        session.add(f"train {config} {mode}", partial(train_row, config, mode, data, s, device))
    session.add("test.py", partial(test_script_row, data, s, device, tmp / "test"))
    for name in PROTOCOLS:
        session.add(f"metrics {name}", partial(metrics_row, name, s, device))
    session.add("FID distance", partial(distance_row, s))
    for config, mode in [(c, m) for c in TRAIN_CONFIGS for m in TRAIN_MODES if "compile" in m]:
        if s.compile:
            session.add(f"train {config} {mode}", partial(train_row, config, mode, data, s, device), needs_s=150)
        else:
            session.rows.append(row(f"train {config} {mode}", "-", "skipped: --quick compiles nothing"))


def markdown(rows: list[dict[str, str]], machine: dict, device: torch.device, quick: bool) -> str:
    """The one table, under a line saying where and how it was measured."""
    where = machine.get("gpu_name") or machine["cpu_model"]
    lines = [f"# GPU check: {device} ({where}), torch {torch.__version__}, {machine['cpu_cores']} CPU cores"
             f"{', --quick (tiny networks: a smoke run, not figures)' if quick else ''}", "",
             "Random-init networks at the configs' widths, synthetic data; data wait: the share of the timed steps' "
             "wall time the loop was blocked in the loader's next().", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.md and gpu_check.json")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--quick", action="store_true", help="tiny networks, a few steps, no compile: the smoke run")
    p.add_argument("--tests-xml", type=Path, default=None, help="JUnit XML of the CUDA-only tests (gpu_check.sh)")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no row after this many seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    device = parse_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    ensure_writable_folder(args.out)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py
    else:
        keep_freed_memory()  # as train.py and test.py
    s = QUICK if args.quick else FULL
    if args.quick:
        torch.set_num_threads(1)  # tiny tensors: one thread beats several, and a shared CI machine stays responsive
    session = Session(args.budget_s)
    session.rows.append(tests_row(args.tests_xml))
    with tempfile.TemporaryDirectory(prefix="spgnet-gpu-check-") as tmp:
        measure_all(session, s, device, Path(tmp))
    machine = machine_info(device)
    table = args.out / "gpu_check.md"
    write_text(table, markdown(session.rows, machine, device, args.quick))
    write_json(args.out / "gpu_check.json", {"machine": machine, "torch": torch.__version__, "device": str(device),
                                             "settings": asdict(s), "rows": session.rows, "raw": session.raw})
    print(table.read_text())
    return table


if __name__ == "__main__":
    run_main(main)
