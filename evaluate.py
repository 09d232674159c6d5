"""Score generated images with the pose-transfer metrics: SSIM, mask-SSIM, FID, LPIPS, mask-LPIPS, PCKh.

    python evaluate.py --generated runs/00001-deepfashion/test-00200000/images --dataset-config configs/deepfashion.yaml
    python evaluate.py --generated DIR --dataset-config configs/market.yaml data.root=/data/market \
        --metrics ssim,mssim,lpips,mlpips --weights imagenet --out results/market
    python evaluate.py ... --protocol release --names release --format jpg --metrics fid,lpips  # the authors'
    python evaluate.py ... --protocol release --names release --metrics ssim  # their SSIM: PNGs, --quantise truncate
    python evaluate.py ... --metrics ssim,fid,lpips,pckh                       # PCKh with the built-in OpenPose
    python evaluate.py ... --pred-keypoints openpose-on-generated.csv          # PCKh from your estimator's CSV
    python evaluate.py ... --pose-estimator my_package.openpose:Estimator      # or run a pluggable estimator
    python evaluate.py ... --pred-parsing runs/x/test/parsing_labels           # + SPATN's parsing accuracy, mIoU

Reads the config's test pairs (`data.pairs_test`, capped by `data.max_test_pairs`), expects one generated image
per pair in --generated (test.py's naming: --names ours `<from-stem>___<to-stem>`, or release `<from>_<to>`, with
the --format extension), takes the ground truth from the test folder and the target keypoints from the test
annotation CSV. --protocol names how every metric is computed (metrics/protocols.py, README "Testing and
evaluation"): clean (ours, the default: no published table used it), release (the authors' SPGNet scripts, the
paper's Tables 1-2), patn (PATN's SSIM / Mask-SSIM / PCKh), gfla (GFLA's script/metrics.py). PCKh is PATN's
script, on keypoints of the generated images from --pred-keypoints, --pose-estimator, or else the built-in OpenPose
COCO body model with PATN's extraction (metrics/openpose.py; written to <out>/pred-keypoints.csv).
Our own measures, in the clean protocol only (no published script computes them): the per-part colour error of
metrics/colour.py and the per-part texture correlation of metrics/texture.py over the target's ground-truth
parsing (both by default whenever the test split has parsing maps), and, given --pred-parsing (test.py --parsing's
parsing_labels/ folder, labels in data.label_merge's ids), parsing pixel accuracy and mIoU over the classes
present in the ground truth (metrics/parsing.py).

Writes to --out (default: next to --generated, `metrics/`; checked for writability before any metric is
computed, as is the FID cache folder): metrics.json, metrics.csv, per_image.csv (together: all three replaced
or none), and the markdown table to stdout, each naming the protocol of every metric. --weights random uses
randomly initialised Inception/AlexNet/OpenPose networks (offline tests and the demo); such values are labelled
RANDOM-INIT everywhere and are not comparable to published numbers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.annotations import read_annotations, read_pairs
from data.datasets import GENERATED_FORMATS, GENERATED_NAMES
from data.parsing import check_merge, label_merge, num_classes
from metrics import estimators, openpose, table
from metrics.accumulators import (
    Accumulator,
    ColourAccumulator,
    FIDAccumulator,
    LPIPSAccumulator,
    ParsingAccumulator,
    PCKhAccumulator,
    SSIMAccumulator,
    TextureAccumulator,
)
from metrics.fid import NETWORKS, InceptionFeatures, default_cache_dir, real_statistics
from metrics.files import write_release_crops
from metrics.lpips import LPIPSMetric
from metrics.pairs import EvaluationError, Pair, PairImages, find_pairs, kept_by_script, on_device, target_keypoints
from metrics.protocols import PROTOCOLS, Protocol, get_protocol
from utils.cli import non_negative_int, positive_int, run_main
from utils.config import Config, load_config
from utils.io import ensure_writable_folder

SCRIPT_BATCHED = ("fid", "lpips", "mlpips")  # the metrics a published script computes on whole batches only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, help="folder of generated images, one per test pair (test.py)")
    p.add_argument("--dataset-config", required=True, help="dataset YAML (data.* keys: root, test folder, CSVs)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, e.g. data.root=/data/df")
    p.add_argument("--metrics", default=None,
                   help=f"comma list of {','.join(table.METRICS)} (default: the paper's set for the dataset; "
                        "pckh only when keypoints or an estimator are given, or when named here: then the "
                        "built-in OpenPose runs: tens of seconds per 256x176 image on a CPU, see README Speed)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="clean",
                   help="how the metrics are computed: clean (ours, default; reproduces no published table), release "
                        "(the authors' scripts: SPGNet Tables 1-2), patn (PATN's SSIM/Mask-SSIM/PCKh), gfla (GFLA's)")
    p.add_argument("--names", choices=GENERATED_NAMES, default="ours",
                   help="generated file names: ours <from>___<to>, release <from>_<to> (test.py --names)")
    p.add_argument("--format", choices=GENERATED_FORMATS, default="png", help="generated file type (test.py --format)")
    p.add_argument("--fid-network", choices=NETWORKS, default=None,
                   help="clean protocol only: torchvision (ImageNet Inception, real set = training images; default) or "
                        "standard (pytorch-fid's FID Inception, real set = test images)")
    p.add_argument("--fid-method", choices=("sqrtm", "eigh"), default="sqrtm",
                   help="matrix square root of the Frechet distance (sqrtm: pytorch-fid's; eigh: faster, same value)")
    p.add_argument("--fid-cache", default=None, help="folder for cached real-set statistics (default: "
                   "$XDG_CACHE_HOME/spgnet/fid or ~/.cache/spgnet/fid)")
    p.add_argument("--no-fid-cache", action="store_true", help="always recompute the real-set statistics")
    p.add_argument("--pred-keypoints", default=None,
                   help="annotation CSV of keypoints estimated on the generated images, keyed by generated file name")
    p.add_argument("--pose-estimator", default=None, help="module:attr of a pose estimator (metrics/estimators.py)")
    p.add_argument("--pred-parsing", default=None,
                   help="folder of predicted target label maps <from-stem>___<to-stem>.png (test.py --parsing's "
                        "parsing_labels/): adds parsing pixel accuracy and mIoU")
    p.add_argument("--weights", choices=("imagenet", "random"), default="imagenet",
                   help="FID/LPIPS/OpenPose networks: pretrained from the torch hub cache, or random (tests only)")
    p.add_argument("--inception-weights", default=None, help="explicit path of the FID Inception checkpoint")
    p.add_argument("--alexnet-weights", default=None, help="explicit path of torchvision's AlexNet checkpoint")
    p.add_argument("--openpose-weights", default=None, help="explicit path of the OpenPose body_pose_model.pth")
    p.add_argument("--openpose-boxsize", type=int, default=openpose.BOXSIZE,
                   help="OpenPose box size (PATN: 368; anything else is not the protocol and is labelled so)")
    p.add_argument("--openpose-scales", type=openpose.parse_scales, default=openpose.SCALES,
                   help="comma list of OpenPose scales (PATN: 0.5,1,1.5,2)")
    p.add_argument("--out", default=None, help="output folder (default: <generated>/../metrics)")
    p.add_argument("--allow-missing", action="store_true", help="evaluate the pairs that exist, report the rest")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="image-loading workers (default: data.num_workers)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


# ------------------------------------------------------------------------------------------ inputs


def select_metrics(args: argparse.Namespace, dataset_name: str, protocol: Protocol, has_target_parsing: bool = False
                   ) -> tuple[str, ...]:
    """--metrics, or the paper's set for the dataset restricted to what the protocol defines; the default runs PCKh
    only on given keypoints or estimator (the built-in OpenPose is slow on a CPU, so it runs when --metrics names
    pckh), and adds our colour error and texture correlation where the protocol defines them (clean) and the test
    split has parsing maps, and parsing accuracy where --pred-parsing is given. A metric the protocol lacks is a
    ProtocolError."""
    has_keypoints = args.pred_keypoints is not None or args.pose_estimator is not None
    if args.pred_keypoints and args.pose_estimator:
        raise EvaluationError("give --pred-keypoints or --pose-estimator, not both")
    if args.metrics is None:
        chosen = tuple(m for m in table.default_metrics(dataset_name) if getattr(protocol, m) is not None)
        if not has_keypoints:
            print("note: PCKh skipped (name it in --metrics to run the built-in OpenPose, or give "
                  "--pred-keypoints CSV or --pose-estimator)", file=sys.stderr)
            chosen = tuple(m for m in chosen if m != "pckh")
        chosen += ("colour", "texture") * (has_target_parsing and protocol.colour is not None)
        chosen += ("parsing",) * (args.pred_parsing is not None)  # asked for: under release etc. an error below
    else:
        chosen = table.parse_metrics(args.metrics)
    for metric in chosen:  # before the checks below: under release, --metrics parsing is wrong whatever is given
        protocol.spec(metric)
    if "parsing" in chosen and args.pred_parsing is None:
        raise EvaluationError("parsing accuracy needs predicted label maps: pass --pred-parsing DIR "
                              "(test.py --parsing writes them to <out>/parsing_labels)")
    if any(m in chosen for m in ("colour", "texture", "parsing")) and not has_target_parsing:
        raise EvaluationError("the colour error, texture correlation and parsing accuracy need the test split's "
                              "ground-truth parsing maps (data.test_dir + data.parsing_suffix), which this dataset "
                              "lacks")
    return chosen


@dataclass
class Run:
    """One evaluation's inputs, resolved and checked before any image is scored; each metric's accumulator is
    built from them."""

    args: argparse.Namespace
    cfg: Config
    protocol: Protocol
    chosen: tuple[str, ...]  # the metrics, in table.METRICS order
    generated: Path
    out_dir: Path
    pairs: list[Pair]
    missing: list[str]  # generated images absent (--allow-missing)
    targets: np.ndarray  # (N,18,2) the target keypoints
    crops: Path | None  # the release's crop folder, which its FID and LPIPS read at DeepFashion 256x256
    kept: dict[str, np.ndarray]  # per SCRIPT_BATCHED metric: (N,) bool, the pairs its script's whole batches score
    device: torch.device

    @property
    def random(self) -> bool:
        """Randomly initialised backbones (--weights random)."""
        return self.args.weights == "random"

    @property
    def workers(self) -> int:
        return self.cfg.data.num_workers if self.args.workers is None else self.args.workers


def prepare(args: argparse.Namespace) -> Run:
    """Read and check everything the metrics need: the config, the protocol and metrics, the generated folder,
    the output folder (writable), the pairs and their keypoints, the release's crops and the kept pairs."""
    cfg = load_config(args.dataset_config, args.overrides)
    root = Path(cfg.data.root)
    size = tuple(cfg.data.image_size)
    if args.fid_network is not None and args.protocol != "clean":
        raise EvaluationError(f"--fid-network is a choice of the clean protocol; --protocol {args.protocol} fixes "
                              f"its own FID network")
    protocol = get_protocol(args.protocol, size, args.fid_network or "torchvision")
    truth_parsing = root / (cfg.data.test_dir + cfg.data.parsing_suffix)
    chosen = select_metrics(args, cfg.data.name, protocol, truth_parsing.is_dir())
    generated = Path(args.generated)
    if not generated.is_dir():
        raise EvaluationError(f"--generated {generated}: not a folder")
    out_dir = ensure_writable_folder(Path(args.out) if args.out else generated.resolve().parent / "metrics")
    pairs_file, annotation_file = root / cfg.data.pairs_test, root / cfg.data.annotation_test
    test_pairs = read_pairs(pairs_file)
    if cfg.data.max_test_pairs is not None:
        test_pairs = test_pairs[: cfg.data.max_test_pairs]
    if "parsing" in chosen and not Path(args.pred_parsing).is_dir():
        raise EvaluationError(f"--pred-parsing {args.pred_parsing}: not a folder")
    pairs, missing = find_pairs(test_pairs, generated, args.allow_missing, args.names, args.format)
    targets = target_keypoints(pairs, read_annotations(annotation_file, size), annotation_file)
    crops = None
    if protocol.crops(size) and any(m in chosen for m in SCRIPT_BATCHED):
        crops = write_release_crops(generated, [p.generated for p in pairs], out_dir / "release_crop")
    kept = {m: kept_by_script(protocol, m, pairs, crops or generated) for m in SCRIPT_BATCHED if m in chosen}
    if "fid" in kept and kept["fid"].sum() < 2:
        raise EvaluationError(f"protocol {protocol.name}: FID keeps {int(kept['fid'].sum())} of {len(pairs)} "
                              f"generated images (whole batches of {protocol.fid.whole_batches_of}); it needs 2")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Run(args, cfg, protocol, chosen, generated, out_dir, pairs, missing, targets, crops, kept, device)


def pair_images(run: Run) -> PairImages:
    """The pairs' images and what the chosen metrics read beside them: pose masks, the target's ground-truth
    parsing, the predicted label maps."""
    cfg, chosen = run.cfg, run.chosen
    root = Path(cfg.data.root)
    with_masks = "mssim" in chosen or "mlpips" in chosen
    with_truth_parsing = any(m in chosen for m in ("colour", "texture", "parsing"))
    pred_parsing = Path(run.args.pred_parsing) if "parsing" in chosen else None
    return PairImages(run.pairs, run.generated, root / cfg.data.test_dir, tuple(cfg.data.image_size), run.targets,
                      with_masks, run.protocol.reader, run.crops,
                      root / (cfg.data.test_dir + cfg.data.parsing_suffix) if with_truth_parsing else None,
                      pred_parsing, check_merge(label_merge(cfg)))


# ------------------------------------------------------------------------------------------ metrics


def build_ssim(run: Run, keys: list[str]) -> Accumulator:
    return SSIMAccumulator(keys[0], run.protocol, len(run.pairs))


def build_fid(run: Run, keys: list[str]) -> Accumulator:
    """The protocol's Inception and the real set's statistics (from the cache, or computed now: before the loop,
    so that a real set or cache folder that fails does so before any generated image is scored)."""
    args, cfg, spec = run.args, run.cfg, run.protocol.spec("fid")
    weights = "random" if run.random else (args.inception_weights or "imagenet")
    features = InceptionFeatures(spec.network, weights, input_transform=spec.input_transform).to(run.device)
    real_dir = Path(cfg.data.root) / (cfg.data.train_dir if spec.real_set == "train" else cfg.data.test_dir)
    cache = None if args.no_fid_cache else Path(args.fid_cache) if args.fid_cache else default_cache_dir()
    # the published scripts read real images of any size (each resized to 299); ours must match the config
    real = real_statistics(real_dir, features, cache, args.batch_size,
                           tuple(cfg.data.image_size) if spec.order is None else None, run.workers,
                           None if args.quiet else lambda it: tqdm(it, desc=f"FID real set ({real_dir})"),
                           run.protocol.reader, spec.order, spec.whole_batches_of, spec.shrink)
    return FIDAccumulator(run.protocol, features, run.kept["fid"], real, args.fid_method, run.random)


def build_lpips(run: Run, keys: list[str]) -> Accumulator:
    weights = "random" if run.random else (run.args.alexnet_weights or "imagenet")
    return LPIPSAccumulator(keys, run.protocol, LPIPSMetric(weights).to(run.device), run.kept, run.random)


def build_colour(run: Run, keys: list[str]) -> Accumulator:
    return ColourAccumulator(run.protocol, len(run.pairs))


def build_texture(run: Run, keys: list[str]) -> Accumulator:
    return TextureAccumulator(run.protocol, len(run.pairs))


def build_parsing(run: Run, keys: list[str]) -> Accumulator:
    return ParsingAccumulator(run.protocol, len(run.pairs), num_classes(label_merge(run.cfg)),
                              Path(run.args.pred_parsing))


def build_pckh(run: Run, keys: list[str]) -> Accumulator:
    """PCKh on --pred-keypoints, on --pose-estimator's predictions, or on the built-in OpenPose's."""
    args = run.args
    common = (run.protocol, run.pairs, run.targets)
    if args.pred_keypoints is not None:
        return PCKhAccumulator(*common, args.pred_keypoints, args.allow_missing,
                               predictions=read_annotations(args.pred_keypoints))
    written = str(run.out_dir / "pred-keypoints.csv")
    if args.pose_estimator:
        return PCKhAccumulator(*common, written, args.allow_missing,
                               estimator=estimators.load_estimator(args.pose_estimator),
                               estimator_name=args.pose_estimator)
    weights = "random" if run.random else (args.openpose_weights or "published")
    builtin = openpose.OpenPoseEstimator(weights, run.device, args.openpose_boxsize, args.openpose_scales,
                                         args.batch_size)
    return PCKhAccumulator(*common, written, args.allow_missing, estimator=builtin,
                           estimator_name="built-in OpenPose", estimator_note=builtin.protocol,
                           random_backbone=builtin.random)


# The accumulators by metric name, in the order of the table's rows; metrics that share a network share one.
ACCUMULATORS: tuple[tuple[tuple[str, ...], Callable[[Run, list[str]], Accumulator]], ...] = (
    (("ssim",), build_ssim),
    (("mssim",), build_ssim),
    (("fid",), build_fid),
    (("lpips", "mlpips"), build_lpips),  # one AlexNet trunk
    (("colour",), build_colour),
    (("texture",), build_texture),
    (("parsing",), build_parsing),
    (("pckh",), build_pckh),
)


def build_accumulators(run: Run) -> list[Accumulator]:
    """One accumulator per chosen metric (per group sharing a network), each given the chosen names it serves."""
    groups = [(build, [m for m in names if m in run.chosen]) for names, build in ACCUMULATORS]
    return [build(run, keys) for build, keys in groups if keys]


# ------------------------------------------------------------------------------------------ main


def run_info(run: Run, accumulators: list[Accumulator]) -> dict[str, object]:
    """metrics.json's entries beside the values: what was scored, how, and each metric's own entries."""
    return {
        "images": len(run.pairs),
        "protocol": run.protocol.name,
        "protocol_reproduces": run.protocol.reproduces,
        "weights": ("random (RANDOM-INIT backbones: not comparable to published numbers)" if run.random
                    else "imagenet (pretrained backbones from the torch hub cache or the given paths)"),
        "dataset": run.cfg.data.name,
        "dataset_root": str(Path(run.cfg.data.root)),
        "generated": str(run.generated),
        "missing_pairs": len(run.missing),
        **({"release_crop_folder": str(run.crops)} if run.crops else {}),
        **{k: v for acc in accumulators for k, v in acc.info().items()},
    }


def evaluate(args: argparse.Namespace) -> dict:
    run = prepare(args)
    accumulators = build_accumulators(run)  # networks loaded, FID's real set ready: every input checked
    loader = torch.utils.data.DataLoader(pair_images(run), batch_size=args.batch_size, num_workers=run.workers)
    for batch in tqdm(loader, desc=f"evaluate ({run.protocol.name})", disable=args.quiet, dynamic_ncols=True):
        batch = on_device(batch, run.device)
        for accumulator in accumulators:
            accumulator.update(batch)

    results = [result for accumulator in accumulators for result in accumulator.results()]
    info = run_info(run, accumulators)
    scores = table.per_image_layout({k: v for acc in accumulators for k, v in acc.per_image().items()})
    per_image = {"generated": [p.generated for p in run.pairs], "source": [p.source for p in run.pairs],
                 "target": [p.target for p in run.pairs], **scores}
    paths = table.write_outputs(run.out_dir, results, info, per_image)
    print(table.markdown_table(results, info))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return table.metrics_json(results, info)


def main(argv: list[str] | None = None) -> dict:
    return evaluate(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
