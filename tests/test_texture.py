"""The per-part texture measure (metrics/texture.py) against a slow per-pair, per-part loop written here from its
definition in numpy, on random and on structured images, and against values checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics.texture import TEXTURE_PARTS, part_texture, summarise

H, W = 64, 48


def slow_texture(generated: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one pair and one clothing part at a time, with numpy's own std and corrcoef:
    (N,H,W,3) uint8 RGB, (N,H,W) CIHP ids -> (N,5) correlation and contrast, NaN where a part does not count."""
    correlation = np.full((len(generated), len(TEXTURE_PARTS)), np.nan)
    contrast = correlation.copy()
    for i, (g, t, lab) in enumerate(zip(generated, truth, labels)):
        grey_g = g.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (H,W)
        grey_t = t.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        for j, part in enumerate(TEXTURE_PARTS):
            inside = lab == part
            if inside.sum() < 150 or grey_t[inside].std() < 8:
                continue
            res_g = grey_g[inside] - grey_g[inside].mean()
            res_t = grey_t[inside] - grey_t[inside].mean()
            flat = res_g.std() < 1e-9
            correlation[i, j] = 0.0 if flat else np.corrcoef(res_g, res_t)[0, 1]
            contrast[i, j] = res_g.std() / res_t.std()
    return correlation, contrast


def run(generated: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """part_texture on numpy (N,H,W,3) images and (N,H,W) labels."""
    corr, contrast = part_texture(torch.from_numpy(generated).permute(0, 3, 1, 2),
                                  torch.from_numpy(truth).permute(0, 3, 1, 2), torch.from_numpy(labels))
    assert corr.dtype == contrast.dtype == torch.float64 and corr.shape == (len(generated), len(TEXTURE_PARTS))
    return corr.numpy(), contrast.numpy()


def block_labels(rng: np.random.Generator) -> np.ndarray:
    """(H,W) uint8: background, rectangles of clothing parts (some under 150 pixels) and of other labels."""
    lab = np.zeros((H, W), np.uint8)
    for part in rng.permutation([2, 5, 6, 7, 9, 12, 13, 14]):
        y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
        lab[y : y + rng.integers(8, 32), x : x + rng.integers(8, 28)] = part
    return lab


def stripes(period: int = 8, phase: int = 0) -> np.ndarray:
    """(H,W,3) uint8: horizontal stripes, dark blue and light yellow, `period` rows long."""
    rows = ((np.arange(H) + phase) // (period // 2)) % 2 == 1
    image = np.empty((H, W, 3), np.uint8)
    image[:] = (30, 40, 120)
    image[rows] = (230, 210, 90)
    return image


def test_part_texture_matches_a_per_pair_per_part_loop_on_random_images():
    rng = np.random.default_rng(0)
    labels = np.stack([block_labels(rng) for _ in range(12)])
    truth = rng.integers(0, 256, (12, H, W, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (12, H, W, 3), dtype=np.uint8)
    generated[:6] = np.clip(truth[:6] * 0.6 + generated[:6] * 0.4, 0, 255).astype(np.uint8)  # correlated pairs
    truth[:, 20:, :][labels[:, 20:, :] == 9] = 128  # a plain part or half part: the std test decides
    corr, contrast = run(generated, truth, labels)
    want_corr, want_contrast = slow_texture(generated, truth, labels)
    assert np.array_equal(np.isnan(corr), np.isnan(want_corr))
    assert np.isfinite(corr).sum() >= 15 and np.isnan(corr).sum() >= 15  # both kinds of entry occur
    np.testing.assert_allclose(corr, want_corr, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(contrast, want_contrast, rtol=1e-9, atol=1e-12)
    assert np.nanmin(corr[:6]) > 0.5 and np.nanmax(np.abs(corr[6:])) < 0.3


def test_structured_parts_pasted_shifted_flattened_inverted():
    """One striped upper-clothes part (label 5) per pair; the generated part is the pattern in place, shifted by a
    quarter and by half a period, flattened to its mean colour, inverted, or halved in contrast."""
    labels = np.zeros((6, H, W), np.uint8)
    labels[:, 4:36, 6:26] = 5  # 640 pixels
    truth = np.stack([stripes()] * 6)
    generated = truth.copy()
    generated[1] = stripes(phase=2)  # a quarter period: half the rows agree
    generated[2] = stripes(phase=4)  # half a period: every stripe swapped
    generated[3] = truth[3].reshape(-1, 3).mean(axis=0).round().astype(np.uint8)  # flat, the right mean colour
    generated[4] = 255 - truth[4]  # the inverted pattern
    mean = truth[5].astype(np.float64).mean(axis=(0, 1))
    generated[5] = np.round(mean + (truth[5] - mean) / 2).astype(np.uint8)  # the pattern at half its contrast
    corr, contrast = run(generated, truth, labels)
    want_corr, want_contrast = slow_texture(generated, truth, labels)
    np.testing.assert_allclose(corr, want_corr, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(contrast, want_contrast, rtol=1e-9, atol=1e-12)
    upper = corr[:, 0]
    assert upper[0] == pytest.approx(1.0) and contrast[0, 0] == pytest.approx(1.0)  # identical: 1 and 1
    assert abs(upper[1]) < 0.1 and upper[2] == pytest.approx(-1.0)
    assert upper[3] == 0.0 and contrast[3, 0] == 0.0  # flat: exactly 0, not the noise of a rounding
    assert upper[4] == pytest.approx(-1.0) and contrast[4, 0] == pytest.approx(1.0)
    assert upper[5] == pytest.approx(1.0) and contrast[5, 0] == pytest.approx(0.5, abs=0.01)
    assert np.isnan(corr[:, 1:]).all()  # no dress, coat, pants or skirt in these maps


def test_which_parts_count_and_their_order():
    """Only CIHP 5, 6, 7, 9, 12, in that order; >= 150 pixels; a true grey-level std >= 8 (the true image's,
    whatever the generated one holds)."""
    labels = np.zeros((1, H, W), np.uint8)
    labels[0, 0:10, 0:15] = 12  # skirt, 150 pixels: counts
    labels[0, 10:20, 0:14] = 6  # dress, 140 pixels: too small
    labels[0, 20:40, 0:16] = 9  # pants, 320 pixels, but plain in the truth
    labels[0, 0:20, 16:32] = 13  # face, 320 pixels: not clothing
    labels[0, 20:40, 16:32] = 7  # coat, 320 pixels, textured: counts
    truth = stripes()[None].copy()
    truth[0][labels[0] == 9] = (90, 90, 90)
    generated = stripes(phase=1)[None]
    corr, contrast = run(generated, truth, labels)
    assert list(np.isfinite(corr[0])) == [False, False, True, False, True]  # upper, dress, coat, pants, skirt
    assert np.array_equal(np.isfinite(contrast), np.isfinite(corr))
    assert np.allclose(corr, slow_texture(generated, truth, labels)[0], equal_nan=True)
    # a part whose true std is just under 8 grey levels does not count; at 8 and above it does
    lab = np.full((2, H, W), 5, np.uint8)
    grey = np.zeros((2, H, W, 3), np.uint8)
    grey[:, ::2] = 100
    grey[0, 1::2], grey[1, 1::2] = 115, 116  # two levels 15 / 16 apart: std 7.5 / 8.0
    assert np.isnan(run(grey, grey, lab)[0][0, 0]) and run(grey, grey, lab)[0][1, 0] == pytest.approx(1.0)


def test_summarise_pools_all_counted_parts():
    corr = np.array([[0.9, np.nan, 0.2, np.nan, np.nan], [np.nan] * 5, [0.6, np.nan, np.nan, -0.1, np.nan]])
    contrast = np.where(np.isfinite(corr), [[1.0, 0, 0.5, 0, 0], [0] * 5, [0.8, 0, 0, 0.2, 0]], np.nan)
    mean, share, mean_contrast, parts = summarise(corr, contrast)
    assert parts == 4 and mean == pytest.approx(0.4) and share == pytest.approx(0.5)
    assert mean_contrast == pytest.approx(0.625)
    assert summarise(np.full((2, 5), np.nan), np.full((2, 5), np.nan))[3] == 0
