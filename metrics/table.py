"""Metric names, labels and protocol notes, and the files evaluate.py writes: a markdown table (stdout),
metrics.json, metrics.csv and per_image.csv.

metrics.json keeps the values under "metrics" (scripts/report.py reads data.get("metrics", data)) and everything
needed to read them beside: the image count, the weights, the protocol's name (metrics/protocols.py), and per
metric a label carrying that name ("SSIM [release]") and a note on how it was computed.
Values from randomly initialised backbones (FID, LPIPS with --weights random) are labelled as such in the table
and in "labels"; they only show that the pipeline runs and are not comparable to published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import InputError
from utils.io import csv_text, json_text, write_files

METRICS = ("ssim", "mssim", "fid", "lpips", "mlpips", "pckh", "colour", "texture", "parsing")
# "colour", "texture" and "parsing" are our own measures (the clean protocol's only: no paper reports them), each
# selected by one name and reported as several rows: the per-part colour error and its share within 20 levels;
# the per-part texture correlation, its share above 0.5 and the texture contrast; parsing pixel accuracy and mIoU
LABELS = {"ssim": "SSIM", "mssim": "Mask-SSIM", "fid": "FID", "lpips": "LPIPS", "mlpips": "Mask-LPIPS",
          "pckh": "PCKh", "colour": "Per-part colour error (grey levels)", "colour20": "Parts within 20 levels",
          "texture": "Per-part texture correlation", "texture50": "Parts with texture correlation > 0.5",
          "texture_contrast": "Texture contrast (generated / true)",
          "parsing_acc": "Parsing pixel accuracy", "parsing_miou": "Parsing mIoU"}
# None: neither; 1 is best (a ratio to the ground truth)
HIGHER_IS_BETTER = {"ssim": True, "mssim": True, "fid": False, "lpips": False, "mlpips": False, "pckh": True,
                    "colour": False, "colour20": True, "texture": True, "texture50": True, "texture_contrast": None,
                    "parsing_acc": True, "parsing_miou": True}
BACKBONE = {"fid": "Inception", "lpips": "AlexNet trunk", "mlpips": "AlexNet trunk", "pckh": "OpenPose"}
# what the papers report per dataset (SPGNet Tables 1-2): the mask metrics are Market-1501's
DEFAULT_METRICS = {
    "market": ("ssim", "mssim", "fid", "lpips", "mlpips", "pckh"),
    "synthetic_market": ("ssim", "mssim", "fid", "lpips", "mlpips", "pckh"),
}
DEFAULT_OTHER = ("ssim", "fid", "lpips", "pckh")


class MetricNameError(InputError):
    """An unknown name in --metrics; the message lists the known ones."""


def default_metrics(dataset_name: str) -> tuple[str, ...]:
    return DEFAULT_METRICS.get(dataset_name, DEFAULT_OTHER)


def parse_metrics(text: str) -> tuple[str, ...]:
    """'ssim,fid' -> ('ssim', 'fid') in canonical order; unknown names are an error naming them."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise MetricNameError(f"--metrics {text!r}: unknown {unknown}; choose from {','.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


@dataclass
class MetricResult:
    key: str  # a key of LABELS
    value: float
    count: int  # images (pairs) that entered the value; for PCKh the pairs used
    protocol: str  # how it was computed, in words
    random_backbone: bool = False
    preset: str = "clean"  # the protocol's name (metrics/protocols.py)

    @property
    def label(self) -> str:
        base = f"{LABELS[self.key]} [{self.preset}]"
        if self.random_backbone:
            return f"{base} (RANDOM-INIT {BACKBONE[self.key]}: not comparable to published numbers)"
        return base


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def markdown_table(results: Sequence[MetricResult], info: Mapping[str, object]) -> str:
    arrows = {True: "higher", False: "lower", None: "closer to 1"}
    lines = [
        f"Evaluated {info.get('images')} generated images ({info.get('generated')}); protocol: "
        f"{info.get('protocol')} ({info.get('protocol_reproduces')}); weights: {info.get('weights')}",
        "",
        "| Metric | Value | Better | Images | Protocol |",
        "|---|---:|---|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.label} | {_fmt(r.value)} | {arrows[HIGHER_IS_BETTER[r.key]]} | {r.count} | {r.protocol} |")
    return "\n".join(lines)


def metrics_json(results: Sequence[MetricResult], info: Mapping[str, object]) -> dict:
    return {
        "metrics": {r.key: r.value for r in results},
        **info,
        "labels": {r.key: r.label for r in results},
        "counts": {r.key: r.count for r in results},
        "protocols": {r.key: r.protocol for r in results},
    }


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def per_image_layout(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """per_image.csv's metric columns in the file's order: the per-image scores (float), then the whole-batch
    flags (bool), then the counts (integer), each group in metric order."""
    group = {"f": 0, "b": 1}
    return dict(sorted(columns.items(), key=lambda item: group.get(np.asarray(item[1]).dtype.kind, 2)))


def _cells(column: Sequence | np.ndarray) -> list:
    """One per_image.csv column as cells: a float as its repr (every digit), a flag or a count as an integer, a
    masked entry empty, anything else as it is."""
    if isinstance(column, np.ma.MaskedArray):
        return ["" if masked else int(v) for v, masked in zip(column.data, np.ma.getmaskarray(column))]
    if isinstance(column, np.ndarray) and column.dtype.kind == "f":
        return [repr(float(v)) for v in column]
    if isinstance(column, np.ndarray) and column.dtype.kind in "biu":
        return [int(v) for v in column]
    return list(column)


def write_outputs(out_dir: str | Path, results: Sequence[MetricResult], info: Mapping[str, object],
                  per_image: Mapping[str, Sequence | np.ndarray]) -> dict[str, Path]:
    """metrics.json, metrics.csv and per_image.csv (one column per key of `per_image`, one row per image) in
    out_dir, written together (utils.io.write_files: all or none replaced). Both CSVs carry the image count, the
    weights and the protocol's name as columns, so a CSV read on its own still says what it measured."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "csv": out / "metrics.csv", "per_image": out / "per_image.csv"}
    common = {"images": info.get("images"), "weights": info.get("weights"), "protocol": info.get("protocol")}
    cells = [_cells(column) for column in per_image.values()]
    texts = {
        "json": json_text(_json_safe(metrics_json(results, info))),
        "csv": csv_text(["metric", "label", "value", "count", "computed_as", *common],
                        ([r.key, r.label, repr(float(r.value)), r.count, r.protocol, *common.values()]
                         for r in results)),
        "per_image": csv_text([*per_image, *common], ([*row, *common.values()] for row in zip(*cells))),
    }
    write_files({paths[k]: text.encode("utf-8") for k, text in texts.items()})
    return paths
