"""evaluate.py end to end on a tiny fake dataset written into tmp_path (random-init backbones), checked against
the metrics recomputed independently: skimage SSIM, the lpips package, PATN's PCKh counts, np.cov + Frechet."""

from __future__ import annotations

import csv
import errno
import json
import subprocess
import sys
from pathlib import Path

import cv2
import lpips as lpips_package
import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import structural_similarity

import evaluate
import utils.io
from data.annotations import read_annotations, write_annotations, write_pairs
from data.pose import pose_mask
from metrics import openpose
from metrics.pckh import pckh
from metrics.protocols import get_protocol

H, W = 64, 48
REPO = Path(__file__).resolve().parents[1]


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] / H
    img = np.stack([rng.uniform(40, 200) + rng.uniform(-80, 80) * yy + rng.uniform(-80, 80) * xx for _ in range(3)],
                   axis=-1)
    y0, x0 = rng.integers(0, H - 10), rng.integers(0, W - 10)
    img[y0 : y0 + 20, x0 : x0 + 15] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def keypoints(rng: np.random.Generator) -> np.ndarray:
    kp = np.stack([rng.integers(0, H, 18), rng.integers(0, W, 18)], axis=1)
    kp[rng.choice(18, 4, replace=False)] = -1
    return kp


def write_rgb(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), image[..., ::-1])


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


@pytest.fixture()
def fake(tmp_path: Path) -> dict:
    """test/ (6 jpgs), train/ (3 jpgs), annotation + pairs CSVs, a config, 5 generated pngs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    for split, count in (("test", 6), ("train", 3)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            write_rgb(root / split / f"{split}{i}.jpg", smooth_image(rng))
    annotations = {f"test{i}.jpg": keypoints(rng) for i in range(6)}
    annotations["test3.jpg"][[0, 1, 14, 15, 16, 17]] = -1  # no head: this target is skipped by PCKh
    annotations["test3.jpg"][14] = (5, 5)  # one head joint is still < 2
    write_annotations(root / "ann-test.csv", annotations)
    pairs = [("test0.jpg", "test1.jpg"), ("test1.jpg", "test2.jpg"), ("test2.jpg", "test3.jpg"),
             ("test4.jpg", "test5.jpg"), ("test5.jpg", "test0.jpg")]
    write_pairs(root / "pairs-test.csv", pairs)
    config = tmp_path / "fake.yaml"
    config.write_text("data:\n  name: market\n  image_size: [64, 48]\n  annotation_test: ann-test.csv\n"
                      "  pairs_test: pairs-test.csv\n  num_workers: 0\n")
    generated = tmp_path / "generated"
    generated.mkdir()
    names = []
    for src, tgt in pairs:
        name = f"{Path(src).stem}___{Path(tgt).stem}.png"
        write_rgb(generated / name, smooth_image(rng))
        names.append(name)
    # predicted keypoints: the target's, moved by a few pixels, some joints dropped
    predictions = {}
    for name, (_, tgt) in zip(names, pairs):
        kp = annotations[tgt].copy()
        present = (kp != -1).all(axis=1)
        kp[present] += rng.integers(-4, 5, (int(present.sum()), 2))
        kp[rng.choice(18, 2, replace=False)] = -1
        predictions[name] = kp
    write_annotations(tmp_path / "pred.csv", predictions)
    return {"root": root, "config": config, "generated": generated, "pairs": pairs, "names": names,
            "annotations": annotations, "pred": tmp_path / "pred.csv", "out": tmp_path / "out", "tmp": tmp_path}


def run(fake: dict, *extra: str) -> dict:
    return evaluate.main(["--generated", str(fake["generated"]), "--dataset-config", str(fake["config"]),
                          f"data.root={fake['root']}", "--weights", "random", "--out", str(fake["out"]),
                          "--device", "cpu", "--quiet", "--batch-size", "2", *extra])


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=255)


def test_evaluate_end_to_end_matches_per_metric_computations(fake):
    data = run(fake, "--metrics", "ssim,mssim,lpips,mlpips,pckh", "--pred-keypoints", str(fake["pred"]))
    out = fake["out"]
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.csv", "per_image.csv"}

    fakes = [read_rgb(fake["generated"] / n) for n in fake["names"]]
    truths = [read_rgb(fake["root"] / "test" / t) for _, t in fake["pairs"]]
    masks = [pose_mask(fake["annotations"][t], H, W)[..., None] for _, t in fake["pairs"]]
    ssims = [skimage_ssim(a, b) for a, b in zip(fakes, truths)]
    mssims = [skimage_ssim(a * m, b * m) for a, b, m in zip(fakes, truths, masks)]
    torch.manual_seed(0)  # LPIPSMetric("random") is this network
    reference = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()

    def signed(images):
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    m = torch.from_numpy(np.stack(masks)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        lpips_values = reference(signed(fakes), signed(truths)).flatten().numpy()
        mlpips_values = reference(signed(fakes) * m, signed(truths) * m).flatten().numpy()
    predictions = read_annotations(fake["pred"])
    pred = np.stack([predictions[n] for n in fake["names"]])
    target = np.stack([fake["annotations"][t] for _, t in fake["pairs"]])

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(data["metrics"])
    values = saved["metrics"]
    assert values["ssim"] == pytest.approx(np.mean(ssims), abs=1e-6)
    assert values["mssim"] == pytest.approx(np.mean(mssims), abs=1e-6)
    assert values["lpips"] == pytest.approx(float(lpips_values.mean()), rel=1e-5)
    assert values["mlpips"] == pytest.approx(float(mlpips_values.mean()), rel=1e-5)
    assert values["pckh"] == pytest.approx(pckh(pred, target))
    assert saved["images"] == 5 and saved["missing_pairs"] == 0 and saved["weights"].startswith("random")
    assert saved["counts"]["pckh"] == 4  # test3 has < 2 head joints: skipped
    assert "RANDOM-INIT" in saved["labels"]["lpips"] and "RANDOM-INIT" not in saved["labels"]["ssim"]

    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["generated"] for r in rows] == fake["names"]
    np.testing.assert_allclose([float(r["ssim"]) for r in rows], ssims, atol=1e-6)
    np.testing.assert_allclose([float(r["mlpips"]) for r in rows], mlpips_values, rtol=1e-5)
    assert rows[2]["pckh_right"] == "" and rows[0]["pckh_valid"] == str(int((target[0] != -1).all(1).sum()))
    assert all(r["images"] == "5" and r["weights"].startswith("random") for r in rows)
    with (out / "metrics.csv").open() as f:
        summary = {r["metric"]: r for r in csv.DictReader(f)}
    assert set(summary) == {"ssim", "mssim", "lpips", "mlpips", "pckh"}
    assert float(summary["ssim"]["value"]) == pytest.approx(values["ssim"])
    assert summary["lpips"]["weights"].startswith("random") and summary["ssim"]["images"] == "5"


def test_evaluate_table_labels_random_backbones(fake, capsys):
    run(fake, "--metrics", "ssim,lpips")
    table = capsys.readouterr().out
    assert "| SSIM [clean] | " in table and "| higher |" in table and "| lower |" in table
    assert "LPIPS [clean] (RANDOM-INIT AlexNet trunk: not comparable to published numbers)" in table
    assert "Evaluated 5 generated images" in table and "protocol: clean (no published table" in table
    assert "| clean: Gaussian sigma 1.5" in table


def test_missing_pair_is_reported_and_allowed_on_request(fake):
    (fake["generated"] / fake["names"][1]).unlink()
    with pytest.raises(evaluate.EvaluationError, match=r"1 of 5 generated images are missing.*test1___test2.png"):
        run(fake, "--metrics", "ssim")
    data = run(fake, "--metrics", "ssim", "--allow-missing")
    assert data["images"] == 4 and data["missing_pairs"] == 1


def test_wrong_size_and_unreadable_images_name_the_file(fake):
    name = fake["names"][3]
    write_rgb(fake["generated"] / name, np.zeros((60, 48, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"{name}: image is 60x48 \(HxW\), expected 64x48"):
        run(fake, "--metrics", "ssim")
    (fake["generated"] / name).write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"{name}: not a readable image"):
        run(fake, "--metrics", "ssim")


def test_pckh_with_the_built_in_openpose(fake):
    """--metrics pckh without keypoints runs metrics/openpose.py on the generated images, writes their CSV and
    scores it; random weights and a non-PATN box size are labelled."""
    data = run(fake, "--metrics", "pckh", "--openpose-boxsize", "32", "--openpose-scales", "0.5,1")
    written = read_annotations(fake["out"] / "pred-keypoints.csv")
    assert list(written) == fake["names"]
    estimator = openpose.OpenPoseEstimator("random", "cpu", boxsize=32, scales=(0.5, 1))
    images = np.stack([read_rgb(fake["generated"] / n) for n in fake["names"]])
    np.testing.assert_array_equal(np.stack(list(written.values())), estimator(images))
    target = np.stack([fake["annotations"][t] for _, t in fake["pairs"]])
    assert data["metrics"]["pckh"] == pytest.approx(pckh(np.stack(list(written.values())), target))
    assert "RANDOM-INIT OpenPose" in data["labels"]["pckh"]
    assert "NOT PATN: boxsize 32, scales 0.5,1" in data["protocols"]["pckh"]


def test_pckh_default_metrics_skip_it_and_missing_predictions(fake, capsys):
    predictions = read_annotations(fake["pred"])
    del predictions[fake["names"][0]]
    write_annotations(fake["pred"], predictions)
    with pytest.raises(evaluate.EvaluationError, match="no predicted keypoints for 1 generated image"):
        run(fake, "--metrics", "pckh", "--pred-keypoints", str(fake["pred"]))
    args = evaluate.parse_args(["--generated", "g", "--dataset-config", "c"])
    clean = get_protocol("clean", (128, 64))
    assert evaluate.select_metrics(args, "market", clean) == ("ssim", "mssim", "fid", "lpips", "mlpips")
    assert "PCKh skipped" in capsys.readouterr().err
    assert evaluate.select_metrics(args, "deepfashion", clean) == ("ssim", "fid", "lpips")
    # a protocol's defaults are the paper's set restricted to what its script computes
    assert evaluate.select_metrics(args, "market", get_protocol("patn", (128, 64))) == ("ssim", "mssim")
    assert evaluate.select_metrics(args, "deepfashion", get_protocol("release", (256, 256))) == ("ssim", "fid",
                                                                                                   "lpips")


FIXED_POSE = np.zeros((18, 2), np.int64)  # set by the test


class FixedPose:
    """A stand-in estimator: answers FIXED_POSE for every image."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.shape[1:] == (H, W, 3)
        return np.repeat(FIXED_POSE[None], len(images), axis=0)


def test_pose_estimator_writes_predictions(fake, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "FIXED_POSE", fake["annotations"]["test1.jpg"])
    data = run(fake, "--metrics", "pckh", "--pose-estimator", "tests.test_evaluate:FixedPose")
    written = read_annotations(fake["out"] / "pred-keypoints.csv")
    assert list(written) == fake["names"]
    target = np.stack([fake["annotations"][t] for _, t in fake["pairs"]])
    constant = np.repeat(fake["annotations"]["test1.jpg"][None], 5, axis=0)
    assert data["metrics"]["pckh"] == pytest.approx(pckh(constant, target))


class ColourStats:
    """A cheap stand-in for InceptionFeatures (same interface): per-channel mean and std, 6-d features."""

    def __init__(self, network: str, weights: str, input_transform: str):
        self.network, self.weights_source, self.random = network, weights, weights == "random"
        self.identity = f"colour-stats|{network}|{weights}|{input_transform}"

    def to(self, device) -> ColourStats:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.double().flatten(2)  # (B,3,HW)
        return torch.cat([x.mean(2), x.std(2)], dim=1)  # (B,6)


def colour_stats(images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images).astype(np.float64).reshape(len(images), -1, 3)
    return np.concatenate([x.mean(1), x.std(1, ddof=1)], axis=1)


@pytest.mark.parametrize("network, real_split, real_count", [("torchvision", "train", 3), ("standard", "test", 6)])
def test_fid_wiring_real_set_cache_and_distance(fake, monkeypatch, network, real_split, real_count):
    monkeypatch.setattr(evaluate, "InceptionFeatures", ColourStats)
    cache = fake["tmp"] / "fid-cache"
    args = ("--metrics", "fid", "--fid-network", network, "--fid-cache", str(cache))
    data = run(fake, *args)
    assert data["fid_real_folder"] == str(fake["root"] / real_split) and data["fid_real_images"] == real_count
    assert not data["fid_real_cache_hit"] and data["protocol"] == "clean"
    assert data["labels"]["fid"].startswith("FID [clean]") and network in data["protocols"]["fid"]
    assert "RANDOM-INIT Inception" in data["labels"]["fid"]
    real = colour_stats([read_rgb(p) for p in sorted((fake["root"] / real_split).iterdir())])
    gen = colour_stats([read_rgb(fake["generated"] / n) for n in fake["names"]])
    expected = calculate_frechet_distance(real.mean(0), np.cov(real, rowvar=False), gen.mean(0),
                                          np.cov(gen, rowvar=False))
    assert data["metrics"]["fid"] == pytest.approx(expected, rel=1e-6)
    again = run(fake, *args, "--fid-method", "eigh")
    assert again["fid_real_cache_hit"] and again["metrics"]["fid"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow  # the real random-init Inception-v3 at 299x299 on 3 + 5 images and a 2048-d Frechet distance
def test_fid_end_to_end_with_random_inception(fake):
    data = run(fake, "--metrics", "fid", "--fid-method", "eigh", "--no-fid-cache")
    assert data["fid_real_images"] == 3 and data["fid_real_cache"] is None
    assert np.isfinite(data["metrics"]["fid"]) and data["metrics"]["fid"] > 0
    assert data["fid_inception"] == "random (seed 0)"


def test_command_line_error_exit(fake):
    (fake["generated"] / fake["names"][0]).unlink()
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--generated", str(fake["generated"]), "--dataset-config",
         str(fake["config"]), f"data.root={fake['root']}", "--metrics", "ssim", "--weights", "random"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "error: 1 of 5 generated images are missing" in result.stderr



def test_an_unknown_metric_name_is_an_error_line(fake):
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--generated", str(fake["generated"]), "--dataset-config",
         str(fake["config"]), f"data.root={fake['root']}", "--metrics", "ssim,fidd", "--weights", "random"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --metrics 'ssim,fidd': unknown ['fidd']")


def test_an_unwritable_out_folder_fails_before_any_image_is_scored(fake, monkeypatch):
    blocker = fake["tmp"] / "a-file"
    blocker.write_text("not a folder")
    reads = []
    original = evaluate.PairImages.__getitem__
    monkeypatch.setattr(evaluate.PairImages, "__getitem__", lambda self, i: reads.append(i) or original(self, i))
    fake["out"] = blocker / "metrics"
    with pytest.raises(OSError, match=str(fake["out"])):
        run(fake, "--metrics", "ssim")
    assert reads == []  # the write problem is found before the work, not after it


def test_an_unwritable_fid_cache_folder_fails_before_any_image_is_scored(fake, monkeypatch):
    blocker = fake["tmp"] / "a-file"
    blocker.write_text("not a folder")
    cache = blocker / "fid"
    reads, features = [], []
    original = evaluate.PairImages.__getitem__
    monkeypatch.setattr(evaluate.PairImages, "__getitem__", lambda self, i: reads.append(i) or original(self, i))

    class Counted(ColourStats):
        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            features.append(len(images))
            return super().__call__(images)

    monkeypatch.setattr(evaluate, "InceptionFeatures", Counted)
    with pytest.raises(OSError, match=f"FID cache folder {cache} is not writable"):
        run(fake, "--metrics", "ssim,fid", "--fid-cache", str(cache))
    assert reads == [] and features == []  # neither a generated nor a real image was scored
    # from the command line: one error line naming the folder, exit code 2
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--generated", str(fake["generated"]), "--dataset-config",
         str(fake["config"]), f"data.root={fake['root']}", "--metrics", "fid", "--weights", "random",
         "--fid-cache", str(cache), "--out", str(fake["out"]), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: FID cache folder {cache} is not writable")
    assert not fake["out"].exists() or not any(fake["out"].iterdir())


def test_a_failure_writing_one_output_keeps_the_previous_three(fake, monkeypatch):
    """metrics.json, metrics.csv and per_image.csv are replaced together or not at all: a full disk while the
    last is written leaves the previous run's three files, not a new metrics.json beside an old per_image.csv."""
    run(fake, "--metrics", "ssim")
    names = ("metrics.json", "metrics.csv", "per_image.csv")
    before = {n: (fake["out"] / n).read_bytes() for n in names}

    def full_disk_for_per_image(file, mode="r", *args, **kwargs):
        if "per_image" in str(file) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(utils.io, "open", full_disk_for_per_image, raising=False)  # the writer's open()
    with pytest.raises(OSError, match="per_image.csv: No space left on device"):
        run(fake, "--metrics", "ssim,mssim")
    assert {n: (fake["out"] / n).read_bytes() for n in names} == before
    assert sorted(p.name for p in fake["out"].iterdir()) == sorted(names)  # no temporary file left behind
    monkeypatch.undo()
    run(fake, "--metrics", "ssim,mssim")
    assert "mssim" in json.loads((fake["out"] / "metrics.json").read_text())["metrics"]
    assert "mssim" in (fake["out"] / "per_image.csv").read_text().splitlines()[0]
