"""The dataset preparation scripts: OpenPose JSON -> CSV, parsing label merge, pair lists."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.annotations import read_annotations, read_pairs, write_annotations
from scripts import make_pairs, merge_parsing, openpose_to_csv
from utils.cli import run_main

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- OpenPose JSON -> annotation CSV

def write_json(path: Path, people: list[list[float]]) -> None:
    path.write_text(json.dumps({"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p}
                                                           for p in people]}))


def body25_person() -> list[float]:
    """BODY_25 joint k at (x, y) = (4k, 8k), confidence 0.9, except: RElbow (3) below the threshold, REar (17)
    outside the image after scaling, MidHip (8) and the feet (19-24) somewhere COCO must never read from."""
    flat = []
    for k in range(25):
        x, y, c = 4.0 * k, 8.0 * k, 0.9
        if k == 3:
            c = 0.05
        if k == 17:
            x = 120.0
        if k == 8 or k >= 19:
            x, y = 1.0, 1.0
        flat += [x, y, c]
    return flat


def test_body25_to_csv_mapping_threshold_scaling_and_best_person(tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    weak = [10.0, 10.0, 0.3] * 25  # summed confidence 5.4 < the other person's 15.35
    write_json(src / "fashionWOMENid01_1front_keypoints.json", [weak, body25_person()])
    write_json(src / "fashionWOMENid01_2side_keypoints.json", [])
    out = tmp_path / "ann.csv"
    # Source 200 x 100 -> frame 100 x 50: y' = (y + 0.5) / 2 - 0.5 = 4k - 0.25 -> 4k; x' = 2k - 0.25 -> 2k.
    openpose_to_csv.main([str(src), "--out", str(out), "--src-size", "200", "100", "--dst-size", "100", "50"])
    rows = read_annotations(out)
    assert sorted(rows) == ["fashionWOMENid01_1front.jpg", "fashionWOMENid01_2side.jpg"]
    # COCO joint j reads BODY_25 joint (0 1 2 3 4 5 6 7 9 10 11 12 13 14 15 16 17 18)[j], worked out by hand:
    # RElbow (COCO 3) is below 0.1, REar (COCO 16) lands at x' = 60 >= 50.
    expected_y = [0, 4, 8, -1, 16, 20, 24, 28, 36, 40, 44, 48, 52, 56, 60, 64, -1, 72]
    expected_x = [0, 2, 4, -1, 8, 10, 12, 14, 18, 20, 22, 24, 26, 28, 30, 32, -1, 36]
    np.testing.assert_array_equal(rows["fashionWOMENid01_1front.jpg"], np.stack([expected_y, expected_x], 1))
    np.testing.assert_array_equal(rows["fashionWOMENid01_2side.jpg"], np.full((18, 2), -1))


def test_coco_json_with_image_sizes_threshold_and_extension(tmp_path):
    src, images = tmp_path / "json", tmp_path / "images"
    src.mkdir()
    images.mkdir()
    Image.fromarray(np.zeros((120, 60, 3), np.uint8)).save(images / "0002_c1s1_000451_03.png")
    flat = [0.0] * 54
    for j, (x, y, c) in {0: (30, 50, 0.8),  # -> (24.75, 14.75) -> (25, 15)
                         4: (59, 119, 0.5),  # -> (59.25, 29.25) -> (59, 29)
                         7: (59.9, 0, 0.2),  # x' = 29.7 -> 30 = W: outside
                         10: (10, 10, 0.1),  # exactly the threshold: kept, (4.75, 4.75) -> (5, 5)
                         11: (10, 10, 0.09)}.items():  # below the threshold
        flat[3 * j: 3 * j + 3] = [x, y, c]
    write_json(src / "0002_c1s1_000451_03_keypoints.json", [flat])
    out = tmp_path / "ann.csv"
    openpose_to_csv.main([str(src), "--out", str(out), "--images", str(images), "--dst-size", "60", "30",
                          "--image-ext", "png"])
    kp = read_annotations(out)["0002_c1s1_000451_03.png"]
    expected = np.full((18, 2), -1)
    expected[0], expected[4], expected[10] = (25, 15), (59, 29), (5, 5)
    np.testing.assert_array_equal(kp, expected)


def test_scaling_aligns_pixel_centres():
    joints = np.zeros((18, 3))
    joints[:, 2] = 1.0
    joints[0, :2] = (101.0, 3.0)  # x, y
    # Halving: x' = 101.5 / 2 - 0.5 = 50.25 -> 50 (scaling the corner instead, 101 / 2 = 50.5, would give 51).
    kp = openpose_to_csv.to_frame(joints, 0.1, (10, 200), (5, 100))
    assert kp[0].tolist() == [1, 50]  # y' = 3.5 / 2 - 0.5 = 1.25 -> 1


def test_openpose_errors_name_the_file(tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    bad = src / "broken_keypoints.json"
    bad.write_text('{"people": [{"pose_keypoints_2d": [1, 2, ')
    with pytest.raises(ValueError, match="broken_keypoints.json.*malformed JSON"):
        openpose_to_csv.main([str(src), "--out", str(tmp_path / "a.csv")])
    write_json(bad, [[1.0] * 60])
    with pytest.raises(ValueError, match="broken_keypoints.json.*60"):
        openpose_to_csv.main([str(src), "--out", str(tmp_path / "a.csv")])
    write_json(bad, [[1.0] * 54])
    with pytest.raises(ValueError, match="broken_keypoints.json.*--format body25"):
        openpose_to_csv.main([str(src), "--out", str(tmp_path / "a.csv"), "--format", "body25"])


# ---------------------------------------------------------------- parsing label merge

# cihp8 from the contract, written out per CIHP id: 0 bg, 1 hat, 2 hair, 3 glove, 4 sunglasses, 5 upper-clothes,
# 6 dress, 7 coat, 8 socks, 9 pants, 10 jumpsuit, 11 scarf, 12 skirt, 13 face, 14 l-arm, 15 r-arm, 16 l-leg,
# 17 r-leg, 18 l-shoe, 19 r-shoe -> 0 background, 1 hair, 2 face, 3 upper clothes, 4 arms, 5 pants/skirt, 6 legs,
# 7 shoes.
CIHP8_BY_NAME = {0: 0, 1: 1, 2: 1, 3: 4, 4: 2, 5: 3, 6: 3, 7: 3, 8: 6, 9: 5, 10: 3, 11: 3, 12: 5, 13: 2,
                 14: 4, 15: 4, 16: 6, 17: 6, 18: 7, 19: 7}


def slow_merge(labels: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.zeros_like(labels)
    for i in range(labels.shape[0]):
        for j in range(labels.shape[1]):
            out[i, j] = table[int(labels[i, j])]
    return out


def test_merge_cihp8_matches_per_pixel_reference(tmp_path):
    src, dst = tmp_path / "cihp", tmp_path / "merged"
    src.mkdir()
    rng = np.random.default_rng(0)
    maps = {f"img{i}": rng.integers(0, 20, size=(23, 17), dtype=np.uint8) for i in range(3)}
    for stem, labels in maps.items():
        Image.fromarray(labels).save(src / f"{stem}.png")
    # One palette PNG: its indices are the labels, whatever colours the palette holds.
    palette = Image.frombytes("P", (17, 23), maps["img2"].tobytes())
    palette.putpalette(rng.integers(0, 256, size=768).tolist())
    palette.save(src / "img2.png")
    # PGN's coloured visualisation next to a label map is not a label map: skipped, not an error.
    Image.fromarray(rng.integers(0, 256, size=(23, 17, 3), dtype=np.uint8)).save(src / "img0_vis.png")
    merge_parsing.main([str(src), str(dst), "--merge", "cihp8"])
    for stem, labels in maps.items():
        got = np.asarray(Image.open(dst / f"{stem}.png"))
        assert got.dtype == np.uint8 and got.shape == labels.shape
        np.testing.assert_array_equal(got, slow_merge(labels, CIHP8_BY_NAME))
    assert sorted(p.name for p in dst.iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_merge_json_list_and_nearest_resize(tmp_path):
    src, dst = tmp_path / "cihp", tmp_path / "merged"
    src.mkdir()
    labels = np.random.default_rng(1).integers(0, 20, size=(40, 30), dtype=np.uint8)
    Image.fromarray(labels).save(src / "a.png")
    table = list(range(19, -1, -1))  # reverse the ids
    # Sizes where no output pixel centre falls on an input pixel border (those ties may go either way).
    for size in ((64, 44), (16, 12)):
        merge_parsing.main([str(src), str(dst), "--merge", json.dumps(table), "--resize", *map(str, size)])
        expected = cv2.resize(19 - labels, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(np.asarray(Image.open(dst / "a.png")), expected)


def test_merge_errors(tmp_path):
    src = tmp_path / "cihp"
    src.mkdir()
    labels = np.zeros((8, 8), np.uint8)
    labels[3, 4] = 20
    Image.fromarray(labels).save(src / "bad.png")
    with pytest.raises(ValueError, match=r"bad.png.*\[20\]"):
        merge_parsing.main([str(src), str(tmp_path / "out"), "--merge", "cihp8"])
    with pytest.raises(ValueError, match="input folder"):
        merge_parsing.main([str(src), str(src), "--merge", "cihp8"])
    with pytest.raises(ValueError, match="20 ints"):
        merge_parsing.main([str(src), str(tmp_path / "out"), "--merge", "[0, 1, 2]"])
    with pytest.raises(ValueError, match="neither a preset"):
        merge_parsing.main([str(src), str(tmp_path / "out"), "--merge", "cihp9"])


# ---------------------------------------------------------------- pair lists

DEEPFASHION = {"fashionWOMENDressesid0000262902": ["1front", "2side", "3back"],
               "fashionMENTees_Tanksid0000404701": ["1front", "7additional"],
               "fashionMENTees_Tanksid0000512301": ["2side", "3back"],  # '_' inside the id: split at the last
               "fashionWOMENSkirtsid0000177102": ["1front"],
               "synthid000012": ["1front", "2side", "3back", "4full"]}


def deepfashion_names() -> list[str]:
    return [f"{pid}_{view}.jpg" for pid, views in DEEPFASHION.items() for view in views]


def make_images(folder: Path, names: list[str]) -> None:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")  # make_pairs reads names only


def test_pairs_all_ordered_pairs_per_person(tmp_path):
    make_images(tmp_path / "train", deepfashion_names())
    make_pairs.main(["--images", str(tmp_path / "train"), "--out-dir", str(tmp_path)])
    pairs = read_pairs(tmp_path / "fasion-resize-pairs-train.csv")
    assert len(pairs) == 3 * 2 + 2 * 1 + 2 * 1 + 0 + 4 * 3  # n (n - 1) per person
    expected = {(f"{pid}_{a}.jpg", f"{pid}_{b}.jpg") for pid, views in DEEPFASHION.items()
                for a in views for b in views if a != b}
    assert set(pairs) == expected and len(set(pairs)) == len(pairs)


def test_style_detection_and_market_ids(tmp_path):
    market = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0002_c3s1_000551_02.jpg",
              "0007_c1s6_028546_01.jpg", "0007_c2s3_070952_01.jpg", "-1_c1s1_000401_03.jpg", "-1_c2s1_000101_02.jpg",
              "0000_c1s1_000151_01.jpg", "0000_c3s1_000151_04.jpg"]
    assert make_pairs.detect_style(market) == "market"
    assert make_pairs.detect_style(deepfashion_names()) == "deepfashion"
    assert make_pairs.person_id("fashionWOMENDressesid0000262902_3back.jpg", "deepfashion") == \
        "fashionWOMENDressesid0000262902"
    assert make_pairs.person_id("fashionMENTees_Tanksid0000404701_7additional.jpg", "deepfashion") == \
        "fashionMENTees_Tanksid0000404701"
    assert make_pairs.person_id("synthid000012_3front.jpg", "deepfashion") == "synthid000012"
    assert make_pairs.person_id("0002_c1s1_000451_03.jpg", "market") == "0002"
    with pytest.raises(ValueError, match="nounderscore.jpg"):
        make_pairs.detect_style(["nounderscore.jpg", "a_1.jpg"])
    make_images(tmp_path / "bounding_box_train", market)
    make_pairs.main(["--images", str(tmp_path / "bounding_box_train"), "--out-dir", str(tmp_path),
                     "--prefix", "market"])
    pairs = read_pairs(tmp_path / "market-pairs-train.csv")
    assert len(pairs) == 3 * 2 + 2 * 1  # distractors (-1) and junk (0000) left out
    assert all(a.split("_")[0] == b.split("_")[0] in ("0002", "0007") for a, b in pairs)


def test_split_by_person_and_split_file(tmp_path):
    names = [f"synthid{p:06d}_{v}view.jpg" for p in range(10) for v in range(3)]
    make_images(tmp_path / "images", names)
    args = ["--images", str(tmp_path / "images"), "--out-dir", str(tmp_path / "a"), "--test-fraction", "0.3",
            "--seed", "3"]
    make_pairs.main(args)
    train = read_pairs(tmp_path / "a" / "fasion-resize-pairs-train.csv")
    test = read_pairs(tmp_path / "a" / "fasion-resize-pairs-test.csv")
    persons = {split: {n.rsplit("_", 1)[0] for pair in pairs for n in pair} for split, pairs in
               (("train", train), ("test", test))}
    assert persons["train"].isdisjoint(persons["test"])
    assert len(persons["test"]) == 3 and len(persons["train"]) == 7
    assert len(train) + len(test) == 10 * 3 * 2
    split_file = tmp_path / "a" / "fasion-resize-test-persons.txt"
    assert set(split_file.read_text().split()) == persons["test"]
    # The written split file reproduces the split.
    make_pairs.main(["--images", str(tmp_path / "images"), "--out-dir", str(tmp_path / "b"),
                     "--split-file", str(split_file)])
    assert read_pairs(tmp_path / "b" / "fasion-resize-pairs-test.csv") == test
    assert read_pairs(tmp_path / "b" / "fasion-resize-pairs-train.csv") == train


def test_min_joints_and_max_pairs(tmp_path):
    names = deepfashion_names()
    keypoints = {}
    for i, name in enumerate(names):
        kp = np.full((18, 2), -1, dtype=np.int64)
        kp[: 4 + i] = (10, 20)  # image i has 4 + i visible joints
        kp[0] = (10, -1) if i == 3 else kp[0]  # a joint with one coordinate -1 is missing
        keypoints[name] = kp
    csv = tmp_path / "ann.csv"
    write_annotations(csv, keypoints)
    make_pairs.main(["--annotations", str(csv), "--out-dir", str(tmp_path), "--min-joints", "7"])
    # Visible joints: 4, 5, 6 (person 1), 6 (7 minus the half-missing one), 8 (person 2), 9, 10 (person 3),
    # 11 (person 4), 12..15 (synthid000012).
    kept = {n for i, n in enumerate(names) if 4 + i - (i == 3) >= 7}
    pairs = read_pairs(tmp_path / "fasion-resize-pairs-train.csv")
    assert {n for pair in pairs for n in pair} <= kept
    assert len(pairs) == 2 * 1 + 4 * 3  # only persons 3 and synthid000012 keep two or more images
    make_pairs.main(["--annotations", str(csv), "--out-dir", str(tmp_path / "k"), "--max-pairs-per-person", "2"])
    capped = read_pairs(tmp_path / "k" / "fasion-resize-pairs-train.csv")
    assert len(capped) == 2 + 2 + 2 + 0 + 2
    # Both shoulders and hips (2 5 8 11) are present from 12 joints on; image 3 lost joint 0, not one of those.
    make_pairs.main(["--annotations", str(csv), "--out-dir", str(tmp_path / "r"), "--require-joints", "2", "5", "8",
                     "11"])
    required = read_pairs(tmp_path / "r" / "fasion-resize-pairs-train.csv")
    assert {n for pair in required for n in pair} == {n for i, n in enumerate(names) if 4 + i >= 12}
    all_pairs = {(a, b) for a in names for b in names if a != b and a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]}
    assert set(capped) <= all_pairs


def test_pairs_errors(tmp_path):
    with pytest.raises(SystemExit):
        make_pairs.main(["--out-dir", str(tmp_path)])  # neither --images nor --annotations
    with pytest.raises(ValueError, match="missing.txt"):
        make_images(tmp_path / "im", deepfashion_names())
        make_pairs.main(["--images", str(tmp_path / "im"), "--out-dir", str(tmp_path),
                         "--split-file", str(tmp_path / "missing.txt")])


# ---------------------------------------------------------------- command lines

@pytest.mark.parametrize("module", [openpose_to_csv, merge_parsing, make_pairs])
def test_help_exits_zero(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert module.__doc__.splitlines()[0] in capsys.readouterr().out


def test_scripts_run_from_the_command_line(tmp_path):
    # Run from elsewhere: each script finds the project's packages through the installed project (make venv), not
    # through the working directory. Started together, since each start-up spends seconds importing torch.
    procs = {script: subprocess.Popen([sys.executable, str(ROOT / "scripts" / script), "--help"], cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script in ("openpose_to_csv.py", "merge_parsing.py", "make_pairs.py")}
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{script}: {err}"
        assert out.startswith("usage: " + script)



@pytest.mark.parametrize("module", [openpose_to_csv, merge_parsing, make_pairs])
def test_bad_input_is_one_error_line_and_exit_2(module, tmp_path, capsys):
    """Each script's bad input ends in its `run_main(main)`: one `error:` line naming the path, exit code 2."""
    nowhere = tmp_path / "nowhere"
    args = {openpose_to_csv: [str(nowhere), "--out", str(tmp_path / "a.csv")],
            merge_parsing: [str(nowhere), str(tmp_path / "merged")],
            make_pairs: ["--images", str(nowhere), "--out-dir", str(tmp_path / "pairs")]}[module]
    with pytest.raises(SystemExit) as exit_:
        run_main(functools.partial(module.main, args))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {nowhere}: not a folder"]
