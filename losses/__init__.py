"""Training objectives (paper sec. 3.3, eq. 8-12) and the stage-0 flow losses, by config name.

Every loss returns UNWEIGHTED terms; the training loop multiplies them by the config's lambdas (`loss.ce`,
`loss.l1`, ...) and logs each. A loss with one term returns a scalar tensor; one with several returns a dict
whose key equal to the config name is the term to weight, the other keys ("<name>/<part>") are for logging:

  name         class                   call                                 returns
  ce           ParsingCrossEntropy     (logits (B,K,H,W), one-hot/labels)   scalar
  l1           L1Loss                  (pred, target) images                scalar
  perceptual   VGGPerceptualLoss       (pred, target) images in [-1, 1]     {"perceptual", "perceptual/relu1_1", ...}
  adversarial  GANLoss                 generator_loss(fake_logits)          scalar
                                       discriminator_loss(real, fake)       {"d_real", "d_fake"} (D minimises the sum)
  flow_epe     MultiScaleEPE           (flows, target flow, vis)            scalar; .terms(...) adds one per scale
  visibility   VisibilityCrossEntropy  (logits (B,3,H,W), vis (B,H,W))      scalar
"""

from __future__ import annotations

from torch import nn

from losses.flow import MultiScaleEPE, VisibilityCrossEntropy
from losses.gan import GANLoss
from losses.parsing import ParsingCrossEntropy, pixel_accuracy
from losses.perceptual import VGGPerceptualLoss
from losses.reconstruction import L1Loss

LOSSES: dict[str, type[nn.Module]] = {
    "ce": ParsingCrossEntropy,
    "l1": L1Loss,
    "perceptual": VGGPerceptualLoss,
    "adversarial": GANLoss,
    "flow_epe": MultiScaleEPE,
    "visibility": VisibilityCrossEntropy,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """The loss registered under `name` (a key of the config's `loss` section), built with `kwargs`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name](**kwargs)


__all__ = [
    "LOSSES",
    "build_loss",
    "GANLoss",
    "L1Loss",
    "MultiScaleEPE",
    "ParsingCrossEntropy",
    "VGGPerceptualLoss",
    "VisibilityCrossEntropy",
    "pixel_accuracy",
]
