"""A dataset from a folder of your own photos, in the layout the loaders read (the config's file names):

    python scripts/prepare_photos.py photos/ --out datasets/mine --config configs/deepfashion.yaml
    python scripts/prepare_photos.py photos/ --out datasets/mine --config configs/synthetic.yaml \
        --keypoints mediapipe --split test

For each photo (.jpg/.jpeg/.png/.bmp, sorted by name), as infer.py does for its source (photos.inputs): the person
is found (keypoints by OpenPose or MediaPipe), framed to the config's data.image_size as DeepFashion's images are,
and parsed by SCHP. Written under --out, for the --split (train by default):
  <split_dir>/<stem>.png            the framed photo
  <split_dir>_parsing/<stem>.png    its CIHP labels (or <parsing_dir>/ when the config sets data.parsing_dir)
  <annotation CSV>                  one row per photo kept (the release's format, integer (y, x), -1 missing)
  <pairs CSV>                       every ordered pair of two photos of the same person
  prepare_photos_report.csv         name,status,reason for every photo: done, kept (done before) or refused
The person a photo shows is read from its name as scripts/make_pairs.py reads DeepFashion's: everything before the
last '_' (anna_1.jpg and anna_2.jpg are one person; a name without '_' is a person of its own, with no pairs).

Resumable: a photo whose framed image and parsing map are there, complete and of the right size, and whose row is
in the annotation CSV, is kept without running anything. The CSV is rewritten (atomically) every 20 photos and at
the end, also after an error or an interruption, so a rerun redoes at most those 20. A refused photo (no person,
several people, too small, too few joints, not an image) is listed with its reason and retried by the next run.
`--parser-weights random` / `--keypoint-weights random`: randomly initialised networks, for offline tests; the
report then says so, and the maps mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data.annotations import AnnotationError, read_annotations, write_annotations, write_pairs
from data.parsing import NUM_CIHP
from photos.inputs import (
    KEYPOINT_BACKENDS,
    PhotoError,
    keypoint_estimator,
    photo_inputs,
    read_photo,
    schp_parser,
)
from utils.cli import run_main
from utils.config import Config, load_config
from utils.errors import InputError
from utils.io import ImageReadError, ensure_writable_folder, read_image, write_csv, write_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SAVE_EVERY = 20
REPORT = "prepare_photos_report.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", type=Path, help="folder of photos, one person each")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write (the config's data.root)")
    p.add_argument("--config", required=True, help="config whose data.image_size and file names the layout takes")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of --config")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--keypoints", choices=KEYPOINT_BACKENDS, default="openpose")
    p.add_argument("--keypoint-weights", default="published", help="OpenPose's: published, a path, or random")
    p.add_argument("--parser-weights", default="published", help="SCHP's: published, a path, or random")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p.parse_intermixed_args(argv)


def list_photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of photos")
    photos = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise InputError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} photos in it")
    stems = [f.stem for f in photos]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise InputError(f"{folder}: photos {twice[0]}.* share a name stem (each becomes <stem>.png)")
    if any(":" in s or "," in s for s in stems):
        raise InputError(f"{folder}: a photo name with ':' or ',' cannot be a row of the release's CSVs")
    return photos


class Layout:
    """Where one split of the config's layout lives under `root`, and whether a photo of it is done."""

    def __init__(self, cfg: Config, root: Path, split: str):
        d = cfg.data
        image_dir = d.train_dir if split == "train" else d.test_dir
        self.frame = tuple(d.image_size)
        self.images = ensure_writable_folder(root / image_dir)
        self.parsing = ensure_writable_folder(root / (d.parsing_dir or image_dir + d.parsing_suffix))
        self.annotations = root / (d.annotation_train if split == "train" else d.annotation_test)
        self.pairs = root / (d.pairs_train if split == "train" else d.pairs_test)

    def kept_rows(self) -> dict[str, np.ndarray]:
        """The rows of an earlier run's annotation CSV (none when there is no readable one)."""
        try:
            return read_annotations(self.annotations) if self.annotations.is_file() else {}
        except AnnotationError as err:
            print(f"note: {err}; every photo is redone", file=sys.stderr)
            return {}

    def done(self, name: str, rows: dict[str, np.ndarray]) -> bool:
        """The photo's row, framed image and parsing map are there, complete and of the frame's size."""
        if name not in rows:
            return False
        try:
            image = read_image(self.images / name)
            labels = read_image(self.parsing / name, cv2.IMREAD_UNCHANGED)
        except ImageReadError:
            return False
        return (image.shape[:2] == self.frame and labels.shape == self.frame and labels.dtype == np.uint8
                and int(labels.max()) < NUM_CIHP)


def person_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Every ordered pair of two names of one person (the stem before its last '_'), persons sorted."""
    people: dict[str, list[str]] = {}
    for name in sorted(names):
        stem = Path(name).stem
        people.setdefault(stem.rsplit("_", 1)[0] if "_" in stem else stem, []).append(name)
    return [pair for person in sorted(people) for pair in itertools.permutations(people[person], 2)]


def prepare(args: argparse.Namespace, layout: Layout, photos: list[Path]) -> tuple[dict, list[tuple[str, str, str]]]:
    """Every photo done or kept: (rows of the annotation CSV, report rows (name, status, reason))."""
    previous = layout.kept_rows()
    rows: dict[str, np.ndarray] = {}
    report: list[tuple[str, str, str]] = []
    estimator = parser = None  # built at the first photo that needs them: a finished dataset loads no network
    try:
        for i, path in enumerate(tqdm(photos, desc="photos", dynamic_ncols=True)):
            name = f"{path.stem}.png"
            if layout.done(name, previous):
                rows[name] = previous[name]
                report.append((path.name, "kept", "done by an earlier run"))
                continue
            try:
                photo = read_photo(path, layout.frame)
                if estimator is None:
                    estimator = keypoint_estimator(args.keypoints, args.keypoint_weights, args.device)
                    parser = schp_parser(args.parser_weights, args.device)
                inputs = photo_inputs(photo, path, layout.frame, estimator, parser)
            except PhotoError as err:
                report.append((path.name, "refused", str(err)))
                continue
            write_image(layout.images / name, inputs.image)
            write_image(layout.parsing / name, inputs.labels, rgb=False)
            rows[name] = np.where(inputs.keypoints == -1, -1, np.round(inputs.keypoints)).astype(np.int64)
            report.append((path.name, "done", "; ".join(inputs.notes)))
            if (i + 1) % SAVE_EVERY == 0:
                write_annotations(layout.annotations, {**previous, **rows})
    finally:  # what is done stays done, whatever stopped the loop
        write_annotations(layout.annotations, {**previous, **rows})
    return rows, report


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    """Returns {status: [photo names]}."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    photos = list_photos(args.photos)
    out = ensure_writable_folder(args.out)
    layout = Layout(cfg, out, args.split)
    rows, report = prepare(args, layout, photos)
    write_annotations(layout.annotations, rows)  # the rows of this folder's photos only
    pairs = person_pairs(list(rows))
    write_pairs(layout.pairs, pairs)
    write_csv(out / REPORT, ("name", "status", "reason"), report)
    by_status: dict[str, list[str]] = {}
    for name, status, _ in report:
        by_status.setdefault(status, []).append(name)
    for name, status, reason in report:
        if status == "refused":
            print(f"refused {name}: {reason}")
    print(f"{out}: {len(rows)} photos ({len(by_status.get('done', []))} done now, {len(by_status.get('kept', []))} "
          f"kept), {len(by_status.get('refused', []))} refused, {len(pairs)} pairs; report in {out / REPORT}")
    return by_status


if __name__ == "__main__":
    run_main(main)
