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
metrics/colour.py over the target's ground-truth parsing (by default whenever the test split has parsing maps),
and, given --pred-parsing (test.py --parsing's parsing_labels/ folder, labels in data.label_merge's ids), parsing
pixel accuracy and mIoU over the classes present in the ground truth (metrics/parsing.py).

Writes to --out (default: next to --generated, `metrics/`; checked for writability before any metric is
computed): metrics.json, metrics.csv, per_image.csv (each atomically), and the markdown table to stdout, each
naming the protocol of every metric. --weights random uses randomly initialised
Inception/AlexNet/OpenPose networks (offline tests and the demo); such values are labelled RANDOM-INIT everywhere
and are not comparable to published numbers.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from data.annotations import read_annotations, read_pairs
from data.datasets import GENERATED_FORMATS, GENERATED_NAMES, generated_image_name, stem
from data.parsing import NUM_CIHP, check_merge, label_merge, num_classes
from metrics import estimators, openpose, table
from metrics.colour import WITHIN_LEVELS, part_colour_errors
from metrics.colour import summarise as colour_summary
from metrics.fid import NETWORKS, InceptionFeatures, RunningMoments, default_cache_dir, frechet_distance
from metrics.fid import real_statistics as fid_real_statistics
from metrics.files import crop_square_fashion, kept_mask, read_image, write_release_crops
from metrics.lpips import LPIPSMetric
from metrics.masks import pose_masks
from metrics.parsing import confusion_matrix, parsing_scores
from metrics.pckh import pckh_counts, pckh_score
from metrics.protocols import PROTOCOLS, Protocol, get_protocol
from utils.cli import non_negative_int, positive_int, run_main
from utils.config import load_config
from utils.errors import InputError
from utils.io import ensure_writable_folder
from utils.io import read_image as read_image_file

SHOW_MISSING = 10  # how many missing names an error lists


class EvaluationError(InputError):
    """Inputs that cannot be evaluated as asked (missing images, keypoints, wrong options)."""


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


@dataclass
class Pair:
    generated: str  # file name in --generated
    source: str
    target: str


def select_metrics(args: argparse.Namespace, dataset_name: str, protocol: Protocol, has_target_parsing: bool = False
                   ) -> tuple[str, ...]:
    """--metrics, or the paper's set for the dataset restricted to what the protocol defines; the default runs PCKh
    only on given keypoints or estimator (the built-in OpenPose is slow on a CPU, so it runs when --metrics names
    pckh), and adds our colour error where the protocol defines it (clean) and the test split has parsing maps,
    and parsing accuracy where --pred-parsing is given. A metric the protocol lacks is a ProtocolError."""
    has_keypoints = args.pred_keypoints is not None or args.pose_estimator is not None
    if args.pred_keypoints and args.pose_estimator:
        raise EvaluationError("give --pred-keypoints or --pose-estimator, not both")
    if args.metrics is None:
        chosen = tuple(m for m in table.default_metrics(dataset_name) if getattr(protocol, m) is not None)
        if not has_keypoints:
            print("note: PCKh skipped (name it in --metrics to run the built-in OpenPose, or give "
                  "--pred-keypoints CSV or --pose-estimator)", file=sys.stderr)
            chosen = tuple(m for m in chosen if m != "pckh")
        chosen += ("colour",) * (has_target_parsing and protocol.colour is not None)
        chosen += ("parsing",) * (args.pred_parsing is not None)  # asked for: under release etc. an error below
    else:
        chosen = table.parse_metrics(args.metrics)
    for metric in chosen:  # before the checks below: under release, --metrics parsing is wrong whatever is given
        protocol.spec(metric)
    if "parsing" in chosen and args.pred_parsing is None:
        raise EvaluationError("parsing accuracy needs predicted label maps: pass --pred-parsing DIR "
                              "(test.py --parsing writes them to <out>/parsing_labels)")
    if ("colour" in chosen or "parsing" in chosen) and not has_target_parsing:
        raise EvaluationError("the colour error and parsing accuracy need the test split's ground-truth parsing "
                              "maps (data.test_dir + data.parsing_suffix), which this dataset lacks")
    return chosen


def find_pairs(pairs: list[tuple[str, str]], generated: Path, allow_missing: bool, names: str = "ours",
               fmt: str = "png") -> tuple[list[Pair], list[str]]:
    """Pairs whose generated image exists; missing ones are an error unless allow_missing."""
    present = {p.name for p in generated.iterdir()}
    items = [Pair(generated_image_name(s, t, names, fmt), s, t) for s, t in pairs]
    missing = [p.generated for p in items if p.generated not in present]
    if missing:
        shown = ", ".join(missing[:SHOW_MISSING]) + (" ..." if len(missing) > SHOW_MISSING else "")
        message = f"{len(missing)} of {len(items)} generated images are missing in {generated}: {shown}"
        if not allow_missing:
            raise EvaluationError(message + " (run test.py on all test pairs, or pass --allow-missing)")
        print(f"warning: {message}; evaluating the other {len(items) - len(missing)}", file=sys.stderr)
    found = [p for p in items if p.generated in present]
    if not found:
        raise EvaluationError(f"none of the {len(items)} test pairs has a generated image in {generated}")
    return found, missing


def read_labels(path: Path, size: tuple[int, int], top: int) -> np.ndarray:
    """(H,W) uint8 label map of `size` with labels below `top`; EvaluationError naming the file otherwise."""
    image = read_image_file(path, cv2.IMREAD_UNCHANGED)  # ImageReadError names a missing or truncated file
    if image.ndim != 2 or image.dtype != np.uint8:
        raise EvaluationError(f"{path}: a label map must be a single-channel uint8 PNG, got {image.dtype} "
                              f"{image.shape}")
    if image.shape != tuple(size):
        raise EvaluationError(f"{path}: label map is {image.shape[0]}x{image.shape[1]} (HxW), expected "
                              f"{size[0]}x{size[1]}")
    if image.size and int(image.max()) >= top:
        raise EvaluationError(f"{path}: label {int(image.max())} is outside 0..{top - 1}")
    return image


class PairImages(torch.utils.data.Dataset):
    """(generated, ground truth) uint8 images as the protocol decodes them, target keypoints, optionally the target
    pose mask, where the protocol crops DeepFashion 256x256 images for FID / LPIPS the cropped pair (the generated
    crop read from the crop folder the release's crop_img writes, the ground truth cropped alike), and optionally
    the target's ground-truth parsing (CIHP ids, `truth_parsing` folder) and a predicted label map (`pred_parsing`
    folder, always PNG, in the ids of the `merge` table, which the ground truth is mapped through to compare)."""

    def __init__(self, pairs: list[Pair], generated: Path, truth: Path, size: tuple[int, int],
                 keypoints: np.ndarray, with_masks: bool, reader: str = "cv2", crops: Path | None = None,
                 truth_parsing: Path | None = None, pred_parsing: Path | None = None,
                 merge: np.ndarray | None = None):
        self.pairs, self.generated, self.truth, self.size = pairs, generated, truth, size
        self.keypoints, self.with_masks, self.reader, self.crops = keypoints, with_masks, reader, crops
        self.truth_parsing, self.pred_parsing, self.merge = truth_parsing, pred_parsing, merge

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        p = self.pairs[i]
        real = read_image(self.truth / p.target, self.reader, self.size)  # (H,W,3) uint8
        item = {"index": i, "generated": to_chw(read_image(self.generated / p.generated, self.reader, self.size)),
                "truth": to_chw(real)}
        if self.crops is not None:
            item["generated_crop"] = to_chw(read_image(self.crops / p.generated, self.reader))
            item["truth_crop"] = to_chw(crop_square_fashion(real))
        if self.with_masks:
            item["mask"] = pose_masks(self.keypoints[i : i + 1], *self.size)[0]  # (H,W) bool
        if self.truth_parsing is not None:
            labels = read_labels(self.truth_parsing / (stem(p.target) + ".png"), self.size, NUM_CIHP)
            item["truth_parsing"] = torch.from_numpy(labels)  # (H,W) uint8 CIHP ids
            if self.pred_parsing is not None:
                item["truth_merged"] = torch.from_numpy(self.merge[labels])  # (H,W) int64 merged ids
                item["pred_parsing"] = torch.from_numpy(
                    read_labels(self.pred_parsing / (stem(p.generated) + ".png"), self.size, int(self.merge.max()) + 1))
        return item


def to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)  # (H,W,3) -> (3,H,W)


def target_keypoints(pairs: list[Pair], annotations: dict[str, np.ndarray], path: Path) -> np.ndarray:
    missing = sorted({p.target for p in pairs if p.target not in annotations})
    if missing:
        raise EvaluationError(f"{path}: no keypoints for {len(missing)} target image(s): "
                              f"{', '.join(missing[:SHOW_MISSING])}")
    return np.stack([annotations[p.target] for p in pairs])  # (N,18,2)


def predicted_keypoints(pairs: list[Pair], predictions: dict[str, np.ndarray], source: str,
                        allow_missing: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N,18,2) predictions for the pairs and a (N,) mask of the pairs that have one."""
    have = np.array([p.generated in predictions for p in pairs])
    if not have.all():
        absent = [p.generated for p, h in zip(pairs, have) if not h]
        message = (f"{source}: no predicted keypoints for {len(absent)} generated image(s): "
                   f"{', '.join(absent[:SHOW_MISSING])}")
        if not allow_missing:
            raise EvaluationError(message + " (rows are keyed by the generated file name; or pass --allow-missing)")
        print(f"warning: {message}; PCKh over the others", file=sys.stderr)
    kp = np.stack([predictions.get(p.generated, np.full((18, 2), -1, np.int64)) for p in pairs])
    return kp, have


# ------------------------------------------------------------------------------------------ main


def kept_by_script(protocol: Protocol, metric: str, pairs: list[Pair], generated: Path) -> np.ndarray:
    """(N,) bool: the pairs the protocol's script scores for FID / LPIPS (whole batches in its listing of the
    folder it reads, `generated`)."""
    spec = protocol.spec(metric)
    names = [p.generated for p in pairs]
    if spec.order is None:
        return np.ones(len(pairs), dtype=bool)
    return kept_mask(names, generated, spec.order, spec.whole_batches_of, spec.shrink)


def protocol_note(protocol: Protocol, metric: str, kept: np.ndarray | None = None) -> str:
    spec = protocol.spec(metric)
    text = spec if isinstance(spec, str) else spec.text
    if kept is not None and not kept.all():
        text += f"; {int(kept.sum())} of {len(kept)} images in whole batches"
    return f"{protocol.name}: {text}"


def evaluate(args: argparse.Namespace) -> dict:
    cfg = load_config(args.dataset_config, args.overrides)
    root = Path(cfg.data.root)
    size = tuple(cfg.data.image_size)
    if args.fid_network is not None and args.protocol != "clean":
        raise EvaluationError(f"--fid-network is a choice of the clean protocol; --protocol {args.protocol} fixes "
                              f"its own FID network")
    protocol = get_protocol(args.protocol, size, args.fid_network or "torchvision")
    truth_parsing = root / (cfg.data.test_dir + cfg.data.parsing_suffix)
    chosen = select_metrics(args, cfg.data.name, protocol, truth_parsing.is_dir())
    specs = {m: protocol.spec(m) for m in chosen}  # a metric the protocol lacks is an error before any work
    generated = Path(args.generated)
    if not generated.is_dir():
        raise EvaluationError(f"--generated {generated}: not a folder")
    out_dir = ensure_writable_folder(Path(args.out) if args.out else generated.resolve().parent / "metrics")
    pairs_file, annotation_file = root / cfg.data.pairs_test, root / cfg.data.annotation_test
    test_pairs = read_pairs(pairs_file)
    if cfg.data.max_test_pairs is not None:
        test_pairs = test_pairs[: cfg.data.max_test_pairs]
    pred_parsing = Path(args.pred_parsing) if "parsing" in chosen else None
    if pred_parsing is not None and not pred_parsing.is_dir():
        raise EvaluationError(f"--pred-parsing {pred_parsing}: not a folder")
    pairs, missing = find_pairs(test_pairs, generated, args.allow_missing, args.names, args.format)
    kp_target = target_keypoints(pairs, read_annotations(annotation_file, size), annotation_file)
    crops = None
    if protocol.crops(size) and any(m in chosen for m in ("fid", "lpips", "mlpips")):
        crops = write_release_crops(generated, [p.generated for p in pairs], out_dir / "release_crop")
    view = crops or generated  # the folder FID / LPIPS read
    kept = {m: kept_by_script(protocol, m, pairs, view) for m in ("fid", "lpips", "mlpips") if m in chosen}
    if "fid" in kept and kept["fid"].sum() < 2:
        raise EvaluationError(f"protocol {protocol.name}: FID keeps {int(kept['fid'].sum())} of {len(pairs)} "
                              f"generated images (whole batches of {specs['fid'].whole_batches_of}); it needs 2")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    random = args.weights == "random"

    lpips_model = None
    if "lpips" in chosen or "mlpips" in chosen:
        lpips_model = LPIPSMetric("random" if random else (args.alexnet_weights or "imagenet")).to(device)
    inception = None
    if "fid" in chosen:
        weights = "random" if random else (args.inception_weights or "imagenet")
        inception = InceptionFeatures(specs["fid"].network, weights, input_transform=specs["fid"].input_transform)
        inception = inception.to(device)
    estimator, openpose_estimator = None, None
    if "pckh" in chosen and args.pred_keypoints is None:
        if args.pose_estimator:
            estimator = estimators.load_estimator(args.pose_estimator)
        else:
            weights = "random" if random else (args.openpose_weights or "published")
            estimator = openpose_estimator = openpose.OpenPoseEstimator(
                weights, device, args.openpose_boxsize, args.openpose_scales, args.batch_size)
    estimator_name = args.pose_estimator or "built-in OpenPose"

    with_masks = "mssim" in chosen or "mlpips" in chosen
    with_colour = "colour" in chosen
    merge = check_merge(label_merge(cfg))  # (20,) CIHP id -> the id a predicted label map uses
    dataset = PairImages(pairs, generated, root / cfg.data.test_dir, size, kp_target, with_masks, protocol.reader,
                         crops, truth_parsing if with_colour or pred_parsing is not None else None, pred_parsing,
                         merge)
    n_merged = num_classes(merge)
    colour_errors = np.full((len(pairs), NUM_CIHP), np.nan)  # (N,20) e_k per pair and CIHP part
    confusion = np.zeros((n_merged, n_merged), np.int64)
    workers = cfg.data.num_workers if args.workers is None else args.workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)
    per_image: dict[str, np.ndarray] = {k: np.full(len(pairs), np.nan) for k in ("ssim", "mssim", "lpips", "mlpips")}
    moments = RunningMoments()
    predictions: dict[str, np.ndarray] = {}
    for batch in tqdm(loader, desc=f"evaluate ({protocol.name})", disable=args.quiet, dynamic_ncols=True):
        idx = batch["index"].numpy()
        fake, real = batch["generated"].to(device), batch["truth"].to(device)  # (B,3,H,W) uint8
        fake_view = batch["generated_crop"].to(device) if crops else fake  # what FID / LPIPS see
        real_view = batch["truth_crop"].to(device) if crops else real
        masks = batch["mask"].to(device) if with_masks else None  # (B,H,W) bool
        if "ssim" in chosen:
            per_image["ssim"][idx] = specs["ssim"](fake, real).cpu().numpy()
        if "mssim" in chosen:
            per_image["mssim"][idx] = specs["mssim"](fake, real, masks).cpu().numpy()
        if "lpips" in chosen:
            per_image["lpips"][idx] = lpips_model(fake_view, real_view).cpu().numpy()
        if "mlpips" in chosen:
            per_image["mlpips"][idx] = lpips_model(fake_view, real_view, masks).cpu().numpy()
        if inception is not None and kept["fid"][idx].any():
            moments.update(inception(fake_view[torch.from_numpy(kept["fid"][idx]).to(device)]))
        if with_colour:  # on the whole images, which the parsing maps cover
            colour_errors[idx] = part_colour_errors(fake, real, batch["truth_parsing"].to(device)).cpu().numpy()
        if pred_parsing is not None:
            confusion += confusion_matrix(batch["pred_parsing"], batch["truth_merged"], n_merged).numpy()
        if estimator is not None:
            names = [pairs[i].generated for i in idx]
            images = batch["generated"].permute(0, 2, 3, 1).numpy()  # (B,H,W,3) uint8 RGB
            predictions.update(estimators.predict_keypoints(estimator, [(names, images)], estimator_name))

    results: list[table.MetricResult] = []
    n = len(pairs)
    for key in ("ssim", "mssim"):
        if key in chosen:
            results.append(table.MetricResult(key, specs[key].aggregate(per_image[key]), n,
                                              protocol_note(protocol, key), preset=protocol.name))
    info_fid = {}
    if inception is not None:
        spec = specs["fid"]
        real_dir = root / (cfg.data.train_dir if spec.real_set == "train" else cfg.data.test_dir)
        cache = None if args.no_fid_cache else Path(args.fid_cache) if args.fid_cache else default_cache_dir()
        # the published scripts read real images of any size (each resized to 299); ours must match the config
        real = fid_real_statistics(real_dir, inception, cache, args.batch_size,
                                   size if spec.order is None else None, workers,
                                   None if args.quiet else lambda it: tqdm(it, desc=f"FID real set ({real_dir})"),
                                   protocol.reader, spec.order, spec.whole_batches_of, spec.shrink)
        mu, sigma = moments.statistics()
        value = frechet_distance(real.mu, real.sigma, mu, sigma, method=args.fid_method)
        note = protocol_note(protocol, "fid", kept["fid"]) + f"; {real.count} real images; {args.fid_method}"
        results.append(table.MetricResult("fid", value, int(kept["fid"].sum()), note, random, protocol.name))
        info_fid = {"fid_real_folder": str(real_dir), "fid_real_images": real.count,
                    "fid_real_cache": str(real.cache_file) if real.cache_file else None,
                    "fid_real_cache_hit": real.cache_hit, "fid_inception": inception.weights_source}
    for key in ("lpips", "mlpips"):
        if key in chosen:
            used = kept[key]
            results.append(table.MetricResult(key, float(per_image[key][used].mean()), int(used.sum()),
                                              protocol_note(protocol, key, used), random, protocol.name))
    if with_colour:
        mean_error, share, parts = colour_summary(colour_errors)
        results.append(table.MetricResult("colour", mean_error, n, protocol_note(protocol, "colour")
                                          + f"; mean over {parts} parts", preset=protocol.name))
        results.append(table.MetricResult("colour20", share, n, f"{protocol.name}: share of those {parts} parts "
                                          f"with a colour error <= {WITHIN_LEVELS:g} grey levels",
                                          preset=protocol.name))
    parsing_info = {}
    if pred_parsing is not None:
        scores = parsing_scores(confusion)
        results.append(table.MetricResult("parsing_acc", scores["pixel_accuracy"], n,
                                          protocol_note(protocol, "parsing") + "; pixel accuracy",
                                          preset=protocol.name))
        results.append(table.MetricResult("parsing_miou", scores["miou"], n, protocol_note(protocol, "parsing")
                                          + f"; mean IoU over the {scores['classes_in_truth']} classes present in "
                                          f"the ground truth, {scores['classes_predicted']} classes predicted",
                                          preset=protocol.name))
        parsing_info = {"parsing_predicted": str(pred_parsing), "parsing_classes_in_truth": scores["classes_in_truth"],
                        "parsing_classes_predicted": scores["classes_predicted"]}
    pckh_rows = None
    if "pckh" in chosen:
        if estimator is not None:
            source = str(estimators.write_predictions(out_dir / "pred-keypoints.csv", predictions))
        else:
            source = args.pred_keypoints
            predictions = read_annotations(source)
        kp_pred, have = predicted_keypoints(pairs, predictions, source, args.allow_missing)
        counts = pckh_counts(kp_pred[have], kp_target[have])
        pckh_rows = {k: np.zeros(n, v.dtype) for k, v in counts.items()}
        for k, v in counts.items():
            pckh_rows[k][have] = v
        note = (protocol_note(protocol, "pckh") + f": {int(counts['right'].sum())}/{int(counts['valid'].sum())} "
                f"joints, {int((~counts['used']).sum())} pairs skipped; keypoints from {source}")
        if openpose_estimator is not None:
            note += f" ({openpose_estimator.protocol})"
        results.append(table.MetricResult("pckh", pckh_score(counts), int(counts["used"].sum()), note,
                                          openpose_estimator is not None and openpose_estimator.random,
                                          protocol.name))

    info = {
        "images": n,
        "protocol": protocol.name,
        "protocol_reproduces": protocol.reproduces,
        "weights": ("random (RANDOM-INIT backbones: not comparable to published numbers)" if random
                    else "imagenet (pretrained backbones from the torch hub cache or the given paths)"),
        "dataset": cfg.data.name,
        "dataset_root": str(root),
        "generated": str(generated),
        "missing_pairs": len(missing),
        **({"release_crop_folder": str(crops)} if crops else {}),
        **info_fid,
        **parsing_info,
        **({"lpips_trunk": lpips_model.weights_source} if lpips_model is not None else {}),
    }
    if with_colour:  # one pair's mean over its parts (NaN: no part large enough)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            per_image["colour"] = np.nanmean(colour_errors, axis=1)
    columns = ["generated", "source", "target",
               *[k for k in ("ssim", "mssim", "lpips", "mlpips", "colour") if k in chosen]]
    used_columns = [f"{k}_used" for k in ("fid", "lpips", "mlpips") if k in kept and not kept[k].all()]
    rows = []
    for i, p in enumerate(pairs):
        row = {"generated": p.generated, "source": p.source, "target": p.target}
        row.update({k: repr(float(per_image[k][i])) for k in columns[3:]})
        row.update({c: int(kept[c[: -len("_used")]][i]) for c in used_columns})
        if pckh_rows is not None:
            used = bool(pckh_rows["used"][i])
            row.update({"pckh_right": int(pckh_rows["right"][i]) if used else "",
                        "pckh_valid": int(pckh_rows["valid"][i]) if used else ""})
        rows.append(row)
    columns += used_columns
    if pckh_rows is not None:
        columns += ["pckh_right", "pckh_valid"]
    paths = table.write_outputs(out_dir, results, info, rows, columns)
    print(table.markdown_table(results, info))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return table.metrics_json(results, info)


def main(argv: list[str] | None = None) -> dict:
    return evaluate(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
