"""Per-metric accumulators: evaluate.py runs one loop over the test pairs and hands every batch to one object per
metric (one per group of metrics that share a network: LPIPS and Mask-LPIPS), which keeps what it needs and
reports at the end. Each has one small interface:

    update(batch)  a batch of metrics.pairs.PairImages on the device (metrics.pairs.on_device): "index" (B,) the
                   pairs' positions in the pair list, "generated" / "truth" (B,3,H,W) uint8, and what the chosen
                   metrics need ("mask", "truth_parsing", the release's crops, ...)
    results()      -> [MetricResult]: its rows of the table, metrics.json and metrics.csv, in order
    per_image()    -> {column: (N,) array}: its per_image.csv columns in pair order (float: a score; bool: a 0/1
                      flag; integer: a count, masked where it does not apply)
    info()         -> {key: value}: its entries of metrics.json beside the values (real set, backbone weights)

Constructors take explicit arguments (the protocol, the networks, the kept pairs); evaluate.py maps its options
onto them. How each metric is computed is the protocol's (metrics/protocols.py); an accumulator only gathers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from data.parsing import NUM_CIHP
from metrics import colour, estimators, texture
from metrics.fid import PoolFeatures, RealStatistics, RunningMoments, frechet_distance
from metrics.lpips import LPIPSMetric
from metrics.pairs import Pair, predicted_keypoints, seen_by_fid_and_lpips
from metrics.parsing import confusion_matrix, parsing_scores
from metrics.pckh import pckh_counts, pckh_score
from metrics.protocols import Protocol
from metrics.table import MetricResult


class Accumulator:
    """The interface; per_image and info are empty unless a metric has them."""

    def update(self, batch: dict) -> None:
        raise NotImplementedError

    def results(self) -> list[MetricResult]:
        raise NotImplementedError

    def per_image(self) -> dict[str, np.ndarray]:
        return {}

    def info(self) -> dict[str, object]:
        return {}


def pair_means(values: np.ndarray) -> np.ndarray:
    """(N,K) per-part values, NaN where a part does not count -> (N,) each pair's mean over its parts (NaN: none)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        return np.nanmean(values, axis=1)


class SSIMAccumulator(Accumulator):
    """SSIM ("ssim") or Mask-SSIM ("mssim": both images times the target pose mask), per image as the protocol's
    script computes it, reduced as its script reports it (the release: a mean of batch means)."""

    def __init__(self, key: str, protocol: Protocol, n: int):
        self.key, self.protocol, self.spec = key, protocol, protocol.spec(key)
        self.values = np.full(n, np.nan)

    def update(self, batch: dict) -> None:
        masks = batch["mask"] if self.key == "mssim" else None
        self.values[batch["index"]] = self.spec(batch["generated"], batch["truth"], masks).cpu().numpy()

    def results(self) -> list[MetricResult]:
        return [MetricResult(self.key, self.spec.aggregate(self.values), len(self.values), self.protocol.note(self.key),
                             preset=self.protocol.name)]

    def per_image(self) -> dict[str, np.ndarray]:
        return {self.key: self.values}


class FIDAccumulator(Accumulator):
    """FID of the generated images the protocol's script keeps (`kept`, (N,) bool) against the real set's
    statistics, which the caller computes before the loop (so that a problem with the real set or its cache
    stops the run before any generated image is scored)."""

    def __init__(self, protocol: Protocol, features: PoolFeatures, kept: np.ndarray, real: RealStatistics,
                 method: str = "sqrtm", random_backbone: bool = False):
        self.protocol, self.features, self.kept, self.real = protocol, features, kept, real
        self.method, self.random_backbone = method, random_backbone
        self.moments = RunningMoments()

    def update(self, batch: dict) -> None:
        kept = self.kept[batch["index"]]
        if kept.any():
            generated = seen_by_fid_and_lpips(batch)[0]
            self.moments.update(self.features(generated[torch.from_numpy(kept).to(generated.device)]))

    def results(self) -> list[MetricResult]:
        mu, sigma = self.moments.statistics()
        value = frechet_distance(self.real.mu, self.real.sigma, mu, sigma, method=self.method)
        note = self.protocol.note("fid", self.kept) + f"; {self.real.count} real images; {self.method}"
        return [MetricResult("fid", value, int(self.kept.sum()), note, self.random_backbone, self.protocol.name)]

    def per_image(self) -> dict[str, np.ndarray]:
        return {} if self.kept.all() else {"fid_used": self.kept}

    def info(self) -> dict[str, object]:
        return {"fid_real_folder": self.real.folder, "fid_real_images": self.real.count,
                "fid_real_cache": str(self.real.cache_file) if self.real.cache_file else None,
                "fid_real_cache_hit": self.real.cache_hit, "fid_inception": self.features.weights_source}


class LPIPSAccumulator(Accumulator):
    """LPIPS and / or Mask-LPIPS ("lpips", "mlpips": times the target pose mask) with one AlexNet trunk, each the
    mean over the pairs its script keeps (`kept`: key -> (N,) bool)."""

    def __init__(self, keys: list[str], protocol: Protocol, model: LPIPSMetric, kept: dict[str, np.ndarray],
                 random_backbone: bool = False):
        self.protocol, self.model, self.kept, self.random_backbone = protocol, model, kept, random_backbone
        self.values = {key: np.full(len(kept[key]), np.nan) for key in keys}

    def update(self, batch: dict) -> None:
        generated, truth = seen_by_fid_and_lpips(batch)
        for key, values in self.values.items():
            masks = batch["mask"] if key == "mlpips" else None
            values[batch["index"]] = self.model(generated, truth, masks).cpu().numpy()

    def results(self) -> list[MetricResult]:
        return [MetricResult(key, float(values[self.kept[key]].mean()), int(self.kept[key].sum()),
                             self.protocol.note(key, self.kept[key]), self.random_backbone, self.protocol.name)
                for key, values in self.values.items()]

    def per_image(self) -> dict[str, np.ndarray]:
        flags = {f"{key}_used": self.kept[key] for key in self.values if not self.kept[key].all()}
        return {**self.values, **flags}

    def info(self) -> dict[str, object]:
        return {"lpips_trunk": self.model.weights_source}


class ColourAccumulator(Accumulator):
    """The per-part colour error (metrics/colour.py) over the target's ground-truth parsing ("truth_parsing")."""

    def __init__(self, protocol: Protocol, n: int):
        self.protocol = protocol
        self.errors = np.full((n, NUM_CIHP), np.nan)  # (N,20) e_k per pair and CIHP part

    def update(self, batch: dict) -> None:  # on the whole images, which the parsing maps cover
        errors = colour.part_colour_errors(batch["generated"], batch["truth"], batch["truth_parsing"])
        self.errors[batch["index"]] = errors.cpu().numpy()

    def results(self) -> list[MetricResult]:
        mean_error, share, parts = colour.summarise(self.errors)
        name, n = self.protocol.name, len(self.errors)
        return [MetricResult("colour", mean_error, n, self.protocol.note("colour") + f"; mean over {parts} parts",
                             preset=name),
                MetricResult("colour20", share, n, f"{name}: share of those {parts} parts with a colour error <= "
                             f"{colour.WITHIN_LEVELS:g} grey levels", preset=name)]

    def per_image(self) -> dict[str, np.ndarray]:
        return {"colour": pair_means(self.errors)}


class TextureAccumulator(Accumulator):
    """The per-part texture correlation and contrast (metrics/texture.py) of the clothing parts of the target's
    ground-truth parsing ("truth_parsing")."""

    def __init__(self, protocol: Protocol, n: int):
        self.protocol = protocol
        self.correlation = np.full((n, len(texture.TEXTURE_PARTS)), np.nan)  # (N,5)
        self.contrast = self.correlation.copy()

    def update(self, batch: dict) -> None:
        correlation, contrast = texture.part_texture(batch["generated"], batch["truth"], batch["truth_parsing"])
        self.correlation[batch["index"]] = correlation.cpu().numpy()
        self.contrast[batch["index"]] = contrast.cpu().numpy()

    def results(self) -> list[MetricResult]:
        mean, share, contrast, parts = texture.summarise(self.correlation, self.contrast)
        name, n = self.protocol.name, len(self.correlation)
        return [MetricResult("texture", mean, n, self.protocol.note("texture") + f"; mean over {parts} parts",
                             preset=name),
                MetricResult("texture50", share, n, f"{name}: share of those {parts} parts with a texture "
                             f"correlation > {texture.ABOVE:g}", preset=name),
                MetricResult("texture_contrast", contrast, n, f"{name}: mean over those {parts} parts of the "
                             f"generated / true grey-level residual std", preset=name)]

    def per_image(self) -> dict[str, np.ndarray]:
        return {"texture": pair_means(self.correlation)}


class ParsingAccumulator(Accumulator):
    """Parsing pixel accuracy and mIoU (metrics/parsing.py) of the predicted label maps ("pred_parsing", read
    from `predicted`) against the ground truth mapped to their ids ("truth_merged"), one confusion matrix pooled
    over all pairs."""

    def __init__(self, protocol: Protocol, n: int, num_classes: int, predicted: Path):
        self.protocol, self.n, self.num_classes, self.predicted = protocol, n, num_classes, predicted
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, batch: dict) -> None:
        self.confusion += confusion_matrix(batch["pred_parsing"], batch["truth_merged"], self.num_classes).cpu().numpy()

    def results(self) -> list[MetricResult]:
        scores, name = parsing_scores(self.confusion), self.protocol.name
        return [MetricResult("parsing_acc", scores["pixel_accuracy"], self.n,
                             self.protocol.note("parsing") + "; pixel accuracy", preset=name),
                MetricResult("parsing_miou", scores["miou"], self.n, self.protocol.note("parsing")
                             + f"; mean IoU over the {scores['classes_in_truth']} classes present in the ground "
                             f"truth, {scores['classes_predicted']} classes predicted", preset=name)]

    def info(self) -> dict[str, object]:
        scores = parsing_scores(self.confusion)
        return {"parsing_predicted": str(self.predicted), "parsing_classes_in_truth": scores["classes_in_truth"],
                "parsing_classes_predicted": scores["classes_predicted"]}


class PCKhAccumulator(Accumulator):
    """PCKh of keypoints estimated on the generated images against the targets' (`targets`, (N,18,2)): either
    `predictions` read before the loop from the CSV `source`, or an `estimator` run on every batch, whose
    predictions are written to `source` at the end. `estimator_note` names what ran (the built-in OpenPose's
    settings); `random_backbone` labels a random-init estimator."""

    def __init__(self, protocol: Protocol, pairs: list[Pair], targets: np.ndarray, source: str,
                 allow_missing: bool = False, predictions: dict[str, np.ndarray] | None = None,
                 estimator: estimators.PoseEstimator | None = None, estimator_name: str = "",
                 estimator_note: str | None = None, random_backbone: bool = False):
        if (predictions is None) == (estimator is None):
            raise ValueError("PCKhAccumulator: give predictions or an estimator, not both or neither")
        self.protocol, self.pairs, self.targets, self.source = protocol, pairs, targets, source
        self.allow_missing, self.estimator, self.estimator_name = allow_missing, estimator, estimator_name
        self.estimator_note, self.random_backbone = estimator_note, random_backbone
        self.predictions: dict[str, np.ndarray] = {} if predictions is None else predictions
        self.matched = None  # ((N,18,2) predictions, (N,) bool: the pair has one)
        if predictions is not None:  # a pair without a prediction is an error before any image is scored
            self.matched = predicted_keypoints(pairs, predictions, source, allow_missing)
        self.counts: dict[str, np.ndarray] | None = None  # per pair, over all pairs (0 where none)

    def update(self, batch: dict) -> None:
        if self.estimator is not None:
            names = [self.pairs[i].generated for i in batch["index"]]
            images = batch["generated"].permute(0, 2, 3, 1).cpu().numpy()  # (B,H,W,3) uint8 RGB
            self.predictions.update(estimators.predict_keypoints(self.estimator, [(names, images)],
                                                                 self.estimator_name))

    def results(self) -> list[MetricResult]:
        if self.estimator is not None:
            estimators.write_predictions(self.source, self.predictions)
            self.matched = predicted_keypoints(self.pairs, self.predictions, self.source, self.allow_missing)
        predicted, have = self.matched
        counts = pckh_counts(predicted[have], self.targets[have])
        self.counts = {k: np.zeros(len(self.pairs), v.dtype) for k, v in counts.items()}
        for k, v in counts.items():
            self.counts[k][have] = v
        note = (self.protocol.note("pckh") + f": {int(counts['right'].sum())}/{int(counts['valid'].sum())} joints, "
                f"{int((~counts['used']).sum())} pairs skipped; keypoints from {self.source}")
        if self.estimator_note is not None:
            note += f" ({self.estimator_note})"
        return [MetricResult("pckh", pckh_score(counts), int(counts["used"].sum()), note, self.random_backbone,
                             self.protocol.name)]

    def per_image(self) -> dict[str, np.ndarray]:
        """Joints within the threshold and joints scored per pair (after results()), empty where PCKh skipped
        the pair or it has no prediction."""
        if self.counts is None:
            raise RuntimeError("PCKhAccumulator.per_image is known after results()")
        skipped = ~self.counts["used"]
        return {"pckh_right": np.ma.masked_array(self.counts["right"], skipped),
                "pckh_valid": np.ma.masked_array(self.counts["valid"], skipped)}
