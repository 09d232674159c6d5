"""Weight initialisation schemes selectable by config (`model.init`).

kaiming: the authors' release (`networks.init_weights(net, 'kaiming')` of Intr-Flow / SPGNet) on its generator and
discriminator: every convolution (transposed too) and linear layer kaiming-normal (a = 0, fan_in), their biases
zero, batch-norm scales N(1, 0.02) with zero shifts. Our PerClassLinear holds K linear layers in one (K, out, in)
tensor: each class slice gets the fan_in = in of its own layer. Spectral-norm convolutions keep PyTorch's
default: the release's init writes to the normalised `weight`, which the next forward recomputes from
`weight_orig`, so it never takes effect there.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.style import PerClassLinear

INITS = ("default", "kaiming")


@torch.no_grad()
def kaiming_init_(net: nn.Module) -> nn.Module:
    """The release's kaiming scheme (module docstring), in place; returns `net`."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if not hasattr(module, "weight_orig"):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, PerClassLinear):
            module.weight.normal_(0.0, math.sqrt(2.0 / module.weight.shape[2]))
            module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d) and module.affine:
            module.weight.normal_(1.0, 0.02)
            module.bias.zero_()
    return net


def initialize_(net: nn.Module, scheme: str) -> nn.Module:
    """Apply `scheme` (one of INITS) to `net` in place; "default" keeps PyTorch's initialisation."""
    if scheme == "kaiming":
        return kaiming_init_(net)
    if scheme != "default":
        raise ValueError(f"unknown init {scheme!r}; expected one of {', '.join(INITS)}")
    return net
