"""Pair lists (`from,to`): every ordered pair of two different images of the same person.

    python scripts/make_pairs.py --annotations datasets/deepfashion/fasion-resize-annotation-train.csv \
        --out-dir datasets/deepfashion --prefix fasion-resize --subset train --min-joints 8

Images come from an image folder (`--images`) or the names of an annotation CSV (`--annotations`). The person
of an image is read from its name:
  deepfashion  everything before the last '_': fashionWOMENDressesid0000262902_3back.jpg -> ...id0000262902
               (also the synthetic set's synthid000012_3front.jpg -> synthid000012)
  market       the first field of Market-1501's <id>_c<cam>s<seq>_<frame>_<box>.jpg: 0002_c1s1_000451_03.jpg
               -> 0002; ids -1 (distractors) and 0000 (junk boxes) are left out
`--style auto` picks market when every name has Market's pattern, otherwise deepfashion.

Filters (need --annotations): `--min-joints N` drops images whose annotation has fewer than N visible joints;
`--require-joints 2 5 8 11` drops images missing any of those COCO-18 joints (both shoulders and hips: the filter
PATN's pair script applies);
`--max-pairs-per-person K` keeps a random K of each person's n (n - 1) pairs (`--seed`).

Output, in --out-dir: with `--test-fraction F` (a random share of the persons) or `--split-file` (test person
ids, one per line), `<prefix>-pairs-train.csv` and `<prefix>-pairs-test.csv` with no person in both, and for
--test-fraction the drawn split as `<prefix>-test-persons.txt` (reusable as --split-file). Without either, all
pairs go to `<prefix>-pairs-<--subset>.csv`, e.g. for a release whose train/ and test/ folders are split already.
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

import numpy as np

from data.annotations import read_annotations, write_pairs
from data.pose import NUM_JOINTS, is_missing
from utils.cli import run_main
from utils.errors import InputError
from utils.io import ensure_writable_folder, write_text

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
MARKET_NAME = re.compile(r"^(-?\d+)_c\d+s\d+_\d+_\d+$")  # stem of <id>_c<cam>s<seq>_<frame>_<box>
MARKET_EXCLUDED = {"-1", "0000"}  # Market-1501: -1 distractors, 0000 junk detections


class PairsError(InputError):
    """Bad names, files or arguments; the message names the file or image."""


def detect_style(names: list[str]) -> str:
    """'market' when every name has Market-1501's pattern, 'deepfashion' when every name has a '_'."""
    if names and all(MARKET_NAME.match(Path(n).stem) for n in names):
        return "market"
    for name in names:
        if "_" not in Path(name).stem:
            raise PairsError(f"image {name!r} fits neither style: DeepFashion names are <person>_<view>.jpg, "
                             f"Market names <id>_c<cam>s<seq>_<frame>_<box>.jpg")
    return "deepfashion"


def person_id(name: str, style: str) -> str:
    """The person an image shows, from its file name (see the module docstring)."""
    stem = Path(name).stem
    if style == "market":
        match = MARKET_NAME.match(stem)
        if match is None:
            raise PairsError(f"image {name!r} is not a Market-1501 name <id>_c<cam>s<seq>_<frame>_<box>.jpg")
        return match.group(1)
    if style == "deepfashion":
        if "_" not in stem:
            raise PairsError(f"image {name!r} is not a DeepFashion name <person>_<view>.jpg (no '_')")
        return stem.rsplit("_", 1)[0]
    raise PairsError(f"unknown style {style!r}")


def group_by_person(names: list[str], style: str) -> dict[str, list[str]]:
    """person id -> sorted image names, without Market's distractor and junk ids; persons sorted."""
    groups: dict[str, list[str]] = {}
    for name in names:
        pid = person_id(name, style)
        if style == "market" and pid in MARKET_EXCLUDED:
            continue
        groups.setdefault(pid, []).append(name)
    return {pid: sorted(groups[pid]) for pid in sorted(groups)}


def person_pairs(names: list[str], max_pairs: int | None, rng: np.random.Generator) -> list[tuple[str, str]]:
    """All ordered (a, b), a != b, of one person's images, or a random max_pairs of them (kept in order)."""
    pairs = list(itertools.permutations(names, 2))
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def split_persons(persons: list[str], test_fraction: float, rng: np.random.Generator) -> set[str]:
    """A random round(F * n) of the persons (at least one on each side when there are two or more) for test."""
    n_test = int(round(test_fraction * len(persons)))
    if len(persons) >= 2:
        n_test = min(max(n_test, 1), len(persons) - 1)
    order = rng.permutation(len(persons))
    return {persons[i] for i in order[:n_test]}


def read_split_file(path: Path) -> set[str]:
    """Test person ids, one per line; blank lines and '#' comments are skipped."""
    if not path.is_file():
        raise PairsError(f"{path}: split file not found")
    ids = {line.split("#", 1)[0].strip() for line in path.read_text().splitlines()}
    ids.discard("")
    if not ids:
        raise PairsError(f"{path}: no person ids in the split file")
    return ids


def visible_joints(keypoints: np.ndarray) -> int:
    """Joints with both coordinates present (a joint is missing when either equals -1)."""
    return int((~is_missing(keypoints)).sum())


def list_images(folder: Path) -> list[str]:
    """Sorted image file names (not paths) in a folder."""
    if not folder.is_dir():
        raise PairsError(f"{folder}: not a folder")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not names:
        raise PairsError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="image folder (the names to pair)")
    p.add_argument("--annotations", type=Path, help="annotation CSV (names to pair when --images is absent; "
                                                     "keypoints for the joint filters)")
    p.add_argument("--out-dir", type=Path, required=True, help="where the CSVs (and the split file) go")
    p.add_argument("--prefix", default="fasion-resize", help="file prefix: fasion-resize (DeepFashion) or market")
    p.add_argument("--style", choices=["auto", "deepfashion", "market"], default="auto", help="how names give ids")
    p.add_argument("--min-joints", type=int, default=0, help="drop images with fewer visible joints")
    p.add_argument("--require-joints", type=int, nargs="+", default=[], metavar="J",
                   help="drop images missing any of these joints (0-based COCO-18 ids)")
    p.add_argument("--max-pairs-per-person", type=int, help="keep a random K pairs of each person")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the pair sampling")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-fraction", type=float, help="share of persons drawn for the test set, 0 < F < 1")
    split.add_argument("--split-file", type=Path, help="file of test person ids, one per line")
    p.add_argument("--subset", choices=["train", "test"], default="train",
                   help="which CSV gets all pairs when no split is asked for")
    args = p.parse_args(argv)
    if args.images is None and args.annotations is None:
        p.error("give --images or --annotations")
    if (args.min_joints > 0 or args.require_joints) and args.annotations is None:
        p.error("--min-joints and --require-joints need --annotations (the keypoints)")
    if any(not 0 <= j < NUM_JOINTS for j in args.require_joints):
        p.error(f"--require-joints takes joint ids 0..{NUM_JOINTS - 1}, got {args.require_joints}")
    if args.test_fraction is not None and not 0 < args.test_fraction < 1:
        p.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.max_pairs_per_person is not None and args.max_pairs_per_person < 1:
        p.error(f"--max-pairs-per-person must be >= 1, got {args.max_pairs_per_person}")

    ensure_writable_folder(args.out_dir)
    keypoints = read_annotations(args.annotations) if args.annotations is not None else None
    names = list_images(args.images) if args.images is not None else sorted(keypoints)
    if not names:
        raise PairsError(f"{args.annotations}: no images listed")
    style = detect_style(names) if args.style == "auto" else args.style
    if args.min_joints > 0 or args.require_joints:
        kept = [n for n in names if n in keypoints and visible_joints(keypoints[n]) >= args.min_joints
                and not is_missing(keypoints[n][args.require_joints]).any()]
        print(f"joint filters: dropped {len(names) - len(kept)} of {len(names)} images "
              f"(images missing from {args.annotations} count as 0 joints)")
        names = kept
    groups = group_by_person(names, style)

    # Separate streams: changing --max-pairs-per-person must not change which persons are in the test set.
    split_rng, pair_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    if args.test_fraction is not None:
        test_ids = split_persons(list(groups), args.test_fraction, split_rng)
        split_path = args.out_dir / f"{args.prefix}-test-persons.txt"
        write_text(split_path, "".join(pid + "\n" for pid in sorted(test_ids)))
        print(f"{split_path}: {len(test_ids)} test persons")
        subsets = {"train": [q for q in groups if q not in test_ids], "test": [q for q in groups if q in test_ids]}
    elif args.split_file is not None:
        test_ids = read_split_file(args.split_file)
        unknown = test_ids - set(groups)
        if unknown:
            print(f"warning: {len(unknown)} ids of {args.split_file} have no images here, e.g. {sorted(unknown)[0]!r}")
        subsets = {"train": [q for q in groups if q not in test_ids], "test": [q for q in groups if q in test_ids]}
    else:
        subsets = {args.subset: list(groups)}

    for subset, persons in subsets.items():
        pairs = [pair for pid in persons for pair in person_pairs(groups[pid], args.max_pairs_per_person, pair_rng)]
        path = args.out_dir / f"{args.prefix}-pairs-{subset}.csv"
        write_pairs(path, pairs)
        n_images = sum(len(groups[pid]) for pid in persons)
        print(f"{path}: {len(pairs)} pairs, {len(persons)} persons ({style}), {n_images} images")


if __name__ == "__main__":
    run_main(main)
