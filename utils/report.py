"""A self-contained HTML report of a run: loss curves (inline SVG), the metric table, a grid of test results.
Written by scripts/report.py and scripts/demo.py."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import cv2
import numpy as np

from utils.errors import InputError
from utils.io import read_image, write_text
from utils.run import read_metrics


class ReportError(InputError):
    """A report input that is missing or cannot be read; the message names it."""


CURVES = [
    ("Stage 1: SPATN parsing", ["g/ce"], ["val/ce"]),
    ("Stage 2: reconstruction", ["g/l1", "g/perceptual"], ["val/l1", "val/perceptual"]),
    ("Adversarial", ["g/adversarial", "d/d_real", "d/d_fake"], []),
    ("Held-out SSIM (generated vs. copying the source)", [], ["val/ssim", "val/ssim_copy_source"]),
    ("Held-out parsing accuracy", [], ["val/parsing_acc"]),
]
FLOW_CURVES = [("Stage 0: flow module", ["flow/flow_epe"], ["val/flow_epe", "val/flow_epe_zero_flow"])]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
LEGEND_LINE = 14  # px per legend entry: one entry a line below the plot, so no name is cut at the right edge
MARKET_NAME = re.compile(r"^(-?\d+)_c\d+s\d+_")  # Market-1501: <id>_c<cam>s<seq>_<frame>_<box>


def axis_range(values: list[float], pad: float) -> tuple[float, float]:
    """(min, max) of the values; a single value is centred in [value - pad, value + pad] instead."""
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - pad, hi + pad)


def svg_chart(title: str, series: dict[str, list[tuple[int, float]]], width: int = 460, height: int = 220) -> str:
    """A small line chart: one polyline per series (a dot on each point), axes with min/max labels, and a
    legend of one line per series below the plot (the picture grows by LEGEND_LINE px per series)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = axis_range(xs, pad=1)
    y0, y1 = axis_range(ys, pad=0.05 * abs(ys[0]) or 1.0)
    left, right, top, bottom = 52, 10, 24, 22
    pw, ph = width - left - right, height - top - bottom
    height += LEGEND_LINE * len(series)

    def pos(x: float, y: float) -> str:
        return f"{left + (x - x0) / (x1 - x0) * pw:.1f},{top + (1 - (y - y0) / (y1 - y0)) * ph:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{left}" y="{top + ph + 14}">{x0}</text>',
             f'<text x="{left + pw}" y="{top + ph + 14}" text-anchor="end">step {x1}</text>']
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(pos(x, y) for x, y in pts)
        dots = "".join(f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2" fill="{colour}"/>'
                       for c in points.split()) if len(pts) <= 60 else ""  # dense training curves: the line only
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>{dots}')
        y = top + ph + bottom + LEGEND_LINE * i + 10
        parts.append(f'<line x1="{left}" y1="{y - 4}" x2="{left + 16}" y2="{y - 4}" stroke="{colour}" '
                     f'stroke-width="2"/><text x="{left + 22}" y="{y}" fill="{colour}">{html.escape(name)} '
                     f'({len(pts)} points)</text>')
    parts.append("</svg>")
    return "".join(parts)


def curves_html(run: Path, specs) -> str:
    rows = read_metrics(run)
    charts = []
    for title, train_keys, val_keys in specs:
        series = {}
        for key in train_keys + val_keys:
            series[key] = [(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
        charts.append(svg_chart(title, series))
    return "\n".join(c for c in charts if c)


def png_data_uri(image_bgr: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise RuntimeError("could not encode a PNG for the report")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def person_of(image_name: str) -> str:
    """The person an image shows, from its name (scripts/make_pairs.py's rule): Market-1501's first field, else
    DeepFashion's part before the last '_' (synthid000012_3front.jpg -> synthid000012), else the whole stem."""
    base = Path(image_name).stem
    match = MARKET_NAME.match(base)
    return match.group(1) if match else base.rsplit("_", 1)[0]


def spread_over_people(names: list[str], rows: int) -> list[str]:
    """Up to `rows` of the generated names <from-stem>___<to-stem>.png, taken round-robin over the source
    persons (in sorted order): every person's first pair, then every person's second, ... So 8 rows of a test
    set sorted by person show 8 people when there are 8, not 8 pairs of the first one."""
    by_person: dict[str, list[str]] = {}
    for name in sorted(names):
        by_person.setdefault(person_of(name.split("___")[0]), []).append(name)
    queues = list(by_person.values())
    chosen: list[str] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)][: rows - len(chosen)]
    return chosen


def results_grid(grids_dir: Path, rows: int = 8) -> str:
    files = [grids_dir / n for n in spread_over_people([f.name for f in grids_dir.glob("*.png")], rows)]
    if not files:
        return "<p>(no test grids found)</p>"
    sheet = np.concatenate([read_image(f) for f in files], axis=0)  # an unreadable grid names its file
    people = len({person_of(f.name.split("___")[0]) for f in files})
    return (f'<p>columns: source | target pose | predicted parsing | generated | ground truth '
            f'({len(files)} test pairs of {people} people)</p><img src="{png_data_uri(sheet)}" alt="test results">')


def _cell(value) -> str:
    if isinstance(value, (int, float)):
        return f"<td>{value:.4f}</td>"
    return f"<td>{html.escape(str(value if value is not None else '-'))}</td>"


def read_metrics_json(path: Path, flag: str) -> dict:
    """evaluate.py's metrics.json as a dict; ReportError naming `flag` and the file when it is missing or not one."""
    if not path.is_file():
        raise ReportError(f"{flag} {path}: file not found")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ReportError(f"{flag} {path}: not evaluate.py's metrics.json ({err})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{flag} {path}: not evaluate.py's metrics.json (a JSON object expected)")
    return data


def metrics_table(metrics_path: Path | None, baselines: dict[str, Path] | None = None) -> str:
    """evaluate.py's metrics.json as a table: each metric's label (which names its protocol), the model's value,
    one more column per baseline's metrics.json (scored by the same evaluate.py; '-' where one has none) and how
    it was computed; the run's other fields below."""
    if metrics_path is None:
        return "<p>(no metrics.json)</p>"
    data = read_metrics_json(metrics_path, "--metrics")
    values = data.get("metrics", data)
    labels, protocols = data.get("labels", {}), data.get("protocols", {})
    others = {name: read_metrics_json(p, f"baseline {name!r}").get("metrics", {}) if p.is_file() else {}
              for name, p in (baselines or {}).items()}
    head = ("<tr><th>metric</th><th>model</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in others)
            + "<th>computed as</th></tr>")
    rows = "".join(f"<tr><td>{html.escape(str(labels.get(k, k)))}</td>{_cell(v)}"
                   + "".join(_cell(o.get(k)) for o in others.values())
                   + f"<td>{html.escape(str(protocols.get(k, '')))}</td></tr>" for k, v in values.items())
    notes = {k: v for k, v in data.items() if k not in ("metrics", "labels", "protocols")}
    note_html = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in notes.items())
    return f"<table>{head}{rows}</table><ul>{note_html}</ul>"


def write_report(out: Path, joint: Path, flow: Path | None, test: Path | None, metrics: Path | None,
                 title: str = "SPGNet run report", extra: str = "", baselines: dict[str, Path] | None = None) -> Path:
    for flag, folder in (("--joint", joint), ("--flow", flow), ("--test", test)):
        if folder is not None and not folder.is_dir():
            raise ReportError(f"{flag} {folder}: not a folder")
    for flag, folder in (("--joint", joint), ("--flow", flow)):
        if folder is not None and not (folder / "metrics.jsonl").is_file():
            raise ReportError(f"{flag} {folder}: no metrics.jsonl in it (not a run folder of train.py)")
    body = [f"<h1>{html.escape(title)}</h1>", extra]
    body.append("<h2>Test results</h2>" + (results_grid(test / "grids") if test else ""))
    body.append("<h2>Metrics</h2>" + metrics_table(metrics, baselines))
    body.append("<h2>Training curves</h2>")
    if flow is not None:
        body.append(curves_html(flow, FLOW_CURVES))
    body.append(curves_html(joint, CURVES))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 10px}img{max-width:100%}"
             "svg{margin:6px}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text(out, page)
