"""Stage-0 losses of the flow module, as Intr-Flow trains its flow regression network: multi-scale end-point
error and visibility cross-entropy.

Flows are target->source pixel offsets (x, y) in the pixels of the map they live on. A prediction at (h, w)
is compared with the full-resolution target (H, W) brought to that scale: area-averaged, then x scaled by w/W
and y by h/H. Which coarse pixels are supervised, and on what (`coarse`):
- "all_valid": a coarse pixel only when *all* full-resolution pixels under it are valid (the validity mask is
  min-pooled), so its averaged target never mixes in flow from invalid (e.g. background) pixels. On people
  that leaves the coarse scales almost unsupervised: at 1/16 of a 128x88 image, 0.4% of the cells are all
  visible (14% of the full-resolution pixels are), so the scales whose receptive field spans a limb's motion
  barely learn it.
- "valid_mean": every coarse pixel with a valid pixel under it, on the mean flow of its valid pixels, weighted
  by their share a: EPE_l = sum a |f - mean_valid F| / sum a (at full resolution, the same as "all_valid").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losses.parsing import dense_cross_entropy
from models.flow import downsample_flow

COARSE_TARGETS = ("all_valid", "valid_mean")


def downsample_valid(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Validity (B,H,W) bool -> (B,h,w) bool: a coarse pixel is valid only when every pixel under it is."""
    invalid = (~valid).unsqueeze(1).float()  # (B,1,H,W)
    return F.adaptive_max_pool2d(invalid, size).squeeze(1) == 0


class MultiScaleEPE(nn.Module):
    """Mean end-point error (Euclidean norm of the flow difference) over valid pixels, summed over scales.

    forward(pred_flows, target_flow, vis=None) -> scalar total; `terms(...)` gives the same total under
    "flow_epe" plus one "flow_epe/{h}x{w}" entry per scale, for logging.

    pred_flows: a (B,2,h,w) tensor or a list of them (coarse to fine), each in its own scale's pixels.
    target_flow: (B,2,H,W) at full resolution. vis: (B,H,W) integer visibility labels (0 visible, 1 invisible,
    2 background); pixels whose label is in `mask_classes` are supervised ((0,) visible only; (0, 1) every body
    pixel). vis None supervises every pixel.
    weights: per-scale weights w_l, total = sum_l w_l EPE_l; default w_l = 1/L (the mean over scales). Each
    EPE_l is in its own scale's pixels, so equal weights already count a coarse pixel's error 2^l times less
    than the same displacement at full resolution: the fine scales dominate without extra weighting.
    """

    def __init__(self, weights: Sequence[float] | None = None, mask_classes: Sequence[int] = (0,),
                 coarse: str = "all_valid"):
        super().__init__()
        if coarse not in COARSE_TARGETS:
            raise ValueError(f"MultiScaleEPE: coarse must be one of {', '.join(COARSE_TARGETS)}, got {coarse!r}")
        self.coarse = coarse
        self.weights = None if weights is None else [float(x) for x in weights]
        if not mask_classes:
            raise ValueError("MultiScaleEPE: mask_classes is empty, no pixel would be supervised")
        self.register_buffer("mask_classes", torch.as_tensor(list(mask_classes), dtype=torch.long), persistent=False)

    def terms(
        self,
        pred_flows: torch.Tensor | Sequence[torch.Tensor],
        target_flow: torch.Tensor,
        vis: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        preds = [pred_flows] if isinstance(pred_flows, torch.Tensor) else list(pred_flows)
        if not preds:
            raise ValueError("MultiScaleEPE: got an empty list of predicted flows")
        if target_flow.dim() != 4 or target_flow.shape[1] != 2:
            raise ValueError(f"MultiScaleEPE: target flow must be (B,2,H,W), got {tuple(target_flow.shape)}")
        b, _, height, width = target_flow.shape
        weights = self.weights if self.weights is not None else [1.0 / len(preds)] * len(preds)
        if len(weights) != len(preds):
            raise ValueError(f"MultiScaleEPE: {len(weights)} scale weights for {len(preds)} predicted flows")
        if vis is None:
            valid = torch.ones(b, height, width, dtype=torch.bool, device=target_flow.device)
        else:
            if tuple(vis.shape) != (b, height, width):
                raise ValueError(
                    f"MultiScaleEPE: vis {tuple(vis.shape)} does not match the target flow (B,H,W)={(b, height, width)}"
                )
            valid = torch.isin(vis, self.mask_classes.to(vis.device))  # (B,H,W)
        # invalid pixels never reach a supervised coarse pixel; zeroing them keeps NaN/inf fill values out entirely
        target_flow = torch.where(valid.unsqueeze(1), target_flow, target_flow.new_zeros(()))

        out: dict[str, torch.Tensor] = {}
        total = None
        for pred, weight in zip(preds, weights):
            if pred.dim() != 4 or pred.shape[:2] != (b, 2):
                raise ValueError(f"MultiScaleEPE: predicted flow must be (B=={b},2,h,w), got {tuple(pred.shape)}")
            size = (pred.shape[2], pred.shape[3])
            if size[0] > height or size[1] > width:
                raise ValueError(f"MultiScaleEPE: predicted flow {size} is larger than the target {(height, width)}")
            target = downsample_flow(target_flow.to(pred.dtype), size)  # (B,2,h,w)
            if self.coarse == "all_valid":
                weight_map = downsample_valid(valid, size).to(pred.dtype)  # (B,h,w) 0/1
            else:  # the share of valid pixels; the mean over them = the area mean of the zero-filled flow / share
                weight_map = F.adaptive_avg_pool2d(valid.unsqueeze(1).to(pred.dtype), size).squeeze(1)
                target = target / weight_map.unsqueeze(1).clamp_min(1e-6)
            epe = torch.linalg.vector_norm(pred - target, dim=1)  # (B,h,w)
            value = torch.where(weight_map > 0, epe * weight_map, 0.0).sum() / weight_map.sum().clamp_min(1)
            out[f"flow_epe/{size[0]}x{size[1]}"] = value
            total = weight * value if total is None else total + weight * value
        return {"flow_epe": total, **out}

    def forward(
        self,
        pred_flows: torch.Tensor | Sequence[torch.Tensor],
        target_flow: torch.Tensor,
        vis: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.terms(pred_flows, target_flow, vis)["flow_epe"]

    def extra_repr(self) -> str:
        return f"weights={self.weights}, mask_classes={self.mask_classes.tolist()}, coarse={self.coarse!r}"


class VisibilityCrossEntropy(nn.Module):
    """Mean per-pixel cross-entropy between visibility logits (B,3,H,W) and labels (B,H,W) in {0, 1, 2}.

    `class_weights` (3,) optionally; normalised like `F.cross_entropy(weight=...)`.
    """

    def __init__(self, class_weights: Sequence[float] | None = None):
        super().__init__()
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        if w is not None and w.numel() != 3:
            raise ValueError(f"VisibilityCrossEntropy: class_weights needs 3 entries, got {w.numel()}")
        self.register_buffer("class_weights", w, persistent=False)

    def forward(self, logits: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 4 or logits.shape[1] != 3:
            raise ValueError(f"VisibilityCrossEntropy: logits must be (B,3,H,W), got {tuple(logits.shape)}")
        return dense_cross_entropy(logits, vis, self.class_weights, what="VisibilityCrossEntropy")
