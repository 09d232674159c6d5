"""PairDataset on a tiny dataset written here: sample contents against the files, the label merge, the
construction report of missing files, bad-file errors, horizontal flips against slow references, and workers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from data.annotations import write_annotations, write_pairs
from data.datasets import (
    DatasetError,
    PairDataset,
    check_distinct_files,
    flow_file_name,
    generated_image_name,
    pair_parsing_name,
    pair_stem,
    stem,
)
from data.pose import encode_pose

H, W = 16, 12
JOINTS = ["nose", "neck", "r-shoulder", "r-elbow", "r-wrist", "l-shoulder", "l-elbow", "l-wrist", "r-hip", "r-knee",
          "r-ankle", "l-hip", "l-knee", "l-ankle", "r-eye", "l-eye", "r-ear", "l-ear"]
# CIHP ids that a mirror swaps: left-arm/right-arm, left-leg/right-leg, left-shoe/right-shoe
CIHP_MIRROR = {14: 15, 15: 14, 16: 17, 17: 16, 18: 19, 19: 18}
# the contract's 8-class merge, by CIHP name
CIHP8 = {"background": 0, "hat": 1, "hair": 1, "sunglasses": 2, "face": 2, "upper-clothes": 3, "dress": 3, "coat": 3,
         "jumpsuit": 3, "scarf": 3, "glove": 4, "left-arm": 4, "right-arm": 4, "pants": 5, "skirt": 5, "socks": 6,
         "left-leg": 6, "right-leg": 6, "left-shoe": 7, "right-shoe": 7}
CIHP = ["background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
        "jumpsuit", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
        "right-shoe"]


def build(root: Path, names: list[str], pairs: list[tuple[str, str]], seed: int = 0) -> dict:
    """Write images, parsing maps, keypoints, pairs and flow files in the release layout; return what was written."""
    rng = np.random.default_rng(seed)
    for sub in ("train", "train_parsing", "train_flow"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    written = {"images": {}, "labels": {}, "keypoints": {}, "flow": {}, "vis": {}}
    for name in names:
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / "train" / name), rgb[..., ::-1])  # cv2 writes BGR
        labels = rng.integers(0, 20, size=(H, W), dtype=np.uint8)
        assert cv2.imwrite(str(root / "train_parsing" / (Path(name).stem + ".png")), labels)
        kp = np.stack([rng.integers(0, H, 18), rng.integers(0, W, 18)], axis=1)
        kp[rng.random(18) < 0.25] = -1  # missing joints
        kp[3] = (-4, W + 2)  # a joint outside the frame (within the default margin of half the side)
        kp[[1, 8]] = (H // 2, W // 2)  # a torso (neck and a hip): a usable pose
        kp[7] = (5, -1)  # missing by its x only
        written["images"][name], written["labels"][name], written["keypoints"][name] = rgb, labels, kp
    write_annotations(root / "ann.csv", written["keypoints"])
    write_pairs(root / "pairs.csv", pairs)
    for src, tgt in pairs:
        flow = (rng.standard_normal((2, H, W)) * 5).astype(np.float16)
        vis = rng.integers(0, 3, size=(H, W), dtype=np.uint8)
        np.savez(root / "train_flow" / f"{Path(src).stem}___{Path(tgt).stem}.npz", flow=flow, vis=vis)
        written["flow"][src, tgt], written["vis"][src, tgt] = flow, vis
    return written


def make(root: Path, **overrides) -> PairDataset:
    kwargs = dict(root=root, image_dir="train", annotation_file="ann.csv", pairs_file="pairs.csv",
                  parsing_dir="train_parsing", image_size=(H, W), flow_dir="train_flow", label_merge=None,
                  heatmap="gaussian", sigma=6.0, radius=8.0, kappa=-0.1, encode_pose=True, hflip_prob=0.0,
                  max_pairs=None)
    kwargs.update(overrides)
    return PairDataset(**kwargs)


NAMES = ["p0_front.jpg", "p0_back.jpg", "p1_side.jpg", "p1_full.jpg"]
PAIRS = [("p0_front.jpg", "p0_back.jpg"), ("p0_back.jpg", "p0_front.jpg"), ("p1_side.jpg", "p1_full.jpg"),
         ("p1_full.jpg", "p0_front.jpg")]


@pytest.fixture()
def data(tmp_path):
    return tmp_path, build(tmp_path, NAMES, PAIRS)


def test_sample_contents(data):
    root, written = data
    ds = make(root, label_merge=[CIHP8[n] for n in CIHP])
    assert len(ds) == 4 and ds.pairs == PAIRS
    s = ds[2]
    src, tgt = PAIRS[2]
    assert s["src_name"] == src and s["tgt_name"] == tgt
    shapes = {"src_image": (3, H, W), "tgt_image": (3, H, W), "src_keypoints": (18, 2), "tgt_keypoints": (18, 2),
              "src_pose": (30, H, W), "tgt_pose": (30, H, W), "src_parsing": (8, H, W), "tgt_parsing": (8, H, W),
              "flow": (2, H, W), "vis": (H, W)}
    assert set(s) == set(shapes) | {"src_name", "tgt_name"}
    for key, shape in shapes.items():
        assert s[key].shape == shape, key
        assert s[key].dtype == (torch.int64 if key == "vis" else torch.float32), key
    for key, name in (("src_image", src), ("tgt_image", tgt)):
        assert s[key].min() >= -1 and s[key].max() <= 1
        decoded = np.asarray(Image.open(root / "train" / name).convert("RGB"), dtype=np.float32)  # (H,W,3) RGB
        expected = torch.from_numpy(decoded / 127.5 - 1).permute(2, 0, 1)
        torch.testing.assert_close(s[key], expected, atol=4 / 127.5, rtol=0)  # JPEG decoders may differ by a level
    for key, name in (("src_keypoints", src), ("tgt_keypoints", tgt)):
        assert s[key].tolist() == written["keypoints"][name].astype(np.float32).tolist()
    torch.testing.assert_close(s["src_pose"], encode_pose(s["src_keypoints"], H, W))
    torch.testing.assert_close(s["tgt_pose"], encode_pose(s["tgt_keypoints"], H, W))
    for key, name in (("src_parsing", src), ("tgt_parsing", tgt)):
        assert torch.equal(s[key].sum(0), torch.ones(H, W))  # one-hot
        assert set(s[key].unique().tolist()) == {0.0, 1.0}
        merged = np.vectorize(lambda c: CIHP8[CIHP[c]])(written["labels"][name])
        assert s[key].argmax(0).tolist() == merged.tolist()
    assert s["flow"].tolist() == written["flow"][src, tgt].astype(np.float32).tolist()
    assert s["vis"].tolist() == written["vis"][src, tgt].tolist()


def test_optional_outputs_and_max_pairs(data):
    root, written = data
    ds = make(root, flow_dir=None, encode_pose=False, max_pairs=3)
    assert ds.pairs == PAIRS[:3] and len(ds) == 3
    s = ds[0]
    assert "flow" not in s and "vis" not in s and "src_pose" not in s and "tgt_pose" not in s
    assert s["src_parsing"].shape == (20, H, W)  # no merge: the 20 CIHP labels
    assert s["src_parsing"].argmax(0).tolist() == written["labels"][PAIRS[0][0]].tolist()


def test_all_missing_files_reported_at_once(data):
    root, _ = data
    (root / "train" / "p0_back.jpg").unlink()
    (root / "train" / "p1_full.jpg").unlink()
    (root / "train_parsing" / "p1_side.png").unlink()
    (root / "train_flow" / "p0_front___p0_back.npz").unlink()
    lines = (root / "ann.csv").read_text().splitlines()
    (root / "ann.csv").write_text("\n".join(line for line in lines if not line.startswith("p0_front.jpg")) + "\n")
    with pytest.raises(DatasetError) as err:
        make(root)
    message = str(err.value)
    for expected in ("p0_back.jpg", "p1_full.jpg", str(root / "train"), "p1_side.png", str(root / "train_parsing"),
                     "p0_front___p0_back.npz", str(root / "train_flow"), "p0_front.jpg", str(root / "ann.csv"),
                     "2 images missing", "1 parsing maps missing", "1 flow files missing", "1 keypoint entries"):
        assert expected in message, expected


def test_many_missing_files_are_counted(data):
    root, _ = data
    ghosts = [f"ghost_{i:02d}.jpg" for i in range(30)]
    write_pairs(root / "ghosts.csv", list(zip(ghosts[::2], ghosts[1::2])))
    with pytest.raises(DatasetError) as err:
        make(root, pairs_file="ghosts.csv", flow_dir=None)
    message = str(err.value)
    assert "30 images missing" in message and "and 10 more" in message and "ghost_19.jpg" in message
    assert "ghost_20.jpg, " not in message.split("images missing")[1].split("\n")[0]
    with pytest.raises(DatasetError, match="folder .*nowhere does not exist"):
        make(root, parsing_dir="nowhere")


def test_bad_files_name_the_file(data):
    root, _ = data
    ds = make(root)
    image = root / "train" / "p0_back.jpg"
    cv2.imwrite(str(image), np.zeros((H + 1, W, 3), np.uint8))
    with pytest.raises(DatasetError, match=f"{image}: image is {H + 1}x{W} \\(HxW\\), expected {H}x{W}"):
        ds[0]
    image.write_bytes(b"this is not a JPEG")
    with pytest.raises(DatasetError, match=f"{image}: not a readable image"):
        ds[1]
    parsing = root / "train_parsing" / "p1_side.png"
    cv2.imwrite(str(parsing), np.full((H, W), 20, np.uint8))
    with pytest.raises(DatasetError, match=f"{parsing}: label 20 is not a CIHP label"):
        ds[2]
    cv2.imwrite(str(parsing), np.zeros((H, W + 2), np.uint8))
    with pytest.raises(DatasetError, match=f"{parsing}: parsing map is {H}x{W + 2}"):
        ds[2]
    flow = root / "train_flow" / "p1_full___p0_front.npz"
    flow.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=f"{flow}: cannot read the flow file"):
        ds[3]
    np.savez(flow, flow=np.zeros((2, H, W - 1), np.float16), vis=np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=f"{flow}: flow"):
        ds[3]
    with pytest.raises(ValueError, match="label_merge"):
        make(root, label_merge=[0] * 19)


def test_hflip_matches_slow_reference(data):
    root, _ = data
    plain, flipped = make(root), make(root, hflip_prob=1.0)
    for index in range(len(plain)):
        a, b = plain[index], flipped[index]
        for side in ("src", "tgt"):
            labels_a, labels_b = a[f"{side}_parsing"].argmax(0), b[f"{side}_parsing"].argmax(0)
            for i in range(H):
                for j in range(W):
                    m = W - 1 - j
                    assert torch.equal(b[f"{side}_image"][:, i, j], a[f"{side}_image"][:, i, m])
                    label = int(labels_a[i, m])
                    assert int(labels_b[i, j]) == CIHP_MIRROR.get(label, label)
            for k, joint in enumerate(JOINTS):
                mirror = JOINTS.index(joint.replace("r-", "L-").replace("l-", "r-").replace("L-", "l-"))
                y, x = a[f"{side}_keypoints"][mirror].tolist()
                expected = [y, x] if -1 in (y, x) else [y, W - 1 - x]
                assert b[f"{side}_keypoints"][k].tolist() == expected, (index, side, joint)
            torch.testing.assert_close(b[f"{side}_pose"], encode_pose(b[f"{side}_keypoints"], H, W))
        for i in range(H):
            for j in range(W):
                m = W - 1 - j
                assert b["flow"][0, i, j] == -a["flow"][0, i, m] and b["flow"][1, i, j] == a["flow"][1, i, m]
                assert b["vis"][i, j] == a["vis"][i, m]


def test_hflip_keeps_the_flow_consistent_with_the_images(tmp_path):
    """Target = source shifted right by 3 pixels, so flow x = -3 where visible. After mirroring both images, every
    visible target pixel must still equal the source pixel its (negated) flow points to. Lossless PNGs."""
    build(tmp_path, ["s.png", "t.png"], [("s.png", "t.png")])
    src = cv2.imread(str(tmp_path / "train" / "s.png"))
    tgt = np.zeros_like(src)
    tgt[:, 3:] = src[:, :-3]
    cv2.imwrite(str(tmp_path / "train" / "t.png"), tgt)
    flow = np.zeros((2, H, W), np.float16)
    flow[0, :, 3:] = -3
    vis = np.full((H, W), 2, np.uint8)
    vis[:, 3:] = 0
    np.savez(tmp_path / "train_flow" / "s___t.npz", flow=flow, vis=vis)
    s = make(tmp_path, hflip_prob=1.0)[0]
    checked = 0
    for i in range(H):
        for j in range(W):
            if s["vis"][i, j] == 0:
                fx, fy = int(s["flow"][0, i, j]), int(s["flow"][1, i, j])
                assert torch.equal(s["tgt_image"][:, i, j], s["src_image"][:, i + fy, j + fx])
                checked += 1
    assert checked == H * (W - 3)


def test_dataloader_with_workers(data):
    root, _ = data
    ds = make(root, hflip_prob=0.5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["src_image"].shape == (2, 3, H, W) and b["tgt_pose"].shape == (2, 30, H, W)
    assert b["src_parsing"].shape == (2, 20, H, W) and b["src_keypoints"].shape == (2, 18, 2)
    assert b["flow"].shape == (2, 2, H, W) and b["vis"].shape == (2, H, W) and b["vis"].dtype == torch.int64
    assert b["src_name"] == [PAIRS[0][0], PAIRS[1][0]] and b["tgt_name"] == [PAIRS[0][1], PAIRS[1][1]]


def test_absolute_paths_replace_root(data, tmp_path_factory):
    root, _ = data
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copy(root / "pairs.csv", elsewhere / "pairs.csv")
    ds = make(root, pairs_file=str(elsewhere / "pairs.csv"))
    assert ds.pairs == PAIRS


def test_label_counts_match_a_pixel_loop(data):
    """Each distinct target's map counted once (p0_front is the target of two pairs), after the label merge."""
    root, written = data
    merge = [CIHP8[name] for name in CIHP]
    counts = make(root, label_merge=merge).label_counts()
    expected = np.zeros(8, dtype=np.int64)
    for target in ["p0_back.jpg", "p0_front.jpg", "p1_full.jpg"]:
        for value in written["labels"][target].ravel():
            expected[merge[int(value)]] += 1
    np.testing.assert_array_equal(counts, expected)
    sample = make(root, label_merge=merge).label_counts(max_maps=2)  # the first and the last distinct target
    assert sample.sum() == 2 * H * W


# ------------------------------------------------------------------------------- the names of a pair's files

ODD_NAMES = ["a.jpg", "b.jpg", "c.jpg", "s.jpg", "a___b.jpg", "b___c.jpg", "x____y.jpg", "a_.jpg", "_b.jpg", "_.jpg",
             "__.jpg", "f1/s.jpg", "f2/s.jpg", "f1%2Fs.jpg", "100%.jpg", "d/e/f.png", "-ä ö n.jpg", "a_b.jpg"]


def read_pair_stem(name: str) -> tuple[str, str]:
    """An independent reading of a pair's file stem: split at the first '___', undo the %XX escapes."""
    def unescape(part: str) -> str:
        return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), part)
    left, right = name.split("___", 1)
    return unescape(left), unescape(right)


def test_distinct_pairs_get_distinct_file_names_that_read_back_as_the_pair():
    """Names were '<from stem>___<to stem>' with folders dropped: (p___q, r) and (p, q___r), or (f1/s, t) and
    (f2/s, t), shared one file, so one generated image (or flow file) answered for two pairs."""
    pairs = [(a, b) for a in ODD_NAMES for b in ODD_NAMES if a != b]
    names = [pair_stem(a, b) for a, b in pairs]
    assert len(set(names)) == len(pairs)
    for (a, b), name in zip(pairs, names):
        assert "/" not in name and read_pair_stem(name) == (stem(a), stem(b)), (a, b, name)
    assert len({generated_image_name(a, b) for a, b in pairs}) == len(pairs)
    assert len({flow_file_name(a, b) for a, b in pairs}) == len({pair_parsing_name(a, b) for a, b in pairs})


def test_plain_names_keep_the_published_file_names():
    """DeepFashion and Market-1501 names give the names PATN's and the authors' scripts write and read."""
    df = ("fashionWOMENBlouses_Shirtsid0000637003_1front.jpg", "fashionWOMENBlouses_Shirtsid0000637003_2side.jpg")
    market = ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg")
    for a, b in (df, market):
        assert generated_image_name(a, b) == f"{Path(a).stem}___{Path(b).stem}.png"
        assert generated_image_name(a, b, "release", "jpg") == f"{Path(a).stem}_{Path(b).stem}.jpg"
        assert flow_file_name(a, b) == f"{Path(a).stem}___{Path(b).stem}.npz"


def test_pairs_that_would_share_a_release_name_are_refused_naming_both():
    pairs = [("a_b.jpg", "c.jpg"), ("a.jpg", "b_c.jpg")]
    check_distinct_files(pairs, generated_image_name, "out")  # our names tell them apart
    with pytest.raises(DatasetError, match=r"pairs a_b.jpg -> c.jpg and a.jpg -> b_c.jpg would share one file "
                                           r"a_b_c.jpg in out; rename one of the images"):
        check_distinct_files(pairs, lambda s, t: generated_image_name(s, t, "release", "jpg"), "out")


def test_images_that_share_a_stem_are_refused(data):
    """a.jpg and a.png would read one parsing map a.png, and their pairs would write one file."""
    root, _ = data
    shutil.copy(root / "train" / "p0_back.jpg", root / "train" / "p0_back.png")
    lines = (root / "ann.csv").read_text().splitlines()
    row = next(x for x in lines if x.startswith("p0_back.jpg"))
    (root / "ann.csv").write_text("\n".join(lines + [row.replace("p0_back.jpg", "p0_back.png")]) + "\n")
    write_pairs(root / "stems.csv", [("p0_front.jpg", "p0_back.jpg"), ("p0_front.jpg", "p0_back.png")])
    with pytest.raises(DatasetError, match="images p0_back.jpg and p0_back.png share the stem 'p0_back'"):
        make(root, pairs_file="stems.csv", flow_dir=None)


@pytest.mark.parametrize(("folder", "name"), [("train", "p1_full.jpg"), ("train_parsing", "p1_side.png"),
                                              ("train_flow", "p1_side___p1_full.npz")])
def test_a_file_cut_short_is_named_at_construction(data, folder, name):
    """A truncated file was found only when a batch drew it: a run whose first steps did not train on, and failed
    hours later (or ended with exit 0 before)."""
    root, _ = data
    path = root / folder / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as err:
        make(root)
    assert str(err.value).startswith(f"{path}: truncated ") and "download or copy it again" in str(err.value)
    (root / "train" / "p0_front.jpg").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        make(root)
    lines = str(err.value).splitlines()  # every incomplete file at once, each on a line of its own
    assert lines[0] == "2 files the 4 pairs need are incomplete; download or copy them again:", lines
    assert f"  {root / 'train' / 'p0_front.jpg'}: empty file (0 bytes)" in lines
    assert sum(line.startswith(f"  {path}: truncated ") for line in lines) == 1, lines
