"""OpenPose JSON -> the release's annotation CSV (`name:keypoints_y:keypoints_x`, 18 COCO joints, -1 missing).

    python scripts/openpose_to_csv.py openpose_json/train --out fasion-resize-annotation-train.csv \
        --images datasets/deepfashion/train

Reads every `<stem>_keypoints.json` (OpenPose `--write_json`) in the given folders. Each person's
"pose_keypoints_2d" is a flat [x0, y0, c0, x1, y1, c1, ...] list in pixels of the image OpenPose saw; BODY_25
(25 joints) and COCO (18 joints) outputs are told apart by length (`--format` forces one). BODY_25 drops MidHip
(index 8) and the six foot joints to give the 18 COCO joints. When a file holds several people, the one with the
highest summed confidence over those 18 joints is kept. A joint whose confidence is below `--min-confidence` (or
exactly 0, OpenPose's "not found") becomes -1.

Coordinates are mapped from the source image size (`--src-size H W` for all images, or each image's own size
read from `--images`) to the dataset frame (`--dst-size H W`) with pixel centres aligned, x' = (x + 0.5) * W'/W
- 0.5, as cv2.resize and PIL map pixels; then rounded half up to integers. A joint outside the frame becomes -1.
Without --dst-size the frame is the source size; without either, coordinates are only rounded. Rescaling covers
images that were resized, not cropped: PATN's 256x176 DeepFashion images are 256x256 ones with 40 columns cut
from each side, so run OpenPose on the dataset's own images (then no --dst-size is needed).

The row's name is `<stem><--image-ext>` (default `.jpg`). A file with nobody detected gives an all -1 row, so
every image keeps an annotation; the count is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from data.annotations import write_annotations
from data.pose import NUM_JOINTS
from data.pose_files import OpenPoseError, read_openpose_json, select_person
from utils.cli import run_main
from utils.io import ensure_writable_folder

JSON_SUFFIX = "_keypoints.json"


def to_frame(joints: np.ndarray, min_confidence: float, src_size: tuple[int, int] | None,
             dst_size: tuple[int, int] | None) -> np.ndarray:
    """(18, 3) [x, y, c] in the source image -> (18, 2) int64 (y, x) in the dataset frame, -1 where missing.

    Scaling aligns pixel centres (pixel i covers [i - 0.5, i + 0.5)), so a joint keeps its place in the picture
    when the image is resized the usual way; rounding is half up.
    """
    x, y, c = joints[:, 0], joints[:, 1], joints[:, 2]
    if src_size is not None and dst_size is not None:
        y = (y + 0.5) * (dst_size[0] / src_size[0]) - 0.5
        x = (x + 0.5) * (dst_size[1] / src_size[1]) - 0.5
    yi = np.floor(y + 0.5).astype(np.int64)
    xi = np.floor(x + 0.5).astype(np.int64)
    # OpenPose writes (0, 0, 0) for a joint it did not find: c == 0 is missing whatever the threshold.
    keep = (c >= min_confidence) & (c > 0) & (yi >= 0) & (xi >= 0)
    frame = dst_size or src_size
    if frame is not None:
        keep &= (yi < frame[0]) & (xi < frame[1])
    return np.where(keep[:, None], np.stack([yi, xi], axis=1), -1)  # (18, 2)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image, from its header only."""
    with Image.open(path) as im:
        return im.height, im.width


def json_files(folders: list[Path]) -> dict[str, Path]:
    """stem -> JSON path over all folders, sorted by stem; a stem in two folders is an error."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise OpenPoseError(f"{folder}: not a folder")
        paths = sorted(folder.glob("*.json"))
        if not paths:
            raise OpenPoseError(f"{folder}: no .json files")
        for path in paths:
            stem = path.name[: -len(JSON_SUFFIX)] if path.name.endswith(JSON_SUFFIX) else path.stem
            if stem in found:
                raise OpenPoseError(f"{path}: image stem {stem!r} also comes from {found[stem]}")
            found[stem] = path
    return dict(sorted(found.items()))


def convert(folders: list[Path], fmt: str = "auto", min_confidence: float = 0.1,
            src_size: tuple[int, int] | None = None, images: Path | None = None,
            dst_size: tuple[int, int] | None = None, image_ext: str = ".jpg") -> tuple[dict[str, np.ndarray], int]:
    """All JSON files -> ({image name: (18, 2) int64 (y, x)}, number of files with nobody detected)."""
    if image_ext and not image_ext.startswith("."):
        image_ext = "." + image_ext
    rows, empty = {}, 0
    for stem, path in json_files(folders).items():
        name = stem + image_ext
        size = src_size
        if images is not None:
            image = images / name
            if not image.is_file():
                raise OpenPoseError(f"{path}: its image {image} does not exist (see --image-ext)")
            size = image_size(image)
        person = select_person(read_openpose_json(path, fmt))
        if person is None:
            empty += 1
            rows[name] = np.full((NUM_JOINTS, 2), -1, dtype=np.int64)
        else:
            rows[name] = to_frame(person, min_confidence, size, dst_size)
    return rows, empty


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json_dirs", nargs="+", type=Path, help="folders of OpenPose <stem>_keypoints.json files")
    p.add_argument("--out", type=Path, required=True, help="annotation CSV to write")
    p.add_argument("--format", choices=["auto", "body25", "coco"], default="auto",
                   help="keypoint layout; auto tells them apart by length")
    p.add_argument("--min-confidence", type=float, default=0.1, help="joints below this confidence become -1")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--src-size", type=int, nargs=2, metavar=("H", "W"),
                      help="size of the images OpenPose ran on (all the same)")
    size.add_argument("--images", type=Path, help="folder of the images OpenPose ran on; each one's size is read")
    p.add_argument("--dst-size", type=int, nargs=2, metavar=("H", "W"),
                   help="dataset frame, e.g. 256 176 (DeepFashion) or 128 64 (Market)")
    p.add_argument("--image-ext", default=".jpg", help="extension of the image names written to the CSV")
    args = p.parse_args(argv)
    if args.dst_size is not None and args.src_size is None and args.images is None:
        p.error("--dst-size needs the source size: --src-size H W or --images DIR")
    for flag, value in (("--src-size", args.src_size), ("--dst-size", args.dst_size)):
        if value is not None and min(value) <= 0:
            p.error(f"{flag} must be positive, got {value}")

    ensure_writable_folder(args.out.parent)
    rows, empty = convert(args.json_dirs, args.format, args.min_confidence,
                          tuple(args.src_size) if args.src_size else None, args.images,
                          tuple(args.dst_size) if args.dst_size else None, args.image_ext)
    write_annotations(args.out, rows)
    visible = sum(int((kp[:, 0] != -1).sum()) for kp in rows.values())
    print(f"{args.out}: {len(rows)} images, {visible / max(len(rows), 1):.1f} visible joints per image, "
          f"{empty} with nobody detected (all -1)")


if __name__ == "__main__":
    run_main(main)
