"""Pose files: OpenPose JSON (BODY_25 or COCO-18), JSON lists of 18 [y, x] pairs, rows of an annotation CSV.

Read by infer.py, scripts/openpose_to_csv.py and the keypoint tools. A pose is (18, 2) (y, x) in OpenPose-COCO
joint order (data.pose), -1 where a joint is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from data.annotations import FRAME_MARGIN, AnnotationError, check_range, read_annotations
from data.pose import NUM_JOINTS, is_missing
from utils.errors import InputError


class PoseError(InputError):
    """A pose the networks cannot use, or a pose file that cannot be read; the message names it."""


# BODY_25 index of each COCO-18 joint, in COCO order (OpenPose doc/02_output.md): BODY_25 inserts MidHip at 8
# and appends the feet (19-24), the other 18 keep COCO's order.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
FORMAT_JOINTS = {"body25": 25, "coco": 18}


class OpenPoseError(InputError):
    """Bad OpenPose output or arguments; the message names the file."""


def detect_format(num_values: int, path: Path, person: int) -> str:
    """'body25' or 'coco' from the length of one person's flat keypoint list (3 values per joint)."""
    for fmt, joints in FORMAT_JOINTS.items():
        if num_values == 3 * joints:
            return fmt
    raise OpenPoseError(f"{path}: person {person} has {num_values} pose_keypoints_2d values; expected 75 (BODY_25, "
                        f"25 joints x [x, y, c]) or 54 (COCO, 18 joints)")


def person_joints(flat: list, fmt: str, path: Path, person: int) -> np.ndarray:
    """One person's flat [x, y, c] * N list -> (18, 3) float64 [x, y, c] in COCO-18 order."""
    try:
        values = np.asarray(flat, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OpenPoseError(f"{path}: person {person}: pose_keypoints_2d is not a list of numbers ({e})") from None
    if values.ndim != 1:
        raise OpenPoseError(f"{path}: person {person}: pose_keypoints_2d must be a flat list, got shape {values.shape}")
    found = detect_format(values.size, path, person)
    if fmt != "auto" and found != fmt:
        raise OpenPoseError(f"{path}: person {person} has {values.size} values ({found}), but --format {fmt} was given")
    if not np.isfinite(values).all():
        raise OpenPoseError(f"{path}: person {person}: pose_keypoints_2d holds NaN or infinite values")
    joints = values.reshape(-1, 3)  # (N, 3) [x, y, c]
    return joints[list(BODY25_TO_COCO18)] if found == "body25" else joints


def read_openpose_json(path: Path, fmt: str = "auto") -> list[np.ndarray]:
    """Every person in one OpenPose JSON file, each (18, 3) [x, y, c] in COCO-18 order."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise OpenPoseError(f"{path}: malformed JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise OpenPoseError(f"{path}: not a text JSON file ({e})") from None
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        raise OpenPoseError(f"{path}: no 'people' list (is this an OpenPose --write_json file?)")
    out = []
    for i, person in enumerate(people):
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise OpenPoseError(f"{path}: person {i} has no 'pose_keypoints_2d'")
        out.append(person_joints(person["pose_keypoints_2d"], fmt, path, i))
    return out


def select_person(people: list[np.ndarray]) -> np.ndarray | None:
    """The person with the highest summed joint confidence (the first on a tie), or None when nobody is there."""
    if not people:
        return None
    return people[int(np.argmax([p[:, 2].sum() for p in people]))]



NECK = 1
TORSO_JOINTS = (2, 5, 8, 11)  # shoulders and hips: with the neck they fix the body's position and scale
MIN_VISIBLE_JOINTS = 4
MIN_CONFIDENCE = 0.1


def openpose_keypoints(data: dict, origin: str) -> np.ndarray:
    """An OpenPose JSON document -> (18,2) float32 (y, x), -1 missing. Picks the most confident person.

    BODY_25 and COCO-18 are read by `person_joints`; unlike the CSV, the coordinates stay
    fractional here (no file format asks for integers).
    """
    people = data.get("people")
    if not isinstance(people, list) or not people:
        raise PoseError(f"pose {origin}: the OpenPose file lists no person ('people' is empty)")
    try:
        joints = select_person([
            person_joints(p.get("pose_keypoints_2d") if isinstance(p, dict) else None, "auto", Path(origin), i)
            for i, p in enumerate(people)])  # (18,3) [x, y, c]
    except OpenPoseError as err:
        raise PoseError(f"pose {err}") from err
    keypoints = joints[:, [1, 0]].astype(np.float32)  # (x, y) -> (y, x)
    keypoints[(joints[:, 2] < MIN_CONFIDENCE) | (joints[:, 2] <= 0)] = -1  # OpenPose writes c = 0 when not found
    return keypoints


def pair_list_keypoints(data: list, origin: str) -> np.ndarray:
    """A JSON list of 18 [y, x] pairs ([-1, -1] or null missing) -> (18,2) float32."""
    if len(data) != NUM_JOINTS:
        raise PoseError(f"pose {origin}: {len(data)} joints listed; expected {NUM_JOINTS} [y, x] pairs")
    keypoints = np.full((NUM_JOINTS, 2), -1, dtype=np.float32)
    for j, pair in enumerate(data):
        if pair is None:
            continue
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)):
            raise PoseError(f"pose {origin}: joint {j} is {pair!r}; expected a [y, x] pair of numbers or null")
        if not np.isfinite(pair).all():  # JSON readers accept NaN and Infinity
            raise PoseError(f"pose {origin}: joint {j} is {pair!r}; coordinates must be finite (null = missing)")
        keypoints[j] = pair
    return keypoints


def _is_pair_list(data: object) -> bool:
    """A list whose entries are null or flat lists: one pose (a sequence holds lists of lists)."""
    return isinstance(data, list) and all(
        p is None or (isinstance(p, list) and not any(isinstance(v, list) for v in p)) for p in data)


def json_poses(path: Path) -> list[tuple[str, np.ndarray]]:
    """(name, keypoints) for every pose in one JSON file: OpenPose, a pair list, or a list of pair lists."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PoseError(f"pose file {path}: not readable JSON: {err}") from err
    if isinstance(data, dict):
        return [(str(path), openpose_keypoints(data, str(path)))]
    if _is_pair_list(data):
        return [(str(path), pair_list_keypoints(data, str(path)))]
    if isinstance(data, list) and data and all(isinstance(p, list) for p in data):
        return [(f"{path}[{i}]", pair_list_keypoints(p, f"{path}[{i}]")) for i, p in enumerate(data)]
    raise PoseError(f"pose file {path}: expected an OpenPose document, a list of 18 [y, x] pairs or a list of "
                         "such lists")


def csv_poses(path: Path, row: str | None) -> list[tuple[str, np.ndarray]]:
    """(name, keypoints) for every row of an annotation CSV, in file order, or for the one row named `row`."""
    try:
        table = read_annotations(path)
    except AnnotationError as err:
        raise PoseError(str(err)) from err
    if row is not None:
        if row not in table:
            raise PoseError(f"pose file {path}: no row named {row!r} ({len(table)} rows)")
        table = {row: table[row]}
    return [(f"{path} row {name!r}", np.asarray(kp, dtype=np.float32)) for name, kp in table.items()]


_CSV_ROW = re.compile(r"^(?P<path>.+\.csv):(?P<row>[^:]+)$", re.IGNORECASE)


def read_poses(spec: str) -> list[tuple[str, np.ndarray]]:
    """Every pose a command-line pose argument names: a CSV (optionally CSV:ROW), a JSON file or a folder of JSON."""
    path, row = Path(spec), None
    if not path.exists() and (m := _CSV_ROW.match(spec)):
        path, row = Path(m["path"]), m["row"]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json")
        if not files:
            raise PoseError(f"pose folder {path}: no .json files in it")
        return [pose for f in files for pose in json_poses(f)]
    if not path.is_file():
        raise PoseError(f"pose file not found: {path}")
    if path.suffix.lower() == ".csv":
        return csv_poses(path, row)
    return json_poses(path)


def read_source_pose(spec: str, source_image: Path) -> tuple[str, np.ndarray]:
    """The single source pose; a whole CSV resolves to the row named like the source image."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".csv":
        try:
            rows = read_annotations(path)
        except AnnotationError as err:
            raise PoseError(str(err)) from err
        if len(rows) > 1 and source_image.name in rows:
            spec = f"{spec}:{source_image.name}"
    poses = read_poses(spec)
    if len(poses) != 1:
        raise PoseError(f"--source-pose {spec}: holds {len(poses)} poses; the source needs one "
                             "(pick a CSV row with FILE.csv:NAME)")
    return poses[0]


def check_pose(keypoints: np.ndarray, name: str, height: int, width: int, margin: float = FRAME_MARGIN) -> None:
    """Refuse a pose the networks cannot place: a NaN/inf coordinate, a present joint beyond the frame by more
    than `margin` times the side (the loaders' rule, data.annotations.check_range), fewer than 4 joints in the
    frame, or no torso."""
    bad = np.flatnonzero(~np.isfinite(keypoints).all(axis=1))
    if bad.size:
        j = int(bad[0])
        raise PoseError(f"pose {name}: joint {j} is {keypoints[j].tolist()}; coordinates must be finite")
    try:
        check_range({name: keypoints}, height, width, "pose", margin=margin)  # "pose: <name> joint ..."
    except AnnotationError as err:
        raise PoseError(str(err)) from None
    y, x = keypoints[:, 0], keypoints[:, 1]
    # pixel i covers [i - 0.5, i + 0.5): a joint is in the frame when it lies on one of its pixels
    inside = ~is_missing(keypoints) & (y >= -0.5) & (y < height - 0.5) & (x >= -0.5) & (x < width - 0.5)
    count = int(inside.sum())
    if count < MIN_VISIBLE_JOINTS:
        raise PoseError(f"pose {name}: only {count} joints visible (present and inside the {height}x{width} "
                             f"frame); at least {MIN_VISIBLE_JOINTS} are needed")
    if not (inside[NECK] and inside[list(TORSO_JOINTS)].any()):
        raise PoseError(f"pose {name}: no torso (the neck and at least one shoulder or hip must be visible "
                             f"inside the {height}x{width} frame)")
