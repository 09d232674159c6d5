"""infer.py (pose sequences -> frames, GIF, mp4; pose formats; --resize) and scripts/predict_parsing.py (SPATN*
parsing maps for Market), on tiny random-init checkpoints and a few synthetic Market-like people."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import infer
from data.annotations import read_annotations
from data.parsing import PRESET_MERGES, merge_labels
from data.pose import encode_pose
from data.pose_files import PoseError
from models.build import build_all, build_spatn
from scripts import predict_parsing
from utils import checkpoint as ck
from utils.config import config_from_dict, load_config
from utils.weights import MissingWeightsError

CONFIG = "configs/unit_test/tiny.yaml"  # tiny networks on 128x64 people


def make_checkpoint(path, *overrides):
    """A joint-stage checkpoint of randomly initialised tiny networks, laid out as train.py saves one."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG, list(overrides))
    models = {k: v.state_dict() for k, v in build_all(cfg).items()}
    ck.save_checkpoint(path, cfg, models)
    return path


@pytest.fixture(scope="module")
def market(market_people):
    """The suite's synthetic people, 128x64 (tests/conftest.py)."""
    return market_people


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return {"spatn": make_checkpoint(folder / "spatn.pt"),
            "star": make_checkpoint(folder / "star.pt", "model.spatn.input=image"),
            "half": make_checkpoint(folder / "half.pt", "data.image_size=[64,32]")}


@pytest.fixture(scope="module")
def source(market):
    """(image path, annotation CSV, row name, parsing path, keypoints (18,2)) of the first test image."""
    csv = market / "market-annotation-test.csv"
    name, kp = next(iter(read_annotations(csv).items()))
    stem = name.rsplit(".", 1)[0]
    return market / "test" / name, csv, name, market / "test_parsing" / f"{stem}.png", kp.astype(np.float32)


def pose_json(path, keypoints):
    path.write_text(json.dumps([[float(y), float(x)] for y, x in keypoints]))
    return path


# ------------------------------------------------------------------------------------------ the sequence


def test_sixteen_pose_sequence_writes_frames_gif_and_mp4(tmp_path, ckpts, source):
    """A 64x32 model (fast) animating the 128x64 person: --resize and --target-size carry both to its frame."""
    image, csv, name, parsing, kp = source
    shifts = list(range(15)) + [0]  # the last pose repeats the first: equal poses must give equal frames
    present = (kp != -1).all(axis=1)
    poses = []
    for s in shifts:
        p = kp.copy()
        p[present, 1] += s
        poses.append([[float(y), float(x)] for y, x in p])
    targets = tmp_path / "sequence.json"
    targets.write_text(json.dumps(poses))
    out = tmp_path / "out"
    infer.main(["--checkpoint", str(ckpts["half"]), "--source", str(image), "--source-pose", f"{csv}:{name}",
                "--source-parsing", str(parsing), "--resize", "--target-poses", str(targets), "--target-size",
                "128", "64", "--out", str(out), "--gif", "--mp4", "--fps", "10", "--device", "cpu",
                "--batch-size", "8"])

    frames = [cv2.imread(str(out / f"frame_{i:04d}.png"))[..., ::-1] for i in range(16)]
    assert not (out / "frame_0016.png").exists()
    assert all(f.shape == (64, 32, 3) for f in frames)
    for i in range(1, 15):
        assert np.any(frames[i] != frames[i - 1]), f"frames {i - 1} and {i} have different poses but are equal"
    assert np.abs(frames[15].astype(int) - frames[0].astype(int)).max() <= 1  # same pose, same picture

    with Image.open(out / "sequence.gif") as gif:
        assert gif.n_frames == 16
        assert gif.size == (32, 64)
        assert gif.info["duration"] == 100  # 10 fps
        gif.seek(0)
        first = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(first - frames[0].astype(int)).mean() < 8  # 256-colour palette quantisation only

    video = cv2.VideoCapture(str(out / "sequence.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (32, 64)
    video.release()


def test_spatn_star_predicts_the_source_parsing_when_none_is_given(tmp_path, ckpts, source):
    image, csv, name, _, kp = source
    out = tmp_path / "out"
    targets = pose_json(tmp_path / "t.json", kp)
    infer.main(["--checkpoint", str(ckpts["star"]), "--source", str(image), "--source-pose", str(csv),
                "--target-poses", str(targets), "--out", str(out), "--device", "cpu", "--parsing"])
    assert (out / "frame_0000.png").is_file() and (out / "source_parsing.png").is_file()
    assert not (out / "frame_0001.png").exists()


def test_without_source_parsing_spatn_needs_schp_whose_missing_weights_are_named(tmp_path, ckpts, source,
                                                                                   monkeypatch):
    """A checkpoint whose SPATN reads the source parsing: SCHP estimates it (its weights missing here: the error
    names the file and the command); --parser spatn cannot."""
    image, csv, name, _, kp = source
    argv = ["--checkpoint", str(ckpts["spatn"]), "--source", str(image), "--source-pose", str(csv),
            "--target-poses", str(pose_json(tmp_path / "t.json", kp)), "--out", str(tmp_path / "o")]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match=r"(?s)exp-schp-201908261155-lip.pth.*download_weights.py schp_lip"):
        infer.main(argv)
    with pytest.raises(infer.InferenceError, match=r"--parser spatn: .*cannot predict it; use --parser schp"):
        infer.main([*argv, "--parser", "spatn"])
    assert not any((tmp_path / "o").iterdir())


# ------------------------------------------------------------------------------------------ pose formats

# A hand-made pose, (y, x); joints 3 and 16 missing.
POSE = np.array([[20, 30], [30, 31], [31, 22], [-1, -1], [60, 18], [31, 40], [45, 44], [60, 46], [65, 25],
                 [90, 24], [115, 23], [65, 37], [90, 38], [115, 39], [18, 28], [18, 33], [-1, -1], [19, 36]],
                dtype=np.float32)
MISSING = (3, 16)
BODY25_INDEX = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)  # OpenPose doc/02_output.md


def moved(pose, scale=1.0, shift=0.0):
    """The pose scaled and shifted, missing joints left at -1."""
    return np.where(pose == -1, -1, pose * scale + shift).astype(np.float32)


def csv_text(rows):
    lines = ["name:keypoints_y:keypoints_x"]
    for name, kp in rows:
        ys = ", ".join(str(int(v)) for v in kp[:, 0])
        xs = ", ".join(str(int(v)) for v in kp[:, 1])
        lines.append(f"{name}: [{ys}]: [{xs}]")
    return "\n".join(lines) + "\n"


def openpose_body25(pose, confidence=0.9):
    triples = [[7.0, 7.0, 0.8] for _ in range(25)]  # MidHip and the feet: present but not COCO joints
    for coco, body25 in enumerate(BODY25_INDEX):
        y, x = pose[coco]
        # a missing joint keeps coordinates but has a confidence below the 0.1 threshold
        triples[body25] = [float(x), float(y), 0.05 if coco in MISSING else confidence]
    return [v for t in triples for v in t]


def test_pose_formats_parse_to_the_same_keypoints(tmp_path):
    other = moved(POSE, shift=3)
    (tmp_path / "poses.csv").write_text(csv_text([("other.jpg", other), ("me.jpg", POSE)]))
    weak = openpose_body25(other, confidence=0.3)  # listed first, less confident: not picked
    (tmp_path / "body25.json").write_text(json.dumps({"version": 1.3, "people": [
        {"pose_keypoints_2d": weak}, {"pose_keypoints_2d": openpose_body25(POSE)}]}))
    coco = []
    for j, (y, x) in enumerate(POSE):
        coco += [0.0, 0.0, 0.0] if j in MISSING else [float(x), float(y), 0.7]  # OpenPose's "not found"
    (tmp_path / "coco18.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": coco}]}))
    pairs = [None if j == 3 else ([-1, -1] if j == 16 else [int(y), int(x)]) for j, (y, x) in enumerate(POSE)]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))

    parsed = {
        "csv row": infer.read_poses(f"{tmp_path / 'poses.csv'}:me.jpg"),
        "body25": infer.read_poses(str(tmp_path / "body25.json")),
        "coco18": infer.read_poses(str(tmp_path / "coco18.json")),
        "pairs": infer.read_poses(str(tmp_path / "pairs.json")),
    }
    for kind, poses in parsed.items():
        assert len(poses) == 1, kind
        np.testing.assert_array_equal(poses[0][1], POSE, err_msg=kind)
    # a whole CSV: every row in file order; as the source, the row named like the source image
    rows = infer.read_poses(str(tmp_path / "poses.csv"))
    np.testing.assert_array_equal(np.stack([r[1] for r in rows]), np.stack([other, POSE]))
    np.testing.assert_array_equal(infer.read_source_pose(str(tmp_path / "poses.csv"), tmp_path / "me.jpg")[1], POSE)


def test_pose_folder_is_read_in_name_order(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    pose_json(folder / "b_0002.json", moved(POSE, shift=2))
    pose_json(folder / "a_0001.json", moved(POSE, shift=1))
    (folder / "notes.txt").write_text("not a pose")
    poses = infer.read_poses(str(folder))
    assert [p[0].rsplit("/", 1)[-1] for p in poses] == ["a_0001.json", "b_0002.json"]
    np.testing.assert_array_equal(poses[0][1], moved(POSE, shift=1))


# ------------------------------------------------------------------------------------------ bad input


def test_too_few_joints_and_no_torso_name_the_pose(tmp_path, ckpts, source):
    image, csv, name, parsing, kp = source
    few = np.full((18, 2), -1, dtype=np.float32)
    few[[1, 2, 5]] = [[30, 30], [30, 20], [30, 40]]  # three joints
    (tmp_path / "targets.csv").write_text(csv_text([("ok.jpg", POSE), ("bad.jpg", few)]))
    base = ["--checkpoint", str(ckpts["spatn"]), "--source", str(image), "--source-pose", f"{csv}:{name}",
            "--source-parsing", str(parsing), "--out", str(tmp_path / "o")]
    with pytest.raises(PoseError, match=r"targets\.csv row 'bad\.jpg'.*only 3 joints"):
        infer.main(base + ["--target-poses", str(tmp_path / "targets.csv")])
    headless = POSE.copy()
    headless[1] = -1  # no neck: 15 joints, but no torso
    folder = tmp_path / "seq"
    folder.mkdir()
    pose_json(folder / "0001.json", POSE)
    pose_json(folder / "0002_no_neck.json", headless)
    with pytest.raises(PoseError, match=r"0002_no_neck\.json: no torso"):
        infer.main(base + ["--target-poses", str(folder)])


def test_wrong_image_size_names_both_sizes_and_suggests_resize(tmp_path, ckpts, source):
    image, csv, name, parsing, kp = source
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(image)), (50, 100)))
    with pytest.raises(infer.InferenceError, match=r"small\.png: 100x50 .*takes 128x64.*--resize"):
        infer.main(["--checkpoint", str(ckpts["star"]), "--source", str(small), "--source-pose",
                    str(pose_json(tmp_path / "s.json", kp)), "--target-poses", str(tmp_path / "s.json"),
                    "--out", str(tmp_path / "o")])


# ------------------------------------------------------------------------------------------ --resize


def test_resize_pads_with_the_border_colour_and_moves_keypoints_and_parsing(tmp_path, ckpts):
    """A 64x64 picture in the 128x64 frame: scale 1, 32 rows of padding above and below."""
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[:] = (200, 10, 10)  # red border ring (RGB)
    picture[4:60, 4:60] = (10, 10, 200)  # blue inside
    cv2.imwrite(str(tmp_path / "sq.png"), picture[..., ::-1])
    labels = np.zeros((64, 64), np.uint8)
    labels[10:50, 20:40] = 5  # upper clothes
    cv2.imwrite(str(tmp_path / "sq_parsing.png"), labels)
    pose = np.full((18, 2), -1, np.float32)
    pose[[0, 1, 2, 5, 8, 11]] = [[5, 32], [12, 32], [12, 24], [12, 40], [40, 27], [40, 37]]
    pose_json(tmp_path / "sq.json", pose)

    args = infer.parse_args(["--checkpoint", "x", "--source", str(tmp_path / "sq.png"), "--source-pose",
                             str(tmp_path / "sq.json"), "--source-parsing", str(tmp_path / "sq_parsing.png"),
                             "--target-poses", "x", "--out", "x", "--resize"])
    cfg = load_config(CONFIG)
    image, keypoints, parsing = infer.prepare_source(args, cfg)
    assert image.shape == (128, 64, 3)
    assert (image[:32] == (200, 10, 10)).all() and (image[96:] == (200, 10, 10)).all()
    np.testing.assert_array_equal(image[32:96], picture)
    expected = pose.copy()
    expected[[0, 1, 2, 5, 8, 11], 0] += 32
    np.testing.assert_array_equal(keypoints, expected)
    assert parsing.shape == (128, 64) and (parsing[:32] == 0).all() and (parsing[96:] == 0).all()
    np.testing.assert_array_equal(parsing[32:96], labels)

    args.pad = "white"
    assert (infer.prepare_source(args, cfg)[0][:32] == 255).all()


def test_fit_scales_about_pixel_centres():
    """256x64 into 128x64: scale 1/2 to 128x32, 16 columns of padding left and right."""
    fit = infer.fit_into((256, 64), (128, 64))
    assert (fit.height, fit.width, fit.top, fit.left) == (128, 32, 0, 16)
    moved = infer.fit_keypoints(np.array([[100, 30], [-1, -1], [0, 0]], np.float32), fit)
    # pixel centres: y' = (y + 0.5) / 2 - 0.5, x' = (x + 0.5) / 2 - 0.5 + 16
    np.testing.assert_allclose(moved, [[49.75, 30.75], [-1, -1], [-0.25, 15.75]])
    labels = (np.arange(256 * 64).reshape(256, 64) % 20).astype(np.uint8)
    out = infer.fit_labels(labels, fit, (128, 64))
    np.testing.assert_array_equal(out[:, 16:48], labels[1::2, 1::2])  # the source pixel under each new centre
    assert (out[:, :16] == 0).all() and (out[:, 48:] == 0).all()


def test_target_size_rescales_target_poses_like_the_source(tmp_path):
    pose_json(tmp_path / "t.json", moved(POSE, scale=2))  # the pose in a 256x128 frame
    args = infer.parse_args(["--checkpoint", "x", "--source", "x", "--source-pose", "x", "--target-poses",
                             str(tmp_path / "t.json"), "--target-size", "256", "128", "--out", "x"])
    targets = infer.prepare_targets(args, load_config(CONFIG))
    present = (POSE != -1).all(axis=1)
    expected = POSE.copy()
    expected[present] = (POSE[present] * 2 + 0.5) / 2 - 0.5
    np.testing.assert_allclose(targets[0], expected)


# ------------------------------------------------------------------------------------------ predict_parsing


def test_predict_parsing_writes_each_images_own_parsing(tmp_path, ckpts, market):
    root = tmp_path / "market"
    shutil.copytree(market, root, ignore=shutil.ignore_patterns("*_parsing", "*_flow"))
    argv = ["--checkpoint", str(ckpts["star"]), "--config", CONFIG, f"data.root={root}", "--workers", "0",
            "--device", "cpu", "--batch-size", "2"]
    images = sum(len(read_annotations(root / f"market-annotation-{split}.csv")) for split in ("train", "test"))
    assert predict_parsing.main(argv) == images == len(list(root.glob("*/*.jpg")))

    ckpt = ck.load_checkpoint(ckpts["star"])
    cfg = config_from_dict(ckpt["config"])
    spatn = build_spatn(cfg)
    spatn.load_state_dict(ckpt["models"]["spatn"])
    spatn.eval()
    for split in ("train", "test"):
        for name, kp in read_annotations(root / f"market-annotation-{split}.csv").items():
            written = cv2.imread(str(root / f"{split}_parsing" / name.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
            assert written.shape == (128, 64) and written.dtype == np.uint8
            # independently: one image at a time, the pose maps from data.pose.encode_pose
            rgb = cv2.imread(str(root / split / name))[..., ::-1].copy()
            image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
            pose = encode_pose(torch.from_numpy(kp).float()[None], 128, 64, cfg.pose.heatmap, cfg.pose.sigma,
                               cfg.pose.radius, cfg.pose.kappa)
            with torch.no_grad():
                expected = spatn(image, pose, pose).argmax(1)[0].numpy()
            assert (written == expected).mean() > 0.999

    # existing maps are kept unless --overwrite
    target = next((root / "test_parsing").iterdir())
    kept = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(target), np.zeros((128, 64), np.uint8))
    assert predict_parsing.main(argv + ["--split", "test"]) == 0
    assert (cv2.imread(str(target), cv2.IMREAD_UNCHANGED) == 0).all()
    test_images = len(read_annotations(root / "market-annotation-test.csv"))
    assert predict_parsing.main(argv + ["--split", "test", "--overwrite"]) == test_images
    np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), kept)


def test_predict_parsing_refuses_other_checkpoints(tmp_path, ckpts, market):
    base = ["--config", CONFIG, f"data.root={market}", "--workers", "0", "--device", "cpu"]
    with pytest.raises(ck.CheckpointError, match="model.spatn.input"):
        predict_parsing.main(["--checkpoint", str(ckpts["spatn"])] + base)
    merged = make_checkpoint(tmp_path / "star8.pt", "model.spatn.input=image", "data.label_merge=cihp8")
    with pytest.raises(ck.CheckpointError, match="data.label_merge"):
        predict_parsing.main(["--checkpoint", str(merged)] + base)
    with pytest.raises(ck.CheckpointError, match="data.image_size"):
        predict_parsing.main(["--checkpoint", str(ckpts["star"]), "--config", "configs/synthetic.yaml",
                              f"data.root={market}"])


def test_merged_classes_are_written_as_cihp_ids_that_merge_back():
    merge = PRESET_MERGES["cihp8"]
    ids = predict_parsing.representative_ids(merge)
    classes = np.arange(max(merge) + 1, dtype=np.uint8)
    np.testing.assert_array_equal(merge_labels(ids[classes], merge), classes)
    np.testing.assert_array_equal(predict_parsing.representative_ids(list(range(20))), np.arange(20))
