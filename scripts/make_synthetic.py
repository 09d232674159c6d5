"""Generate the synthetic people dataset (DESIGN.md section 8) in the release layout of section 2.

    python scripts/make_synthetic.py --out datasets/synthetic                                 # 256x176
    python scripts/make_synthetic.py --style market --out datasets/synthetic_market           # 128x64
    python scripts/make_synthetic.py --out datasets/synthetic --identities 200 --workers 4

The same seed and arguments give byte-identical files, whatever the number of workers. Files of an earlier
run with other arguments are overwritten where the names coincide, never deleted.
"""

from __future__ import annotations

import argparse

from data.synthetic import STYLES, generate_dataset
from utils.cli import positive_int, run_main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument("--style", choices=sorted(STYLES), default="deepfashion",
                   help="deepfashion: 256x176, plain background; market: 128x64, cluttered background")
    p.add_argument("--identities", type=int, default=60)
    p.add_argument("--poses", type=int, default=6, help="images per identity; pairs are all ordered pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.15, help="share of identities in the test split")
    p.add_argument("--workers", type=positive_int, default=1, help="processes; the output does not depend on it")
    args = p.parse_args(argv)
    try:
        c = generate_dataset(args.out, style=args.style, identities=args.identities, poses=args.poses,
                             seed=args.seed, test_fraction=args.test_fraction, workers=args.workers)
    except ValueError as err:
        p.error(str(err))
    st = STYLES[args.style]
    print(f"synthetic {args.style} {st.height}x{st.width} seed {args.seed} -> {args.out}: "
          f"identities {c['train_identities']} train / {c['test_identities']} test, "
          f"images {c['train_images']} / {c['test_images']}, pairs with flow {c['train_pairs']} / {c['test_pairs']}, "
          f"{c['seconds']:.1f} s")


if __name__ == "__main__":
    run_main(main)
