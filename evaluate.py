"""Score generated images with the pose-transfer metrics: SSIM, mask-SSIM, FID, LPIPS, mask-LPIPS, PCKh.

    python evaluate.py --generated runs/00001-deepfashion/test-00200000/images --dataset-config configs/deepfashion.yaml
    python evaluate.py --generated DIR --dataset-config configs/market.yaml data.root=/data/market \
        --metrics ssim,mssim,lpips,mlpips --weights imagenet --out results/market
    python evaluate.py ... --metrics ssim,fid,lpips,pckh                       # PCKh with the built-in OpenPose
    python evaluate.py ... --pred-keypoints openpose-on-generated.csv          # PCKh from your estimator's CSV
    python evaluate.py ... --pose-estimator my_package.openpose:Estimator      # or run a pluggable estimator

Reads the config's test pairs (`data.pairs_test`, capped by `data.max_test_pairs`), expects one generated image
`<from-stem>___<to-stem>.png` per pair in --generated (test.py's naming), takes the ground truth from the test
folder and the target keypoints from the test annotation CSV. Protocols (DESIGN.md section 6; details in each
metrics/ module): SSIM as skimage with Gaussian weights; mask-SSIM / mask-LPIPS with the target pose mask; FID
"posetransfer" (GFLA's script: torchvision's ImageNet Inception, real set = the training images) or "standard"
(pytorch-fid's FID Inception, real set = the test images); LPIPS AlexNet v0.1; PCKh as PATN's script, on
keypoints of the generated images from --pred-keypoints, --pose-estimator, or else the built-in OpenPose COCO body
model with PATN's extraction (metrics/openpose.py; written to <out>/pred-keypoints.csv).

Writes to --out (default: next to --generated, `metrics/`; checked for writability before any metric is
computed): metrics.json, metrics.csv, per_image.csv (each atomically), and the markdown table to stdout.
--weights random uses randomly initialised Inception/AlexNet/OpenPose networks (offline tests and the demo); such
values are labelled RANDOM-INIT everywhere and are not comparable to published numbers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.annotations import read_annotations, read_pairs
from data.datasets import generated_image_name
from metrics import estimators, openpose, table
from metrics.fid import REAL_SET, InceptionFeatures, RunningMoments, default_cache_dir, frechet_distance, read_rgb
from metrics.fid import real_statistics as fid_real_statistics
from metrics.lpips import LPIPSMetric
from metrics.masks import pose_masks
from metrics.pckh import pckh_counts, pckh_score
from metrics.ssim import masked_ssim, ssim
from utils.cli import run_main
from utils.config import load_config
from utils.errors import InputError
from utils.io import ensure_writable_folder

SHOW_MISSING = 10  # how many missing names an error lists


class EvaluationError(InputError):
    """Inputs that cannot be evaluated as asked (missing images, keypoints, wrong options)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, help="folder of generated <from-stem>___<to-stem>.png images")
    p.add_argument("--dataset-config", required=True, help="dataset YAML (data.* keys: root, test folder, CSVs)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides, e.g. data.root=/data/df")
    p.add_argument("--metrics", default=None,
                   help=f"comma list of {','.join(table.METRICS)} (default: the paper's set for the dataset; "
                        "pckh only when keypoints or an estimator are given, or when named here: then the "
                        "built-in OpenPose runs: tens of seconds per 256x176 image on a CPU, see README Speed)")
    p.add_argument("--fid-protocol", choices=("posetransfer", "standard"), default="posetransfer")
    p.add_argument("--fid-method", choices=("sqrtm", "eigh"), default="sqrtm",
                   help="matrix square root of the Frechet distance (sqrtm: pytorch-fid's; eigh: faster, same value)")
    p.add_argument("--fid-cache", default=None, help="folder for cached real-set statistics (default: "
                   "$XDG_CACHE_HOME/spgnet/fid or ~/.cache/spgnet/fid)")
    p.add_argument("--no-fid-cache", action="store_true", help="always recompute the real-set statistics")
    p.add_argument("--pred-keypoints", default=None,
                   help="annotation CSV of keypoints estimated on the generated images, keyed by generated file name")
    p.add_argument("--pose-estimator", default=None, help="module:attr of a pose estimator (metrics/estimators.py)")
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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="image-loading workers (default: data.num_workers)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class Pair:
    generated: str  # file name in --generated
    source: str
    target: str


def select_metrics(args: argparse.Namespace, dataset_name: str) -> tuple[str, ...]:
    """--metrics, or the dataset's default set; the default runs PCKh only on given keypoints or estimator (the
    built-in OpenPose is slow on a CPU, so it runs when --metrics names pckh)."""
    has_keypoints = args.pred_keypoints is not None or args.pose_estimator is not None
    if args.pred_keypoints and args.pose_estimator:
        raise EvaluationError("give --pred-keypoints or --pose-estimator, not both")
    if args.metrics is None:
        chosen = table.default_metrics(dataset_name)
        if not has_keypoints:
            print("note: PCKh skipped (name it in --metrics to run the built-in OpenPose, or give "
                  "--pred-keypoints CSV or --pose-estimator)", file=sys.stderr)
            chosen = tuple(m for m in chosen if m != "pckh")
        return chosen
    return table.parse_metrics(args.metrics)


def find_pairs(pairs: list[tuple[str, str]], generated: Path, allow_missing: bool) -> tuple[list[Pair], list[str]]:
    """Pairs whose generated image exists; missing ones are an error unless allow_missing."""
    present = {p.name for p in generated.iterdir()}
    items = [Pair(generated_image_name(s, t), s, t) for s, t in pairs]
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


class PairImages(torch.utils.data.Dataset):
    """(generated, ground truth) uint8 images, target keypoints and (optionally) the target pose mask."""

    def __init__(self, pairs: list[Pair], generated: Path, truth: Path, size: tuple[int, int],
                 keypoints: np.ndarray, with_masks: bool):
        self.pairs, self.generated, self.truth, self.size = pairs, generated, truth, size
        self.keypoints, self.with_masks = keypoints, with_masks

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        p = self.pairs[i]
        item = {
            "index": i,
            "generated": torch.from_numpy(read_rgb(self.generated / p.generated, self.size)).permute(2, 0, 1),
            "truth": torch.from_numpy(read_rgb(self.truth / p.target, self.size)).permute(2, 0, 1),
        }
        if self.with_masks:
            item["mask"] = pose_masks(self.keypoints[i : i + 1], *self.size)[0]  # (H,W) bool
        return item


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


# ------------------------------------------------------------------------------------------ protocols in words

SSIM_NOTE = "skimage SSIM, Gaussian sigma 1.5, population covariance, data_range 255, colour, mean over images"
MSSIM_NOTE = "SSIM of both images times the target pose mask (Siarohin et al.'s produce_ma_mask)"
LPIPS_NOTE = "lpips AlexNet v0.1, images in [-1,1], mean over images"
MLPIPS_NOTE = "LPIPS on [-1,1] images times the target pose mask (GFLA's calculate_mask_lpips)"
FID_NOTE = {
    "posetransfer": "torchvision ImageNet Inception-v3 pool3 (GFLA's script), real set = {n} training images",
    "standard": "pytorch-fid FID Inception pool3, real set = {n} test images",
}
PCKH_NOTE = "PATN's calPCKH: alpha 0.5 of the target head box, {right}/{valid} joints, {skipped} pairs skipped"


# ------------------------------------------------------------------------------------------ main


def evaluate(args: argparse.Namespace) -> dict:
    cfg = load_config(args.dataset_config, args.overrides)
    chosen = select_metrics(args, cfg.data.name)
    root = Path(cfg.data.root)
    size = tuple(cfg.data.image_size)
    generated = Path(args.generated)
    if not generated.is_dir():
        raise EvaluationError(f"--generated {generated}: not a folder")
    out_dir = ensure_writable_folder(Path(args.out) if args.out else generated.resolve().parent / "metrics")
    pairs_file, annotation_file = root / cfg.data.pairs_test, root / cfg.data.annotation_test
    test_pairs = read_pairs(pairs_file)
    if cfg.data.max_test_pairs is not None:
        test_pairs = test_pairs[: cfg.data.max_test_pairs]
    pairs, missing = find_pairs(test_pairs, generated, args.allow_missing)
    kp_target = target_keypoints(pairs, read_annotations(annotation_file, size), annotation_file)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    random = args.weights == "random"

    lpips_model = None
    if "lpips" in chosen or "mlpips" in chosen:
        lpips_model = LPIPSMetric("random" if random else (args.alexnet_weights or "imagenet")).to(device)
    inception = None
    if "fid" in chosen:
        weights = "random" if random else (args.inception_weights or "imagenet")
        inception = InceptionFeatures(args.fid_protocol, weights).to(device)
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
    dataset = PairImages(pairs, generated, root / cfg.data.test_dir, size, kp_target, with_masks)
    workers = cfg.data.num_workers if args.workers is None else args.workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)
    per_image: dict[str, np.ndarray] = {k: np.full(len(pairs), np.nan) for k in ("ssim", "mssim", "lpips", "mlpips")}
    moments = RunningMoments()
    predictions: dict[str, np.ndarray] = {}
    for batch in tqdm(loader, desc="evaluate", disable=args.quiet, dynamic_ncols=True):
        idx = batch["index"].numpy()
        fake, real = batch["generated"].to(device), batch["truth"].to(device)  # (B,3,H,W) uint8
        masks = batch["mask"].to(device) if with_masks else None  # (B,H,W) bool
        if "ssim" in chosen:
            per_image["ssim"][idx] = ssim(fake, real).cpu().numpy()
        if "mssim" in chosen:
            per_image["mssim"][idx] = masked_ssim(fake, real, masks).cpu().numpy()
        if "lpips" in chosen:
            per_image["lpips"][idx] = lpips_model(fake, real).cpu().numpy()
        if "mlpips" in chosen:
            per_image["mlpips"][idx] = lpips_model(fake, real, masks).cpu().numpy()
        if inception is not None:
            moments.update(inception(fake))
        if estimator is not None:
            names = [pairs[i].generated for i in idx]
            images = batch["generated"].permute(0, 2, 3, 1).numpy()  # (B,H,W,3) uint8 RGB
            predictions.update(estimators.predict_keypoints(estimator, [(names, images)], estimator_name))

    results: list[table.MetricResult] = []
    n = len(pairs)
    notes = {"ssim": SSIM_NOTE, "mssim": MSSIM_NOTE, "lpips": LPIPS_NOTE, "mlpips": MLPIPS_NOTE}
    for key in ("ssim", "mssim"):
        if key in chosen:
            results.append(table.MetricResult(key, float(per_image[key].mean()), n, notes[key]))
    info_fid = {}
    if inception is not None:
        real_dir = root / (cfg.data.train_dir if REAL_SET[args.fid_protocol] == "train" else cfg.data.test_dir)
        cache = None if args.no_fid_cache else Path(args.fid_cache) if args.fid_cache else default_cache_dir()
        real = fid_real_statistics(real_dir, inception, cache, args.batch_size, size, workers,
                                   None if args.quiet else lambda it: tqdm(it, desc=f"FID real set ({real_dir})"))
        mu, sigma = moments.statistics()
        value = frechet_distance(real.mu, real.sigma, mu, sigma, method=args.fid_method)
        results.append(table.MetricResult("fid", value, n, FID_NOTE[args.fid_protocol].format(n=real.count)
                                          + f", {args.fid_method}", random))
        info_fid = {"fid_real_folder": str(real_dir), "fid_real_images": real.count,
                    "fid_real_cache": str(real.cache_file) if real.cache_file else None,
                    "fid_real_cache_hit": real.cache_hit, "fid_inception": inception.weights_source}
    for key in ("lpips", "mlpips"):
        if key in chosen:
            results.append(table.MetricResult(key, float(per_image[key].mean()), n, notes[key], random))
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
        note = PCKH_NOTE.format(right=int(counts["right"].sum()), valid=int(counts["valid"].sum()),
                                skipped=int((~counts["used"]).sum())) + f"; keypoints from {source}"
        if openpose_estimator is not None:
            note += f" ({openpose_estimator.protocol})"
        results.append(table.MetricResult("pckh", pckh_score(counts), int(counts["used"].sum()), note,
                                          openpose_estimator is not None and openpose_estimator.random))

    info = {
        "images": n,
        "weights": ("random (RANDOM-INIT backbones: not comparable to published numbers)" if random
                    else "imagenet (pretrained backbones from the torch hub cache or the given paths)"),
        "fid_protocol": args.fid_protocol if "fid" in chosen else "n/a",
        "dataset": cfg.data.name,
        "dataset_root": str(root),
        "generated": str(generated),
        "missing_pairs": len(missing),
        **info_fid,
        **({"lpips_trunk": lpips_model.weights_source} if lpips_model is not None else {}),
    }
    columns = ["generated", "source", "target", *[k for k in ("ssim", "mssim", "lpips", "mlpips") if k in chosen]]
    rows = []
    for i, p in enumerate(pairs):
        row = {"generated": p.generated, "source": p.source, "target": p.target}
        row.update({k: repr(float(per_image[k][i])) for k in columns[3:]})
        if pckh_rows is not None:
            used = bool(pckh_rows["used"][i])
            row.update({"pckh_right": int(pckh_rows["right"][i]) if used else "",
                        "pckh_valid": int(pckh_rows["valid"][i]) if used else ""})
        rows.append(row)
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
