"""Every protocol preset of evaluate.py against a slow transcription of the published script it names.

The transcriptions below are written from reading the scripts (the authors' models/modules.py SSIM, tools/
metrics_deepfashion.py and metrics_market.py; PATN's tool/getMetrics_fashion.py, getMetrics_market.py and
pose_utils.produce_ma_mask; GFLA's script/metrics.py): per image, with numpy, imageio, Pillow and skimage called
with each script's own arguments, never with this project's metric code. Generated folders hold a remainder
batch (a batch size of 4 stands in for the scripts' 64, patched into the presets; the 64 arithmetic itself is
tested apart), a DeepFashion 256x256 folder that the release crops, and JPEG and PNG files. FID runs a small
random-init feature network in place of the Inception blocks, the same in both computations, so the comparison
covers everything a protocol does around the network: decoding, order, dropping, cropping, resizing and the input
transform.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import lpips as lpips_package
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from skimage.draw import disk, polygon
from skimage.metrics import structural_similarity
from skimage.morphology import dilation, erosion

import evaluate
from data.annotations import write_annotations, write_pairs
from data.visual import to_uint8
from metrics import protocols
from metrics.fid import PoolFeatures
from metrics.files import kept_mask, script_listing, whole_batches
from metrics.protocols import ProtocolError, get_protocol, release_truth_roundtrip
from utils.io import write_image

SMALL_BATCH = 4  # stands in for the scripts' 64
FEATURES = 4  # the stand-in feature network's width
IMAGENET = ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))  # (mean, std) per channel, as the scripts write them


# ------------------------------------------------------------------------------------------ data


def person_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H,W,3) uint8: a light background, a few coloured blocks, mild noise."""
    img = np.full((h, w, 3), rng.uniform(180, 250), np.float64)
    img += rng.uniform(-30, 30) * (np.arange(h) / h)[:, None, None]
    for _ in range(5):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y0 : y0 + rng.integers(8, h // 2), x0 : x0 + rng.integers(8, w // 2)] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def generated_like(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A stand-in for a generated image: the truth blurred, shifted and noised."""
    blurred = cv2.GaussianBlur(truth, (5, 5), 1.5).astype(np.int16)
    noisy = np.roll(blurred, int(rng.integers(-2, 3)), axis=1) + rng.integers(-25, 26, truth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def pose(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plausible (18,2) (y, x) pose scaled to HxW, with two joints missing."""
    base = np.array([[20, 32], [32, 32], [33, 22], [50, 18], [66, 16], [33, 42], [50, 46], [66, 48], [68, 26],
                     [90, 26], [115, 25], [68, 38], [90, 38], [115, 39], [17, 29], [17, 35], [19, 26], [19, 38]])
    kp = np.round(base * [h / 128, w / 64]).astype(np.int64) + rng.integers(-2, 3, base.shape)
    kp[rng.choice(18, 2, replace=False)] = -1
    return kp


def build(tmp: Path, size: tuple[int, int], n_pairs: int, fmt: str, names: str, dataset: str,
          n_train: int = 9, seed: int = 0) -> dict:
    """A dataset (test and train JPEGs as the releases ship them, CSVs, a config) and a generated folder."""
    rng = np.random.default_rng(seed)
    h, w = size
    root = tmp / "ds"
    (root / "test").mkdir(parents=True)
    (root / "train").mkdir()
    if dataset == "market":  # Market-1501 names: the authors' script parses the target out of the pair's name
        test_names = [f"{i:04d}_c1s1_{i:06d}_01.jpg" for i in range(n_pairs + 1)]
    else:
        test_names = [f"fashionWOMENDressesid{i:07d}_1front.jpg" for i in range(n_pairs + 1)]
    truths = {}
    for name in test_names:
        truths[name] = person_like(rng, h, w)
        write_image(root / "test" / name, truths[name])
    for i in range(n_train):
        write_image(root / "train" / f"train{i:03d}.jpg", person_like(rng, h, w))
    annotations = {name: pose(rng, h, w) for name in test_names}
    write_annotations(root / "ann-test.csv", annotations)
    pairs = [(test_names[i], test_names[i + 1]) for i in range(n_pairs)]
    write_pairs(root / "pairs-test.csv", pairs)
    config = tmp / "data.yaml"
    config.write_text(f"data:\n  name: {dataset}\n  image_size: [{h}, {w}]\n  annotation_test: ann-test.csv\n"
                      "  pairs_test: pairs-test.csv\n  num_workers: 0\n")
    generated = tmp / "generated"
    generated.mkdir()
    files = []
    sep = "___" if names == "ours" else "_"
    for src, tgt in pairs:
        name = f"{Path(src).stem}{sep}{Path(tgt).stem}.{fmt}"
        write_image(generated / name, generated_like(rng, truths[tgt]))
        files.append(name)
    return {"root": root, "config": config, "generated": generated, "pairs": pairs, "files": files,
            "annotations": annotations, "out": tmp / "out", "tmp": tmp, "size": size}


def run(d: dict, protocol: str, metrics: str, *extra: str) -> dict:
    return evaluate.main(["--generated", str(d["generated"]), "--dataset-config", str(d["config"]),
                          f"data.root={d['root']}", "--weights", "random", "--out", str(d["out"]), "--device", "cpu",
                          "--quiet", "--batch-size", "3", "--protocol", protocol, "--metrics", metrics,
                          "--no-fid-cache", *extra])


def per_image(d: dict, metric: str) -> np.ndarray:
    """A column of per_image.csv in the order of d["files"]; every row names the protocol of the run."""
    with (d["out"] / "per_image.csv").open() as f:
        rows = {r["generated"]: r for r in csv.DictReader(f)}
    protocol = json.loads((d["out"] / "metrics.json").read_text())["protocol"]
    assert {r["protocol"] for r in rows.values()} == {protocol}
    return np.array([float(rows[name][metric]) for name in d["files"]])


@pytest.fixture()
def small_batches(monkeypatch):
    monkeypatch.setattr(protocols, "SCRIPT_BATCH", SMALL_BATCH)


class Tiny(torch.nn.Module):
    """A small random-init feature network (4-d, so that 8 images give a full-rank covariance) standing in for
    the Inception blocks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=6), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, FEATURES, 5, stride=4), torch.nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture()
def tiny_inception(monkeypatch):
    """evaluate.py builds PoolFeatures around Tiny instead of the Inception blocks; returns the network."""
    tiny = Tiny().eval()

    def factory(network: str, weights: str, input_transform: str) -> PoolFeatures:
        return PoolFeatures(tiny, input_transform, f"tiny|{network}", "random tiny", True)

    monkeypatch.setattr(evaluate, "InceptionFeatures", factory)
    return tiny


# ------------------------------------------------------------------------------------------ transcriptions


def produce_ma_mask(kp_array: np.ndarray, img_size: tuple[int, int], point_radius: int = 4) -> np.ndarray:
    """pose_utils.produce_ma_mask, as PATN, GFLA and the authors' metrics_market.py copy it (skimage's old
    `circle` is today's `disk`)."""
    mask = np.zeros(img_size, dtype=bool)
    limbs = np.array([[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
                      [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [2, 17], [2, 18], [9, 12], [12, 6],
                      [9, 3], [17, 18]]) - 1
    for f, t in limbs:
        if -1 in kp_array[f] or -1 in kp_array[t]:
            continue
        norm_vec = kp_array[f] - kp_array[t]
        norm_vec = np.array([-norm_vec[1], norm_vec[0]])
        norm_vec = point_radius * norm_vec / np.linalg.norm(norm_vec)
        vertices = np.array([kp_array[f] + norm_vec, kp_array[f] - norm_vec, kp_array[t] - norm_vec,
                             kp_array[t] + norm_vec])
        yy, xx = polygon(vertices[:, 0], vertices[:, 1], shape=img_size)
        mask[yy, xx] = True
    for joint in kp_array:
        if -1 in joint:
            continue
        yy, xx = disk((joint[0], joint[1]), point_radius, shape=img_size)
        mask[yy, xx] = True
    return erosion(dilation(mask, np.ones((5, 5), bool)), np.ones((5, 5), bool))


def patn_ssim(reference: np.ndarray, generated: np.ndarray) -> float:
    """getMetrics_*.ssim_score's call for one pair."""
    return structural_similarity(reference, generated, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1,
                                 data_range=generated.max() - generated.min())


def add_bounding(image: np.ndarray, bound: int = 40) -> np.ndarray:
    """getMetrics_fashion.addBounding."""
    h, w, c = image.shape
    image_bound = (np.ones((h, w + bound * 2, c)) * 255).astype(np.uint8)
    image_bound[:, bound : bound + w] = image
    return image_bound


def release_test_time_ssim(d: dict, batch: int) -> tuple[np.ndarray, float]:
    """The authors' test loop: per test batch, the SSIM module on the truncated output (what a PNG written with
    truncation holds) and the target read by cv2, made float32 in [-1, 1] and truncated back; the LossBuffer mean
    of the batch means. Returns per-image values and the reported mean."""
    values, batch_means = [], []
    items = list(zip(d["files"], d["pairs"]))
    for start in range(0, len(items), batch):
        scores = []
        for name, (_, tgt) in items[start : start + batch]:
            img_1 = imageio.imread(d["generated"] / name)
            target = cv2.imread(str(d["root"] / "test" / tgt)).astype(np.float32) / 255.0
            target = target[..., [2, 1, 0]]
            target = (target - np.float32(0.5)) / np.float32(0.5)  # transforms.Normalize([0.5]*3, [0.5]*3)
            img_2 = ((target + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
            scores.append(structural_similarity(img_1, img_2, channel_axis=-1))  # compare_ssim(.., multichannel)
        values += scores
        batch_means.append(np.mean(scores))
    return np.array(values), float(np.mean(batch_means))


def crop_img(path: Path) -> Path:
    """metrics_deepfashion.crop_img."""
    save_dir = Path(str(path) + "_crop")
    save_dir.mkdir()
    for item in os.listdir(path):
        if not item.endswith(".jpg") and not item.endswith(".png"):
            continue
        img = Image.open(path / item)
        img.crop((40, 0, 216, 256)).save(save_dir / item)
    return save_dir


def script_activations(path: Path, net: torch.nn.Module, batch_size: int, shrink: bool) -> np.ndarray:
    """FID.get_activations over glob('*.jpg') + glob('*.png'), whole batches only, the scripts' InceptionV3
    preprocessing (F.upsample bilinear to 299, x * (std / 0.5) + (mean - 0.5) / 0.5)."""
    filenames = list(pathlib.Path(path).glob("*.jpg")) + list(pathlib.Path(path).glob("*.png"))
    d0 = len(filenames)
    if shrink and batch_size > d0:  # GFLA's guard
        batch_size = d0
    n_batches = d0 // batch_size
    pred_arr = np.empty((n_batches * batch_size, FEATURES))
    for i in range(n_batches):
        start, end = i * batch_size, (i + 1) * batch_size
        imgs = np.array([imageio.imread(str(fn)).astype(np.float32) for fn in filenames[start:end]])
        imgs = imgs.transpose((0, 3, 1, 2))
        imgs /= 255
        x = F.interpolate(torch.from_numpy(imgs), size=(299, 299), mode="bilinear", align_corners=False)
        x = x.clone()
        for c, (mean, std) in enumerate(IMAGENET):
            x[:, c] = x[:, c] * (std / 0.5) + (mean - 0.5) / 0.5
        with torch.no_grad():
            pred_arr[start:end] = net(x).numpy().reshape(batch_size, -1)
    return pred_arr


def script_fid(generated: Path, real: Path, net: torch.nn.Module, batch_size: int, shrink: bool) -> float:
    """FID.calculate_from_disk with calculate_frechet_distance."""
    act1 = script_activations(generated, net, batch_size, shrink)
    act2 = script_activations(real, net, batch_size, shrink)
    mu1, sigma1 = np.mean(act1, axis=0), np.cov(act1, rowvar=False)
    mu2, sigma2 = np.mean(act2, axis=0), np.cov(act2, rowvar=False)
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def lpips_network() -> torch.nn.Module:
    """The lpips package's AlexNet v0.1 with the trunk of evaluate.py's --weights random (seed 0)."""
    torch.manual_seed(0)
    return lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()


def script_lpips(images_1: list[np.ndarray], images_2: list[np.ndarray], batch_size: int) -> tuple[float, int]:
    """LPIPS.calculate_from_disk / calculate_mask_lpips on [-1, 1] float32 images: whole batches, np.average."""
    model = lpips_network()
    d0 = len(images_1)
    if batch_size > d0:
        batch_size = d0
    n_batches = d0 // batch_size
    result = []
    for i in range(n_batches):
        a = torch.from_numpy(np.array(images_1[i * batch_size : (i + 1) * batch_size]).transpose((0, 3, 1, 2)))
        b = torch.from_numpy(np.array(images_2[i * batch_size : (i + 1) * batch_size]).transpose((0, 3, 1, 2)))
        with torch.no_grad():
            result.append(model.forward(a.float(), b.float()).numpy())
    return float(np.average(result)), n_batches * batch_size


def signed(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 127.5 - 1


# ------------------------------------------------------------------------------------------ release


def test_release_ssim_deepfashion_256_is_the_test_time_module(tmp_path):
    d = build(tmp_path, (256, 256), 10, "png", "release", "deepfashion")  # test batches of 4: 4, 4, 2
    data = run(d, "release", "ssim", "--names", "release")
    values, reported = release_test_time_ssim(d, batch=4)
    np.testing.assert_allclose(per_image(d, "ssim"), values, atol=1e-6, rtol=0)
    assert data["metrics"]["ssim"] == pytest.approx(reported, abs=1e-6)
    assert reported != pytest.approx(values.mean(), abs=1e-9)  # the batch-mean rule matters here
    assert data["labels"]["ssim"] == "SSIM [release]" and data["protocol"] == "release"


def test_release_market_ssim_mask_ssim_lpips_mask_lpips_fid(tmp_path, small_batches, tiny_inception):
    d = build(tmp_path, (128, 64), 10, "jpg", "release", "market", n_train=13)
    # the authors' gt_path: the target of each pair under the pair's file name
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    for name, (_, tgt) in zip(d["files"], d["pairs"]):
        shutil.copy(d["root"] / "test" / tgt, gt / name)
    data = run(d, "release", "ssim,mssim,fid,lpips,mlpips", "--names", "release", "--format", "jpg")

    values, reported = release_test_time_ssim(d, batch=1)  # Market tests with batch size 1
    np.testing.assert_allclose(per_image(d, "ssim"), values, atol=1e-6, rtol=0)
    assert data["metrics"]["ssim"] == pytest.approx(reported, abs=1e-6)

    # metrics_market.load_generated_images: os.listdir order, .jpg only, target parsed from the file name
    files, gen, tgt_imgs, gen_m, tgt_m, sgm, stm = [], [], [], [], [], [], []
    for file in os.listdir(d["generated"]):
        if not file.endswith(".jpg"):
            continue
        gntimg, gtimg = imageio.imread(d["generated"] / file), imageio.imread(gt / file)
        fs = file.split("_")
        mask = produce_ma_mask(d["annotations"][fs[4] + "_" + fs[5] + "_" + fs[6] + "_" + fs[7]], (128, 64))
        files.append(file)
        sgm.append(gntimg * mask[..., np.newaxis])
        stm.append(gtimg * mask[..., np.newaxis])
        gen.append(signed(gntimg))
        tgt_imgs.append(signed(gtimg))
        gen_m.append(signed(gntimg) * mask[..., np.newaxis])
        tgt_m.append(signed(gtimg) * mask[..., np.newaxis])
    mssim = {f: patn_ssim(b, a) for f, a, b in zip(files, sgm, stm)}  # masked_ssim_score(sgm, stm)
    np.testing.assert_allclose(per_image(d, "mssim"), [mssim[f] for f in d["files"]], atol=1e-6, rtol=0)
    assert data["metrics"]["mssim"] == pytest.approx(np.mean(list(mssim.values())), abs=1e-6)

    lp, used = script_lpips(gen, tgt_imgs, SMALL_BATCH)
    mlp, _ = script_lpips(gen_m, tgt_m, SMALL_BATCH)
    assert used == 8 and data["counts"]["lpips"] == 8 and data["counts"]["mlpips"] == 8  # 10 -> 2 batches of 4
    assert data["metrics"]["lpips"] == pytest.approx(lp, abs=1e-6)
    assert data["metrics"]["mlpips"] == pytest.approx(mlp, abs=1e-6)

    fid = script_fid(d["generated"], d["root"] / "train", tiny_inception, SMALL_BATCH, shrink=False)
    assert data["metrics"]["fid"] == pytest.approx(fid, rel=1e-4)
    assert data["counts"]["fid"] == 8 and data["fid_real_images"] == 12  # 13 real -> 3 batches of 4
    assert "release:" in data["protocols"]["fid"] and "8 of 10 images in whole batches" in data["protocols"]["fid"]


def test_release_deepfashion_256_crops_for_fid_and_lpips(tmp_path, small_batches, tiny_inception):
    d = build(tmp_path, (256, 256), 10, "jpg", "release", "deepfashion", n_train=9)
    data = run(d, "release", "fid,lpips", "--names", "release", "--format", "jpg")
    crops = crop_img(d["generated"])  # the crops, re-encoded by Pillow, in a folder of their own
    fid = script_fid(crops, d["root"] / "train", tiny_inception, SMALL_BATCH, shrink=False)
    assert data["metrics"]["fid"] == pytest.approx(fid, rel=1e-4)
    assert data["counts"]["fid"] == 8 and data["fid_real_images"] == 8  # real 256x256, not cropped, 9 -> 8

    # the ground truth, as cropped alike (the release reads an img/ground_truth folder it does not make)
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    for name, (_, tgt) in zip(d["files"], d["pairs"]):
        Image.open(d["root"] / "test" / tgt).crop((40, 0, 216, 256)).save(gt / (Path(name).stem + ".png"))
    files_1 = sorted(list(crops.glob("*.jpg")) + list(crops.glob("*.png")))  # get_image_list sorts
    files_2 = sorted(list(gt.glob("*.jpg")) + list(gt.glob("*.png")))
    lp, used = script_lpips([signed(imageio.imread(f)) for f in files_1],
                            [signed(imageio.imread(f)) for f in files_2], SMALL_BATCH)
    assert used == 8 and data["metrics"]["lpips"] == pytest.approx(lp, abs=1e-6)
    kept = {name for name, u in zip(d["files"], per_image(d, "lpips_used")) if u}
    assert kept == {f.name for f in files_1[:8]}  # the sorted first 8
    assert Path(data["release_crop_folder"]).is_dir()


def test_release_fid_needs_a_whole_batch(tmp_path, tiny_inception):
    d = build(tmp_path, (128, 64), 5, "jpg", "release", "market")  # 5 < 64: the authors' script has no features
    with pytest.raises(evaluate.EvaluationError, match="FID keeps 0 of 5"):
        run(d, "release", "fid", "--names", "release", "--format", "jpg")


def test_release_market_lpips_reads_jpg_only(tmp_path):
    d = build(tmp_path, (128, 64), 5, "png", "release", "market")
    with pytest.raises(ValueError, match="not read by the script's 'listdir' listing"):
        run(d, "release", "lpips", "--names", "release")


# ------------------------------------------------------------------------------------------ patn


def test_patn_ssim_deepfashion_pads_176_to_256(tmp_path):
    d = build(tmp_path, (256, 176), 5, "png", "ours", "deepfashion")
    data = run(d, "patn", "ssim")
    expected = [patn_ssim(add_bounding(imageio.imread(d["root"] / "test" / tgt)),
                          add_bounding(imageio.imread(d["generated"] / name)))
                for name, (_, tgt) in zip(d["files"], d["pairs"])]
    np.testing.assert_allclose(per_image(d, "ssim"), expected, atol=1e-6, rtol=0)
    assert data["metrics"]["ssim"] == pytest.approx(np.mean(expected), abs=1e-6)
    unpadded = [patn_ssim(imageio.imread(d["root"] / "test" / t), imageio.imread(d["generated"] / n))
                for n, (_, t) in zip(d["files"], d["pairs"])]
    assert np.abs(np.array(expected) - unpadded).max() > 1e-3  # the padding is not a no-op


def test_patn_market_ssim_and_mask_ssim(tmp_path):
    d = build(tmp_path, (128, 64), 6, "png", "ours", "market")
    data = run(d, "patn", "ssim,mssim")
    ssim_values, mssim_values = [], []
    for name, (_, tgt) in zip(d["files"], d["pairs"]):
        reference, generated = imageio.imread(d["root"] / "test" / tgt), imageio.imread(d["generated"] / name)
        mask = produce_ma_mask(d["annotations"][tgt], generated.shape[:2])[..., np.newaxis]
        ssim_values.append(patn_ssim(reference, generated))
        mssim_values.append(patn_ssim(reference * mask, generated * mask))
    np.testing.assert_allclose(per_image(d, "ssim"), ssim_values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(per_image(d, "mssim"), mssim_values, atol=1e-6, rtol=0)
    assert data["metrics"]["mssim"] == pytest.approx(np.mean(mssim_values), abs=1e-6)
    assert data["labels"]["mssim"] == "Mask-SSIM [patn]"


def test_patn_defines_no_fid_or_lpips(tmp_path):
    d = build(tmp_path, (128, 64), 3, "png", "ours", "market")
    with pytest.raises(ProtocolError, match="protocol 'patn' defines no fid"):
        run(d, "patn", "ssim,fid")
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--generated", str(d["generated"]), "--dataset-config", str(d["config"]),
         f"data.root={d['root']}", "--protocol", "patn", "--metrics", "lpips", "--quiet"],
        cwd=Path(evaluate.__file__).parent, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: protocol 'patn' defines no lpips (its script computes none); it offers ssim, mssim, pckh; use "
        "--protocol release or clean for the others"]
    with pytest.raises(evaluate.EvaluationError, match="--fid-network is a choice of the clean protocol"):
        run(d, "release", "ssim", "--fid-network", "standard")


# ------------------------------------------------------------------------------------------ gfla


def test_gfla_ssim_fid_lpips(tmp_path, small_batches, tiny_inception):
    d = build(tmp_path, (256, 176), 9, "png", "ours", "deepfashion", n_train=11)
    data = run(d, "gfla", "ssim,fid,lpips")
    ssim_values = []
    for name, (_, tgt) in zip(d["files"], d["pairs"]):
        img_gt = imageio.imread(d["root"] / "test" / tgt).astype(np.float32) / 255.0
        img_pred = imageio.imread(d["generated"] / name).astype(np.float32) / 255.0
        ssim_values.append(patn_ssim(img_gt * 255.0, img_pred * 255.0))  # its ssim_256
    np.testing.assert_allclose(per_image(d, "ssim"), ssim_values, atol=1e-6, rtol=0)

    fid = script_fid(d["generated"], d["root"] / "train", tiny_inception, SMALL_BATCH, shrink=True)
    assert data["metrics"]["fid"] == pytest.approx(fid, rel=1e-4)
    assert data["counts"]["fid"] == 8 and data["fid_real_images"] == 8

    names = sorted(d["files"])  # its preprocess_path_for_deform_task sorts the generated list
    target = dict(zip(d["files"], (t for _, t in d["pairs"])))
    lp, used = script_lpips([signed(imageio.imread(d["generated"] / n)) for n in names],
                            [signed(imageio.imread(d["root"] / "test" / target[n])) for n in names], SMALL_BATCH)
    assert used == 8 and data["metrics"]["lpips"] == pytest.approx(lp, abs=1e-6)


def test_gfla_market_mask_lpips(tmp_path, small_batches):
    d = build(tmp_path, (128, 64), 6, "png", "ours", "market")
    data = run(d, "gfla", "mlpips")
    names = sorted(d["files"])
    target = dict(zip(d["files"], (t for _, t in d["pairs"])))
    images_1, images_2 = [], []
    for n in names:  # calculate_mask_lpips: a 3-channel float32 mask of the target's pose
        mask = np.tile(np.expand_dims(produce_ma_mask(d["annotations"][target[n]], (128, 64)).astype(np.float32),
                                      -1), (1, 1, 3))
        images_1.append(signed(imageio.imread(d["generated"] / n)) * mask)
        images_2.append(signed(imageio.imread(d["root"] / "test" / target[n])) * mask)
    mlp, used = script_lpips(images_1, images_2, SMALL_BATCH)
    assert used == 4 and data["metrics"]["mlpips"] == pytest.approx(mlp, abs=1e-6)


# ------------------------------------------------------------------------------------------ pieces


def test_whole_batches_of_64():
    assert whole_batches(8570, 64, shrink=False) == 8512  # DeepFashion: 58 images dropped
    assert whole_batches(12000, 64, shrink=False) == 11968  # Market: 32 dropped
    assert whole_batches(128, 64, shrink=False) == 128
    assert whole_batches(63, 64, shrink=False) == 0 and whole_batches(63, 64, shrink=True) == 63
    assert whole_batches(65, 64, shrink=True) == 64 and whole_batches(7, None, shrink=False) == 7


def test_kept_mask_follows_the_scripts_listing_at_64(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"img{i:03d}.{'jpg' if i % 3 else 'png'}" for i in rng.permutation(130)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    folder = pathlib.Path(tmp_path)
    glob = [p.name for p in folder.glob("*.jpg")] + [p.name for p in folder.glob("*.png")]
    assert script_listing(tmp_path, "glob") == glob
    kept = kept_mask(names, tmp_path, "glob", 64, shrink=False)
    assert {n for n, k in zip(names, kept) if not k} == set(glob[128:])
    kept = kept_mask(names, tmp_path, "sorted", 64, shrink=True)
    assert {n for n, k in zip(names, kept) if not k} == set(sorted(names)[128:])
    listdir = [n for n in os.listdir(tmp_path) if n.endswith(".jpg")]
    assert script_listing(tmp_path, "listdir") == listdir
    jpgs = [n for n in names if n.endswith(".jpg")]
    kept = kept_mask(jpgs, tmp_path, "listdir", 64, shrink=True)
    assert {n for n, k in zip(jpgs, kept) if not k} == set(listdir[len(listdir) // 64 * 64 :])


def test_release_truth_roundtrip_and_truncating_output():
    v = np.arange(256, dtype=np.uint8)
    x = (v.astype(np.float32) / 255.0 - np.float32(0.5)) / np.float32(0.5)
    expected = ((x + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    ours = release_truth_roundtrip(torch.from_numpy(v).view(1, 1, 1, 256)).flatten().numpy()
    np.testing.assert_array_equal(ours, expected)
    assert (v.astype(int) - ours).max() == 1 and (ours != v).sum() > 50  # 63 values come back one lower

    out = torch.linspace(-1.1, 1.1, 3 * 4 * 5, dtype=torch.float32).view(1, 3, 4, 5)
    release = ((out.numpy().transpose(0, 2, 3, 1) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)  # test script
    np.testing.assert_array_equal(to_uint8(out, truncate=True), release)
    assert (to_uint8(out) != release).any()  # rounding differs


def test_protocol_names_and_family_rules():
    for name in protocols.PROTOCOLS:
        for size in ((256, 256), (256, 176), (128, 64)):
            p = get_protocol(name, size)
            assert p.name == name and p.reproduces
    assert get_protocol("release", (256, 256)).crops((256, 256))
    assert not get_protocol("release", (256, 176)).crops((256, 176))
    assert get_protocol("release", (256, 256)).mssim is None and get_protocol("release", (128, 64)).mssim
    assert get_protocol("gfla", (128, 64)).pckh is None and get_protocol("patn", (128, 64)).pckh
    with pytest.raises(ProtocolError, match="unknown protocol 'tf'"):
        get_protocol("tf", (128, 64))


def test_benchmark_metrics_runs_and_labels_extrapolation(capsys):
    from scripts import benchmark_metrics

    out = benchmark_metrics.main(["--protocol", "patn", "--pairs", "8", "--measure", "4", "--size", "128x64",
                                  "--pool", "4", "--batch-size", "2", "--skimage-pairs", "2", "--threads", "1"])
    assert set(out) == {"ssim", "mssim", "skimage_ssim_ms_per_pair"}
    assert out["ssim"]["seconds_for_pairs"] == pytest.approx(out["ssim"]["seconds"] * 2)
    printed = capsys.readouterr().out
    assert "extrapolated from 4" in printed and "protocol patn" in printed


def test_report_names_each_metrics_protocol(tmp_path):
    from utils.report import metrics_table

    d = build(tmp_path, (128, 64), 3, "png", "ours", "market")
    run(d, "patn", "ssim,mssim")
    html = metrics_table(d["out"] / "metrics.json")
    assert "SSIM [patn]" in html and "Mask-SSIM [patn]" in html and "patn: PATN&#x27;s getMetrics" in html
