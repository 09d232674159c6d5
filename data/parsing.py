"""Human parsing labels: CIHP's 20 classes (what PGN writes), label merges, one-hot maps and a colour palette.

The authors feed the 20 CIHP labels directly ("cihp20"); a merge table maps each CIHP id to a smaller label
set, e.g. "cihp8" folds accessories into the body part they cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from utils.config import Config, ConfigError

CIHP_LABELS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuit", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe",
)
NUM_CIHP = len(CIHP_LABELS)

# CIHP id of the mirror-image label: what a horizontal flip turns each label into
FLIP_LABELS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 14, 17, 16, 19, 18)

PRESET_MERGES: dict[str, list[int]] = {
    "cihp20": list(range(NUM_CIHP)),
    # 0 background, 1 hair (+hat), 2 face (+sunglasses), 3 upper clothes (upper-clothes, dress, coat, jumpsuit,
    # scarf), 4 arms (+gloves), 5 pants/skirt, 6 legs (+socks), 7 shoes
    # CIHP id: 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19
    "cihp8": [0, 1, 1, 4, 2, 3, 3, 3, 6, 5, 3, 3, 5, 2, 4, 4, 6, 6, 7, 7],
}
PRESET_NAMES: dict[str, tuple[str, ...]] = {
    "cihp20": CIHP_LABELS,
    "cihp8": ("background", "hair", "face", "upper-clothes", "arms", "pants-skirt", "legs", "shoes"),
}

# The LIP / CIHP visualisation palette (RGB), one colour per CIHP id; merged labels reuse the first K colours.
PALETTE = np.array([
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85), (0, 119, 221),
    (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255), (51, 170, 221),
    (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
], dtype=np.uint8)


def check_merge(merge: Sequence[int] | None, key: str = "label_merge") -> np.ndarray:
    """A merge table as an int64 lookup array of length 20 (None: the identity); `key` names it in errors."""
    if merge is None:
        return np.arange(NUM_CIHP, dtype=np.int64)
    table = np.asarray(merge)
    if table.shape != (NUM_CIHP,) or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"{key} must be a list of {NUM_CIHP} integers (one merged id per CIHP label), got {merge!r}")
    if table.min() < 0:
        raise ValueError(f"{key} has a negative merged id: {merge!r}")
    return table.astype(np.int64)


def num_classes(merge: Sequence[int] | None) -> int:
    """K, the number of labels after the merge (max merged id + 1); 20 for None."""
    return int(check_merge(merge).max()) + 1


def merge_labels(labels: np.ndarray, merge: Sequence[int] | None) -> np.ndarray:
    """(H,W) CIHP labels (uint8) -> (H,W) merged labels, by table lookup."""
    table = check_merge(merge)
    if labels.size and int(labels.max()) >= NUM_CIHP:
        raise ValueError(f"parsing label {int(labels.max())} is not a CIHP label (0..{NUM_CIHP - 1})")
    return table.astype(labels.dtype if np.issubdtype(labels.dtype, np.integer) else np.int64)[labels]


def one_hot(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(H,W) or (B,H,W) integer labels -> (K,H,W) or (B,K,H,W) float32 one-hot.

    One scatter into a zeroed tensor, which is contiguous in the channel-first layout the networks take
    (F.one_hot would put K last and need a permute copy).
    """
    labels = torch.as_tensor(labels).long()
    if labels.dim() not in (2, 3):
        raise ValueError(f"labels must be (H,W) or (B,H,W), got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
        raise ValueError(f"labels must lie in 0..{num_labels - 1}, got {int(labels.min())}..{int(labels.max())}")
    dim = labels.dim() - 2  # the channel axis: 0 for (H,W), 1 for (B,H,W)
    shape = (*labels.shape[:dim], num_labels, *labels.shape[dim:])
    out = torch.zeros(shape, dtype=torch.float32, device=labels.device)
    return out.scatter_(dim, labels.unsqueeze(dim), 1.0)


def colorize(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H,W) integer labels (any K <= 20) -> (H,W,3) uint8 RGB in the CIHP palette."""
    if torch.is_tensor(labels):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(PALETTE)):
        raise ValueError(f"labels must lie in 0..{len(PALETTE) - 1} to be coloured, got {labels.min()}..{labels.max()}")
    return PALETTE[labels.astype(np.intp)]


def label_merge(cfg: Config) -> list[int] | None:
    """The configured CIHP-20 -> K table, or None for the identity."""
    merge = cfg.data.label_merge
    if isinstance(merge, str):
        if merge not in PRESET_MERGES:
            known = ", ".join(sorted(PRESET_MERGES))
            raise ConfigError(f"key 'data.label_merge' = {merge!r} is not a preset ({known}) or a list")
        merge = PRESET_MERGES[merge]
    return list(merge)


def num_labels(cfg: Config) -> int:
    """K, the number of parsing classes the networks see."""
    return num_classes(label_merge(cfg))
