"""PCKh, PATN's protocol (Zhu et al., CVPR 2019; tengteng95/Pose-Transfer tool/calPCKH_fashion.py and
calPCKH_market.py), vectorised over pairs.

Per pair, from the *target* (ground-truth) keypoints:
- head size (w, h) = width and height of the bounding box of the present head joints {0 nose, 1 neck, 14/15 eyes,
  16/17 ears}; with fewer than 2 present the pair is skipped entirely (`get_head_wh` returns -1 and the script
  `continue`s before counting anything);
- valid = number of present target joints (`ValidPoints`);
- right = number of joints with prediction and target both present and |px - tx| < 0.5 w and |py - ty| < 0.5 h
  (`isRight`, strict `<`; a joint missing in the prediction is wrong but still counted in valid).
PCKh over a set = sum(right) / sum(valid) over the pairs not skipped.

Differences from the script, both immaterial for the release's files: a joint is missing when either coordinate
is -1 (the shared contract; the script tests y alone in ValidPoints, x or y elsewhere, and the release writes both
as -1 together).
"""

from __future__ import annotations

import numpy as np

HEAD_JOINTS = (0, 1, 14, 15, 16, 17)
ALPHA = 0.5


def _present(kp: np.ndarray) -> np.ndarray:
    return (kp != -1).all(axis=-1)  # (N,18)


def head_sizes(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,18,2) (y, x) target keypoints -> head (w, h) as float (N,2) and a usable mask (N,) (>= 2 head joints)."""
    head = target[:, HEAD_JOINTS].astype(np.float64)  # (N,6,2)
    present = _present(target[:, HEAD_JOINTS])  # (N,6)
    usable = present.sum(axis=1) >= 2
    lo = np.where(present[..., None], head, np.inf).min(axis=1)  # (N,2) (ymin, xmin)
    hi = np.where(present[..., None], head, -np.inf).max(axis=1)
    size = np.where(usable[:, None], hi - lo, -1.0)  # (N,2) (h, w)
    return size[:, ::-1].copy(), usable  # (w, h)


def pckh_counts(pred: np.ndarray, target: np.ndarray, alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """Per pair: "right" (N,) int, "valid" (N,) int, "used" (N,) bool (False = skipped, < 2 head joints).

    pred, target: (N,18,2) (y, x), -1 missing. Skipped pairs get right = valid = 0.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[1:] != (18, 2):
        raise ValueError(f"pckh: predicted {pred.shape} and target {target.shape} keypoints must both be (N,18,2)")
    size, used = head_sizes(target)  # (N,2) (w, h)
    dy = np.abs(pred[..., 0].astype(np.float64) - target[..., 0])  # (N,18)
    dx = np.abs(pred[..., 1].astype(np.float64) - target[..., 1])
    both = _present(pred) & _present(target)
    right = both & (dx < alpha * size[:, None, 0]) & (dy < alpha * size[:, None, 1])
    valid = _present(target)
    return {
        "right": np.where(used, right.sum(axis=1), 0),
        "valid": np.where(used, valid.sum(axis=1), 0),
        "used": used,
    }


def pckh_score(counts: dict[str, np.ndarray]) -> float:
    """sum(right) / sum(valid) over the pairs used; NaN when no joint was valid."""
    valid = int(counts["valid"].sum())
    return float(counts["right"].sum()) / valid if valid else float("nan")


def pckh(pred: np.ndarray, target: np.ndarray, alpha: float = ALPHA) -> float:
    return pckh_score(pckh_counts(pred, target, alpha))
