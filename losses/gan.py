"""Adversarial objectives (paper eq. 11) for a PatchGAN discriminator's raw logits.

vanilla: the paper's log-likelihood game. D minimises -log D(real) - log(1 - D(fake)); G minimises the
  non-saturating -log D(fake) (Goodfellow et al.'s practical form, used by pix2pix/PATN and the authors' code).
  Written with softplus, i.e. BCE-with-logits: -log sigmoid(x) = softplus(-x), stable for large |x|.
lsgan: least squares to the targets 1 (real) and 0 (fake).
hinge: D minimises relu(1 - real) + relu(1 + fake); G minimises -fake.

Every term is a mean over the patch map (and the batch); a list of logits (multi-scale D) averages the per-scale
means. The discriminator's objective is d_real + d_fake, unweighted here; the training loop multiplies it by
`loss.d_scale` (1 by default; the release backpropagates 0.01 x 0.5 (real + fake), a factor Adam would absorb
but for its weight decay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Logits = torch.Tensor | Sequence[torch.Tensor]

MODES = ("vanilla", "lsgan", "hinge")


def _mean_over_scales(logits: Logits, term: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean of term(x) over each scale's elements, then over the scales."""
    if isinstance(logits, torch.Tensor):
        return term(logits).mean()
    if len(logits) == 0:
        raise ValueError("GANLoss: got an empty list of discriminator outputs")
    return torch.stack([term(x).mean() for x in logits]).mean()


class GANLoss(nn.Module):
    """Generator and discriminator terms for mode in {"vanilla", "lsgan", "hinge"}.

    `generator_loss(fake_logits)` -> scalar (the "adversarial" term, weighted by lambda_adv = 0.01 outside);
    `discriminator_loss(real_logits, fake_logits)` -> {"d_real": ..., "d_fake": ...}, D minimises their sum.
    Logits are a tensor of any shape (e.g. (B,1,h,w) patches) or a list of them (one per D scale).
    `forward` is `generator_loss`.
    """

    def __init__(self, mode: str = "vanilla"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"GANLoss: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode

    def generator_loss(self, fake_logits: Logits) -> torch.Tensor:
        if self.mode == "vanilla":
            return _mean_over_scales(fake_logits, lambda x: F.softplus(-x))  # -log sigmoid(x)
        if self.mode == "lsgan":
            return _mean_over_scales(fake_logits, lambda x: (x - 1).square())
        return _mean_over_scales(fake_logits, lambda x: -x)  # hinge

    def discriminator_loss(self, real_logits: Logits, fake_logits: Logits) -> dict[str, torch.Tensor]:
        if self.mode == "vanilla":
            real_term, fake_term = (lambda x: F.softplus(-x)), F.softplus  # -log D(x), -log(1 - D(x))
        elif self.mode == "lsgan":
            real_term, fake_term = (lambda x: (x - 1).square()), (lambda x: x.square())
        else:
            real_term, fake_term = (lambda x: F.relu(1 - x)), (lambda x: F.relu(1 + x))
        return {
            "d_real": _mean_over_scales(real_logits, real_term),
            "d_fake": _mean_over_scales(fake_logits, fake_term),
        }

    def forward(self, fake_logits: Logits) -> torch.Tensor:
        return self.generator_loss(fake_logits)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
