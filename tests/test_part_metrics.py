"""Our own measures of what a person sees: the per-part colour error (metrics/colour.py) and parsing pixel
accuracy / mIoU (metrics/parsing.py), each checked against a slow per-pair, per-part (per-class) loop written
here from the definitions, and end to end through evaluate.py with the texture correlation (metrics/texture.py,
whose loop is tests/test_texture.py's)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

import evaluate
from data.datasets import generated_image_name
from metrics.colour import part_colour_errors, summarise
from metrics.parsing import confusion_matrix, parsing_scores
from metrics.protocols import ProtocolError, get_protocol
from tests import test_evaluate
from tests.test_evaluate import H, W, read_rgb, run, write_rgb
from tests.test_texture import slow_texture

fake = test_evaluate.fake  # the evaluate tests' fake dataset fixture, which these tests add parsing maps to


def blob_labels(rng: np.random.Generator, h: int = H, w: int = W, labels: tuple[int, ...] = (2, 5, 9, 13, 14)):
    """Background with rectangles of a few CIHP labels, some large, some under 150 pixels."""
    out = np.zeros((h, w), np.uint8)
    for lab in labels:
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        out[y : y + rng.integers(4, 30), x : x + rng.integers(4, 25)] = lab
    return out


def slow_colour_errors(generated: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> list[float]:
    """The definition, one pair and one part at a time: every non-background part with >= 150 pixels."""
    errors = []
    for g, t, lab in zip(generated, truth, labels):  # (H,W,3), (H,W,3), (H,W)
        for part in sorted(set(lab.ravel().tolist()) - {0}):
            pixels = [(y, x) for y in range(lab.shape[0]) for x in range(lab.shape[1]) if lab[y, x] == part]
            if len(pixels) < 150:
                continue
            per_channel = []
            for c in range(3):
                mean_g = sum(float(g[y, x, c]) for y, x in pixels) / len(pixels)
                mean_t = sum(float(t[y, x, c]) for y, x in pixels) / len(pixels)
                per_channel.append(abs(mean_g - mean_t))
            errors.append(sum(per_channel) / 3)
    return errors


def test_part_colour_errors_match_a_per_pair_per_part_loop():
    rng = np.random.default_rng(1)
    generated = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    truth = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    labels = np.stack([blob_labels(rng) for _ in range(3)])
    got = part_colour_errors(torch.from_numpy(generated).permute(0, 3, 1, 2),
                             torch.from_numpy(truth).permute(0, 3, 1, 2), torch.from_numpy(labels)).numpy()
    expected = slow_colour_errors(generated, truth, labels)
    assert got.shape == (3, 20)
    assert np.isnan(got[:, 0]).all()  # the background is never a part
    np.testing.assert_allclose(got[np.isfinite(got)], expected, atol=1e-9)  # both in (pair, label) order
    mean, share, parts = summarise(got)
    assert parts == len(expected)
    assert mean == pytest.approx(np.mean(expected))
    assert share == pytest.approx(np.mean([e <= 20 for e in expected]))


def test_a_correctly_coloured_blur_scores_zero_and_grey_does_not():
    rng = np.random.default_rng(2)
    labels = np.zeros((H, W), np.uint8)
    labels[10:30, 10:25] = 5  # 300 pixels of upper clothes
    truth = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    truth[labels == 5] = (200, 30, 30)  # a red top
    blurred = truth.copy()
    blurred[labels == 5] = np.roll(truth[labels == 5], 1, axis=0)  # same colours, moved within the part
    t = torch.from_numpy(np.stack([truth, truth])).permute(0, 3, 1, 2)
    g = torch.from_numpy(np.stack([blurred, np.full_like(truth, 128)])).permute(0, 3, 1, 2)
    errors = part_colour_errors(g, t, torch.from_numpy(np.stack([labels, labels])))
    assert float(errors[0, 5]) == pytest.approx(0.0)
    assert float(errors[1, 5]) == pytest.approx((72 + 98 + 98) / 3)


def slow_parsing_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    correct = total = 0
    for p, t in zip(predicted, truth):
        for y in range(t.shape[0]):
            for x in range(t.shape[1]):
                correct += int(p[y, x] == t[y, x])
                total += 1
    ious = []
    for k in sorted(set(truth.ravel().tolist())):
        inter = union = 0
        for p, t in zip(predicted, truth):
            inter += int(((p == k) & (t == k)).sum())
            union += int(((p == k) | (t == k)).sum())
        ious.append(inter / union)
    return correct / total, float(np.mean(ious))


def test_parsing_accuracy_and_miou_match_per_class_loops():
    rng = np.random.default_rng(3)
    truth = np.stack([blob_labels(rng) for _ in range(4)])
    predicted = truth.copy()
    flip = rng.uniform(size=truth.shape) < 0.3
    predicted[flip] = rng.choice([0, 5, 7], size=int(flip.sum()))  # 7 never occurs in the ground truth
    c = confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(truth), 20).numpy()
    scores = parsing_scores(c)
    acc, miou = slow_parsing_scores(predicted, truth)
    assert scores["pixel_accuracy"] == pytest.approx(acc)
    assert scores["miou"] == pytest.approx(miou)
    assert scores["classes_in_truth"] == len(set(truth.ravel().tolist()))
    assert scores["classes_predicted"] == len(set(predicted.ravel().tolist()))


def add_parsing(fake: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder = fake["root"] / "test_parsing"
    folder.mkdir()
    maps = {}
    for i in range(6):
        maps[f"test{i}.jpg"] = blob_labels(rng)
        assert cv2.imwrite(str(folder / f"test{i}.png"), maps[f"test{i}.jpg"])
    return maps


def test_evaluate_reports_colour_error_by_default_and_parsing_given_label_maps(fake):
    rng = np.random.default_rng(4)
    maps = add_parsing(fake, rng)
    predicted = fake["tmp"] / "labels"
    predicted.mkdir()
    pred_maps = []
    for name, (_, tgt) in zip(fake["names"], fake["pairs"]):
        p = maps[tgt].copy()
        p[rng.uniform(size=p.shape) < 0.2] = 0
        pred_maps.append(p)
        assert cv2.imwrite(str(predicted / name), p)
    out = run(fake, "--metrics", "ssim,colour,parsing", "--pred-parsing", str(predicted))
    generated = np.stack([read_rgb(fake["generated"] / n) for n in fake["names"]])
    truth = np.stack([read_rgb(fake["root"] / "test" / t) for _, t in fake["pairs"]])
    labels = np.stack([maps[t] for _, t in fake["pairs"]])
    expected = slow_colour_errors(generated, truth, labels)
    assert out["metrics"]["colour"] == pytest.approx(np.mean(expected))
    assert out["metrics"]["colour20"] == pytest.approx(np.mean([e <= 20 for e in expected]))
    acc, miou = slow_parsing_scores(np.stack(pred_maps), labels)
    assert out["metrics"]["parsing_acc"] == pytest.approx(acc)
    assert out["metrics"]["parsing_miou"] == pytest.approx(miou)
    # named with their protocol, clean, like every other metric
    assert {k: out["labels"][k] for k in ("colour", "colour20", "parsing_acc", "parsing_miou")} == {
        "colour": "Per-part colour error (grey levels) [clean]", "colour20": "Parts within 20 levels [clean]",
        "parsing_acc": "Parsing pixel accuracy [clean]", "parsing_miou": "Parsing mIoU [clean]"}
    with open(fake["out"] / "metrics.csv") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert all(rows[k]["protocol"] == "clean" and rows[k]["computed_as"].startswith("clean: ")
               for k in ("colour", "colour20", "parsing_acc", "parsing_miou"))
    with open(fake["out"] / "per_image.csv") as f:
        assert "colour" in next(csv.reader(f))
    # by default: the colour error whenever the test split has parsing maps, parsing when label maps are given
    args = evaluate.parse_args(["--generated", "g", "--dataset-config", "c"])
    clean = get_protocol("clean", (H, W))
    assert evaluate.select_metrics(args, "synthetic", clean, True)[-2:] == ("colour", "texture")
    assert {"colour", "texture"}.isdisjoint(evaluate.select_metrics(args, "synthetic", clean, False))
    args.pred_parsing = "labels"
    assert evaluate.select_metrics(args, "synthetic", clean, True)[-3:] == ("colour", "texture", "parsing")


def test_evaluate_reports_texture_against_the_per_part_loop(fake):
    """Upper clothes and pants with a visible texture on every target; two generated images carry the true
    pattern (brighter), the others an unrelated one."""
    rng = np.random.default_rng(8)
    folder = fake["root"] / "test_parsing"
    folder.mkdir()
    maps = {}
    for i in range(6):
        labels = np.zeros((H, W), np.uint8)
        labels[4:34, 6 : rng.integers(30, 44)] = 5
        labels[34:62, 10:38] = 9
        labels[40:62, rng.integers(10, 30) :: 4] = 0  # a few columns of background between the legs
        maps[f"test{i}.jpg"] = labels
        assert cv2.imwrite(str(folder / f"test{i}.png"), labels)
        write_rgb(fake["root"] / "test" / f"test{i}.jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    for k, (name, (_, tgt)) in enumerate(zip(fake["names"], fake["pairs"])):
        pattern = read_rgb(fake["root"] / "test" / tgt) if k < 2 else rng.integers(0, 256, (H, W, 3), np.uint8)
        write_rgb(fake["generated"] / name, np.clip(pattern * 0.8 + 30, 0, 255).astype(np.uint8))
    out = run(fake, "--metrics", "texture,ssim")
    assert list(out["metrics"]) == ["ssim", "texture", "texture50", "texture_contrast"]
    generated = np.stack([read_rgb(fake["generated"] / n) for n in fake["names"]])
    truth = np.stack([read_rgb(fake["root"] / "test" / t) for _, t in fake["pairs"]])
    correlation, contrast = slow_texture(generated, truth, np.stack([maps[t] for _, t in fake["pairs"]]))
    counted = np.isfinite(correlation)
    assert counted.sum() == 10  # two parts of every pair
    assert out["metrics"]["texture"] == pytest.approx(correlation[counted].mean())
    assert out["metrics"]["texture50"] == pytest.approx(0.4)  # the 4 parts of the two pairs with the pattern
    assert out["metrics"]["texture_contrast"] == pytest.approx(contrast[counted].mean())
    assert {k: out["labels"][k] for k in ("texture", "texture50", "texture_contrast")} == {
        "texture": "Per-part texture correlation [clean]", "texture50": "Parts with texture correlation > 0.5 [clean]",
        "texture_contrast": "Texture contrast (generated / true) [clean]"}
    assert out["counts"]["texture"] == 5 and "mean over 10 parts" in out["protocols"]["texture"]
    with open(fake["out"] / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[3:-3] == ["ssim", "texture"]  # per pair: its mean over its parts
    assert [float(r["texture"]) for r in rows] == pytest.approx(correlation[:, [0, 3]].mean(axis=1))


def test_label_maps_are_png_whatever_the_generated_format(fake):
    """--names release --format jpg: the generated images are <from>_<to>.jpg, their label maps <from>_<to>.png."""
    rng = np.random.default_rng(6)
    maps = add_parsing(fake, rng)
    generated = fake["tmp"] / "release"
    predicted = fake["tmp"] / "labels"
    generated.mkdir()
    predicted.mkdir()
    for src, tgt in fake["pairs"]:
        name = generated_image_name(src, tgt, "release", "jpg")
        assert cv2.imwrite(str(generated / name), cv2.imread(str(fake["generated"] / generated_image_name(src, tgt))))
        assert cv2.imwrite(str(predicted / generated_image_name(src, tgt, "release", "png")), maps[tgt])
    out = run(fake, "--metrics", "parsing", "--pred-parsing", str(predicted), "--names", "release", "--format",
              "jpg", "--generated", str(generated))  # the last --generated counts
    assert out["metrics"]["parsing_acc"] == 1.0 and out["metrics"]["parsing_miou"] == 1.0  # the truth itself


@pytest.mark.parametrize("protocol", ["release", "patn", "gfla"])
def test_our_measures_are_one_error_under_a_published_protocol(fake, protocol):
    add_parsing(fake, np.random.default_rng(7))
    predicted = fake["tmp"] / "labels"
    predicted.mkdir()
    for metric in ("colour", "texture", "parsing"):
        with pytest.raises(ProtocolError, match=f"protocol '{protocol}' defines no {metric} \\(our own measure, in "
                           "no published script\\); it offers .*; use --protocol clean for it"):
            run(fake, "--protocol", protocol, "--metrics", f"ssim,{metric}", "--pred-parsing", str(predicted))
    # the default set leaves the colour error out there (as it leaves out what the protocol lacks), but label maps
    # given explicitly are an error, not silently ignored
    args = evaluate.parse_args(["--generated", "g", "--dataset-config", "c", "--protocol", protocol])
    assert {"colour", "texture"}.isdisjoint(evaluate.select_metrics(args, "synthetic", get_protocol(protocol, (H, W)),
                                                                    True))
    with pytest.raises(ProtocolError, match="defines no parsing"):
        run(fake, "--protocol", protocol, "--pred-parsing", str(predicted))


def test_parsing_without_label_maps_or_with_a_bad_map_is_one_clear_error(fake):
    rng = np.random.default_rng(5)
    add_parsing(fake, rng)
    with pytest.raises(ValueError, match="--pred-parsing"):
        run(fake, "--metrics", "parsing")
    predicted = fake["tmp"] / "labels"
    predicted.mkdir()
    for name in fake["names"]:
        assert cv2.imwrite(str(predicted / name), np.zeros((H, W, 3), np.uint8))  # a colour picture, not labels
    with pytest.raises(ValueError, match="single-channel"):
        run(fake, "--metrics", "parsing", "--pred-parsing", str(predicted))
