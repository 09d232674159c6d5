"""The test pairs as evaluate.py scores them: which generated file answers for which pair, each pair's images and
label maps as a protocol decodes them (a Dataset), its keypoints, and which pairs a published script's whole
batches keep."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from data.datasets import generated_image_name, stem
from data.parsing import NUM_CIHP
from metrics.files import crop_square_fashion, kept_mask, read_image
from metrics.masks import pose_masks
from metrics.protocols import Protocol
from utils.errors import InputError
from utils.io import read_image as read_image_file

SHOW_MISSING = 10  # how many missing names an error lists


class EvaluationError(InputError):
    """Inputs that cannot be evaluated as asked (missing images, keypoints, wrong options)."""


@dataclass
class Pair:
    generated: str  # file name in --generated
    source: str
    target: str


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


def kept_by_script(protocol: Protocol, metric: str, pairs: list[Pair], generated: Path) -> np.ndarray:
    """(N,) bool: the pairs the protocol's script scores for FID / LPIPS (whole batches in its listing of the
    folder it reads, `generated`)."""
    spec = protocol.spec(metric)
    names = [p.generated for p in pairs]
    if spec.order is None:
        return np.ones(len(pairs), dtype=bool)
    return kept_mask(names, generated, spec.order, spec.whole_batches_of, spec.shrink)


def on_device(batch: dict, device: torch.device) -> dict:
    """A PairImages batch with its tensors on `device`, once for every metric, and "index" as a (B,) numpy array
    of positions in the pair list."""
    return {k: v.numpy() if k == "index" else v.to(device) for k, v in batch.items()}


def seen_by_fid_and_lpips(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The (generated, truth) images FID and LPIPS see: the release's DeepFashion crops where the protocol makes
    them, else the whole images."""
    return batch.get("generated_crop", batch["generated"]), batch.get("truth_crop", batch["truth"])
