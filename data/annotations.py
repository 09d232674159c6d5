"""Readers and writers for the release's keypoint and pair CSVs (DESIGN.md section 2), spelled exactly as the
PATN/GFLA release of DeepFashion and Market-1501 spells them:

    name:keypoints_y:keypoints_x
    img.jpg: [14, 37, ...18 ints]: [90, 92, ...18 ints]

    from,to
    a.jpg,b.jpg

Coordinates are (y, x) in the image frame, -1 for a missing joint. Reading tolerates optional spaces and
Windows line ends; any malformed line is an AnnotationError naming the file and the line number.

Range (DESIGN.md section 3, keypoint validity): a present joint may lie outside the frame only within a
margin, a fraction of the image side beyond each border (default 0.5: limbs cut by the crop); beyond it, or a
NaN/inf coordinate, is an AnnotationError naming the file, the line and the joint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from data.pose import NUM_JOINTS, is_missing
from utils.errors import InputError
from utils.io import write_text

ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"
FRAME_MARGIN = 0.5  # how far (a fraction of the image side) a present joint may lie beyond a border
PAIRS_HEADER = "from,to"


class AnnotationError(InputError):
    """A malformed annotation or pairs file; the message starts with `file:line:`."""


def _lines(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line number, text without the line end) for every line of a text file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the header
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read as text: {err}") from err
    return [(i + 1, line.rstrip("\r")) for i, line in enumerate(text.split("\n"))]


def _check_header(path: str | Path, lines: list[tuple[int, str]], header: str) -> None:
    if not lines or not lines[0][1].strip():
        raise AnnotationError(f"{path}:1: missing header, expected '{header}'")
    found = "".join(lines[0][1].split())
    if found != header:
        raise AnnotationError(f"{path}:1: incorrect header {lines[0][1]!r}, expected '{header}'")


def _parse_list(text: str, path: str | Path, line: int, what: str) -> list[int]:
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise AnnotationError(f"{path}:{line}: {what} must be a list like [14, 37, ...], got {text!r}")
    items = [item.strip() for item in text[1:-1].split(",")]
    if len(items) != NUM_JOINTS:
        raise AnnotationError(f"{path}:{line}: {what} has {len(items)} coordinates, expected {NUM_JOINTS}")
    values = []
    for item in items:
        try:
            values.append(int(item))
        except ValueError:
            raise AnnotationError(f"{path}:{line}: {what} has a non-integer coordinate {item!r}") from None
    return values


def read_annotations(path: str | Path, image_size: tuple[int, int] | None = None,
                     margin: float = FRAME_MARGIN) -> dict[str, np.ndarray]:
    """Keypoint CSV -> {image name: (18,2) int64 array of (y, x)}, in file order.

    With image_size = (H, W), also check that every present joint lies in the frame grown by `margin` times
    the image side beyond each border (check_range).
    """
    lines = _lines(path)
    _check_header(path, lines, ANNOTATION_HEADER)
    keypoints: dict[str, np.ndarray] = {}
    line_of: dict[str, int] = {}
    for number, text in lines[1:]:
        if not text.strip():
            continue
        fields = text.split(":")
        if len(fields) < 3:
            raise AnnotationError(f"{path}:{number}: missing ':' separator, expected 'name: [ys]: [xs]', "
                                  f"got {text!r}")
        if len(fields) > 3:
            raise AnnotationError(f"{path}:{number}: {len(fields)} fields, expected 3 ('name: [ys]: [xs]')")
        name = fields[0].strip()
        if not name:
            raise AnnotationError(f"{path}:{number}: empty image name")
        if name in keypoints:
            raise AnnotationError(f"{path}:{number}: duplicate name {name!r} (first on line {line_of[name]})")
        ys = _parse_list(fields[1], path, number, "keypoints_y")
        xs = _parse_list(fields[2], path, number, "keypoints_x")
        keypoints[name] = np.stack([ys, xs], axis=1).astype(np.int64)  # (18,2)
        line_of[name] = number
    if image_size is not None:
        check_range(keypoints, image_size[0], image_size[1], path, lines=line_of, margin=margin)
    return keypoints


def check_range(keypoints: Mapping[str, np.ndarray], height: int, width: int, path: str | Path,
                lines: Mapping[str, int] | None = None, margin: float = FRAME_MARGIN) -> None:
    """Raise AnnotationError naming the file, line (when known), image and joint for the first present joint
    (neither coordinate -1) that is NaN/inf or lies beyond the (height, width) frame by more than `margin`
    times the side: y must lie in [-margin * H, H - 1 + margin * H], x likewise with W."""
    if not keypoints:
        return
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    names = list(keypoints)
    kp = np.stack([np.asarray(keypoints[n]) for n in names]).astype(np.float64)  # (N,18,2)
    sides = np.array([height, width], dtype=np.float64)
    low, high = -margin * sides, sides - 1 + margin * sides  # (2,) each
    with np.errstate(invalid="ignore"):  # NaN compares False; caught by ~isfinite
        bad = ~is_missing(kp)[..., None] & (~np.isfinite(kp) | (kp < low) | (kp > high))  # (N,18,2)
    if not bad.any():
        return
    i, joint, axis = (int(v) for v in np.argwhere(bad)[0])
    name = names[i]
    where = f"{path}:{lines[name]}" if lines is not None and name in lines else str(path)
    coord, value = "y" if axis == 0 else "x", kp[i, joint, axis]
    shown = f"{value:g}" if np.isfinite(value) else str(value)
    raise AnnotationError(f"{where}: {name!r} joint {joint} has {coord} = {shown}, outside the {height}x{width} "
                          f"frame by more than the margin ({coord} in {low[axis]:g}..{high[axis]:g} allowed, "
                          f"{margin:g} of the side beyond each border; -1 marks a missing joint)")


def _format_list(values: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def write_annotations(path: str | Path, keypoints: Mapping[str, np.ndarray]) -> None:
    """{image name: (18,2) integer (y, x)} -> keypoint CSV in the release's spelling."""
    rows = [ANNOTATION_HEADER]
    for name, kp in keypoints.items():
        kp = np.asarray(kp)
        if kp.shape != (NUM_JOINTS, 2):
            raise ValueError(f"keypoints of {name!r} must have shape ({NUM_JOINTS}, 2), got {kp.shape}")
        if not np.array_equal(kp, np.round(kp)):
            raise ValueError(f"keypoints of {name!r} must be integers, got {kp.tolist()}")
        if ":" in name or "\n" in name:
            raise AnnotationError(f"{path}: image name {name!r} may not contain ':' or a line break")
        rows.append(f"{name}: {_format_list(kp[:, 0])}: {_format_list(kp[:, 1])}")
    write_text(path, "\n".join(rows) + "\n")


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Pairs CSV -> [(from, to)], in file order."""
    lines = _lines(path)
    _check_header(path, lines, PAIRS_HEADER)
    pairs = []
    for number, text in lines[1:]:
        if not text.strip():
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != 2:
            raise AnnotationError(f"{path}:{number}: {len(fields)} fields, expected 2 ('from,to'), got {text!r}")
        if not all(fields):
            raise AnnotationError(f"{path}:{number}: empty image name in {text!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


def write_pairs(path: str | Path, pairs: Iterable[tuple[str, str]]) -> None:
    """[(from, to)] -> pairs CSV in the release's spelling."""
    rows = [PAIRS_HEADER]
    for src, tgt in pairs:
        for name in (src, tgt):
            if "," in name or "\n" in name or not name:
                raise AnnotationError(f"{path}: image name {name!r} may not be empty or contain ',' or a line break")
        rows.append(f"{src},{tgt}")
    write_text(path, "\n".join(rows) + "\n")
