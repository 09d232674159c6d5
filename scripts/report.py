"""A self-contained HTML report of a run: loss curves (inline SVG), the metric table, a grid of test results.

    python scripts/report.py --joint runs/demo/joint --flow runs/demo/flow --test runs/demo/test \
        --metrics runs/demo/metrics/metrics.json --out runs/demo/report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.cli import run_main
from utils.report import write_report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--joint", required=True, type=Path, help="joint-stage run folder")
    p.add_argument("--flow", type=Path, default=None, help="flow-stage run folder")
    p.add_argument("--test", type=Path, default=None, help="test.py output folder (with grids/)")
    p.add_argument("--metrics", type=Path, default=None, help="evaluate.py's metrics.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    print(write_report(args.out, args.joint, args.flow, args.test, args.metrics))


if __name__ == "__main__":
    run_main(main)
