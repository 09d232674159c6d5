"""Cross-entropy on dense class maps: SPATN's target parsing (paper eq. 8) and the flow module's visibility.

Eq. 8 *sums* -S log S_hat over pixels and classes. We *average* over pixels (and the batch) instead, so the term
does not grow with the image size or the batch; the paper's lambda_ce = 10 is applied by the training loop to this
mean, as the authors' code does (PyTorch's mean-reduced cross-entropy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _check_dense_target(logits: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if logits.dim() != 4:
        raise ValueError(f"{what}: logits must be (B,K,H,W), got shape {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    if target.dim() == 4:
        if tuple(target.shape) != (b, k, h, w):
            raise ValueError(f"{what}: one-hot target {tuple(target.shape)} does not match logits {(b, k, h, w)}")
    elif target.dim() == 3:
        if tuple(target.shape) != (b, h, w):
            raise ValueError(f"{what}: label target {tuple(target.shape)} does not match logits (B,H,W)={(b, h, w)}")
        if target.is_floating_point():
            raise ValueError(f"{what}: label target (B,H,W) must be an integer tensor, got {target.dtype}")
    else:
        raise ValueError(f"{what}: target must be one-hot (B,K,H,W) or labels (B,H,W), got {tuple(target.shape)}")


def dense_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, what: str = "cross-entropy"
) -> torch.Tensor:
    """Mean per-pixel cross-entropy between logits (B,K,H,W) and a one-hot/soft (B,K,H,W) or label (B,H,W) target.

    Without class weights: the mean over B*H*W pixels of -sum_c t_c log softmax(logits)_c.
    With class weights w (K,): sum_p w_{y_p} l_p / sum_p w_{y_p} (for a soft target the pixel weight is
    sum_c t_c w_c), the normalisation of `F.cross_entropy(weight=...)`, so uniform weights equal no weights.
    """
    _check_dense_target(logits, target, what)
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
    if target.dim() == 3:  # labels: the fused kernel, no one-hot materialised
        return F.cross_entropy(logits, target.long(), weight=weight)
    target = target.to(logits.dtype)
    per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)  # (B,H,W)
    if weight is None:
        return per_pixel.mean()
    pixel_weight = torch.einsum("bkhw,k->bhw", target, weight)  # (B,H,W)
    return (pixel_weight * per_pixel).sum() / pixel_weight.sum().clamp_min(torch.finfo(logits.dtype).tiny)


def balanced_class_weights(counts: Sequence[float] | np.ndarray, power: float = 0.5) -> torch.Tensor:
    """Class weights from the training set's pixel counts n_k (K,): w_k = f_k^(-power), f_k = n_k / sum n,
    scaled so that sum_k f_k w_k = 1 (the mean pixel weight over the set stays 1). A class with no pixels gets 0.

    power 0.5 (inverse square root of the frequency) lifts thin parts (arms, shoes, face) without letting a
    class of a few pixels dominate, as power 1 (inverse frequency) does.
    """
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).flatten()
    if (n < 0).any() or n.sum() <= 0:
        raise ValueError(f"class pixel counts must be non-negative with a positive sum, got {n.tolist()}")
    f = n / n.sum()
    present = f > 0
    w = torch.zeros_like(f)
    w[present] = f[present] ** -power
    return (w / (w * f).sum()).float()


def _as_weight_buffer(class_weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if (w < 0).any():
        raise ValueError(f"class_weights must be non-negative, got {w.tolist()}")
    return w


class ParsingCrossEntropy(nn.Module):
    """L_ce (eq. 8) between SPATN logits (B,K,H,W) and the ground-truth target parsing.

    The target is one-hot (B,K,H,W) (what the loaders feed SPGNet) or labels (B,H,W). Returns the unweighted
    mean over pixels (see the module docstring: eq. 8 sums, lambda_ce = 10 multiplies this mean).
    `class_weights` (K,) optionally rebalances rare parts (gloves, sunglasses); off by default as in the paper.
    """

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", _as_weight_buffer(class_weights), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weights has {self.class_weights.numel()} entries, logits have {logits.shape[1]} classes"
            )
        return dense_cross_entropy(logits, target, self.class_weights, what="ParsingCrossEntropy")


@torch.no_grad()
def pixel_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels whose argmax class equals the target's: logits (B,K,H,W), target one-hot or labels.

    Returns a 0-dim float tensor on the logits' device (no host synchronisation).
    """
    _check_dense_target(logits, target, "pixel_accuracy")
    labels = target.argmax(dim=1) if target.dim() == 4 else target
    return (logits.argmax(dim=1) == labels).float().mean()
