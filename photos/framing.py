"""Fitting pictures into the model's frame: a whole picture (`fit_into`, infer.py --resize) and a person of a photo
(`frame_person`), framed the way DeepFashion's images are: the person centred, at full height, the rest padded.

A person's box comes from their keypoints (y, x) and the torso length T (neck to the mean of the present hips,
which a usable pose has): from the highest joint minus HEAD_MARGIN T (the eyes and ears are the highest joints;
the crown and hair lie above them) to the lowest plus FOOT_MARGIN T (an ankle is above the sole), sideways from the
outermost joints by SIDE_MARGIN T (a hand reaches beyond its wrist), clipped to the photo. The crop is the smallest
box of the frame's aspect ratio that holds it, centred on it; what lies outside the photo is padded with the
photo's border colour (data.visual.border_colour). The crop is then resized into the frame as `fit_image` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.pose import HIPS, NECK, is_missing
from data.visual import border_colour

HEAD_MARGIN = 0.45
FOOT_MARGIN = 0.2
SIDE_MARGIN = 0.3
MIN_SCALE = 0.5  # a crop must have at least half the frame's height: no person is enlarged more than twice


@dataclass(frozen=True)
class Fit:
    """Where an (h, w) picture lands in the model's frame: scaled by (scale_y, scale_x) to (height, width),
    then shifted by (top, left). The two scales differ only by the rounding of the scaled size."""

    scale_y: float
    scale_x: float
    height: int
    width: int
    top: int
    left: int


def fit_into(size: tuple[int, int], frame: tuple[int, int]) -> Fit:
    """The largest aspect-preserving scale of `size` (h, w) that fits `frame` (H, W), centred."""
    (h, w), (fh, fw) = size, frame
    s = min(fh / h, fw / w)
    nh, nw = min(fh, max(1, round(h * s))), min(fw, max(1, round(w * s)))
    return Fit(scale_y=nh / h, scale_x=nw / w, height=nh, width=nw, top=(fh - nh) // 2, left=(fw - nw) // 2)


def fit_keypoints(keypoints: np.ndarray, fit: Fit) -> np.ndarray:
    """(18,2) (y, x) in the picture -> in the frame; missing joints stay -1. Pixel centres map as in cv2.resize."""
    out = keypoints.astype(np.float32).copy()
    present = ~is_missing(keypoints)
    out[present, 0] = (keypoints[present, 0] + 0.5) * fit.scale_y - 0.5 + fit.top
    out[present, 1] = (keypoints[present, 1] + 0.5) * fit.scale_x - 0.5 + fit.left
    return out


def fit_image(image: np.ndarray, fit: Fit, frame: tuple[int, int], pad: np.ndarray) -> np.ndarray:
    """(h,w,3) uint8 -> (H,W,3): area-resampled when shrinking, bilinear when enlarging, padded with `pad`."""
    shrink = fit.height < image.shape[0]
    resized = cv2.resize(image, (fit.width, fit.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    canvas = np.empty((*frame, 3), dtype=np.uint8)
    canvas[:] = pad
    canvas[fit.top : fit.top + fit.height, fit.left : fit.left + fit.width] = resized
    return canvas


def fit_labels(labels: np.ndarray, fit: Fit, frame: tuple[int, int]) -> np.ndarray:
    """(h,w) label map -> (H,W): nearest neighbour (pixel-centre exact, never a label that was not there), 0 pad."""
    resized = cv2.resize(labels, (fit.width, fit.height), interpolation=cv2.INTER_NEAREST_EXACT)
    canvas = np.zeros(frame, dtype=labels.dtype)
    canvas[fit.top : fit.top + fit.height, fit.left : fit.left + fit.width] = resized
    return canvas




@dataclass(frozen=True)
class Crop:
    """A box of a photo, in whole pixels: rows top .. top + height - 1, columns left .. left + width - 1 (it may
    reach beyond the photo, where it is padded)."""

    top: int
    left: int
    height: int
    width: int


def person_box(keypoints: np.ndarray, height: int, width: int) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) pixel edges of the person of a usable (18,2) pose in an (height, width) photo."""
    present = ~is_missing(keypoints)
    hips = [h for h in HIPS if present[h]]
    if not present[NECK] or not hips:
        raise ValueError("person_box needs the neck and a hip")
    torso = float(np.linalg.norm(keypoints[NECK] - keypoints[hips].mean(axis=0)))
    y, x = keypoints[present, 0], keypoints[present, 1]
    top = max(-0.5, y.min() - HEAD_MARGIN * torso)
    bottom = min(height - 0.5, y.max() + FOOT_MARGIN * torso)
    left = max(-0.5, x.min() - SIDE_MARGIN * torso)
    right = min(width - 0.5, x.max() + SIDE_MARGIN * torso)
    return float(top), float(left), float(bottom), float(right)


def crop_around(box: tuple[float, float, float, float], frame: tuple[int, int]) -> Crop:
    """The smallest crop of the frame's aspect ratio (H : W) holding `box`, centred on it."""
    top, left, bottom, right = box
    fh, fw = frame
    h = max(bottom - top, (right - left) * fh / fw)
    w = h * fw / fh
    cy, cx = (top + bottom) / 2, (left + right) / 2
    height, width = max(1, round(h)), max(1, round(w))
    return Crop(top=round(cy - height / 2 + 0.5), left=round(cx - width / 2 + 0.5), height=height, width=width)


def cut(picture: np.ndarray, crop: Crop, pad: np.ndarray | int) -> np.ndarray:
    """The crop of an (h,w) or (h,w,C) picture, `pad` where it reaches beyond it."""
    out = np.empty((crop.height, crop.width, *picture.shape[2:]), picture.dtype)
    out[:] = pad
    y0, x0 = max(crop.top, 0), max(crop.left, 0)
    y1, x1 = min(crop.top + crop.height, picture.shape[0]), min(crop.left + crop.width, picture.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - crop.top : y1 - crop.top, x0 - crop.left : x1 - crop.left] = picture[y0:y1, x0:x1]
    return out


def crop_keypoints(keypoints: np.ndarray, crop: Crop) -> np.ndarray:
    """(18,2) (y, x) in the photo -> in the crop; missing joints stay -1."""
    out = keypoints.astype(np.float32).copy()
    present = ~is_missing(keypoints)
    out[present] -= np.array([crop.top, crop.left], np.float32)
    return out


@dataclass(frozen=True)
class Framing:
    """A photo's person in the model's frame: the crop of the photo, then its fit into the frame."""

    crop: Crop
    fit: Fit
    frame: tuple[int, int]
    pad: np.ndarray

    def image(self, photo: np.ndarray) -> np.ndarray:
        """(h,w,3) uint8 photo -> (H,W,3) framed."""
        return fit_image(cut(photo, self.crop, self.pad), self.fit, self.frame, self.pad)

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """(h,w) label map of the photo -> (H,W), nearest neighbour, background (0) padding."""
        return fit_labels(cut(labels, self.crop, 0), self.fit, self.frame)

    def keypoints(self, keypoints: np.ndarray) -> np.ndarray:
        """(18,2) (y, x) in the photo -> in the frame."""
        return fit_keypoints(crop_keypoints(keypoints, self.crop), self.fit)


def frame_person(photo: np.ndarray, keypoints: np.ndarray, frame: tuple[int, int]) -> Framing:
    """How the person of a usable pose in `photo` (h,w,3) goes into the model's `frame` (H, W)."""
    crop = crop_around(person_box(keypoints, *photo.shape[:2]), frame)
    return Framing(crop, fit_into((crop.height, crop.width), frame), frame, border_colour(photo))
