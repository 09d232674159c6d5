"""Fold CIHP 20-label parsing maps (PGN's output) into fewer classes, optionally resizing them.

    python scripts/merge_parsing.py pgn/train datasets/deepfashion/train_parsing --merge cihp8 --resize 256 176

Reads every `<stem>.png` in the input folder (single-channel or palette PNG whose values are CIHP ids 0..19:
0 background ... 19 right-shoe) and writes `<stem>.png` (single-channel uint8) into the output folder. PGN's
test script writes its coloured visualisations `<stem>_vis.png` next to the label maps; those are skipped.
`--merge` is a preset of data/parsing.py (cihp20 = identity, cihp8 = background, hair, face, upper clothes,
arms, pants/skirt, legs, shoes), a JSON list of 20 ints (new id of each CIHP id), or a .json file holding that
list. `--resize H W` resamples with nearest neighbour (pixel centres aligned), so no new labels appear.

Training usually needs no merge: configs set `data.label_merge` and the loader folds the labels on the fly.
This script is for writing merged maps to disk (smaller files, other tools) or bringing maps to the dataset's
size. It refuses to write into its input folder, and a label >= 20 is an error naming the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from data.parsing import CIHP_LABELS, PRESET_MERGES, merge_labels
from utils.cli import run_main
from utils.errors import InputError
from utils.io import ensure_writable_folder, write_image

NUM_CIHP_LABELS = len(CIHP_LABELS)
VIS_SUFFIX = "_vis.png"  # PGN's coloured visualisation, written next to each label map


class ParsingError(InputError):
    """Bad parsing map or arguments; the message names the file."""


def parse_merge(spec: str) -> list[int]:
    """A preset name, a JSON list literal, or a .json file holding the list -> 20 non-negative ints."""
    if spec in PRESET_MERGES:
        return list(PRESET_MERGES[spec])
    source = spec
    path = Path(spec)
    if not spec.lstrip().startswith("["):
        if not path.is_file():
            known = ", ".join(sorted(PRESET_MERGES))
            raise ParsingError(f"--merge {spec!r} is neither a preset ({known}), a JSON list, nor a file")
        source, spec = str(path), path.read_text()
    try:
        table = json.loads(spec)
    except json.JSONDecodeError as e:
        raise ParsingError(f"--merge {source}: malformed JSON: {e}") from None
    if (not isinstance(table, list) or len(table) != NUM_CIHP_LABELS
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in table)):
        raise ParsingError(f"--merge {source}: expected a list of {NUM_CIHP_LABELS} ints in 0..255 (the new id of "
                           f"each CIHP id), got {table!r}")
    return table


def read_labels(path: Path) -> np.ndarray:
    """A label PNG -> (H, W) uint8 CIHP ids; palette PNGs give their indices, never their colours."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            labels = np.asarray(im)
    except OSError as e:
        raise ParsingError(f"{path}: cannot read the image ({e})") from None
    if mode in ("RGB", "RGBA"):
        # A grey map saved as RGB is fine; a colour visualisation is not a label map.
        if not (np.array_equal(labels[..., 0], labels[..., 1]) and np.array_equal(labels[..., 0], labels[..., 2])):
            raise ParsingError(f"{path}: a colour image; expected a single-channel label PNG (CIHP ids 0..19), "
                               f"not PGN's coloured visualisation")
        labels = labels[..., 0]
    elif mode not in ("L", "P", "I", "I;16"):
        raise ParsingError(f"{path}: unsupported PNG mode {mode!r}; expected single-channel labels")
    bad = (labels < 0) | (labels >= NUM_CIHP_LABELS)
    if bad.any():
        found = sorted(int(v) for v in np.unique(labels[bad]))
        raise ParsingError(f"{path}: labels {found[:10]} are outside 0..{NUM_CIHP_LABELS - 1} (CIHP ids)")
    return labels.astype(np.uint8)


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) -> size (H', W') by nearest neighbour with pixel centres aligned: out (i, j) reads
    in (floor((i + 0.5) H / H'), floor((j + 0.5) W / W'))."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def merge_folder(src: Path, dst: Path, merge: list[int], resize: tuple[int, int] | None = None) -> int:
    """Every <stem>.png of src -> merged (and resized) dst/<stem>.png; returns the number of maps written."""
    if not src.is_dir():
        raise ParsingError(f"{src}: not a folder")
    if dst.resolve() == src.resolve():
        raise ParsingError(f"{dst}: the output folder is the input folder; refusing to overwrite the CIHP maps")
    paths = [p for p in sorted(src.glob("*.png")) if not p.name.endswith(VIS_SUFFIX)]
    if not paths:
        raise ParsingError(f"{src}: no label .png files (besides *{VIS_SUFFIX} visualisations)")
    ensure_writable_folder(dst)
    for path in paths:
        labels = np.asarray(merge_labels(read_labels(path), merge), dtype=np.uint8)
        if resize is not None:
            labels = resize_nearest(labels, resize)
        write_image(dst / path.name, labels, rgb=False)
    return len(paths)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="folder of CIHP 20-label <stem>.png maps")
    p.add_argument("output", type=Path, help="folder to write the merged maps to (not the input folder)")
    p.add_argument("--merge", default="cihp8", help="preset name, JSON list of 20 ints, or a .json file")
    p.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="nearest-neighbour resize to H x W")
    args = p.parse_args(argv)
    if args.resize is not None and min(args.resize) <= 0:
        p.error(f"--resize must be positive, got {args.resize}")
    merge = parse_merge(args.merge)
    n = merge_folder(args.input, args.output, merge, tuple(args.resize) if args.resize else None)
    print(f"{args.output}: {n} maps, {max(merge) + 1} classes")


if __name__ == "__main__":
    run_main(main)
