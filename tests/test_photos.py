"""From your own photos: MediaPipe's landmarks -> COCO-18 (and on a real photograph), framing a person, the photo
checks, infer.py from a photo (MediaPipe keypoints, a random SCHP, labelled as such; bad photos refused with one
error line) and scripts/prepare_photos.py (a dataset the loaders and a training step accept, resumable).

The MediaPipe tests need the optional extra (`make photos`): they skip without it, and fail under CI (CI=1), which
installs it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

import infer
import train
from data.annotations import read_annotations, read_pairs
from data.loaders import build_dataset
from data.pose import pose_problems
from data.synthetic import generate_dataset
from metrics import mediapipe_pose
from photos import framing, inputs
from scripts import prepare_photos
from tests.test_infer import make_checkpoint
from tests.test_train import CONFIG as TINY_CONFIG
from tests.test_train import SCHEDULE
from utils import checkpoint as ck
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/synthetic_market.yaml"  # 128x64: cheap networks; a person must span 64 photo rows


def mediapipe_or_skip() -> None:
    """Skips locally, fails under CI, when the MediaPipe extra is missing."""
    try:
        mediapipe_pose.import_pose_solution()
    except mediapipe_pose.MediaPipeMissingError as err:
        if os.environ.get("CI"):
            pytest.fail(f"{err}; .ci/run installs it (make test)")
        pytest.skip(str(err))


def test_missing_mediapipe_fails_under_ci_and_skips_elsewhere(monkeypatch):
    def missing():
        raise mediapipe_pose.MediaPipeMissingError("no mediapipe here")

    monkeypatch.setattr(mediapipe_pose, "import_pose_solution", missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no mediapipe here; .ci/run installs it"):
        mediapipe_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no mediapipe here"):
        mediapipe_or_skip()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photographs that scikit-image ships (public domain) and bad files, as files."""
    folder = tmp_path_factory.mktemp("photos")
    camera = np.stack([skdata.camera()] * 3, axis=-1)  # the cameraman, head to thighs: a usable pose
    pictures = {"camera": camera, "astronaut": skdata.astronaut(),  # head and shoulders: no hips
                "two": np.concatenate([camera, camera], axis=1), "coffee": skdata.coffee(),
                "small": cv2.resize(camera, (40, 40), interpolation=cv2.INTER_AREA)}
    paths = {}
    for name, rgb in pictures.items():
        paths[name] = folder / f"{name}.png"
        cv2.imwrite(str(paths[name]), np.ascontiguousarray(rgb[..., ::-1]))
    whole = paths["astronaut"].read_bytes()
    paths["corrupt"] = folder / "corrupt.png"
    paths["corrupt"].write_bytes(whole[: len(whole) // 2])
    paths["text"] = folder / "notes.jpg"
    paths["text"].write_text("not an image\n")
    return paths


# ------------------------------------------------------------------------------------------ MediaPipe -> COCO-18


def test_landmarks_map_to_coco_with_the_neck_and_missing_joints():
    """Landmark i at x = (i + 1) / 40, y = (i + 1) / 50 of a 100x80 (h x w) image, all visible."""
    landmarks = np.array([[(i + 1) / 40, (i + 1) / 50, 0.9] for i in range(33)])
    kp = mediapipe_pose.coco_keypoints(landmarks, 100, 80)

    def at(i):  # landmark i's (y, x) in pixels, pixel-centre convention
        return [(i + 1) / 50 * 100 - 0.5, (i + 1) / 40 * 80 - 0.5]

    # the person's own sides in both: COCO 2 r-shoulder = MediaPipe 12 right_shoulder, 5 l-shoulder = 11, ...
    expected = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25, 13: 27,
                14: 5, 15: 2, 16: 8, 17: 7}
    for coco, mp in expected.items():
        np.testing.assert_allclose(kp[coco], at(mp), atol=1e-4, err_msg=f"COCO joint {coco}")
    np.testing.assert_allclose(kp[1], np.mean([at(11), at(12)], axis=0), atol=1e-4)  # neck
    landmarks[14, 2] = 0.2  # right elbow below the visibility threshold
    landmarks[28, 0] = 1.2  # right ankle beyond the right edge
    landmarks[11, 2] = 0.1  # left shoulder: the neck goes with it
    kp = mediapipe_pose.coco_keypoints(landmarks, 100, 80)
    assert (kp[[3, 10, 5, 1]] == -1).all() and (kp[[2, 4, 9]] != -1).all()


def test_mediapipe_on_a_real_photograph_finds_the_joints_where_they_are():
    """skimage's astronaut (Eileen Collins, 512x512, public domain), facing the camera: her right shoulder is on
    the image's left. Positions checked by eye on the photo: nose (128, 223), right shoulder (240, 113), left
    shoulder (257, 306), (y, x)."""
    mediapipe_or_skip()
    estimator = mediapipe_pose.MediaPipePose()
    kp = estimator(skdata.astronaut()[None])[0]
    nose, neck, r_shoulder, l_shoulder, r_eye, l_eye = kp[[0, 1, 2, 5, 14, 15]]
    assert (kp[[0, 1, 2, 5, 14, 15]] != -1).all()
    assert nose[0] < neck[0]  # nose above the neck
    assert r_shoulder[1] < neck[1] < l_shoulder[1]  # shoulders either side, not swapped
    assert r_eye[1] < nose[1] < l_eye[1] and r_eye[0] < nose[0]
    for joint, checked in ((nose, (128, 223)), (r_shoulder, (240, 113)), (l_shoulder, (257, 306))):
        assert np.hypot(*(joint - checked)) < 25, (joint, checked)
    assert (kp[[8, 11]] == -1).all()  # her hips are below the frame's edge: missing, not guessed


def test_mediapipe_counts_one_and_two_people(photos):
    mediapipe_or_skip()
    estimator = mediapipe_pose.MediaPipePose()
    one = inputs.read_photo(photos["camera"], (128, 64))
    assert len(estimator.people(one)) == 1
    assert len(estimator.people(inputs.read_photo(photos["two"], (128, 64)))) == 2
    assert estimator.people(inputs.read_photo(photos["coffee"], (128, 64))) == []


# ------------------------------------------------------------------------------------------ framing and checks


def standing_pose() -> np.ndarray:
    """A person in a 400x300 photo: neck (100, 150), hips at y = 200 (torso 100), nose y = 80, ankles y = 300."""
    kp = np.full((18, 2), -1, np.float32)
    kp[[0, 1, 2, 5, 8, 11, 10, 13, 4, 7]] = [[80, 150], [100, 150], [100, 130], [100, 170], [200, 140], [200, 160],
                                             [300, 140], [300, 160], [180, 120], [180, 180]]
    return kp


def test_frame_person_centres_the_person_at_full_height():
    kp = standing_pose()
    top, left, bottom, right = framing.person_box(kp, 400, 300)
    assert (top, bottom) == (80 - 45, 300 + 20) and (left, right) == (120 - 30, 180 + 30)  # margins x torso 100
    photo = np.full((400, 300, 3), 90, np.uint8)
    photo[35:321, 90:211] = (200, 30, 30)  # the person's box in red on grey
    f = framing.frame_person(photo, kp, (256, 176))
    assert f.crop.height == 285 and f.crop.width == round(285 * 176 / 256)  # the box's height, the frame's aspect
    assert abs(f.crop.top + (f.crop.height - 1) / 2 - (top + bottom) / 2) <= 0.5
    assert abs(f.crop.left + (f.crop.width - 1) / 2 - (left + right) / 2) <= 0.5
    image = f.image(photo)
    rows = np.flatnonzero((image[..., 0] > 150).any(axis=1))
    cols = np.flatnonzero((image[..., 0] > 150).any(axis=0))
    assert rows[0] <= 1 and rows[-1] >= 254  # full height
    assert abs((cols[0] + cols[-1]) / 2 - 87.5) <= 1  # centred
    moved = f.keypoints(kp)  # the neck lands on the same pixel as a dot drawn at the neck
    dotted = photo.copy()
    dotted[99:102, 149:152] = (0, 255, 0)
    green = np.argwhere(f.image(dotted)[..., 1] > 150).mean(axis=0)
    assert np.hypot(*(green - moved[1])) < 1


def test_frame_pads_beyond_the_photo_with_its_border_colour():
    kp = standing_pose()
    kp[:, 1] -= 120  # the person at the photo's left edge: the crop reaches beyond it
    photo = np.full((400, 300, 3), (10, 20, 30), np.uint8)
    f = framing.frame_person(photo, kp, (256, 176))
    assert f.crop.left < 0
    assert (f.image(photo) == (10, 20, 30)).all()


def test_the_person_refuses_nobody_several_and_a_pose_without_torso():
    good, bad = standing_pose(), standing_pose()
    bad[[8, 11]] = -1
    assert pose_problems(np.stack([good, bad])) == [None, "no torso (the neck and a hip)"]
    np.testing.assert_array_equal(inputs.the_person([bad, good], Path("p.jpg")), good)
    with pytest.raises(inputs.PhotoError, match=r"photo p.jpg: no person found"):
        inputs.the_person([], Path("p.jpg"))
    with pytest.raises(inputs.PhotoError, match=r"photo p.jpg: 2 people found"):
        inputs.the_person([good, good], Path("p.jpg"))
    with pytest.raises(inputs.PhotoError, match=r"photo p.jpg: the person found has no torso"):
        inputs.the_person([bad], Path("p.jpg"))


def test_read_photo_refuses_small_corrupt_and_non_images(photos):
    with pytest.raises(inputs.PhotoError, match=r"small.png: 40x40 pixels, too small.*at least 128"):
        inputs.read_photo(photos["small"], (256, 176))
    with pytest.raises(inputs.PhotoError, match=r"corrupt.png: truncated PNG"):
        inputs.read_photo(photos["corrupt"], (256, 176))
    with pytest.raises(inputs.PhotoError, match=r"notes.jpg: not a readable image"):
        inputs.read_photo(photos["text"], (256, 176))


# ------------------------------------------------------------------------------------------ infer.py from a photo


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def target_pose(path: Path) -> Path:
    kp = [[20, 32], [30, 32], [30, 24], [45, 22], [60, 20], [30, 40], [45, 42], [60, 44], [64, 27], [90, 27],
          [115, 27], [64, 37], [90, 37], [115, 37], [18, 30], [18, 34], [19, 28], [19, 36]]
    path.write_text(str(kp))
    return path


@pytest.mark.slow  # SCHP (random weights) at its full 473x473 input, twice
def test_infer_from_a_photo_with_mediapipe_and_a_random_parser(tmp_path, photos, checkpoint):
    mediapipe_or_skip()
    out, saved = tmp_path / "out", tmp_path / "saved"
    common = ["--checkpoint", str(checkpoint), "--target-poses", str(target_pose(tmp_path / "t.json")),
              "--device", "cpu"]
    infer.main([*common, "--source", str(photos["camera"]), "--keypoints", "mediapipe", "--parser-weights", "random",
                "--save-inputs", str(saved), "--out", str(out)])
    frame = cv2.imread(str(out / "frame_0000.png"))
    assert frame.shape == (128, 64, 3)
    band = frame[:3].reshape(-1, 3)  # stamped: a red band (BGR) with white text
    assert ((band == (0, 0, 200)).all(axis=1) | (band > 100).all(axis=1)).all() and (band == (0, 0, 200)).any()
    notes = (out / "estimated.txt").read_text().splitlines()
    assert notes[0].startswith("WARNING: made with randomly initialised weights")
    assert any(n.startswith("keypoints: MediaPipe") for n in notes) and "NOT a trained parser" in notes[-1]
    assert sorted(p.name for p in saved.iterdir()) == ["camera.png", "camera_check.png", "camera_estimated.txt",
                                                       "camera_keypoints.csv", "camera_parsing.png"]
    rows = read_annotations(saved / "camera_keypoints.csv", (128, 64))
    assert list(rows) == ["camera.png"] and pose_problems(np.stack(list(rows.values()))) == [None]
    # the saved inputs go back in as given inputs: nothing is estimated the second time
    again = tmp_path / "again"
    infer.main([*common, "--source", str(saved / "camera.png"), "--source-pose", str(saved / "camera_keypoints.csv"),
                "--source-parsing", str(saved / "camera_parsing.png"), "--out", str(again)])
    assert (again / "frame_0000.png").is_file() and not (again / "estimated.txt").exists()


def run_infer(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "infer.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=600)


@pytest.mark.slow  # five infer.py subprocesses
@pytest.mark.parametrize("photo, message", [
    ("coffee", "no person found"), ("two", "2 people found"), ("small", "40x40 pixels, too small"),
    ("corrupt", "truncated PNG"), ("text", "not a readable image")])
def test_bad_photos_give_one_error_line_and_write_nothing(tmp_path, photos, checkpoint, photo, message):
    mediapipe_or_skip()
    out = tmp_path / "out"
    proc = run_infer("--checkpoint", str(checkpoint), "--source", str(photos[photo]), "--keypoints", "mediapipe",
                     "--parser-weights", "random", "--target-poses", str(target_pose(tmp_path / "t.json")),
                     "--out", str(out), "--save-inputs", str(tmp_path / "saved"), "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [x for x in lines if x.startswith("error:")] == [lines[-1]], proc.stderr  # one error line, the last
    assert str(photos[photo]) in lines[-1] and message in lines[-1]
    assert "Traceback" not in proc.stderr
    assert list(out.iterdir()) == [] and list((tmp_path / "saved").iterdir()) == []


# ------------------------------------------------------------------------------------------ prepare_photos.py


@pytest.mark.slow  # SCHP (random weights) on 13 photos, a flow stage and a joint training step
def test_prepare_photos_writes_a_dataset_that_trains_and_resumes(tmp_path, photos, market_people, monkeypatch):
    mediapipe_or_skip()
    people = tmp_path / "people"
    generate_dataset(people, style="deepfashion", identities=4, poses=3, seed=0, test_fraction=0.25)
    train_photos, test_photos = tmp_path / "train_photos", tmp_path / "test_photos"
    train_photos.mkdir(), test_photos.mkdir()
    for f in (people / "train").glob("*.jpg"):
        shutil.copy(f, train_photos)
    for f in (people / "test").glob("*.jpg"):
        shutil.copy(f, test_photos)
    shutil.copy(photos["camera"], train_photos / "cameraman_1.png")
    shutil.copy(photos["astronaut"], train_photos / "astronaut_1.png")
    root = tmp_path / "mine"
    common = ["--out", str(root), "--config", CONFIG, "--keypoints", "mediapipe", "--parser-weights", "random",
              "--device", "cpu"]
    done = prepare_photos.main([str(train_photos), *common])
    assert len(done["done"]) == 10 and done["refused"] == ["astronaut_1.png"]
    report = (root / "prepare_photos_report.csv").read_text()
    assert "astronaut_1.png,refused,photo" in report and "no torso" in report
    assert len(prepare_photos.main([str(test_photos), *common, "--split", "test"])["done"]) == 3

    cfg = load_config(CONFIG, [f"data.root={root}"])
    rows = read_annotations(root / cfg.data.annotation_train, tuple(cfg.data.image_size))
    assert len(rows) == 10 and "astronaut_1.png" not in rows
    assert len(read_pairs(root / cfg.data.pairs_train)) == 3 * 3 * 2  # 3 people x 3 photos; the cameraman alone
    dataset = build_dataset(cfg, "train")
    sample = dataset[0]
    assert sample["src_image"].shape == (3, 128, 64) and sample["src_parsing"].shape[1:] == (128, 64)

    # a training step on it: the joint stage with a (one-step) flow module from the suite's people
    base = ["--config", TINY_CONFIG, *SCHEDULE]
    flow_run = tmp_path / "flow"
    train.main([*base, f"data.root={market_people}", "--run-dir", str(flow_run), "train.stage=flow",
                "train.max_steps=1"])
    flow_ckpt = ck.step_checkpoints(flow_run / "checkpoints")[-1]
    joint_run = tmp_path / "joint"
    train.main([*base, f"data.root={root}", "--run-dir", str(joint_run), f"model.flow.checkpoint={flow_ckpt}",
                "train.max_steps=1"])
    assert torch.load(ck.step_checkpoints(joint_run / "checkpoints")[-1], weights_only=False)["step"] == 1

    # a second run keeps everything and loads no network
    before = {p: p.stat().st_mtime_ns for p in (root / "train").iterdir()}

    def no_networks(*args, **kwargs):
        raise AssertionError("a network was built for a photo that was done")

    monkeypatch.setattr(prepare_photos, "schp_parser", no_networks)
    monkeypatch.setattr(prepare_photos, "keypoint_estimator", no_networks)
    monkeypatch.setattr(prepare_photos, "photo_inputs", no_networks)
    (train_photos / "astronaut_1.png").unlink()  # refused photos are retried: take it away
    again = prepare_photos.main([str(train_photos), *common])
    assert len(again["kept"]) == 10 and "done" not in again and "refused" not in again
    assert {p: p.stat().st_mtime_ns for p in (root / "train").iterdir()} == before
    kept = read_annotations(root / cfg.data.annotation_train)
    assert list(kept) == list(rows) and all((kept[n] == rows[n]).all() for n in rows)
