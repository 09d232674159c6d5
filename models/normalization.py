"""Conditional normalisation layers of the SPGNet decoder (paper sec. 3.2, eq. 6-7) and their ablations.

Every layer here has the same call, so a block takes a *factory* and the variants swap the layer only:

    layer = factory(channels);  out = layer(x (B,C,h,w), parsing (B,K,h,w), style codes (B,K,D) | None)

  SEAN            the full model: parsing branch and style-map branch, blended by learnable theta (eq. 7)
  SPADE           Ours-SPADE: the parsing branch alone (Park et al. 2019)
  CondConv        Ours-CC: a per-pixel depthwise 3x3 kernel predicted from the parsing (after CC-FPSE)
  PlainNorm       Baseline: batch norm with its own affine, no condition

The parsing is resized to the feature map's size with nearest interpolation (`match_size`), which keeps
one-hot labels one-hot. Region-wise pooling of K style codes and their broadcast back onto a parsing map (the
style map C of paper 3.2) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

NORM_KINDS = ("sean", "spade", "cc", "batch")


def match_size(maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,h,w) by nearest interpolation (a no-op at the same size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="nearest")


def region_average(features: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
    """Region-wise average pooling (the per-region style codes of paper 3.2).

    features (B,D,H,W), parsing (B,K,h,w) one-hot -> codes (B,K,D): the mean feature over the pixels of each
    class, after resizing the parsing to (H, W). An absent class gives a zero code: its area is clamped to one
    pixel, which changes nothing for a present class since one-hot areas are whole numbers of pixels.
    """
    parsing = match_size(parsing, features.shape[-2:]).to(features.dtype)  # (B,K,H,W)
    sums = torch.einsum("bkhw,bdhw->bkd", parsing, features)  # (B,K,D)
    area = parsing.sum(dim=(2, 3)).unsqueeze(-1)  # (B,K,1)
    return sums / area.clamp_min(1.0)


def broadcast_codes(codes: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
    """Style codes (B,K,D) painted onto a one-hot parsing map (B,K,H,W) -> style map (B,D,H,W)."""
    return torch.einsum("bkd,bkhw->bdhw", codes, parsing.to(codes.dtype))


def conv_broadcast_codes(
    codes: torch.Tensor, parsing: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int
) -> torch.Tensor:
    """F.conv2d(broadcast_codes(codes, parsing), weight, bias, padding=padding) without building the style map.

    The map is linear in the parsing, C = sum_k parsing_k * code_k, so a conv W over it equals a conv over the
    parsing with the per-sample kernel W_b[o,k] = sum_d W[o,d] code_b[k,d] (zero padding included):
    K input channels instead of D (20 vs 128 at the authors' sizes), one grouped conv for the whole batch.
    codes (B,K,D), parsing (B,K,h,w), weight (O,D,kh,kw), bias (O,) -> (B,O,h,w).
    """
    b, k, h, w = parsing.shape
    kernels = torch.einsum("odij,bkd->bokij", weight, codes.to(weight.dtype))  # (B,O,K,kh,kw)
    out = F.conv2d(
        parsing.reshape(1, b * k, h, w).to(kernels.dtype),
        kernels.flatten(0, 1),
        bias.repeat(b),
        padding=padding,
        groups=b,
    )  # (1,B*O,h,w)
    return out.view(b, -1, h, w)


class SEAN(nn.Module):
    """Semantic region-adaptive normalisation, paper eq. (6)-(7) (Zhu et al. 2020).

        h_hat = (1 + alpha) * BN(h) + beta            BN: batch norm without affine (mu_c, sigma_c of eq. 6)
        alpha = theta_a * h_s^alpha + (1 - theta_a) * h_c^alpha,  beta likewise with theta_b
        h_s = conv(ReLU(conv(target parsing)))        (SPADE's branch, hidden width `hidden`)
        h_c = conv(style map C)                       C = the K style codes broadcast onto the target parsing

    The layer takes the codes (B,K,D) and convolves C through `conv_broadcast_codes`, which is exactly conv(C)
    at D/K of the cost. The blend is applied to the two final convs' weights and biases (theta * conv_W(x) =
    conv_{theta W}(x)), which saves two passes over the activations. The scale is written 1 + alpha (as SPADE's
    and SEAN's code) so that a zero prediction leaves plain normalisation. theta = sigmoid(logit) keeps each blend
    in (0, 1), as SEAN's blending parameters; the logits start at 0, i.e. theta = 0.5, so both branches drive
    the output from the first step.
    """

    def __init__(self, channels: int, label_channels: int, style_channels: int, hidden: int = 64, kernel_size: int = 3):
        super().__init__()
        self.padding = kernel_size // 2
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.parsing_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size, padding=self.padding), nn.ReLU()
        )
        # the two final convs hold weights only: forward applies them blended (h^alpha, h^beta stacked)
        self.parsing_gamma_beta = nn.Conv2d(hidden, 2 * channels, kernel_size)
        self.style_gamma_beta = nn.Conv2d(style_channels, 2 * channels, kernel_size)
        self.blend_logits = nn.Parameter(torch.zeros(2))  # (theta_alpha, theta_beta) before the sigmoid

    def forward(self, x: torch.Tensor, parsing: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """x (B,C,h,w), target parsing (B,K,.,.), style codes (B,K,D) -> (B,C,h,w)."""
        if style is None:
            raise ValueError("SEAN needs the style codes; this generator was built without a style encoder")
        parsing = match_size(parsing, x.shape[-2:])  # (B,K,h,w)
        theta = torch.sigmoid(self.blend_logits).repeat_interleave(x.shape[1])  # (2C,): theta_a x C, theta_b x C
        ps, st = self.parsing_gamma_beta, self.style_gamma_beta
        from_parsing = F.conv2d(
            self.parsing_shared(parsing), ps.weight * theta.view(-1, 1, 1, 1), ps.bias * theta, padding=self.padding
        )  # theta * h_s, (B,2C,h,w)
        from_style = conv_broadcast_codes(
            style, parsing, st.weight * (1 - theta).view(-1, 1, 1, 1), st.bias * (1 - theta), self.padding
        )  # (1 - theta) * h_c, (B,2C,h,w)
        gamma, beta = (from_parsing + from_style).chunk(2, dim=1)  # eq. 7
        return self.norm(x) * (1 + gamma) + beta  # eq. 6


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al. 2019), Ours-SPADE: eq. (6) with alpha, beta from the
    target parsing alone, h_hat = (1 + gamma(S)) * BN(h) + beta(S). The style map is ignored."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 64, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.parsing_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, kernel_size, padding=pad), nn.ReLU())
        self.parsing_gamma_beta = nn.Conv2d(hidden, 2 * channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,C,h,w), parsing (B,K,.,.) -> (B,C,h,w)."""
        gamma, beta = self.parsing_gamma_beta(self.parsing_shared(match_size(parsing, x.shape[-2:]))).chunk(2, 1)
        return self.norm(x) * (1 + gamma) + beta


def pixelwise_depthwise_conv(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """A depthwise convolution whose kernel changes from pixel to pixel (zero padding).

    x (B,C,H,W), kernels (B,C*k*k,H,W) with tap t = (dy+k//2)*k + (dx+k//2) of channel c at index c*k*k + t
    -> out[b,c,i,j] = sum_t kernels[b,c,t,i,j] * x[b,c,i+dy,j+dx]. One unfold, one product, one sum.
    """
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    patches = F.unfold(x, kernel_size, padding=kernel_size // 2).view(b, c, taps, h, w)  # (B,C,k*k,H,W)
    return (patches * kernels.view(b, c, taps, h, w)).sum(dim=2)


class CondConv(nn.Module):
    """Ours-CC: CC-FPSE-style conditional convolution (Liu et al. 2019) in the normalisation slot.

        out = BN(h) + dwconv_{K(S)}(BN(h)) + b(S)

    BN is batch norm without affine; K(S) is a depthwise 3x3 kernel per pixel and channel, b(S) a bias, both
    predicted from the target parsing S by conv(ReLU(conv(S))) (the second conv 1x1: the hidden layer already
    sees a 3x3 window). The identity term makes a zero prediction plain normalisation, like SPADE's 1 + gamma.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 64, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.parsing_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.kernels = nn.Conv2d(hidden, channels * kernel_size * kernel_size, 1)
        self.bias = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,C,h,w), parsing (B,K,.,.) -> (B,C,h,w)."""
        normalized = self.norm(x)
        hidden = self.parsing_shared(match_size(parsing, x.shape[-2:]))  # (B,hidden,h,w)
        dynamic = pixelwise_depthwise_conv(normalized, self.kernels(hidden), self.kernel_size)  # (B,C,h,w)
        return normalized + dynamic + self.bias(hidden)


class PlainNorm(nn.Module):
    """Baseline: batch norm with a learned per-channel affine; the parsing and the style are ignored."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(
        self, x: torch.Tensor, parsing: torch.Tensor | None = None, style: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.norm(x)


NormFactory = Callable[[int], nn.Module]


def norm_factory(
    kind: str, *, label_channels: int, style_channels: int, hidden: int = 64, kernel_size: int = 3
) -> NormFactory:
    """channels -> a conditional normalisation layer of `kind` (one of NORM_KINDS)."""
    if kind == "sean":
        return partial(
            SEAN, label_channels=label_channels, style_channels=style_channels, hidden=hidden, kernel_size=kernel_size
        )
    if kind == "spade":
        return partial(SPADE, label_channels=label_channels, hidden=hidden, kernel_size=kernel_size)
    if kind == "cc":
        return partial(CondConv, label_channels=label_channels, hidden=hidden, kernel_size=kernel_size)
    if kind == "batch":
        return PlainNorm
    raise ValueError(f"unknown conditional normalisation {kind!r}; expected one of {', '.join(NORM_KINDS)}")
