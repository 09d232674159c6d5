"""The people the app starts from: the dataset's test people and poses, and a person made from an uploaded photo.

The galleries are evenly spaced through the test annotation CSV (data.annotation_test), among the rows whose pose
the model accepts (data.pose_files.check_pose): `count` people (image, keypoints, parsing map) from the first row
on, and `count` poses half a step further on, so that the two galleries show different rows.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.annotations import read_annotations
from data.datasets import stem
from data.pose_files import PoseError, check_pose
from data.visual import read_image
from photos.inputs import keypoint_estimator, photo_inputs, schp_parser
from utils.config import Config
from utils.errors import InputError
from utils.io import read_image as read_image_file
from utils.weights import MissingWeightsError, find_weights, weights_info


class GalleryError(InputError):
    """The dataset's test split cannot fill the galleries; the message names the file."""


@dataclass
class Person:
    """A source person in the model's frame."""

    name: str
    image: np.ndarray  # (H,W,3) uint8 RGB
    keypoints: np.ndarray  # (18,2) float32 (y, x), -1 missing
    labels: np.ndarray | None  # (H,W) uint8 CIHP labels; None: the checkpoint's SPATN* predicts the parsing
    random: bool = False  # estimated by randomly initialised networks: what is rendered from it means nothing


def evenly_spaced(items: list, count: int, offset: float = 0.0) -> list:
    """`count` items (all when there are fewer) at positions (i + offset) * len / count, i = 0 .. count - 1."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int((i + offset) * step)] for i in range(count)]


def test_split(cfg: Config, root: Path) -> tuple[Path, Path, Path]:
    """(image folder, annotation CSV, parsing folder) of the test split under `root`, as data.loaders reads them."""
    d = cfg.data
    parsing = d.parsing_dir if d.parsing_dir is not None else d.test_dir + d.parsing_suffix
    return root / d.test_dir, root / d.annotation_test, root / parsing


def usable_poses(cfg: Config, csv: Path) -> list[tuple[str, np.ndarray]]:
    """(name, (18,2) float32 keypoints) of the CSV's rows in file order, those check_pose accepts."""
    if not csv.is_file():
        raise GalleryError(f"no test people: {csv} not found (the checkpoint's data.root, or --data-root)")
    frame = tuple(cfg.data.image_size)
    usable = []
    for name, keypoints in read_annotations(csv).items():
        keypoints = keypoints.astype(np.float32)
        try:
            check_pose(keypoints, name, *frame, margin=cfg.data.keypoint_margin)
        except PoseError:
            continue
        usable.append((name, keypoints))
    return usable


def read_person(cfg: Config, root: Path, name: str, keypoints: np.ndarray) -> Person:
    """A test person: the image and its parsing map, each of the model's size, read from the test split. Without a
    parsing map a checkpoint whose SPATN* parses images (model.spatn.input=image) predicts it."""
    images, _, parsings = test_split(cfg, root)
    image, parsing = read_image(images / name), parsings / f"{stem(name)}.png"
    if cfg.model.spatn.input == "image" and not parsing.is_file():
        labels = None
    else:
        labels = read_image_file(parsing, cv2.IMREAD_UNCHANGED)
    frame = tuple(cfg.data.image_size)
    for path, picture in ((images / name, image), (parsing, labels)):
        size = frame if picture is None else picture.shape[:2]
        if size != frame:
            raise GalleryError(f"{path}: {size[0]}x{size[1]}, but the model's frame is {frame[0]}x{frame[1]}")
    return Person(name, image, keypoints, labels)


def test_gallery(cfg: Config, root: Path, count: int) -> tuple[list[Person], list[tuple[str, np.ndarray]]]:
    """`count` test people and `count` test poses (module docstring)."""
    usable = usable_poses(cfg, test_split(cfg, root)[1])
    if not usable:
        raise GalleryError(f"no test people: no row of {test_split(cfg, root)[1]} has a pose the model accepts")
    people = [read_person(cfg, root, name, kp) for name, kp in evenly_spaced(usable, count)]
    return people, evenly_spaced(usable, count, offset=0.5)


# ------------------------------------------------------------------------------------------------- uploads


class PhotoEstimators:
    """The networks that make a source of an uploaded photo, as infer.py does (photos.inputs): its keypoints
    (MediaPipe or OpenPose) and, unless the checkpoint's SPATN* parses it, its parsing (SCHP). Built at the first
    upload and kept.

    keypoints: "auto" (MediaPipe when it is installed, needing no download; else OpenPose), "mediapipe" or
    "openpose"; keypoint_weights / parser_weights: "published" (the torch hub cache), a path, or "random" (tests).
    """

    def __init__(self, keypoints: str, keypoint_weights: str, parser_weights: str, spatn_parses: bool,
                 device: str | None = None):
        if keypoints == "auto":
            keypoints = "mediapipe" if importlib.util.find_spec("mediapipe") else "openpose"
        self.backend, self.keypoint_weights, self.parser_weights = keypoints, keypoint_weights, parser_weights
        self.spatn_parses, self.device = spatn_parses, device
        self._keypoints, self._parser = None, None

    def missing(self) -> list[str]:
        """What an upload would lack, each with how to get it (cheap checks: nothing is loaded)."""
        lacking = []
        if self.backend == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
            lacking.append("MediaPipe, the keypoint estimator (`make photos` installs it)")
        if self.backend == "openpose":
            lacking += weights_missing("openpose_body_coco", self.keypoint_weights, "OpenPose, the keypoint estimator")
        if not self.spatn_parses:
            lacking += weights_missing("schp_lip", self.parser_weights, "SCHP, the human parser")
        return lacking

    def person(self, photo: np.ndarray, path: Path, frame: tuple[int, int], margin: float) -> Person:
        """A photo (photos.inputs.read_photo's) framed, its keypoints and parsing estimated (photos.inputs' checks
        and refusals); `path` names it."""
        if self._keypoints is None:
            self._keypoints = keypoint_estimator(self.backend, self.keypoint_weights, self.device)
        if self._parser is None and not self.spatn_parses:
            self._parser = schp_parser(self.parser_weights, self.device)
        inputs = photo_inputs(photo, path, frame, self._keypoints, self._parser, margin)
        return Person(path.name, inputs.image, inputs.keypoints, inputs.labels, inputs.random)


def weights_missing(name: str, weights: str | os.PathLike, role: str) -> list[str]:
    """[what is missing and how to get it] when `weights` ("published", a path or "random") of the known weights
    `name` names no file here; else []."""
    if weights == "random":
        return []
    try:
        find_weights(name, None if weights == "published" else weights)
    except MissingWeightsError:
        if weights != "published":
            return [f"{role}: its weights file {weights} does not exist"]
        return [f"{role}: its weights {weights_info(name).filename} (`python scripts/download_weights.py {name}`)"]
    return []
