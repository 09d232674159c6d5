"""The pair dataset over the release layout (docs/data.md#layout): one sample per (source, target) pair of the
pairs CSV, with images, keypoints, pose maps, one-hot parsing and, optionally, flow targets.

    root/<image_dir>/<name>.jpg                        RGB images, all of image_size (H, W)
    root/<annotation_file>                             keypoint CSV (data.annotations)
    root/<pairs_file>                                  pairs CSV (from,to)
    root/<parsing_dir>/<stem>.png                      single-channel uint8 CIHP labels
    root/<flow_dir>/<from-stem>___<to-stem>.npz        optional: flow (2,H,W) float16, vis (H,W) uint8

A pair's own files (flow, predicted parsing, generated image) are named `pair_stem`: one name per pair, the
folders of the image names kept. Every file the pairs need is checked at construction -- present, one per name,
and complete (a JPEG's end-of-image marker, a PNG's IEND chunk, an npz's end record, from two small reads per
file) -- and all missing or incomplete ones are reported in one error, so a broken download fails in seconds
rather than hours into a run. The keypoints are checked there too (docs/design.md#keypoint-validity): every
present joint within `keypoint_margin` of the frame (an error naming the file, line and joint otherwise), and every
source and target a usable pose (at least 4 present joints and a torso): pairs with an unusable pose are refused,
naming them, or dropped with invalid_poses="skip".
While loading, a truncated image (no JPEG end marker / PNG IEND chunk) and a non-finite flow value are
DatasetErrors naming the file (and the array).
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from data.annotations import FRAME_MARGIN, read_annotations, read_pairs
from data.parsing import FLIP_LABELS, NUM_CIHP, check_merge, one_hot
from data.pose import FLIP_JOINTS, is_missing, pose_problems
from data.pose import encode_pose as encode_pose_maps
from data.visual import from_uint8
from utils.errors import InputError
from utils.io import ImageReadError, incomplete, read_image

# Each DataLoader worker decodes one image at a time; cv2's own thread pool on top of the workers would
# oversubscribe the cores. Set at import, so the main process, forked and spawned workers all inherit it.
cv2.setNumThreads(0)

SHOW_MISSING = 20  # names listed per kind of missing file; the rest are counted


class DatasetError(InputError):
    """A dataset folder that does not match the layout: missing, unreadable or mis-sized files."""


def stem(name: str) -> str:
    """Image name without its extension ('a/b.jpg' -> 'a/b'): the key of its parsing map."""
    return Path(name).with_suffix("").as_posix()


def flat_stem(name: str) -> str:
    """The part of a pair's file name that stands for image `name`: its stem with the folders kept, written into
    one file name so that distinct images give distinct parts and no part can be read as containing the '___'
    separator: '%' -> '%25', '/' -> '%2F', and '%5F' for an underscore at either end and for each underscore of a
    run of three or more. Names without '%', '/' or such underscores (every DeepFashion and Market-1501 name)
    are unchanged: 'a/b.jpg' -> 'a%2Fb', 'x___y.jpg' -> 'x%5F%5F%5Fy', 'plain_name.jpg' -> 'plain_name'."""
    flat = stem(name).replace("%", "%25").replace("/", "%2F")
    flat = re.sub(r"_{3,}", lambda run: "%5F" * len(run.group()), flat)
    return re.sub(r"^_|_$", "%5F", flat)


def pair_stem(src: str, tgt: str) -> str:
    """'<from>___<to>' (PATN's separator) of flat_stem's parts: one name per pair and one pair per name, since
    no part holds '___' or starts or ends with '_'. The stem of the pair's flow file, target parsing map and
    generated image."""
    return f"{flat_stem(src)}___{flat_stem(tgt)}"


def flow_file_name(src: str, tgt: str) -> str:
    return f"{pair_stem(src, tgt)}.npz"


GENERATED_NAMES = ("ours", "release")
GENERATED_FORMATS = ("png", "jpg")


def generated_image_name(src: str, tgt: str, names: str = "ours", fmt: str = "png") -> str:
    """The file test.py writes for a pair and evaluate.py reads, with the extension of `fmt` (png or jpg): names
    "ours" pair_stem's '<from>___<to>' (distinct pairs, distinct names), "release" '<from>_<to>' (the authors' test
    script: '%s_%s.jpg' % (sid1, sid2)), which two pairs can share ('a_b' + 'c', 'a' + 'b_c'): readers and
    writers refuse such pairs (check_distinct_files)."""
    if names not in GENERATED_NAMES or fmt not in GENERATED_FORMATS:
        raise ValueError(f"generated_image_name: names {names!r} / format {fmt!r}; known: {GENERATED_NAMES} / "
                         f"{GENERATED_FORMATS}")
    name = pair_stem(src, tgt) if names == "ours" else f"{flat_stem(src)}_{flat_stem(tgt)}"
    return f"{name}.{fmt}"


def check_distinct_files(pairs: Sequence[tuple[str, str]], file_name: Callable[[str, str], str], where: str,
                         advice: str = "") -> None:
    """Refuse `pairs` of which two distinct ones would share one file `file_name(src, tgt)` in `where`: one file
    would answer for both (written twice, read or scored twice). `advice` ends the message."""
    first: dict[str, tuple[str, str]] = {}
    for pair in pairs:
        other = first.setdefault(file_name(*pair), pair)
        if other != pair:
            raise DatasetError(f"pairs {other[0]} -> {other[1]} and {pair[0]} -> {pair[1]} would share one file "
                               f"{file_name(*pair)} in {where}; rename one of the images{advice}")


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Mirror (..., 18, 2) (y, x) keypoints left-right: x -> W-1-x for present joints, then swap left and right
    joints so that a left wrist stays a left wrist. Missing joints stay -1.

    A present joint at x = W (just outside the frame) would map to x = -1, i.e. become missing; the -1
    convention leaves no other choice.
    """
    flipped = keypoints.copy()
    present = ~is_missing(keypoints)
    flipped[..., 1] = np.where(present, width - 1 - keypoints[..., 1], keypoints[..., 1])
    return flipped[..., FLIP_JOINTS, :]


def _missing_report(kind: str, where: Path, names: list[str]) -> str:
    shown = ", ".join(names[:SHOW_MISSING])
    more = f" ... and {len(names) - SHOW_MISSING} more" if len(names) > SHOW_MISSING else ""
    return f"  {len(names)} {kind} missing from {where}: {shown}{more}"


def _missing_files(folder: Path, wanted: list[str], kind: str) -> str | None:
    """One line of the construction report: the files of `wanted` that are not in `folder`, or None."""
    if not folder.is_dir():
        return f"  folder {folder} does not exist ({len(wanted)} {kind} expected there)"
    present = set(os.listdir(folder))  # one listing instead of a stat per file: fast on network file systems
    missing = [name for name in wanted if name not in present and not (folder / name).is_file()]
    return _missing_report(kind, folder, missing) if missing else None


def _check_complete(paths: list[Path], pairs: int, threads: int = 8) -> None:
    """DatasetError listing the files of `paths` that are empty or cut short (utils.io.incomplete: two small reads
    per file, in a few threads, as a network file system answers each read with a round trip)."""

    def reason(path: Path) -> str | None:
        try:
            return incomplete(path)
        except OSError as err:
            return f"cannot read: {err.strerror or err}"

    with ThreadPoolExecutor(threads) as pool:
        found = [(path, why) for path, why in zip(paths, pool.map(reason, paths, chunksize=256)) if why]
    if len(found) == 1:
        raise DatasetError(f"{found[0][0]}: {found[0][1]}; the file is incomplete, download or copy it again")
    if found:
        shown = "\n".join(f"  {path}: {why}" for path, why in found[:SHOW_MISSING])
        more = f"\n  ... and {len(found) - SHOW_MISSING} more" if len(found) > SHOW_MISSING else ""
        raise DatasetError(f"{len(found)} files the {pairs} pairs need are incomplete; download or copy them again:\n"
                           f"{shown}{more}")


def pair_parsing_name(src: str, tgt: str) -> str:
    """File of the parsing map predicted for pair (src, tgt): <from>___<to>.png (pair_stem; the release's)."""
    return f"{pair_stem(src, tgt)}.png"


def release_target_affine(image_size: tuple[int, int], scale_range: float, shift: tuple[int, int]) -> np.ndarray:
    """The release's random target transform (pose_transfer_parsing_market_dataset.py), (2,3) for cv2:

        s = scale_range^u, u ~ U[-1, 1);  dx ~ U{-shift_x .. shift_x - 1}, dy ~ U{-shift_y .. shift_y - 1}
        [x', y'] = s [x, y] + [H (1 - s) / 2 + dx, W (1 - s) / 2 + dy]

    The x offset centres with the height and the y offset with the width, as the release writes it (for 128x64
    the scaling is centred on (64, 32) pixels from the top-left corner, not on the image centre). Draws from
    torch's RNG, seeded per loader worker.
    """
    h, w = image_size
    sy, sx = shift
    dx = int(torch.randint(-sx, sx, ())) if sx > 0 else 0
    dy = int(torch.randint(-sy, sy, ())) if sy > 0 else 0
    s = scale_range ** (float(torch.rand(())) * 2 - 1)
    return np.array([[s, 0.0, 0.5 * h * (1 - s) + dx], [0.0, s, 0.5 * w * (1 - s) + dy]])


def affine_keypoints(keypoints: np.ndarray, affine: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(18,2) (y, x) keypoints through a (2,3) map of (x, y); a joint that was missing or outside the frame, or
    lands outside it, becomes missing (-1, -1), as the release's augmentation."""
    h, w = image_size
    y, x = keypoints[:, 0], keypoints[:, 1]
    inside = (x >= 0) & (y >= 0) & (x < w) & (y < h)
    moved_x = affine[0, 0] * x + affine[0, 1] * y + affine[0, 2]
    moved_y = affine[1, 0] * x + affine[1, 1] * y + affine[1, 2]
    inside &= (moved_x >= 0) & (moved_y >= 0) & (moved_x < w) & (moved_y < h)
    return np.where(inside[:, None], np.stack([moved_y, moved_x], axis=1), -1.0).astype(keypoints.dtype)


class PairDataset(torch.utils.data.Dataset):
    """(source, target) pairs of one split. Sample dict (tensors are float32 unless noted):

        src_image, tgt_image          (3,H,W) RGB in [-1, 1]
        src_keypoints, tgt_keypoints  (18,2) (y, x), -1 missing
        src_pose, tgt_pose            (30,H,W) pose maps (paper sec. 3.1), when encode_pose; (18,H,W) without limbs
        src_parsing, tgt_parsing      (K,H,W) one-hot after the label merge
        flow                          (2,H,W) target->source offsets (x, y), when flow_dir
        vis                           (H,W) int64: 0 visible, 1 invisible, 2 background, when flow_dir
        src_name, tgt_name            str, as in the pairs CSV

    hflip_prob mirrors a whole pair (both images, parsing maps, keypoints and the flow) with that probability.
    keypoint_margin: how far beyond each border (a fraction of the side) a present joint may lie.
    invalid_poses: "refuse" (a DatasetError naming the pairs whose source or target pose is unusable) or
    "skip" (drop those pairs, with a note on stderr; `skipped_pairs` lists them).
    pair_parsing_dir: the target parsing of pair (a, b) comes from <pair_parsing_dir>/<a-stem>___<b-stem>.png
    instead of <parsing_dir>/<b-stem>.png: maps predicted for the pair (the release's test reads `pred_seg/`).
    target_augment (scale_range, (shift_y, shift_x)) is the release's Market recipe: the target image, parsing
    and keypoints (not the source) go through one random affine map per sample, `release_target_affine`.
    limbs=False: the pose maps are the 18 joint maps only (the release's input).
    """

    def __init__(self, root: str | Path, image_dir: str, annotation_file: str, pairs_file: str, parsing_dir: str,
                 image_size: tuple[int, int], flow_dir: str | None = None, label_merge: Sequence[int] | None = None,
                 heatmap: str = "gaussian", sigma: float = 6.0, radius: float = 8.0, kappa: float = -0.1,
                 encode_pose: bool = True, hflip_prob: float = 0.0, max_pairs: int | None = None,
                 keypoint_margin: float = FRAME_MARGIN, invalid_poses: str = "refuse", limbs: bool = True,
                 target_augment: tuple[float, tuple[int, int]] | None = None,
                 pair_parsing_dir: str | Path | None = None):
        super().__init__()
        root = Path(root)
        self.image_dir = root / image_dir  # an absolute argument replaces root
        self.parsing_dir = root / parsing_dir
        self.pair_parsing_dir = Path(pair_parsing_dir) if pair_parsing_dir is not None else None
        self.flow_dir = root / flow_dir if flow_dir is not None else None
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.heatmap, self.sigma, self.radius, self.kappa = heatmap, sigma, radius, kappa
        self.encode_pose, self.limbs = encode_pose, limbs
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {hflip_prob}")
        self.hflip_prob = hflip_prob
        if target_augment is not None and flow_dir is not None:
            raise ValueError("target_augment moves the target but not its flow file: use one or the other")
        self.target_augment = target_augment
        if heatmap not in ("gaussian", "binary"):
            raise ValueError(f"heatmap must be 'gaussian' or 'binary', got {heatmap!r}")
        if invalid_poses not in ("refuse", "skip"):
            raise ValueError(f"invalid_poses must be 'refuse' or 'skip', got {invalid_poses!r}")

        merge = check_merge(label_merge)  # (20,) CIHP id -> merged id
        self.num_classes = int(merge.max()) + 1
        # mirroring swaps left/right CIHP labels before the merge, folded into a second lookup table
        self._label_tables = {False: merge, True: merge[list(FLIP_LABELS)]}

        pairs = read_pairs(root / pairs_file)
        if not pairs:
            raise DatasetError(f"{root / pairs_file}: no pairs")
        if max_pairs is not None:
            if max_pairs < 1:
                raise ValueError(f"max_pairs must be positive or None, got {max_pairs}")
            pairs = pairs[:max_pairs]
        self.pairs: list[tuple[str, str]] = pairs

        annotation_path = root / annotation_file
        annotations = read_annotations(annotation_path, self.image_size, margin=keypoint_margin)
        self._check_files(annotation_path, annotations)
        self.skipped_pairs = self._check_poses(annotation_path, annotations, invalid_poses == "skip")
        names = list(dict.fromkeys(name for pair in pairs for name in pair))
        # one (N,18,2) array and an index instead of N small arrays: fewer Python objects for the
        # copy-on-write pages of forked workers to duplicate
        self._keypoint_index = {name: i for i, name in enumerate(names)}
        self._keypoints = np.stack([annotations[n] for n in names]).astype(np.float32)  # (N,18,2)

    def _needed_files(self) -> list[tuple[str, Path, list[str]]]:
        """(kind, folder, file names) of every file the pairs read: images, parsing maps (or the sources' maps and
        the pair parsing maps), flow files."""
        names = list(dict.fromkeys(name for pair in self.pairs for name in pair))
        needs = [("images", self.image_dir, names)]
        if self.pair_parsing_dir is None:
            needs.append(("parsing maps", self.parsing_dir, [stem(n) + ".png" for n in names]))
        else:  # the targets' maps come per pair
            sources = list(dict.fromkeys(src for src, _ in self.pairs))
            needs.append(("parsing maps", self.parsing_dir, [stem(n) + ".png" for n in sources]))
            pair_maps = list(dict.fromkeys(pair_parsing_name(s, t) for s, t in self.pairs))
            needs.append(("pair parsing maps", self.pair_parsing_dir, pair_maps))
        if self.flow_dir is not None:
            flows = list(dict.fromkeys(flow_file_name(s, t) for s, t in self.pairs))
            needs.append(("flow files", self.flow_dir, flows))
        return needs

    def _check_files(self, annotation_path: Path, annotations: dict[str, np.ndarray]) -> None:
        """Every image, keypoint entry, parsing map (and flow file) the pairs need: present, complete (not cut
        short by an interrupted download or copy: utils.io.incomplete), and one per name, all reported at once."""
        names = list(dict.fromkeys(name for pair in self.pairs for name in pair))
        by_stem: dict[str, list[str]] = {}
        for name in names:
            by_stem.setdefault(stem(name), []).append(name)
        shared = [group for group in by_stem.values() if len(group) > 1]
        if shared:
            raise DatasetError(f"images {' and '.join(shared[0])} share the stem {stem(shared[0][0])!r}: one parsing "
                               "map and one file per pair would stand for both; rename one of them")
        problems = []
        no_keypoints = [n for n in names if n not in annotations]
        if no_keypoints:
            problems.append(_missing_report("keypoint entries", annotation_path, no_keypoints))
        needs = self._needed_files()
        problems += [_missing_files(folder, wanted, kind) for kind, folder, wanted in needs]
        problems = [p for p in problems if p]
        if problems:
            raise DatasetError(f"the {len(self.pairs)} pairs need files that are missing:\n" + "\n".join(problems))
        _check_complete([folder / name for _, folder, wanted in needs for name in wanted], len(self.pairs))

    def _check_poses(self, annotation_path: Path, annotations: dict[str, np.ndarray],
                     skip: bool) -> list[tuple[str, str]]:
        """Refuse (or, with skip, drop and return) the pairs whose source or target pose is unusable."""
        names = list(dict.fromkeys(name for pair in self.pairs for name in pair))
        problem = dict(zip(names, pose_problems(np.stack([annotations[n] for n in names]))))
        bad = [(s, t) for s, t in self.pairs if problem[s] or problem[t]]
        if not bad:
            return []
        if skip:
            self.pairs = [p for p in self.pairs if not (problem[p[0]] or problem[p[1]])]
            if not self.pairs:
                raise DatasetError(f"every one of the {len(bad)} pairs has an unusable pose in {annotation_path}")
            print(f"note: skipped {len(bad)} of {len(bad) + len(self.pairs)} pairs with an unusable source or target "
                  f"pose in {annotation_path}", file=sys.stderr)
            return bad
        lines = [f"  {s} -> {t}: " + "; ".join(f"{role} {n!r}: {problem[n]}" for role, n in (("source", s),
                 ("target", t)) if problem[n]) for s, t in bad[:SHOW_MISSING]]
        more = f"\n  ... and {len(bad) - SHOW_MISSING} more" if len(bad) > SHOW_MISSING else ""
        raise DatasetError(f"{len(bad)} of {len(self.pairs)} pairs have an unusable pose in {annotation_path} "
                           "(at least 4 present joints and a torso are needed; or skip such pairs):\n"
                           + "\n".join(lines) + more)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        src, tgt = self.pairs[index]
        flip = self.hflip_prob > 0 and float(torch.rand(())) < self.hflip_prob  # torch's RNG: seeded per worker
        h, w = self.image_size
        keypoints = self._keypoints[[self._keypoint_index[src], self._keypoint_index[tgt]]]  # (2,18,2)
        if flip:
            keypoints = flip_keypoints(keypoints, w)
        affine = None
        if self.target_augment is not None:
            affine = release_target_affine(self.image_size, *self.target_augment)
            keypoints[1] = affine_keypoints(keypoints[1], affine, self.image_size)
        keypoints = torch.from_numpy(keypoints)
        sample = {
            "src_image": self._image(src, flip),
            "tgt_image": self._image(tgt, flip, affine),
            "src_keypoints": keypoints[0],
            "tgt_keypoints": keypoints[1],
            "src_parsing": self._parsing(self.parsing_dir / (stem(src) + ".png"), flip),
            "tgt_parsing": self._parsing(self._target_parsing_path(src, tgt), flip, affine),
            "src_name": src,
            "tgt_name": tgt,
        }
        if self.encode_pose:
            # both poses in one batched call
            pose = encode_pose_maps(keypoints, h, w, mode=self.heatmap, sigma=self.sigma, radius=self.radius,
                                    kappa=self.kappa, limbs=self.limbs)  # (2,30|18,H,W)
            sample["src_pose"], sample["tgt_pose"] = pose[0], pose[1]
        if self.flow_dir is not None:
            sample["flow"], sample["vis"] = self._flow(src, tgt, flip)
        return sample

    def label_counts(self, max_maps: int = 2000) -> np.ndarray:
        """(K,) int64 pixel count of each merged label over the split's distinct target parsing maps, unmirrored;
        above max_maps maps, over an evenly spaced sample of max_maps of them (class frequencies, not a census)."""
        paths = list(dict.fromkeys(self._target_parsing_path(src, tgt) for src, tgt in self.pairs))
        if len(paths) > max_maps:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_maps).round().astype(int)]
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for path in paths:
            labels = self._labels(path, flip=False)  # (H,W): the checks and the merge of __getitem__
            counts += np.bincount(labels.numpy().ravel(), minlength=self.num_classes)
        return counts

    def _check_size(self, path: Path, shape: tuple[int, ...], what: str) -> None:
        if tuple(shape[:2]) != self.image_size:
            h, w = self.image_size
            raise DatasetError(f"{path}: {what} is {shape[0]}x{shape[1]} (HxW), expected {h}x{w} (data.image_size)")

    @staticmethod
    def _read(path: Path, flags: int) -> np.ndarray:
        try:
            return read_image(path, flags)
        except ImageReadError as err:
            raise DatasetError(str(err)) from err

    def _image(self, name: str, flip: bool, affine: np.ndarray | None = None) -> torch.Tensor:
        """(3,H,W) float32 RGB in [-1, 1]; `affine` (2,3) warps it bilinearly, borders replicated."""
        path = self.image_dir / name
        image = self._read(path, cv2.IMREAD_COLOR)  # (H,W,3) uint8 BGR
        self._check_size(path, image.shape, "image")
        if flip:
            image = cv2.flip(image, 1)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if affine is not None:  # on float pixel values, as the release (a uint8 warp would round them)
            h, w = self.image_size
            image = cv2.warpAffine(image.astype(np.float32), affine, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
        return from_uint8(image)  # x / 127.5 - 1, for the float warp too

    def _target_parsing_path(self, src: str, tgt: str) -> Path:
        if self.pair_parsing_dir is not None:
            return self.pair_parsing_dir / pair_parsing_name(src, tgt)
        return self.parsing_dir / (stem(tgt) + ".png")

    def _parsing(self, path: Path, flip: bool, affine: np.ndarray | None = None) -> torch.Tensor:
        """(K,H,W) float32 one-hot of the merged labels of the map at `path` (_labels)."""
        return one_hot(self._labels(path, flip, affine), self.num_classes)

    def _labels(self, path: Path, flip: bool, affine: np.ndarray | None = None) -> torch.Tensor:
        """(H,W) int64 merged labels of the map at `path`, checked; `affine` (2,3) warps the labels (nearest)."""
        labels = self._read(path, cv2.IMREAD_UNCHANGED)  # (H,W) uint8
        if labels.ndim != 2:
            raise DatasetError(f"{path}: parsing map must be a single-channel label PNG, got shape {labels.shape}")
        self._check_size(path, labels.shape, "parsing map")
        top = int(labels.max())
        if top >= NUM_CIHP:
            raise DatasetError(f"{path}: label {top} is not a CIHP label (0..{NUM_CIHP - 1})")
        if flip:
            labels = cv2.flip(labels, 1)
        if affine is not None:
            h, w = self.image_size
            labels = cv2.warpAffine(labels, affine, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return torch.from_numpy(self._label_tables[flip][labels])  # (H,W) int64

    def _flow(self, src: str, tgt: str, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """flow (2,H,W) float32 target->source (x, y) offsets and vis (H,W) int64."""
        path = self.flow_dir / flow_file_name(src, tgt)
        try:
            with np.load(path) as data:
                flow, vis = data["flow"], data["vis"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DatasetError(f"{path}: cannot read the flow file ({err}); expected an .npz with 'flow' "
                               "(2,H,W) and 'vis' (H,W)") from err
        h, w = self.image_size
        if flow.shape != (2, h, w) or vis.shape != (h, w):
            raise DatasetError(f"{path}: flow {flow.shape} / vis {vis.shape}, expected (2, {h}, {w}) / ({h}, {w})")
        finite = np.isfinite(flow)
        if not finite.all():
            raise DatasetError(f"{path}: key 'flow' holds {int(finite.size - finite.sum())} non-finite values (NaN "
                               "or inf); regenerate this flow file")
        if vis.size and int(vis.max()) > 2:
            raise DatasetError(f"{path}: vis label {int(vis.max())} is not 0 visible / 1 invisible / 2 background")
        if flip:
            # mirrored target pixel (i, W-1-j) comes from mirrored source column W-1-(j+fx) = (W-1-j) - fx
            flow, vis = flow[:, :, ::-1], vis[:, ::-1]
        flow = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))  # one copy: layout and dtype
        if flip:
            flow[0].neg_()
        return flow, torch.from_numpy(np.ascontiguousarray(vis, dtype=np.int64))
