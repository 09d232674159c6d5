"""scripts/gpu_check.sh and benchmarks.gpu_check: `--device cpu --quick` writes the one table with every row; the
data wait is the time really spent blocked in the loader; the padded set keeps every picture and keypoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from benchmarks import gpu_check
from benchmarks.loader import run_steps
from data.annotations import read_annotations, read_pairs
from training.steps import native_bf16
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]


class SleepingStage:
    """A stand-in for JointStage: each step takes `seconds`."""

    def __init__(self, seconds: float):
        self.seconds, self.device = seconds, torch.device("cpu")
        self.cfg = SimpleNamespace(train=SimpleNamespace(channels_last=False))

    def step(self, batch: dict, step: int, guard) -> dict:
        time.sleep(self.seconds)
        return {}


def sleeping_batches(seconds: float):
    while True:
        time.sleep(seconds)
        yield {"x": torch.zeros(1)}


@pytest.mark.parametrize(("loader_s", "step_s", "low", "high"), [(0.05, 0.005, 0.7, 1.0), (0.0, 0.03, 0.0, 0.3)])
def test_the_data_wait_is_the_time_blocked_in_next(loader_s, step_s, low, high):
    """A loader slower than the step: the loop spends most of its time in next(); a fast one: almost none."""
    waited, wall = run_steps(SleepingStage(step_s), sleeping_batches(loader_s), iter(range(100)), 6)
    assert wall >= 6 * (loader_s + step_s) and low <= waited / wall <= high


def test_padding_to_square_keeps_every_picture_and_keypoint(market_people, tmp_path):
    square = gpu_check.pad_to_square(market_people, tmp_path / "square")
    left = (128 - 64) // 2
    for split in ("train", "test"):
        for path in (market_people / f"{split}_parsing").glob("*.png"):
            labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # (128,64)
            padded = cv2.imread(str(square / f"{split}_parsing" / path.name), cv2.IMREAD_UNCHANGED)
            assert padded.shape == (128, 128) and not padded[:, :left].any() and not padded[:, left + 64 :].any()
            np.testing.assert_array_equal(padded[:, left : left + 64], labels)
        for path in (market_people / split).glob("*.jpg"):
            assert cv2.imread(str(square / split / path.name)).shape == (128, 128, 3)
    for path in market_people.glob("*-annotation-*.csv"):
        before, after = read_annotations(path), read_annotations(square / path.name)
        for name, kp in before.items():
            missing = (kp == -1).any(axis=1)
            np.testing.assert_array_equal(after[name][missing], kp[missing])
            np.testing.assert_array_equal(after[name][~missing], kp[~missing] + [0, left])
    for path in market_people.glob("*-pairs-*.csv"):
        assert read_pairs(square / path.name) == read_pairs(path)


def test_the_release_generator_shrinks_its_scales_to_fit_small_images():
    release = ROOT / "configs/release/deepfashion.yaml"
    assert gpu_check.fitting_scales(load_config(release)) == []  # 7 scales fit 256x256
    small = load_config(release, ["data.image_size=[128,128]"])
    assert gpu_check.fitting_scales(small) == ["model.generator.n_scales=6", "model.generator.n_warp_scales=5"]
    assert gpu_check.fitting_scales(load_config(ROOT / "configs/deepfashion.yaml")) == []  # not the release's


def test_the_tests_row_counts_the_junit_report(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="9" failures="1" errors="0" skipped="3" '
                   'time="12.5"></testsuite></testsuites>')
    line = gpu_check.tests_row(xml)
    assert line["result"] == "FAILED" and line["note"] == "5 passed, 1 failed, 0 errors, 3 skipped"
    assert gpu_check.tests_row(tmp_path / "none.xml")["result"].startswith("not run")


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The check -> {column: cell} of gpu_check.md's table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return {c[0]: dict(zip(header, c)) for c in cells}


@pytest.mark.slow  # a minute or two: every row of the GPU check, tiny, on the CPU, in subprocesses
def test_quick_cpu_run_writes_one_table_with_every_row(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}  # test.py's processes too
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", "check", "--device", "cpu",
                             "--quick", "--budget-s", "3600"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = table_rows((out / "gpu_check.md").read_text())
    eager = [f"train {c} {m}" for c in gpu_check.TRAIN_CONFIGS for m in ("fp32", "bf16")]
    compiled = [f"train {c} bf16+compile" for c in gpu_check.TRAIN_CONFIGS]
    metrics = ["metrics clean", "metrics release", "metrics patn", "metrics gfla"]
    assert list(rows) == ["CUDA-only tests", *eager, "test.py", *metrics, "FID distance", *compiled]
    # --quick runs the bf16 rows only where the CPU has bf16 units (emulated, they took 4 of its 5.5 minutes)
    ran = [check for check in eager if "bf16" not in check or native_bf16(torch.device("cpu"))]
    assert all(rows[check]["result"] == "ok" for check in ["CUDA-only tests", *ran, "test.py", *metrics,
                                                            "FID distance"]), rows
    assert all(rows[check]["result"] == gpu_check.SKIPPED_EMULATED_BF16 for check in eager if check not in ran)
    assert all(rows[check]["result"] == "skipped: --quick compiles nothing" for check in compiled)
    for check in ran:
        assert rows[check]["throughput"].endswith("images/s") and rows[check]["data wait"].endswith("%")
        assert rows[check]["peak memory"].endswith("(RSS)")
    assert "128x128" in rows[eager[2]]["setting"]  # the release config at its square size, on the padded set
    assert all(("pckh" in rows[m]["time"]) == (m != "metrics gfla") for m in metrics)  # GFLA's script has no PCKh
    raw = json.loads((out / "gpu_check.json").read_text())["raw"]
    assert 0 <= raw[eager[0]]["data_wait_s"] <= raw[eager[0]]["steps"] * raw[eager[0]]["step_s"]
    for log in ("cuda-tests.log", "cuda-tests.xml", "gpu_check.log"):
        assert (out / log).stat().st_size > 0, log
