"""Conditional normalisation (paper eq. 6-7), region pooling / broadcast of style codes, the per-class linear
layer and the pixel-wise depthwise conv, each against an independent slow computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.normalization import (
    SEAN,
    SPADE,
    CondConv,
    PlainNorm,
    broadcast_codes,
    norm_factory,
    pixelwise_depthwise_conv,
    region_average,
)
from models.style import PerClassLinear, StyleEncoder


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(labels, k).permute(0, 3, 1, 2).float()  # (B,K,H,W)


def batch_normalised(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(x - mu_c) / sigma_c over batch and space, biased variance: eq. (6) without alpha, beta."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def paint_loop(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Style map by a per-sample, per-class loop: pixel of class k gets code k. (B,K,D), (B,H,W) -> (B,D,H,W)."""
    b, k, d = codes.shape
    out = torch.zeros(b, d, *labels.shape[1:])
    for i in range(b):
        for c in range(k):
            mask = labels[i] == c
            out[i][:, mask] = codes[i, c].unsqueeze(1)
    return out


# ------------------------------------------------------------------------------- pooling and broadcast


def test_region_average_matches_loop_and_absent_class_is_zero():
    torch.manual_seed(0)
    b, k, d = 3, 5, 4
    labels = torch.randint(0, 4, (b, 16, 12))  # class 4 never occurs
    labels[1][labels[1] == 2] = 0  # class 2 absent from sample 1 only
    features = torch.randn(b, d, 8, 6)  # half the parsing's size: the parsing is resized (nearest)
    codes = region_average(features, one_hot(labels, k))

    small = labels[:, ::2, ::2]  # nearest downsampling by 2 picks the top-left pixel of each 2x2 block
    expected = torch.zeros(b, k, d)
    for i in range(b):
        for c in range(k):
            mask = small[i] == c
            if mask.any():
                expected[i, c] = features[i][:, mask].mean(dim=1)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes, expected)
    assert codes[:, 4].abs().max() == 0 and codes[1, 2].abs().max() == 0


def test_broadcast_matches_loop():
    torch.manual_seed(1)
    codes = torch.randn(2, 4, 3)
    labels = torch.randint(0, 4, (2, 7, 5))
    torch.testing.assert_close(broadcast_codes(codes, one_hot(labels, 4)), paint_loop(codes, labels))


def test_per_class_linear_equals_k_linear_layers():
    torch.manual_seed(2)
    k, d_in, d_out = 4, 6, 5
    layer = PerClassLinear(k, d_in, d_out)
    linears = [nn.Linear(d_in, d_out) for _ in range(k)]
    with torch.no_grad():
        for c, lin in enumerate(linears):
            lin.weight.copy_(layer.weight[c])
            lin.bias.copy_(layer.bias[c])
    codes = torch.randn(3, k, d_in)
    expected = torch.stack([linears[c](codes[:, c]) for c in range(k)], dim=1)
    torch.testing.assert_close(layer(codes), expected)
    bound = 1 / d_in**0.5  # nn.Linear's initialisation range
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


def test_style_encoder_codes_are_refined_region_means():
    torch.manual_seed(3)
    enc = StyleEncoder(num_classes=3, style_dim=4, width=2)
    image = torch.rand(2, 3, 16, 12) * 2 - 1
    src = torch.randint(0, 3, (2, 16, 12))
    tgt = torch.randint(0, 3, (2, 16, 12))
    codes = enc(image, one_hot(src, 3))  # (B,K,D)
    feats = enc.features(image)  # (B,D,8,6)
    small = src[:, ::2, ::2]
    for i in range(2):
        for c in range(3):
            mean = feats[i][:, small[i] == c].mean(dim=1)
            expected = F.relu(mean @ enc.refine.weight[c].T + enc.refine.bias[c])
            torch.testing.assert_close(codes[i, c], expected)
    torch.testing.assert_close(enc.style_map(image, one_hot(src, 3), one_hot(tgt, 3)), paint_loop(codes, tgt))


# ------------------------------------------------------------------------------------------------ SEAN


def zero_(*convs: nn.Conv2d) -> None:
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.bias.zero_()


def test_sean_with_zero_branches_is_plain_normalisation():
    torch.manual_seed(4)
    layer = SEAN(channels=6, label_channels=4, style_channels=5, hidden=3)
    zero_(layer.parsing_gamma_beta, layer.style_gamma_beta)
    x = torch.randn(2, 6, 8, 8) * 3 + 1
    parsing = one_hot(torch.randint(0, 4, (2, 8, 8)), 4)
    out = layer(x, parsing, torch.randn(2, 4, 5))
    torch.testing.assert_close(out, batch_normalised(x), atol=1e-5, rtol=1e-5)


def test_sean_matches_eq7_with_an_explicit_style_map_at_a_coarser_scale():
    """Full-resolution style map C painted by a loop, nearest-downsampled to the feature size, convolved; the
    parsing branch as SPADE's; the theta_alpha / theta_beta blend and (1 + alpha) * BN(h) + beta."""
    torch.manual_seed(5)
    c, k, d, hidden = 3, 4, 5, 6
    layer = SEAN(channels=c, label_channels=k, style_channels=d, hidden=hidden)
    with torch.no_grad():
        layer.blend_logits.copy_(torch.tensor([0.8, -1.3]))  # distinct, so swapped blends would show
    labels = torch.randint(0, k, (2, 16, 12))
    codes = torch.randn(2, k, d)
    x = torch.randn(2, c, 8, 6)
    out = layer(x, one_hot(labels, k), codes)

    small = labels[:, ::2, ::2]
    style_map = paint_loop(codes, labels)[:, :, ::2, ::2]  # C, then downsampled to the scale
    ps, st = layer.parsing_gamma_beta, layer.style_gamma_beta
    h_s = F.conv2d(layer.parsing_shared(one_hot(small, k)), ps.weight, ps.bias, padding=1)  # (B,2C,h,w)
    h_c = F.conv2d(style_map, st.weight, st.bias, padding=1)
    theta_a, theta_b = torch.sigmoid(torch.tensor(0.8)), torch.sigmoid(torch.tensor(-1.3))
    alpha = theta_a * h_s[:, :c] + (1 - theta_a) * h_c[:, :c]
    beta = theta_b * h_s[:, c:] + (1 - theta_b) * h_c[:, c:]
    torch.testing.assert_close(out, (1 + alpha) * batch_normalised(x) + beta, atol=1e-5, rtol=1e-4)


def test_sean_blend_reaches_both_branches_and_requires_style():
    torch.manual_seed(6)
    layer = SEAN(channels=2, label_channels=3, style_channels=4, hidden=2)
    assert torch.allclose(torch.sigmoid(layer.blend_logits), torch.full((2,), 0.5))
    x, parsing = torch.randn(2, 2, 5, 5), one_hot(torch.randint(0, 3, (2, 5, 5)), 3)
    layer(x, parsing, torch.randn(2, 3, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="style codes"):
        layer(x, parsing, None)


# ------------------------------------------------------------------------------- SPADE, CC, plain norm


def test_spade_matches_formula_and_ignores_style():
    torch.manual_seed(7)
    layer = SPADE(channels=3, label_channels=4, hidden=5)
    x, parsing = torch.randn(2, 3, 6, 6), one_hot(torch.randint(0, 4, (2, 6, 6)), 4)
    gb = F.conv2d(
        F.relu(F.conv2d(parsing, layer.parsing_shared[0].weight, layer.parsing_shared[0].bias, padding=1)),
        layer.parsing_gamma_beta.weight,
        layer.parsing_gamma_beta.bias,
        padding=1,
    )
    expected = (1 + gb[:, :3]) * batch_normalised(x) + gb[:, 3:]
    torch.testing.assert_close(layer(x, parsing, torch.randn(2, 4, 7)), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer(x, parsing, None), expected, atol=1e-5, rtol=1e-4)


def test_pixelwise_depthwise_conv_matches_loop():
    torch.manual_seed(8)
    b, c, h, w = 2, 3, 5, 4
    x, kernels = torch.randn(b, c, h, w), torch.randn(b, c * 9, h, w)
    padded = F.pad(x, (1, 1, 1, 1))
    expected = torch.zeros(b, c, h, w)
    for i in range(h):
        for j in range(w):
            for dy in range(3):
                for dx in range(3):
                    tap = kernels.view(b, c, 9, h, w)[:, :, dy * 3 + dx, i, j]
                    expected[:, :, i, j] += tap * padded[:, :, i + dy, j + dx]
    torch.testing.assert_close(pixelwise_depthwise_conv(x, kernels), expected)


def test_pixelwise_depthwise_conv_with_a_constant_kernel_is_a_depthwise_conv():
    torch.manual_seed(9)
    x, weight = torch.randn(2, 4, 6, 5), torch.randn(4, 1, 3, 3)
    kernels = weight.view(1, 4 * 9, 1, 1).expand(2, 4 * 9, 6, 5)
    torch.testing.assert_close(pixelwise_depthwise_conv(x, kernels), F.conv2d(x, weight, padding=1, groups=4))


def test_cond_conv_zero_prediction_is_plain_normalisation_and_parsing_changes_it():
    torch.manual_seed(10)
    layer = CondConv(channels=3, label_channels=4, hidden=5)
    x = torch.randn(2, 3, 6, 6)
    p1, p2 = (one_hot(torch.randint(0, 4, (2, 6, 6)), 4) for _ in range(2))
    assert not torch.allclose(layer(x, p1), layer(x, p2))
    zero_(layer.kernels, layer.bias)
    torch.testing.assert_close(layer(x, p1), batch_normalised(x), atol=1e-5, rtol=1e-5)


def test_plain_norm_is_batch_norm_and_ignores_conditions():
    x = torch.randn(2, 3, 4, 4) * 2 + 5
    torch.testing.assert_close(
        PlainNorm(3)(x, torch.rand(2, 4, 4, 4), torch.rand(2, 4, 6)), batch_normalised(x), atol=1e-5, rtol=1e-5
    )


def test_norm_factory_kinds():
    kw = dict(label_channels=4, style_channels=5, hidden=3)
    assert isinstance(norm_factory("sean", **kw)(6), SEAN)
    assert isinstance(norm_factory("spade", **kw)(6), SPADE)
    assert isinstance(norm_factory("cc", **kw)(6), CondConv)
    assert isinstance(norm_factory("batch", **kw)(6), PlainNorm)
    with pytest.raises(ValueError, match="adain"):
        norm_factory("adain", **kw)
