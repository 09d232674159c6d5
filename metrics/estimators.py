"""Pluggable pose estimators for PCKh: anything callable as

    estimator(images: np.ndarray uint8 (B,H,W,3) RGB) -> keypoints (B,18,2) (y, x) in pixels, -1 for a missing joint

(numpy or torch), in OpenPose-COCO joint order (DESIGN.md section 3). The published numbers use OpenPose (PATN's
tool/compute_coordinates.py); wrap whichever estimator you have in such a callable and pass it to evaluate.py as
`--pose-estimator package.module:attr`. `attr` may be the callable itself or a class constructed without arguments,
e.g. `metrics.mediapipe_pose:MediaPipePose` (MediaPipe's landmarker, the optional extra; not the published protocol).
Predictions are written as an annotation CSV (data.annotations' format) keyed by the generated image's file name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from data.annotations import write_annotations
from data.pose import NUM_JOINTS
from utils.errors import InputError


@runtime_checkable
class PoseEstimator(Protocol):
    def __call__(self, images: np.ndarray) -> np.ndarray | torch.Tensor: ...


class EstimatorError(InputError):
    """An estimator that cannot be loaded or returns something other than (B,18,2) keypoints."""


def load_estimator(spec: str) -> PoseEstimator:
    """'module.path:attr' -> a callable estimator (a class is instantiated without arguments)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EstimatorError(f"--pose-estimator {spec!r}: expected 'module.path:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise EstimatorError(f"--pose-estimator {spec!r}: cannot import {module_name!r}: {err}") from err
    if not hasattr(module, attr):
        raise EstimatorError(f"--pose-estimator {spec!r}: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise EstimatorError(f"--pose-estimator {spec!r}: {attr!r} is not callable")
    return obj


def normalise_keypoints(raw: np.ndarray | torch.Tensor, batch: int, source: str) -> np.ndarray:
    """An estimator's output -> (B,18,2) int64, rounded; a joint with a negative coordinate becomes (-1, -1)."""
    kp = np.asarray(raw.detach().cpu() if torch.is_tensor(raw) else raw, dtype=np.float64)
    if kp.shape != (batch, NUM_JOINTS, 2):
        raise EstimatorError(f"{source}: returned keypoints of shape {kp.shape}, expected ({batch}, {NUM_JOINTS}, 2)")
    if not np.isfinite(kp).all():
        raise EstimatorError(f"{source}: returned non-finite keypoints (use -1 for a missing joint)")
    kp = np.round(kp).astype(np.int64)
    kp[(kp < 0).any(axis=-1)] = -1
    return kp


def predict_keypoints(
    estimator: PoseEstimator, batches: Iterable[tuple[list[str], np.ndarray]], source: str = "pose estimator"
) -> dict[str, np.ndarray]:
    """Run the estimator over (names, uint8 (B,H,W,3)) batches -> {name: (18,2) int64 (y, x)}."""
    out: dict[str, np.ndarray] = {}
    for names, images in batches:
        kp = normalise_keypoints(estimator(images), len(names), source)
        out.update(zip(names, kp))
    return out


def write_predictions(path: str | Path, keypoints: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    write_annotations(path, keypoints)
    return path
