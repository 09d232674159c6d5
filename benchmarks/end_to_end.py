"""test.py end to end: a subprocess from start-up to the last image, over a joint checkpoint of random-init
networks, on the pairs of a dataset."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.inputs import ROOT
from models.build import build_flow, build_spatn, build_spgnet
from utils import checkpoint as ck
from utils.config import Config


def write_checkpoint(cfg: Config, path: Path) -> None:
    """A joint-stage checkpoint of random-init networks, as test.py reads it (spatn, generator, flow)."""
    torch.manual_seed(cfg.train.seed)
    models = {"spatn": build_spatn(cfg).state_dict(), "generator": build_spgnet(cfg).state_dict()}
    if cfg.model.flow.source == "net":
        models["flow"] = build_flow(cfg).state_dict()
    ck.save_checkpoint(path, cfg, models)


def run_test_script(config: Path, overrides: list[str], ckpt: Path, out: Path, device: torch.device, pairs: int,
                    batch_size: int, workers: int) -> tuple[int, float]:
    """`python test.py` on the first `pairs` test pairs; (images written, wall seconds)."""
    cmd = [sys.executable, "test.py", "--config", str(config), *overrides, "--checkpoint", str(ckpt),
           "--out", str(out), "--limit", str(pairs), "--batch-size", str(batch_size), "--workers", str(workers),
           "--device", device.type]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"test.py exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return len(list((out / "images").glob("*.png"))), wall


def bench_test_script(config: Path, overrides: list[str], cfg: Config, device: torch.device, pairs: int,
                      batch_size: int, workers: int, tmp: Path) -> dict:
    """`python test.py` in a subprocess on `pairs` test pairs: wall time from start-up to the last image."""
    ckpt = tmp / "checkpoint" / "step-00000000.pt"
    write_checkpoint(cfg, ckpt)
    written, wall = run_test_script(config, overrides, ckpt, tmp / "test-out", device, pairs, batch_size, workers)
    return {"pairs": written, "batch_size": batch_size, "workers": workers, "wall_s": wall,
            "pairs_per_s": written / wall, "note": "wall time includes interpreter start-up and model loading"}


def bench_test_rate(config: Path, overrides: list[str], cfg: Config, device: torch.device, pairs: tuple[int, int],
                    batch_size: int, workers: int, tmp: Path) -> dict:
    """test.py's steady rate: two runs over the first pairs[0] and pairs[1] pairs; the extra images over the extra
    seconds cancel what both runs share (interpreter start-up, imports, model loading, the workers' start)."""
    ckpt = tmp / "checkpoint" / "step-00000000.pt"
    write_checkpoint(cfg, ckpt)
    runs = [run_test_script(config, overrides, ckpt, tmp / f"test-{n}", device, n, batch_size, workers)
            for n in pairs]
    (small, small_s), (large, large_s) = runs
    if large <= small:
        raise RuntimeError(f"test.py wrote {large} images for --limit {pairs[1]}: the test split needs more pairs")
    steady = (large - small) / (large_s - small_s) if large_s > small_s else None  # None: lost in the noise
    return {"images": [small, large], "wall_s": [small_s, large_s], "batch_size": batch_size, "workers": workers,
            "images_per_s": steady, "end_to_end_images_per_s": large / large_s}
