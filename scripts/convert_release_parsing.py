"""The release's Market-1501 parsing maps -> our layout, in one command.

    python scripts/convert_release_parsing.py --seg <release>/datasets/market1501/seg \
        --pairs datasets/market/market-pairs-train.csv --pairs datasets/market/market-pairs-test.csv \
        --out datasets/market/release_parsing

The release keeps SPATN*'s Market predictions per pair, `seg/<from>___<to>.png`, on a 256x256 canvas, and reads
columns 64..191 resized (nearest) to 64x128 (pose_transfer_parsing_market_dataset.py); a source's own map is
`<from>___<from>.png`. This writes, for the listed pairs, `<out>/<from-stem>___<to-stem>.png` (the target maps,
read through data.pair_parsing_dir) and `<out>/<from-stem>.png` (the source maps, data.parsing_dir), at 128x64
in the same way. Missing maps are all reported before anything is written; a malformed one stops the
conversion with its name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from data.annotations import read_pairs
from data.datasets import pair_parsing_name, stem
from utils.cli import run_main
from utils.errors import InputError

CANVAS = (256, 256)  # (H, W) of the release's Market maps
COLUMNS = (64, 192)  # the person's columns on the canvas
SIZE = (128, 64)  # (H, W) of Market-1501


class ConversionError(InputError):
    pass


def release_market_map(labels: np.ndarray) -> np.ndarray:
    """(256,256) canvas labels -> (128,64): columns 64..191, nearest resize, as the release's loader."""
    return cv2.resize(labels[:, COLUMNS[0] : COLUMNS[1]], (SIZE[1], SIZE[0]), interpolation=cv2.INTER_NEAREST)


def read_canvas(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if labels is None:
        raise ConversionError(f"{path}: cannot read the parsing map (missing, unreadable or corrupt file)")
    if labels.shape != CANVAS:
        raise ConversionError(f"{path}: {labels.shape[0]}x{labels.shape[1]}, expected the release's "
                              f"{CANVAS[0]}x{CANVAS[1]} canvas")
    return labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seg", required=True, help="the release's seg/ folder (<from>___<to>.png)")
    p.add_argument("--pairs", action="append", required=True, help="pairs CSV (from,to); may be repeated")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    seg, out = Path(args.seg), Path(args.out)
    pairs = list(dict.fromkeys(pair for csv in args.pairs for pair in read_pairs(Path(csv))))
    jobs = {pair_parsing_name(a, b): seg / f"{stem(a)}___{stem(b)}.png" for a, b in pairs}  # target maps
    jobs.update({f"{stem(a)}.png": seg / f"{stem(a)}___{stem(a)}.png" for a, _ in pairs})  # source maps
    missing = sorted(str(src) for src in dict.fromkeys(jobs.values()) if not src.is_file())
    if missing:
        shown = "\n  ".join(missing[:10])
        raise ConversionError(f"{len(missing)} of the release's maps are missing in {seg}, e.g.\n  {shown}")
    out.mkdir(parents=True, exist_ok=True)
    for name, src in jobs.items():
        if not cv2.imwrite(str(out / name), release_market_map(read_canvas(src))):
            raise ConversionError(f"{out / name}: cannot write the parsing map")
    print(f"wrote {len(jobs)} parsing maps ({SIZE[0]}x{SIZE[1]}) to {out}")
    return len(jobs)


if __name__ == "__main__":
    run_main(main)
