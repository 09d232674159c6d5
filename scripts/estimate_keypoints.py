"""Keypoints of your own images with the built-in OpenPose estimator (metrics/openpose.py: the CMU OpenPose COCO body
model and PATN's tool/compute_coordinates.py extraction), written as an annotation CSV (name:keypoints_y:keypoints_x,
18 joints, -1 = missing), the format of the release's fasion-resize-annotation-*.csv.

    python scripts/estimate_keypoints.py datasets/mine/train --out datasets/mine/fasion-resize-annotation-train.csv
    python scripts/estimate_keypoints.py a.jpg b.png --out poses.csv --device cuda --batch-size 16

IMAGES are folders (their .jpg/.jpeg/.png/.bmp files, sorted by name) and image files; rows are keyed by file name,
so two inputs with one name are an error. Weights: body_pose_model.pth from the torch hub cache (fetch it with
`python scripts/download_weights.py openpose_body_coco`), `--weights PATH`, or `--weights random` (tests only: the
keypoints mean nothing). Consecutive images of one size go through the network together, --batch-size at a time.
The CSV is written once every image is done, through a temporary file: an error leaves an existing --out as it was.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data.annotations import write_annotations
from metrics.openpose import BOXSIZE, SCALES, OpenPoseEstimator, parse_scales
from utils.cli import run_main
from utils.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image folders and/or image files")
    p.add_argument("--out", required=True, help="annotation CSV to write")
    p.add_argument("--weights", default="published",
                   help="path of body_pose_model.pth, 'published' (the torch hub cache) or 'random' (tests only)")
    p.add_argument("--batch-size", type=int, default=8, help="images per network call")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--boxsize", type=int, default=BOXSIZE, help="PATN: 368 (other values are not the protocol)")
    p.add_argument("--scales", type=parse_scales, default=SCALES, help="PATN: 0.5,1,1.5,2")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def list_images(inputs: list[str]) -> list[Path]:
    """Files of the folders (sorted) and the named files, in argument order; InputError on a missing input, an
    empty folder, or two images with the same file name (the CSV's key)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(f for f in item.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{item}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise InputError(f"{item}: no such image or folder")
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise InputError(f"{f}: same file name as {seen[f.name]} (rows of the CSV are keyed by file name)")
        if ":" in f.name:
            raise InputError(f"{f}: a file name with ':' cannot be a row of the ':'-separated CSV")
        seen[f.name] = f
    return files


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot be read as an image")
    return np.ascontiguousarray(image[..., ::-1])  # (H,W,3) RGB, the estimator's input


def same_size_batches(files: list[Path], batch_size: int):
    """(files, uint8 (B,H,W,3)) runs of consecutive images of one size, at most batch_size long."""
    names: list[Path] = []
    images: list[np.ndarray] = []
    for f in files:
        image = read_rgb(f)
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield names, np.stack(images)
            names, images = [], []
        names.append(f)
        images.append(image)
    if images:
        yield names, np.stack(images)


def write_csv_atomically(path: Path, keypoints: dict[str, np.ndarray]) -> None:
    """write_annotations through a temporary file in the same folder, renamed over `path` when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write_annotations(tmp, keypoints)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    files = list_images(args.images)
    estimator = OpenPoseEstimator(args.weights, args.device, args.boxsize, args.scales, args.batch_size)
    keypoints: dict[str, np.ndarray] = {}
    with tqdm(total=len(files), desc="openpose", disable=args.quiet, dynamic_ncols=True) as bar:
        for names, images in same_size_batches(files, args.batch_size):
            keypoints.update(zip((f.name for f in names), estimator(images)))
            bar.update(len(names))
    out = Path(args.out)
    write_csv_atomically(out, keypoints)
    found = sum(int((kp[:, 0] != -1).any()) for kp in keypoints.values())
    print(f"wrote {out}: {len(keypoints)} images, a person found in {found}; {estimator.protocol}")
    return keypoints


if __name__ == "__main__":
    run_main(main)
