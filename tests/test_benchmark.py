"""scripts/benchmark.py and the benchmarks package: `--quick` runs end to end and writes a complete JSON report; a
failing mode is reported in the table instead of stopping the run; the timing summary matches hand-computed
statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import suite
from benchmarks.inputs import MODES, mode_overrides
from benchmarks.report import markdown
from benchmarks.timing import summarize
from scripts import benchmark
from utils.config import load_config
from utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_summary_statistics_match_hand_computed_values():
    stats = summarize([0.5, 0.1, 0.4, 0.2, 0.3])
    # sorted 0.1 .. 0.5: median 0.3; inclusive quartiles at positions 1 and 3 of 0..4
    assert stats["median_s"] == pytest.approx(0.3)
    assert (stats["min_s"], stats["max_s"]) == (0.1, 0.5)
    assert (stats["q1_s"], stats["q3_s"]) == (pytest.approx(0.2), pytest.approx(0.4))
    assert stats["n"] == 5


def test_modes_combine_into_config_overrides():
    cfg = load_config(ROOT / "configs/deepfashion.yaml", mode_overrides("bf16+channels_last"))
    assert (cfg.train.amp, cfg.train.channels_last, cfg.train.compile) == ("bf16", True, False)
    assert suite.selected("fp32,bf16+channels_last", MODES, "--modes", combine=True) == ["fp32", "bf16+channels_last"]
    with pytest.raises(InputError, match="fp33"):  # one `error:` line from the command line
        suite.selected("fp32,fp33", MODES, "--modes", combine=True)


@pytest.mark.slow  # every section of benchmark.py in a subprocess
def test_quick_run_writes_json_with_every_section(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--quick", "--modes", "fp32,fp16", "--json", str(out),
         "--threads", "1", "--infer-batch-size", "4", "--test-pairs", "2", "--loader-batches", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())

    for key in ("machine", "torch", "threads", "config", "overrides", "batch_size", "image_size", "modes",
                "breakdown", "pose", "loader", "test"):
        assert key in report, key
    assert report["config"] == "configs/deepfashion.yaml" and report["image_size"] == [128, 64]
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["cpu_model"]
    assert "loss.perceptual_weights=random" in report["overrides"]
    assert report["discriminator_on"] is True

    fp32 = report["modes"]["fp32"]
    assert fp32["train"]["step"]["median_s"] > 0 and fp32["train"]["images_per_s"] > 0
    assert fp32["train"]["step"]["n"] == 2 and fp32["train"]["step"]["min_s"] <= fp32["train"]["step"]["max_s"]
    assert fp32["train"]["memory"]["host_peak_rss_mb"] > 0
    ref = fp32["train"]["reference_conv"]  # a 3x3 conv, 256 -> 256 channels, on (4,256,64,64)
    assert ref["gflop"] == pytest.approx(2 * 256 * 256 * 9 * 4 * 64 * 64 / 1e9)
    assert ref["gflop_per_s"] == pytest.approx(ref["gflop"] / ref["median_s"])
    assert fp32["infer"]["images_per_s"] > 0 and fp32["infer"]["batch_size"] == 4
    if report["device"] == "cpu":  # fp16 autocast is a CUDA-only mode: reported, not run
        assert "error" in report["modes"]["fp16"] and "train" not in report["modes"]["fp16"]

    parts = report["breakdown"]["fp32"]
    for name in ("spatn fwd+bwd", "generator fwd+bwd", "perceptual loss fwd+bwd", "D step (2B) fwd+bwd",
                 "optimizer G (Adam)", "optimizer D (Adam)"):
        assert parts[name]["median_s"] > 0, name

    # VGG19 up to relu2_1 (--quick's layers) on 4 generated + 4 target images of 128x64, 2 FLOP per multiply-add:
    # conv1_1 3->64 and conv1_2 64->64 at full size, conv2_1 64->128 after one 2x2 pool, all 3x3
    h, w = 128, 64
    vgg = 2 * 9 * (h * w * 64 * 3 + h * w * 64 * 64 + (h // 2) * (w // 2) * 128 * 64)
    assert report["gflop"]["parts"]["perceptual loss fwd"] == pytest.approx(8 * vgg / 1e9, rel=1e-6)
    assert report["gflop"]["train_step"] > report["gflop"]["parts"]["spatn fwd+bwd"] > 0

    pose = report["pose"]
    for how in ("cpu_single_thread_per_pose", "cpu_batched", "device_batched"):
        assert pose[how]["poses_per_s"] > 0, how

    assert report["loader"]["samples_per_s"] > 0, report["loader"]
    assert report["loader"]["wait_fraction"]["fp32"] > 0
    assert report["test"]["pairs"] >= 1 and report["test"]["pairs_per_s"] > 0, report["test"]

    assert "| fp32 |" in result.stdout and "RANDOM-INIT VGG19" in result.stdout


@pytest.mark.filterwarnings("ignore:perceptual loss uses a RANDOM-INIT VGG19")
def test_a_failing_mode_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    real = suite.bench_train_step

    def fails_in_bf16(cfg, *args):
        if cfg.train.amp == "bf16":
            raise RuntimeError("simulated kernel failure")
        return real(cfg, *args)

    monkeypatch.setattr(suite, "bench_train_step", fails_in_bf16)
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    report = benchmark.main(["--quick", "--modes", "bf16,fp32", "--sections", "train", "--iters", "1",
                             "--warmup", "0", "--threads", "1", "--json", str(out)])
    assert report["modes"]["bf16"]["error"] == "RuntimeError: simulated kernel failure"
    assert report["modes"]["fp32"]["train"]["step"]["median_s"] > 0
    assert json.loads(out.read_text())["modes"]["bf16"]["error"].endswith("simulated kernel failure")
    assert "| bf16 | RuntimeError: simulated kernel failure |" in markdown(report)
    assert torch.get_num_threads() == threads  # --threads 1 applied to the run only
