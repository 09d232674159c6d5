"""Nothing lost, nothing silently wrong: one test per cause found by the probe of the entry points.

Outputs: test.py and infer.py into a read-only folder and onto a "full disk" (a file-size limit, RLIMIT_FSIZE,
with SIGXFSZ ignored so that a write fails with EFBIG instead of killing the process) exit 2 naming the path;
a SIGKILLed test.py leaves only complete images and `--skip-existing` completes the set. Tests run as root in
CI, where a chmod-ed folder is still writable: the read-only cases then run the child without the capabilities
that let root ignore permission bits.
Inputs: truncated images, keypoints beyond the margin, unusable poses, NaN flow and pose files are named at
load. Runs: the run-folder lock, the numbered-folder race, orphan temporary files, non-tensor pickles.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.annotations import read_annotations, write_annotations
from data.datasets import DatasetError, PairDataset
from data.synthetic import generate_dataset
from models.build import build_all
from utils import checkpoint as ck
from utils.config import load_config, to_dict
from utils.io import ImageReadError

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/unit_test/tiny.yaml"  # tiny networks on 128x64 people
H, W = 128, 64
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # linux/prctl.h, linux/capability.h


# ------------------------------------------------------------------------------------------ helpers


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def file_size_limit(limit: int):
    """preexec_fn: every file the child writes is limited to `limit` bytes; a longer write fails with EFBIG."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def drop_root_file_permissions() -> None:
    """preexec_fn for a root child: remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set, so
    that after exec the permission bits bind it like any user (root ignores them otherwise)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def read_only(folder: Path):
    """chmod `folder` read-only and return the preexec_fn under which a child really cannot write to it."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return None
    probe = subprocess.run([sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
                           preexec_fn=drop_root_file_permissions, capture_output=True)
    if probe.returncode == 0:
        (folder / "probe").unlink()
        pytest.skip("cannot make a folder read-only for root here (no CAP_SETPCAP)")
    return drop_root_file_permissions


def run(script: str, *args: str, preexec=None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "SPGNET_DEBUG": ""}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def assert_error_names(proc: subprocess.CompletedProcess, path: Path) -> str:
    """Exit code 2, no traceback, and a last stderr line `error: ...` naming `path`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(path) in last, last
    return last


def pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic Market-like dataset of 1 test identity x 7 poses = 42 test pairs and a tiny random-init
    joint-stage checkpoint."""
    top = tmp_path_factory.mktemp("reliability")
    root = top / "market"
    generate_dataset(root, style="market", identities=2, poses=7)
    torch.manual_seed(0)
    cfg = load_config(CONFIG)
    models = {k: v.state_dict() for k, v in build_all(cfg).items()}
    ckpt = top / "step-00000000.pt"
    ck.atomic_save({"format": ck.FORMAT, "config": to_dict(cfg), "models": models, "step": 0}, ckpt)
    return {"top": top, "root": root, "ckpt": ckpt}


def entry_args(world, out: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--checkpoint", str(world["ckpt"]), "--out", str(out), "--workers", "0",
            "--device", "cpu", f"data.root={world['root']}", *extra]


def infer_args(world, out: Path, *extra: str) -> list[str]:
    root = world["root"]
    name = next(iter(read_annotations(root / "market-annotation-test.csv")))
    csv = root / "market-annotation-test.csv"
    return ["--checkpoint", str(world["ckpt"]), "--source", str(root / "test" / name),
            "--source-pose", f"{csv}:{name}", "--source-parsing", str(root / "test_parsing" / f"{Path(name).stem}.png"),
            "--target-poses", str(csv), "--out", str(out), "--device", "cpu", *extra]


# ------------------------------------------------------------------ cause 1: output lost with exit code 0


def test_test_py_into_a_read_only_folder_fails_naming_it(world):
    out = world["top"] / "ro-test"
    (out / "images").mkdir(parents=True)
    proc = run("test.py", *entry_args(world, out, "--limit", "6"), preexec=read_only(out / "images"))
    assert_error_names(proc, out / "images")
    assert "wrote" not in proc.stdout
    assert pngs(out / "images") == []


@pytest.mark.slow  # two runs of test.py
def test_test_py_onto_a_full_disk_fails_naming_the_path(world):
    out = world["top"] / "full-test"
    proc = run("test.py", *entry_args(world, out, "--limit", "6"), preexec=file_size_limit(0))
    assert_error_names(proc, out / "images")
    # the probe (one byte) fits, a picture does not: the error names the file that could not be written
    proc = run("test.py", *entry_args(world, out, "--limit", "6", "--grids"), preexec=file_size_limit(64))
    last = assert_error_names(proc, out)
    assert "File too large" in last and ".png" in last, last
    assert "wrote" not in proc.stdout
    leftovers = [p for p in (out / "images").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary file left behind either


def test_infer_into_a_read_only_folder_fails_naming_it(world):
    out = world["top"] / "ro-infer"
    out.mkdir()
    proc = run("infer.py", *infer_args(world, out), preexec=read_only(out))
    assert_error_names(proc, out)
    assert "wrote" not in proc.stdout
    assert pngs(out) == []


@pytest.mark.slow  # two runs of infer.py
def test_infer_onto_a_full_disk_fails_naming_the_path(world):
    full = world["top"] / "full-infer"
    proc = run("infer.py", *infer_args(world, full, "--gif"), preexec=file_size_limit(0))
    assert_error_names(proc, full)
    proc = run("infer.py", *infer_args(world, full, "--gif"), preexec=file_size_limit(64))
    assert "File too large" in assert_error_names(proc, full)


# ------------------------------------------------------ cause 3: partial PNGs kept by --skip-existing


@pytest.mark.slow  # two runs of test.py
def test_sigkill_during_test_py_then_skip_existing_gives_every_image_complete(world):
    out = world["top"] / "killed"
    args = entry_args(world, out, "--batch-size", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.Popen([sys.executable, str(REPO / "test.py"), *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if (out / "images").is_dir() and len(list((out / "images").iterdir())) >= 3:
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    images = out / "images"
    assert all(cv2.imread(str(p)) is not None for p in pngs(images)), "a killed run left a partial image"
    pairs = [line.split(",") for line in (world["root"] / "market-pairs-test.csv").read_text().split()[1:]]
    expected = sorted(f"{Path(s).stem}___{Path(t).stem}.png" for s, t in pairs)
    # what an in-place writer leaves after a kill: an empty file, half a PNG, a picture of the wrong size,
    # and a writer's orphan temporary file
    empty, half, small = (images / n for n in expected[-3:])
    empty.write_bytes(b"")
    good = cv2.imencode(".png", np.full((H, W, 3), 7, np.uint8))[1].tobytes()
    half.write_bytes(good[: len(good) // 2])
    cv2.imwrite(str(small), np.zeros((10, 10, 3), np.uint8))
    (images / f".{expected[0]}.tmp-{dead_pid()}.png").write_bytes(good[:10])
    proc = run("test.py", *args, "--skip-existing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in pngs(images)] == expected and len(expected) == 42
    for p in pngs(images):
        image = cv2.imread(str(p))
        assert image is not None and image.shape == (H, W, 3), p
    assert not any(p.name.startswith(".") for p in images.iterdir()), "temporary files left"


def test_test_py_refuses_the_flow_folder_of_the_dataset(world):
    spec = importlib.util.spec_from_file_location("spgnet_test_entry", REPO / "test.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    cfg = load_config(CONFIG, [f"data.root={world['root']}"])
    for sub in ("test_flow", "train_flow/x"):
        with pytest.raises(ValueError, match="refusing to write there"):
            entry.refuse_dataset_folder((world["root"] / sub).resolve(), cfg)


# --------------------------------------------------------------------------- causes 6, 7, 11: inputs


@pytest.fixture()
def tiny(tmp_path):
    """2 identities x 3 poses (6 train pairs of one identity), 128x64, with flow files."""
    generate_dataset(tmp_path, style="market", identities=2, poses=3)
    return tmp_path


def dataset(root: Path, **kwargs) -> PairDataset:
    return PairDataset(root, "train", "market-annotation-train.csv", "market-pairs-train.csv", "train_parsing",
                       (H, W), flow_dir="train_flow", **kwargs)


def test_truncated_jpeg_is_an_error_naming_the_file(tiny):
    ds = dataset(tiny)
    path = tiny / "train" / ds.pairs[0][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(path)) is not None  # cv2.imread decodes it: the missing rows come out grey
    with pytest.raises(DatasetError, match=f"{path}: truncated JPEG"):
        ds[0]


def test_truncated_png_parsing_map_is_an_error_naming_the_file(tiny):
    ds = dataset(tiny)
    path = tiny / "train_parsing" / f"{Path(ds.pairs[0][0]).stem}.png"
    data = path.read_bytes()
    path.write_bytes(data[:-12])  # the IEND chunk cut off
    with pytest.raises(DatasetError, match=f"{path}: truncated PNG"):
        ds[0]


def test_a_worker_error_comes_out_as_one_error_line(tiny):
    from utils.cli import error_line

    ds = dataset(tiny)
    path = tiny / "train" / ds.pairs[0][0]
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError) as caught:
        next(iter(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)))
    line = error_line(caught.value)
    assert line.startswith(f"error: {path}: truncated JPEG") and "\n" not in line and "Traceback" not in line, line


def test_keypoint_far_outside_the_frame_names_file_line_and_joint(tiny):
    path = tiny / "market-annotation-train.csv"
    table = read_annotations(path)
    name = list(table)[1]
    table[name][4] = (20, 5000)
    write_annotations(path, table)
    with pytest.raises(ValueError, match=f"{path}:3: '{name}' joint 4 has x = 5000"):
        dataset(tiny)
    table[name][4] = (-H // 2 - 1, 10)  # one pixel beyond half the height above the top border
    write_annotations(path, table)
    with pytest.raises(ValueError, match=f"{path}:3: '{name}' joint 4 has y = {-H // 2 - 1}"):
        dataset(tiny)
    table[name][4] = (-H // 2, W + W // 2 - 1)  # exactly at the margin on both axes: allowed
    write_annotations(path, table)
    assert len(dataset(tiny)) == 6


def test_a_source_without_joints_is_refused_or_skipped(tiny):
    path = tiny / "market-annotation-train.csv"
    table = read_annotations(path)
    src, tgt = dataset(tiny).pairs[0]
    table[src][:] = -1  # every joint missing
    write_annotations(path, table)
    with pytest.raises(DatasetError, match=f"{src} -> {tgt}: source '{src}': 0 present joints"):
        dataset(tiny)
    table[src][:] = -1
    table[src][[0, 1, 2, 5, 14]] = (30, 30)  # 5 joints, but no hip
    write_annotations(path, table)
    with pytest.raises(DatasetError, match="no torso"):
        dataset(tiny)
    ds = dataset(tiny, invalid_poses="skip")
    assert len(ds) == 2 and all(src not in pair for pair in ds.pairs)
    assert len(ds.skipped_pairs) == 4 and all(src in pair for pair in ds.skipped_pairs)


def test_nan_in_a_flow_file_is_named_at_load(tiny):
    ds = dataset(tiny)
    src, tgt = ds.pairs[1]
    path = tiny / "train_flow" / f"{Path(src).stem}___{Path(tgt).stem}.npz"
    with np.load(path) as data:
        flow, vis = data["flow"].copy(), data["vis"]
    flow[1, 3, 4] = np.nan
    np.savez(path, flow=flow, vis=vis)
    with pytest.raises(DatasetError, match=f"{path}: key 'flow' holds 1 non-finite"):
        ds[1]


def test_nan_joint_in_a_pose_json_is_named_at_load(tmp_path):
    from data.pose_files import PoseError, read_poses

    pose = [[30.0 + 4 * j, 20.0 + j] for j in range(18)]
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(pose[:6] + [[float("nan"), 10.0]] + pose[7:]))  # json writes NaN
    with pytest.raises(PoseError, match=f"pose {path}: joint 6 .*finite"):
        read_poses(str(path))



def test_infer_refuses_a_target_joint_beyond_the_margin(world, tmp_path):
    """The keypoint rule of docs/design.md#keypoint-validity holds in infer.py too: a joint more than half the side
    beyond the frame is an error naming the pose and joint, not a silently dropped joint; one within the margin is
    used."""
    pose = [[30.0 + 4 * j, 20.0 + j] for j in range(18)]  # every joint inside the 128x64 frame
    inside = tmp_path / "inside.json"
    inside.write_text(json.dumps(pose[:3] + [[-60.0, 20.0]] + pose[4:]))  # -60 >= -0.5 * 128: within the margin
    far = tmp_path / "far.json"
    far.write_text(json.dumps(pose[:3] + [[9000.0, 20.0]] + pose[4:]))  # beyond 127 + 64
    assert run("infer.py", *infer_args(world, tmp_path / "ok", "--target-poses", str(inside))).returncode == 0
    proc = run("infer.py", *infer_args(world, tmp_path / "out", "--target-poses", str(far)))
    last = assert_error_names(proc, far)
    assert "joint 3" in last and "9000" in last, last
    assert not (tmp_path / "out").exists() or not pngs(tmp_path / "out")


def test_truncated_source_image_in_infer_is_an_error_naming_it(world, tmp_path):
    import infer

    src = next((world["root"] / "test").glob("*.jpg"))
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[:-200])
    with pytest.raises(ImageReadError, match=f"{cut}: truncated JPEG"):
        infer.read_image(cut)


# ------------------------------------------------------------------------------- checkpoints and runs


def test_orphan_temporary_checkpoints_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    ck.atomic_save({"format": ck.FORMAT, "step": 10}, folder / "step-00000010.pt")
    dead = dead_pid()
    old_style = folder / f".step-00000020.pt.tmp-{dead}"  # the naming of an atomic_save killed on bfda0bb
    new_style = folder / f".step-00000030.pt.tmp-{dead}.pt"
    live = folder / f".step-00000040.pt.tmp-{os.getpid()}.pt"  # a save in progress: kept
    for p in (old_style, new_style, live):
        p.write_bytes(b"partial")
    assert ck.remove_orphans(folder) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(["step-00000010.pt", live.name])


def test_a_failed_save_keeps_the_old_checkpoint_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "step-00000010.pt"
    ck.atomic_save({"format": ck.FORMAT, "step": 1}, path)

    def disk_full(obj, f):
        f.write(b"x" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=f"{path}: No space left on device"):
        ck.atomic_save({"format": ck.FORMAT, "step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1  # the earlier file, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]



def test_a_checkpoint_save_onto_a_full_disk_is_an_oserror_naming_the_path(tmp_path):
    """A real EFBIG inside torch.save (whose zip writer reports it as a RuntimeError of its own): the save fails
    with an OSError naming the checkpoint, the previous one stays, no temporary is left."""
    path = tmp_path / "step-00000010.pt"
    ck.atomic_save({"format": ck.FORMAT, "step": 1}, path)
    code = ("import sys, torch; from utils import checkpoint as ck\n"
            "try:\n"
            f"    ck.atomic_save({{'format': ck.FORMAT, 'step': 2, 'w': torch.zeros(100_000)}}, {str(path)!r})\n"
            "except OSError as err:\n"
            "    print(err); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=file_size_limit(100_000))  # the new file needs 400 kB
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert str(path) in proc.stdout and "File too large" in proc.stdout, proc.stdout
    assert torch.load(path, weights_only=True)["step"] == 1  # the earlier file, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_non_tensor_pickle_is_refused_as_such(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "payload": os.system}, path)  # a pickled global: code on unpickling
    with pytest.raises(ck.CheckpointError) as caught:
        ck.load_checkpoint(path)
    message = str(caught.value)
    assert "not a plain-tensor checkpoint" in message and str(path) in message, message
    assert "weights_only" not in message and "damaged" not in message, message



def test_a_non_tensor_pickle_as_pretrained_weights_is_refused_as_such(tmp_path):
    """The backbone weights (VGG19, Inception, AlexNet given by path) are a loading entry point too."""
    from utils.errors import InputError
    from utils.weights import load_state_dict

    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": os.system}, path)
    with pytest.raises(InputError) as caught:
        load_state_dict("vgg19", path)
    message = str(caught.value)
    assert "not a plain-tensor" in message and str(path) in message, message
    assert "weights_only" not in message, message
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pth"):
        load_state_dict("vgg19", tmp_path / "junk.pth")


def test_prune_never_deletes_the_protected_checkpoint(tmp_path):
    for step in (1, 2, 3, 4, 5):
        ck.atomic_save({"step": step}, ck.checkpoint_path(tmp_path, step))
    ck.prune(tmp_path, keep=2, protect=ck.checkpoint_path(tmp_path, 2))
    assert [p.name for p in ck.step_checkpoints(tmp_path)] == ["step-00000002.pt", "step-00000004.pt",
                                                               "step-00000005.pt"]


HOLD = """
import sys, time
from utils.run import RunLock
lock = RunLock(sys.argv[1]); lock.acquire(); print("locked", flush=True); time.sleep(60)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    import socket

    from utils.run import RunLock, RunLockError

    child = hold_lock(tmp_path)
    try:
        with pytest.raises(RunLockError, match=f"in use by PID {child.pid} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, capsys):
    from utils.run import RunLock

    child = hold_lock(tmp_path)
    child.kill()  # SIGKILL: the lock file stays, the kernel drops the flock
    child.wait()
    assert (tmp_path / RunLock.NAME).is_file()
    with RunLock(tmp_path) as lock:
        assert f"stale lock {lock.path} of PID {child.pid}" in capsys.readouterr().err
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()  # a clean release removes it


def test_two_runs_of_one_name_started_together_get_two_folders(tmp_path, monkeypatch):
    from utils import run

    original = Path.mkdir
    raced = []

    def mkdir(self, *args, **kwargs):
        if self.parent == tmp_path and not raced:  # the other run creates the same number first
            raced.append(self)
            original(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    folder = run.new_run_folder(tmp_path, "df")
    assert raced == [tmp_path / "00000-df"] and folder == tmp_path / "00001-df"


# ------------------------------------------------------------------------------------ the atomic writer


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    from utils.io import WriteError, atomic_write, write_text

    path = write_text(tmp_path / "metrics.json", "old\n")

    def half_then_full(f):
        f.write(b"new, but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        atomic_write(path, half_then_full)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'nope' / 'x.txt'}"):
        write_text(tmp_path / "nope" / "x.txt", "x")  # a missing folder is named with the file


def test_the_writability_check_on_a_full_disk_leaves_no_file(tmp_path):
    """The check's probe file stayed behind (.write-test.tmp-PID) when its one byte did not fit."""
    proc = subprocess.run([sys.executable, "-c", "from utils.io import ensure_writable_folder; "
                           f"ensure_writable_folder({str(tmp_path)!r})"], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=file_size_limit(0))
    assert proc.returncode == 1, proc.stderr
    assert f"WriteError: output folder {tmp_path} is not writable: File too large" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_write_image_round_trips_and_refuses_what_it_cannot_encode(tmp_path):
    from utils.io import WriteError, write_image

    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"))[..., ::-1], rgb)  # decoded by cv2 itself
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'b.png'}: cannot encode"):
        write_image(tmp_path / "b.png", np.zeros((H, W, 3), np.float64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_the_error_line_is_the_last_line_under_an_open_progress_bar(capsys):
    """An error raised inside a tqdm loop: the bar is not drawn again after the error line (cause 13)."""
    from tqdm import tqdm

    from utils.cli import run_main
    from utils.errors import InputError

    def main() -> None:
        bar = tqdm(total=3, desc="train")
        bar.update(1)
        raise InputError("bad.csv:3: broken row")

    with pytest.raises(SystemExit) as exit_:
        run_main(main)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == "error: bad.csv:3: broken row", lines


# ------------------------------------------------------------------ scripts/report.py: named inputs exist


def test_report_refuses_missing_or_unreadable_inputs(tmp_path):
    """A report of a run folder that does not exist, or of a metrics file that is not JSON, is an error naming
    the path (it was an empty report with exit 0, and a JSONDecodeError traceback)."""
    run_dir = tmp_path / "joint"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "g/l1": 0.5}) + "\n")
    out = tmp_path / "report.html"
    missing = tmp_path / "nope"
    assert_error_names(run("scripts/report.py", "--joint", str(missing), "--out", str(out)), missing)
    broken = tmp_path / "metrics.json"
    broken.write_text("{oops")
    assert_error_names(run("scripts/report.py", "--joint", str(run_dir), "--metrics", str(broken), "--out", str(out)),
                       broken)
    assert_error_names(run("scripts/report.py", "--joint", str(run_dir), "--metrics", str(missing), "--out",
                           str(out)), missing)
    assert not out.exists()
    proc = run("scripts/report.py", "--joint", str(run_dir), "--out", str(out))
    assert proc.returncode == 0 and "<svg" in out.read_text(), proc.stderr[-2000:]


# ------------------------------------------------------------------ counts on the command line


@pytest.mark.parametrize("script, flag, value", [
    ("test.py", "--limit", "0"), ("test.py", "--batch-size", "0"), ("test.py", "--workers", "-1"),
    ("infer.py", "--batch-size", "0"), ("evaluate.py", "--batch-size", "0"),
    ("scripts/predict_parsing.py", "--batch-size", "-1"), ("scripts/make_synthetic.py", "--workers", "0"),
])
def test_a_count_out_of_range_is_a_usage_error(script, flag, value):
    """A batch size, limit or worker count out of range stops at argument parsing (exit 2, one line naming the
    flag), instead of a ValueError traceback from the DataLoader or a silent fallback to the config's value."""
    proc = run(script, flag, value)  # checked before the missing required arguments
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"error: argument {flag}: " in last and value in last, last


# ------------------------------------------------------------------ signals: one line, no temporary, 128 + signal

SLOW_WRITER = """
import sys, time
from utils.cli import run_main
from utils.io import atomic_write

def write(f):
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

run_main(lambda: atomic_write(sys.argv[1], write), interrupted="the earlier file is kept")
"""


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_mid_write_leaves_the_earlier_file_and_one_line(tmp_path, sig, code, name):
    """Ctrl-C gave a KeyboardInterrupt traceback and SIGTERM killed the process inside the write, leaving its
    temporary file; both now unwind (the writer removes its temporary), print one line and exit 128 + signal."""
    target = tmp_path / "metrics.json"
    target.write_text("earlier\n")
    # as from a terminal: a child of a background job or a pytest-xdist worker inherits SIGINT ignored, and Python
    # then installs no Ctrl-C handler at all
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "SPGNET_DEBUG": ""},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout.readline() == "writing\n"
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert err.strip().splitlines() == [f"{name}: the earlier file is kept"], err
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and target.read_text() == "earlier\n"


# ------------------------------------------------- bad input at the entry points: one error, before any output


def entry_module(name: str):
    """An entry point (test.py, infer.py, evaluate.py) imported by path ('test' is also a standard package)."""
    spec = importlib.util.spec_from_file_location(f"spgnet_{name}_entry", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("device", "message"), [("foo", "--device 'foo': expected cpu, cuda or cuda:N"),
                                                 ("cpu:0", "--device 'cpu:0': expected"),
                                                 ("cuda:99", "--device cuda:99: this host has")])
def test_every_entry_point_refuses_a_device_it_cannot_use(world, tmp_path, device, message):
    """--device foo trained and tested on the CPU without a word; --device cuda without a GPU was a traceback."""
    import train
    from utils.errors import InputError

    generated = tmp_path / "generated"
    generated.mkdir()
    runs = [(entry_module("test").main, entry_args(world, tmp_path / "t", "--device", device)),
            (entry_module("infer").main, infer_args(world, tmp_path / "i", "--device", device)),
            (entry_module("evaluate").main, ["--generated", str(generated), "--dataset-config", CONFIG,
                                             f"data.root={world['root']}", "--device", device]),
            (train.main, ["--config", CONFIG, f"data.root={world['root']}", "--device", device,
                          "--run-dir", str(tmp_path / "run")])]
    for main, argv in runs:
        with pytest.raises(InputError, match=re.escape(message)):
            main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]  # nothing written


def test_evaluate_refuses_an_out_folder_in_the_dataset_or_among_the_images(world, tmp_path):
    """evaluate.py --out <dataset>/test was accepted (test.py refused it), and so was --out = --generated."""
    evaluate = entry_module("evaluate")
    generated = tmp_path / "generated"
    generated.mkdir()
    common = ["--generated", str(generated), "--dataset-config", CONFIG, f"data.root={world['root']}", "--device",
              "cpu"]
    for out in (world["root"] / "test", world["root"] / "test_flow" / "metrics", world["root"]):
        with pytest.raises(ValueError, match=f"--out {out.resolve()} is \\(inside\\) the dataset folder"):
            evaluate.main([*common, "--out", str(out)])
    for out in (generated, generated / "metrics"):
        with pytest.raises(ValueError, match=f"--out {out} is \\(inside\\) the --generated folder {generated}"):
            evaluate.main([*common, "--out", str(out)])
    assert list(generated.iterdir()) == [] and not (world["root"] / "test_flow" / "metrics").exists()


def malformed_checkpoints(world, folder: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoints that torch loads safely but whose content is not what a checkpoint holds: (file, message)."""
    good = torch.load(world["ckpt"], weights_only=True)
    edited = {**good, "config": {**good["config"], "model": {**good["config"]["model"], "generator": {
        **good["config"]["model"]["generator"], "base_channels": 8, "max_channels": 16}}}}
    cases = {"format-only": ({"format": ck.FORMAT}, "its 'config' is NoneType, not a mapping of config sections"),
             "config-list": ({**good, "config": [1, 2]}, "its 'config' is list, not a mapping of config sections"),
             "models-str": ({**good, "models": "weights"}, "its 'models' is str, not a mapping of networks"),
             "step-str": ({**good, "step": "7"}, "its 'step' is '7', not an integer"),
             "edited-config": (edited, "the generator weights do not fit the network its config builds: ")}
    out = {}
    for name, (content, message) in cases.items():
        ck.atomic_save(content, folder / f"{name}.pt")
        out[name] = (folder / f"{name}.pt", message)
    return out


def test_a_malformed_checkpoint_is_one_error_naming_it_in_test_and_infer(world, tmp_path):
    """A checkpoint holding only its format tag, a list as config, or a hand-edited config over weights of
    other widths gave a KeyError / AttributeError / RuntimeError traceback in test.py and infer.py."""
    test_entry, infer = entry_module("test"), entry_module("infer")
    for name, (path, message) in malformed_checkpoints(world, tmp_path).items():
        with pytest.raises(ck.CheckpointError, match=re.escape(message)) as err:
            infer.main([*infer_args(world, tmp_path / "i"), "--checkpoint", str(path)])
        assert str(err.value).startswith(str(path)), err.value
        if name != "edited-config":  # test.py builds from --config: an edited saved config is an architecture diff
            with pytest.raises(ck.CheckpointError, match=re.escape(message)):
                test_entry.main([*entry_args(world, tmp_path / "t"), "--checkpoint", str(path)])
    assert not (tmp_path / "i").exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize(("flag", "values", "message"), [
    ("--fps", ["inf"], "argument --fps: must be a number in (0, 1000], got inf"),
    ("--fps", ["nan"], "argument --fps: must be a number in (0, 1000], got nan"),
    ("--fps", ["0"], "argument --fps: must be a number in (0, 1000], got 0"),
    ("--fps", ["fast"], "argument --fps: 'fast' is not a number"),
    ("--target-size", ["0", "0"], "argument --target-size: must be at least 1, got 0")])
def test_infer_refuses_a_frame_rate_or_frame_it_cannot_use(world, tmp_path, capsys, flag, values, message):
    """--fps inf made OpenCV's mp4 writer loop forever, --fps nan --gif and --target-size 0 0 were tracebacks."""
    with pytest.raises(SystemExit) as exit_:
        entry_module("infer").parse_args([*infer_args(world, tmp_path / "i"), flag, *values, "--gif", "--mp4"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
