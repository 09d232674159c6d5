"""The paper's user study (sec. 4.3, Table 2 right) as a browser page: build a study folder, score its answers.

    # real or generated? 55 generated + 55 real images, 10 practice + 100 scored, 1 s each (the paper's numbers)
    python scripts/user_study.py build --protocol real-vs-fake --generated runs/00003-test/images \
        --real datasets/deepfashion/test --out study_df_ours --name Ours
    # which result is closest to the ground truth? 55 pairs, every method's output in a random order
    python scripts/user_study.py build --protocol best-of --methods Ours=runs/ours PATN=runs/patn \
        --pairs datasets/deepfashion/fasion-resize-pairs-test.csv --images datasets/deepfashion/test \
        --annotations datasets/deepfashion/fasion-resize-annotation-test.csv --out study_df_best
    # open study_df_ours/index.html in a browser (or serve the folder: python -m http.server -d study_df_ours),
    # collect each participant's downloaded answers file in study_df_ours/answers/, then
    python scripts/user_study.py score study_df_ours/answers/*.json study_df_best/answers/*.json

Scores: R2G (real images judged generated), G2R (generated judged real), Jab (share of trials where a method's
output was picked), in percent, per participant and pooled, with 95% bootstrap intervals over participants;
practice trials excluded. userstudy/study.py has the definitions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from userstudy import study
from utils.cli import run_main


def parse_methods(items: list[str]) -> dict[str, Path]:
    """['Ours=dir', ...] -> {'Ours': Path('dir')}, names unique and non-empty."""
    methods: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder:
            raise study.StudyError(f"--methods {item!r}: expected NAME=DIR")
        if name in methods:
            raise study.StudyError(f"--methods: method name {name!r} given twice")
        methods[name] = Path(folder)
    return methods


def build(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    if args.protocol == study.REAL_VS_FAKE:
        if args.generated is None or args.real is None:
            p.error("--protocol real-vs-fake needs --generated and --real")
        manifest = study.build_real_vs_fake(args.generated, args.real, args.out, n_generated=args.generated_count,
                                      n_real=args.real_count, practice=10 if args.practice is None else args.practice,
                                      display_ms=1000 if args.display_ms is None else args.display_ms,
                                      seed=args.seed, name=args.name)
    else:
        if not args.methods or args.pairs is None or args.images is None or args.annotations is None:
            p.error("--protocol best-of needs --methods, --pairs, --images and --annotations")
        manifest = study.build_best_of(parse_methods(args.methods), args.pairs, args.images, args.annotations, args.out,
                                 n_trials=args.trials, practice=0 if args.practice is None else args.practice,
                                 display_ms=0 if args.display_ms is None else args.display_ms, seed=args.seed)
    trials = manifest["trials"]
    n_practice = sum(t["practice"] for t in trials)
    shown = f"{manifest['display_ms']} ms each" if manifest["display_ms"] else "each until answered"
    print(f"{args.out}: {manifest['protocol']} study {manifest['study_id']}, {n_practice} practice + "
          f"{len(trials) - n_practice} scored trials, {shown}; open {Path(args.out) / 'index.html'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a study folder (index.html, images/, manifest.json)")
    b.add_argument("--protocol", choices=study.PROTOCOLS, required=True)
    b.add_argument("--out", type=Path, required=True, help="study folder to create (absent or empty)")
    b.add_argument("--seed", type=int, default=0, help="seed of every draw (images, pairs, orders)")
    b.add_argument("--practice", type=int, help="practice trials at the start (real-vs-fake 10, best-of 0)")
    b.add_argument("--display-ms", type=int,
                   help="display time per trial in ms, 0 = until answered (real-vs-fake 1000, best-of 0)")
    rf = b.add_argument_group("real-vs-fake")
    rf.add_argument("--generated", type=Path, help="folder of generated images")
    rf.add_argument("--real", type=Path, help="folder of real images")
    rf.add_argument("--generated-count", type=int, default=55, help="generated images drawn")
    rf.add_argument("--real-count", type=int, default=55, help="real images drawn")
    rf.add_argument("--name", help="method name of the generated images (default: the folder's name)")
    bo = b.add_argument_group("best-of")
    bo.add_argument("--methods", nargs="+", metavar="NAME=DIR", help="each method's outputs, named as test.py "
                                                                     "writes them (<from-stem>___<to-stem>.png)")
    bo.add_argument("--pairs", type=Path, help="pairs CSV (from,to); every pair must have every method's output")
    bo.add_argument("--images", type=Path, help="folder of the source and ground-truth images")
    bo.add_argument("--annotations", type=Path, help="keypoint CSV of the targets (for the target pose picture)")
    bo.add_argument("--trials", type=int, default=55, help="pairs drawn (practice included)")
    s = sub.add_parser("score", help="R2G, G2R, Jab of answers files, as a markdown table")
    s.add_argument("answers", nargs="+", type=Path, help="answers files downloaded from the page")
    s.add_argument("--manifest", nargs="+", type=Path, default=[],
                   help="manifests of the studies (default: manifest.json beside each answers file or one up)")
    s.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples")
    s.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    s.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    if args.command == "build":
        build(args, p)
        return
    if args.bootstrap < 1 or not 0 < args.level < 1:
        p.error("--bootstrap must be >= 1 and --level in (0, 1)")
    results = study.score(args.answers, args.manifest, n_boot=args.bootstrap, level=args.level, seed=args.seed)
    print(study.markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\n{args.json}: figures written")


if __name__ == "__main__":
    run_main(main)
