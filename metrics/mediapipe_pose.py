"""MediaPipe's pose landmarker as a COCO-18 keypoint estimator: keypoints of your own photos without a download.

mediapipe 0.10.21 is the last release with the `solutions.pose` API, and its "full" landmark model
(model_complexity=1, BlazePose GHUM) ships inside the wheel, so nothing is fetched at run time (the lite and heavy
models would be). It is an optional extra, installed lean (its plain install pins numpy < 2 and pulls
opencv-contrib and jax, none of which the pose solution imports):

    pip install -r requirements-photos.txt && pip install --no-deps mediapipe==0.10.21

33 landmarks (x, y normalised to the image's width and height, a visibility in [0, 1]) -> OpenPose's COCO-18 order
(data.pose): a landmark counts when its visibility is >= `visibility` (0.5) and it lies inside the frame; the neck,
which MediaPipe has not, is the mean of the two shoulders when both count. MediaPipe's "left" is the person's left,
as COCO's. Pixel coordinates follow the pixel-centre convention of data.pose: y = y_norm * H - 0.5 (a normalised
coordinate spans the image's edges, 0 to H).

The solution finds one person per call (the most prominent). `people` also looks for a second one: it blanks the
first person's box (the counted landmarks' extent, grown by a quarter of its size on every side) with the image's
border colour and asks again.

MediaPipe's native code writes notices to the process's stderr (a protobuf complaint at import, TFLite and absl
lines as its graph opens its models and at the first person) that would bury a command's one `error:` line; its
import, its construction (up to a first blank image, by which time every model is open) and its calls run with
file descriptor 2 pointed at the null device.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np

from data.pose import NUM_JOINTS
from data.visual import border_colour
from utils.errors import InputError

MEDIAPIPE_VERSION = "0.10.21"
INSTALL = f"pip install -r requirements-photos.txt && pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}"
VISIBILITY = 0.5
NUM_LANDMARKS = 33
NECK = 1
# MediaPipe landmark of each COCO-18 joint (-1: the neck, the mean of the shoulders 11 and 12):
# nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee,
# l-ankle, r-eye, l-eye, r-ear, l-ear
COCO_FROM_MEDIAPIPE = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
SHOULDERS = (11, 12)
BOX_GROWTH = 0.25  # of the first person's box, on every side, when it is blanked to look for a second


class MediaPipeMissingError(InputError):
    """mediapipe (the optional extra) is not installed, or is not the release whose API this module uses."""


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the block (what native code writes there is dropped)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_pose_solution():
    """mediapipe.solutions.pose, or MediaPipeMissingError saying how to install it."""
    try:
        with native_stderr_silenced():
            import mediapipe
            from google import protobuf
            from mediapipe.python.solutions import pose
    except ImportError as err:
        raise MediaPipeMissingError(f"the MediaPipe keypoint backend needs mediapipe {MEDIAPIPE_VERSION} ({err}); "
                                    f"install it with `{INSTALL}`, or use the OpenPose backend") from None
    if mediapipe.__version__ != MEDIAPIPE_VERSION:
        raise MediaPipeMissingError(f"mediapipe {mediapipe.__version__} is installed; this backend needs "
                                    f"{MEDIAPIPE_VERSION} (the last with the solutions API): `{INSTALL}`")
    if int(protobuf.__version__.split(".")[0]) >= 7:  # 7 dropped FieldDescriptor.label, which solutions reads
        raise MediaPipeMissingError(f"protobuf {protobuf.__version__} is installed; mediapipe {MEDIAPIPE_VERSION} "
                                    f"needs protobuf < 7: `{INSTALL}`")
    return pose


def coco_keypoints(landmarks: np.ndarray, height: int, width: int, visibility: float = VISIBILITY) -> np.ndarray:
    """(33,3) [x_norm, y_norm, visibility] -> (18,2) float32 (y, x) in pixels, -1 for a joint that does not count
    (visibility below the threshold, or outside the frame)."""
    y = landmarks[:, 1] * height - 0.5
    x = landmarks[:, 0] * width - 0.5
    counts = ((landmarks[:, 2] >= visibility) & (y >= -0.5) & (y < height - 0.5)
              & (x >= -0.5) & (x < width - 0.5))  # (33,)
    points = np.where(counts[:, None], np.stack([y, x], axis=1), -1.0)  # (33,2)
    out = points[list(COCO_FROM_MEDIAPIPE)].astype(np.float32)  # (18,2); row 1 is landmark -1's, replaced below
    out[NECK] = points[list(SHOULDERS)].mean(axis=0) if counts[list(SHOULDERS)].all() else -1.0
    return out


def landmark_box(landmarks: np.ndarray, height: int, width: int, visibility: float = VISIBILITY
                 ) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) pixel box around the counted landmarks, grown by BOX_GROWTH and clipped to the
    image (bottom and right exclusive); None when no landmark counts."""
    counted = landmarks[landmarks[:, 2] >= visibility]
    if len(counted) == 0:
        return None
    y, x = counted[:, 1] * height, counted[:, 0] * width
    grow_y, grow_x = BOX_GROWTH * (y.max() - y.min()), BOX_GROWTH * (x.max() - x.min())
    top, bottom = int(max(0, np.floor(y.min() - grow_y))), int(min(height, np.ceil(y.max() + grow_y)))
    left, right = int(max(0, np.floor(x.min() - grow_x))), int(min(width, np.ceil(x.max() + grow_x)))
    return top, left, bottom, right


class MediaPipePose:
    """uint8 RGB (B,H,W,3) -> (B,18,2) float32 (y, x), -1 missing: a metrics.estimators callable (constructed
    without arguments), and `people(image)` for one photo. Static-image mode (no tracking between calls),
    model_complexity=1 (the model the wheel ships)."""

    random = False  # its weights are always the trained ones

    def __init__(self, visibility: float = VISIBILITY, min_detection_confidence: float = 0.5):
        pose = import_pose_solution()
        self.visibility = visibility
        with native_stderr_silenced():
            self._pose = pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                   min_detection_confidence=min_detection_confidence)
            # the graph opens its models in its own threads, which log as they do: one blank image waits for them
            self._pose.process(np.zeros((64, 64, 3), np.uint8))
        self.protocol = (f"MediaPipe pose landmarker {MEDIAPIPE_VERSION} (full model, static images), visibility >= "
                         f"{visibility:g}, neck = mean of the shoulders")

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(H,W,3) uint8 RGB -> (33,3) [x_norm, y_norm, visibility] of the person found, or None."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"mediapipe: expected a uint8 RGB image (H,W,3), got {image.dtype} {image.shape}")
        with native_stderr_silenced():
            result = self._pose.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return None
        return np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float64)

    def people(self, image: np.ndarray, limit: int = 2) -> list[np.ndarray]:
        """Up to `limit` people, each (18,2) float32 (y, x): the person found, then the one found with the earlier
        ones' boxes blanked, and so on. Enough to tell one person from several."""
        h, w = image.shape[:2]
        fill = border_colour(image)  # a blank that looks like the background
        found, work = [], image
        while len(found) < limit:
            landmarks = self.landmarks(work)
            box = None if landmarks is None else landmark_box(landmarks, h, w, self.visibility)
            if box is None:
                break
            found.append(coco_keypoints(landmarks, h, w, self.visibility))
            work = work.copy()
            work[box[0] : box[2], box[1] : box[3]] = fill
        return found

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        out = np.full((len(images), NUM_JOINTS, 2), -1.0, np.float32)
        for i, image in enumerate(images):
            landmarks = self.landmarks(image)
            if landmarks is not None:
                out[i] = coco_keypoints(landmarks, *image.shape[:2], self.visibility)
        return out

    def close(self) -> None:
        self._pose.close()
