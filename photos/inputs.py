"""A photo of one person -> the model's inputs: the photo framed as DeepFashion's images are, its keypoints and its
parsing map, each estimated unless given; with the checks that refuse a photo the model cannot use.

    estimator = keypoint_estimator("mediapipe")                   # or "openpose" (weights: published, PATH, random)
    parser = schp_parser("published")                             # models.schp; "random" for offline runs
    photo = read_photo(Path("me.jpg"), (256, 176))                # the cheap checks first
    inputs = photo_inputs(photo, Path("me.jpg"), (256, 176), estimator, parser)
    save_inputs(Path("checked"), "me", inputs)                   # me.png, me_keypoints.csv, me_parsing.png, ...

Refused, each with one message naming the file (PhotoError, an InputError): a file that is not a complete image;
a photo smaller than half the frame's height (a person in it would be enlarged more than twice); no person found;
several people with a usable pose (the training set has one person per image: crop the photo); a person whose pose
the dataset would refuse (data.pose.pose_problems: at least 4 joints, and the neck and a hip); a person shorter than
half the frame's height in the photo; a framed pose that data.pose_files.check_pose refuses.
The parsing map is SCHP's on the framed image (as DeepFashion's maps were made on its framed images), in CIHP ids.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from data.annotations import FRAME_MARGIN, write_annotations
from data.parsing import colorize
from data.pose import LIMBS, is_missing, pose_problems
from data.pose_files import check_pose
from data.visual import read_image
from photos.framing import MIN_SCALE, Framing, frame_person
from utils.errors import InputError
from utils.io import ImageReadError, write_image, write_text

if TYPE_CHECKING:
    from models.schp import SCHPParser

KEYPOINT_BACKENDS = ("openpose", "mediapipe")
FACE_LIMBS = ((0, 14), (14, 16), (0, 15), (15, 17), (0, 1))  # nose-eyes-ears and nose-neck, drawn with LIMBS
LEFT_JOINTS = (5, 6, 7, 11, 12, 13, 15, 17)  # the person's left: blue in the check picture; right: red
RIGHT_JOINTS = (2, 3, 4, 8, 9, 10, 14, 16)


class PhotoError(InputError):
    """A photo the model cannot use; the message names the file and says why."""


def keypoint_estimator(name: str, weights: str | os.PathLike = "published", device: str | None = None):
    """The keypoint backend `name` (openpose or mediapipe): an object with `people(image) -> [(18,2) (y, x)]`,
    `protocol` (one line naming it) and `random`. weights: OpenPose's ("published", a path, "random"); MediaPipe's
    model ships inside its wheel and takes none.

    The networks' modules are imported here, when one is built: they pull torchvision (utils.weights' URLs), whose
    import costs seconds and needs a writable temporary folder, which a run with all its inputs given does without.
    """
    if name == "openpose":
        from metrics.openpose import OpenPoseEstimator

        return OpenPoseEstimator(weights, device)
    if name == "mediapipe":
        if weights != "published":
            raise PhotoError(f"--keypoint-weights {weights}: MediaPipe's model ships inside its package and takes none")
        from metrics.mediapipe_pose import MediaPipePose

        return MediaPipePose()
    raise PhotoError(f"keypoint backend {name!r}: known are {', '.join(KEYPOINT_BACKENDS)}")


def schp_parser(weights: str | os.PathLike = "published", device: str | None = None) -> SCHPParser:
    """SCHP's parser (models.schp), imported when built, as the keypoint networks are."""
    from models.schp import SCHPParser

    return SCHPParser(weights, device)


def min_height(frame: tuple[int, int]) -> int:
    """The fewest photo rows that a person (and so the photo) must span: MIN_SCALE of the frame's height."""
    return math.ceil(MIN_SCALE * frame[0])


def read_photo(path: Path, frame: tuple[int, int]) -> np.ndarray:
    """(h,w,3) uint8 RGB of a complete image file at least min_height(frame) rows high; PhotoError otherwise."""
    try:
        photo = read_image(path)
    except ImageReadError as err:
        raise PhotoError(f"photo {err}") from err
    if photo.shape[0] < min_height(frame):
        raise PhotoError(f"photo {path}: {photo.shape[0]}x{photo.shape[1]} pixels, too small: the model's frame is "
                         f"{frame[0]}x{frame[1]}, and a person must be at least {min_height(frame)} pixels tall")
    return photo


def the_person(people: list[np.ndarray], path: Path) -> np.ndarray:
    """The one person with a usable pose among those an estimator found; PhotoError for none or several."""
    problems = pose_problems(np.stack(people)) if people else []
    usable = [p for p, problem in zip(people, problems) if problem is None]
    if len(usable) > 1:
        raise PhotoError(f"photo {path}: {len(usable)} people found; the model takes one person per photo (crop the "
                         "photo to the person)")
    if usable:
        return usable[0]
    if not people:
        raise PhotoError(f"photo {path}: no person found")
    raise PhotoError(f"photo {path}: the person found has {problems[0]}; the whole upper body must be visible "
                     "(or pass keypoints with --source-pose)")


@dataclass
class PhotoInputs:
    """The framed photo (H,W,3) uint8, its keypoints (18,2) float32 (y, x), its CIHP labels (H,W) uint8 or None,
    how it was framed, and one note per estimate (which network, which weights)."""

    image: np.ndarray
    keypoints: np.ndarray
    labels: np.ndarray | None
    framing: Framing | None  # None: the image was given in the model's frame (or fitted with --resize)
    notes: list[str] = field(default_factory=list)
    random: bool = False  # a randomly initialised network made some of it: the estimates mean nothing


def photo_inputs(photo: np.ndarray, path: Path, frame: tuple[int, int], estimator, parser: SCHPParser | None,
                 margin: float = FRAME_MARGIN) -> PhotoInputs:
    """A photo (read_photo's) -> find the person, frame, and parse (when `parser` is given): the checks of the module
    docstring. `path` names the photo in errors."""
    keypoints = the_person(estimator.people(photo), path)
    framing = frame_person(photo, keypoints, frame)
    if framing.crop.height < min_height(frame):
        raise PhotoError(f"photo {path}: the person is about {framing.crop.height} pixels tall, too small for the "
                         f"model's {frame[0]}x{frame[1]} frame (at least {min_height(frame)} are needed)")
    image, framed = framing.image(photo), framing.keypoints(keypoints)
    check_pose(framed, f"estimated in {path}", *frame, margin=margin)
    notes = [f"keypoints: {estimator.protocol}"]
    labels = None
    if parser is not None:
        labels = parser(image)
        notes.append(f"parsing: SCHP LIP, weights {parser.weights_source}")
    random = estimator.random or (parser is not None and parser.random)
    return PhotoInputs(image, framed, labels, framing, notes, random)


# ------------------------------------------------------------------------------------------ pictures and files


def stamp(picture: np.ndarray, text: str) -> np.ndarray:
    """A copy of an (H,W,3) uint8 picture with `text` in white on a red band across its top (shrunk to fit)."""
    out = picture.copy()
    band = max(10, picture.shape[0] // 20)
    out[:band] = (200, 0, 0)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, band / 30
    (width, _), _ = cv2.getTextSize(text, font, scale, 1)
    scale *= min(1.0, (picture.shape[1] - 4) / width)
    cv2.putText(out, text, (2, band - max(2, band // 5)), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def skeleton_picture(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """The image with the pose drawn over it: limbs in white, the person's left joints blue, right red, the rest
    green."""
    out = image.copy()
    present = ~is_missing(keypoints)
    xy = np.round(keypoints[:, ::-1]).astype(int)  # (18,2) (x, y) for cv2
    for a, b in (*LIMBS, *FACE_LIMBS):
        if present[a] and present[b]:
            cv2.line(out, tuple(xy[a]), tuple(xy[b]), (255, 255, 255), 1, cv2.LINE_AA)
    for j in np.flatnonzero(present):
        colour = (0, 90, 255) if j in LEFT_JOINTS else (255, 40, 40) if j in RIGHT_JOINTS else (0, 200, 0)
        cv2.circle(out, tuple(xy[j]), max(1, image.shape[0] // 80), colour, -1, cv2.LINE_AA)
    return out


def inputs_picture(inputs: PhotoInputs) -> np.ndarray:
    """[framed photo with its pose | parsing in the CIHP palette | the two blended], stamped when random."""
    panels = [skeleton_picture(inputs.image, inputs.keypoints)]
    if inputs.labels is not None:
        colours = colorize(inputs.labels)
        panels += [colours, ((inputs.image.astype(np.uint16) + colours) // 2).astype(np.uint8)]
    gap = np.full((inputs.image.shape[0], 2, 3), 255, np.uint8)
    picture = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    return stamp(picture, "RANDOM WEIGHTS: not real estimates") if inputs.random else picture


def save_inputs(folder: Path, stem: str, inputs: PhotoInputs) -> list[Path]:
    """Write what was estimated, to check and correct it, each file atomically: <stem>.png (the framed photo),
    <stem>_keypoints.csv (the release's annotation CSV, one row named <stem>.png), <stem>_parsing.png (CIHP labels,
    single channel), <stem>_check.png (inputs_picture) and <stem>_estimated.txt (which networks and weights).
    Pass them back with --source <stem>.png --source-pose <stem>_keypoints.csv --source-parsing <stem>_parsing.png."""
    keypoints = np.where(inputs.keypoints == -1, -1, np.round(inputs.keypoints)).astype(np.int64)
    written = [write_image(folder / f"{stem}.png", inputs.image)]
    csv = folder / f"{stem}_keypoints.csv"
    write_annotations(csv, {f"{stem}.png": keypoints})
    written.append(csv)
    if inputs.labels is not None:
        written.append(write_image(folder / f"{stem}_parsing.png", inputs.labels, rgb=False))
    written.append(write_image(folder / f"{stem}_check.png", inputs_picture(inputs)))
    warning = ["WARNING: made with randomly initialised weights; the estimates mean nothing"] if inputs.random else []
    written.append(write_text(folder / f"{stem}_estimated.txt", "\n".join(warning + inputs.notes) + "\n"))
    return written
