"""test.py end to end on the suite's synthetic people: its images are the test-time path (SPATN's argmax parsing
into SPGNet, flow from the checkpoint's frozen flow module) computed here by calling the networks directly; the
dataset-folder refusal; --skip-existing after an interrupted run; --grids and --parsing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import test as test_script
from data.annotations import read_pairs
from data.datasets import generated_image_name
from data.loaders import build_dataset
from data.parsing import PALETTE
from models.build import build_all
from utils import checkpoint as ck
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/unit_test/tiny.yaml"  # tiny networks on 128x64 people


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, market_people) -> Path:
    """A joint-stage checkpoint of random-init tiny networks (spatn, generator, discriminator, flow)."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG, [f"data.root={market_people}"])
    nets = build_all(cfg)
    for net in nets.values():  # non-trivial batch-norm statistics, so eval mode is exercised for real
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "step-00000007.pt"
    ck.save_checkpoint(path, cfg, {k: v.state_dict() for k, v in nets.items()}, step=7)
    return path


def run_test(market: Path, checkpoint: Path, out: Path, *extra: str) -> Path:
    return test_script.main(["--config", CONFIG, f"data.root={market}", "--checkpoint", str(checkpoint),
                             "--out", str(out), "--workers", "0", "--device", "cpu", *extra])


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image[..., ::-1]


@torch.no_grad()
def expected_images(market: Path, checkpoint: Path, truncate: bool = False) -> dict[str, np.ndarray]:
    """The test-time path written out here: SPATN -> one-hot argmax -> SPGNet with the frozen flow, in eval;
    uint8 by rounding, or by truncation as the authors' test script (((x + 1) * 127.5).clip(0, 255).astype)."""
    cfg = load_config(CONFIG, [f"data.root={market}"])
    state = ck.load_checkpoint(checkpoint)["models"]
    nets = build_all(cfg)
    for name, net in nets.items():
        net.load_state_dict(state[name])
        net.eval()
    dataset = build_dataset(cfg, "test")
    out = {}
    for i in range(len(dataset)):
        s = dataset[i]
        src_pose, tgt_pose = s["src_pose"][None], s["tgt_pose"][None]
        logits = nets["spatn"](s["src_parsing"][None], src_pose, tgt_pose)  # (1,K,H,W)
        parsing = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).float()
        flow = nets["flow"](src_pose, tgt_pose)
        image = nets["generator"](s["src_image"][None], tgt_pose, s["src_parsing"][None], parsing, flow.flow,
                                  flow.vis_logits.argmax(1))[0]  # (3,H,W)
        scaled = ((image + 1) * 127.5).permute(1, 2, 0).numpy()
        pixels = scaled.clip(0, 255).astype(np.uint8) if truncate else np.round(scaled.clip(0, 255)).astype(np.uint8)
        out[generated_image_name(s["src_name"], s["tgt_name"])] = pixels
    return out


def test_images_are_the_test_time_path_of_the_checkpoint(market_people, checkpoint, tmp_path):
    images = run_test(market_people, checkpoint, tmp_path / "out", "--batch-size", "3")
    expected = expected_images(market_people, checkpoint)
    pairs = read_pairs(market_people / "market-pairs-test.csv")
    assert sorted(p.name for p in images.glob("*.png")) == sorted(generated_image_name(a, b) for a, b in pairs)
    for name, pixels in expected.items():
        got = read_rgb(images / name).astype(int)
        # batched and single-pair convolutions may differ in the last float bit, which can flip a rounding
        assert np.abs(got - pixels).max() <= 1, name
        assert (got != pixels).mean() < 0.01, name


def test_release_files_truncated_png_and_cv2_jpeg_with_release_names(market_people, checkpoint, tmp_path):
    images = run_test(market_people, checkpoint, tmp_path / "r", "--format", "png+jpg", "--names", "release",
                      "--quantise", "truncate", "--batch-size", "3")
    expected = expected_images(market_people, checkpoint, truncate=True)
    pairs = read_pairs(market_people / "market-pairs-test.csv")
    stems = sorted(f"{Path(a).stem}_{Path(b).stem}" for a, b in pairs)  # the authors' '%s_%s.jpg' % (sid1, sid2)
    assert sorted(p.stem for p in images.glob("*.png")) == stems == sorted(p.stem for p in images.glob("*.jpg"))
    flips = 0
    for (a, b), name in zip(pairs, (generated_image_name(a, b) for a, b in pairs)):
        stem = f"{Path(a).stem}_{Path(b).stem}"
        got = read_rgb(images / f"{stem}.png")
        assert np.abs(got.astype(int) - expected[name]).max() <= 1, stem  # batched convolutions: last-bit flips
        flips += int((got != expected[name]).sum())
        jpeg = (images / f"{stem}.jpg").read_bytes()
        assert jpeg == cv2.imencode(".jpg", np.ascontiguousarray(got[..., ::-1]))[1].tobytes()  # cv2's quality 95
    rounded = expected_images(market_people, checkpoint)
    assert flips < 0.01 * sum(p.size for p in expected.values())
    assert any((rounded[n] != expected[n]).any() for n in expected)  # truncation is not rounding


def test_grids_and_parsing_are_written_per_pair(market_people, checkpoint, tmp_path):
    images = run_test(market_people, checkpoint, tmp_path / "o", "--grids", "--parsing", "--limit", "2")
    names = sorted(p.name for p in images.glob("*.png"))
    assert len(names) == 2
    for name in names:
        grid = read_rgb(images.parent / "grids" / name)
        assert grid.shape == (128, 5 * 64 + 4 * 2, 3)  # source | pose | parsing | generated | ground truth
        assert np.array_equal(grid[:, 3 * 66 : 3 * 66 + 64], read_rgb(images / name))
        picture = read_rgb(images.parent / "parsing" / name)
        assert picture.shape == (128, 64, 3)
        labels = cv2.imread(str(images.parent / "parsing_labels" / name), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (128, 64) and labels.dtype == np.uint8  # the dataset's parsing format
        assert np.array_equal(PALETTE[labels], picture)  # the same prediction as the colour picture
        assert np.array_equal(PALETTE[labels], grid[:, 2 * 66 : 2 * 66 + 64])


def test_label_maps_stay_png_under_release_names_and_jpeg(market_people, checkpoint, tmp_path):
    """--format jpg --names release: pictures become <from>_<to>.jpg, the label maps <from>_<to>.png, the same labels
    as a PNG run writes; --skip-existing finds them all complete."""
    ours = run_test(market_people, checkpoint, tmp_path / "png", "--parsing", "--limit", "2").parent
    release = run_test(market_people, checkpoint, tmp_path / "jpg", "--parsing", "--grids", "--limit", "2",
                       "--format", "jpg", "--names", "release").parent
    pairs = read_pairs(market_people / "market-pairs-test.csv")[:2]
    stems = sorted(f"{Path(a).stem}_{Path(b).stem}" for a, b in pairs)
    for sub in ("images", "grids", "parsing"):
        assert sorted(p.name for p in (release / sub).iterdir()) == [f"{s}.jpg" for s in stems], sub
    assert sorted(p.name for p in (release / "parsing_labels").iterdir()) == [f"{s}.png" for s in stems]
    for a, b in pairs:
        got = cv2.imread(str(release / "parsing_labels" / generated_image_name(a, b, "release")), cv2.IMREAD_UNCHANGED)
        png = cv2.imread(str(ours / "parsing_labels" / generated_image_name(a, b)), cv2.IMREAD_UNCHANGED)
        assert got.ndim == 2 and np.array_equal(got, png)
    before = {p: p.stat().st_mtime_ns for p in release.rglob("*.*")}
    run_test(market_people, checkpoint, tmp_path / "jpg", "--parsing", "--grids", "--limit", "2", "--format", "jpg",
             "--names", "release", "--skip-existing")
    assert {p: p.stat().st_mtime_ns for p in release.rglob("*.*")} == before  # nothing rewritten


def test_skip_existing_completes_an_interrupted_run(market_people, checkpoint, tmp_path):
    out = tmp_path / "out"
    images = run_test(market_people, checkpoint, out, "--limit", "2")  # an interrupted run: 2 pairs written
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in images.glob("*.png")}
    assert len(first) == 2
    run_test(market_people, checkpoint, out, "--skip-existing")
    total = len(read_pairs(market_people / "market-pairs-test.csv"))
    now = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in images.glob("*.png")}
    assert len(now) == total > 2
    assert all(now[name] == first[name] for name in first)  # kept, not rewritten


@pytest.mark.slow  # test.py subprocesses
@pytest.mark.parametrize("where", ["", "test", "test_parsing", "test/sub"])
def test_refuses_to_write_into_the_dataset(market_people, checkpoint, where):
    out = market_people / where
    before = sorted(str(p) for p in market_people.rglob("*"))
    result = subprocess.run(
        [sys.executable, "test.py", "--config", CONFIG, f"data.root={market_people}", "--checkpoint",
         str(checkpoint), "--out", str(out), "--workers", "0", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "refusing to write there" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(str(p) for p in market_people.rglob("*")) == before
