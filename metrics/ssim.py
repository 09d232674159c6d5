"""SSIM and mask-SSIM, batched in torch, with the variants the published evaluation scripts use.

One implementation covers every variant of skimage's structural_similarity that a published protocol calls
(metrics/protocols.py names them):

    structural_similarity(x, y, channel_axis=-1, data_range=R, gaussian_weights=G, sigma=1.5, win_size=7,
                          use_sample_covariance=S)

on (H,W,C) images, per channel: local means mu, variances and covariance over a window (G: a Gaussian of sigma 1.5
truncated at 3.5 sigma, an 11-tap window; otherwise a uniform win_size x win_size box), the SSIM map of Wang et al.
2004 eq. 13,

    SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)),
    C1 = (0.01 R)^2,  C2 = (0.03 R)^2,

with the (co)variances multiplied by NP / (NP - 1), NP = win^2 pixels, when S (sample covariance), averaged after
cropping (win - 1) // 2 pixels at every border, then averaged over channels. skimage filters the whole image
(reflect padding) and crops; the cropped pixels are exactly those whose window lies inside the image, so a
"valid" filtering gives the same numbers without any padding.

The data range R is either a number (255 for uint8 images) or, as PATN's and GFLA's scripts pass it,
`generated.max() - generated.min()` of each generated image (all channels), so C1 and C2 differ per image.

Speed: the separable filter runs as two depthwise convolutions over all maps of a chunk at once (on a CPU about
10x faster than conv2d on a (N,1,H,W) batch and 4x faster than banded matrix products), and
the second moments of x + y and x - y replace skimage's x^2, y^2, xy (4 filtered maps per channel instead of 5,
and better conditioned where the two images agree: see _ssim_chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03
WINDOWS = ("gaussian", "uniform")
GENERATED_RANGE = "generated"  # data_range = generated.max() - generated.min() per image


def gaussian_taps(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def window_taps(window: str = "gaussian", sigma: float = 1.5, win_size: int = 7) -> torch.Tensor:
    """1-D taps of the separable window: skimage's Gaussian (sigma, 11 taps at 1.5) or its uniform_filter box."""
    if window == "gaussian":
        return gaussian_taps(sigma)
    if window == "uniform":
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"ssim: win_size must be odd and >= 3, got {win_size}")
        return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)
    raise ValueError(f"ssim: unknown window {window!r}; known: {', '.join(WINDOWS)}")


def _check(a: torch.Tensor, b: torch.Tensor, window: int) -> None:
    if a.dtype != b.dtype or not (a.dtype == torch.uint8 or a.dtype.is_floating_point):
        raise TypeError(f"ssim: expected two uint8 (or two float) batches, got {a.dtype} and {b.dtype}")
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"ssim: expected two (B,C,H,W) batches of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if min(a.shape[2:]) < window:
        raise ValueError(f"ssim: images {tuple(a.shape[2:])} are smaller than the {window}x{window} window")


def _valid_separable(maps: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """(M,H,W) maps filtered by taps x taps, "valid" only: (M, H - k + 1, W - k + 1), exactly the region skimage
    keeps after cropping (k - 1) // 2 pixels per border. float32: two depthwise convolutions over all maps at once;
    float64, where torch's CPU convolution is slow: k shifted multiply-adds per direction (about 2x faster)."""
    m, h, w = maps.shape
    k = taps.numel()
    if taps.dtype != torch.float64:
        flat = maps.view(1, m, h, w)
        flat = F.conv2d(flat, taps.view(1, 1, k, 1).expand(m, 1, k, 1), groups=m)
        return F.conv2d(flat, taps.view(1, 1, 1, k).expand(m, 1, 1, k), groups=m)[0]
    weights = taps.tolist()
    rows = maps[:, : h - k + 1] * weights[0]
    for i in range(1, k):
        rows.add_(maps[:, i : i + h - k + 1], alpha=weights[i])
    out = rows[..., : w - k + 1] * weights[0]
    for i in range(1, k):
        out.add_(rows[..., i : i + w - k + 1], alpha=weights[i])
    return out


def _ssim_chunk(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor, scale: float, centre: float,
                data_range: torch.Tensor, cov_norm: float, formula: torch.dtype) -> torch.Tensor:
    """(B,C,H,W) pairs, (B,) data ranges -> (B,) mean SSIM; filtered in taps.dtype, combined in `formula`.

    The window is taps x taps times `scale` (1 for normalised taps; 1 / win^2 for the integer box of ones).
    centre: subtracted from both images; (co)variances do not change and the float32 sums stay small."""
    bsz, ch, h, w = a.shape
    n = bsz * ch
    k = taps.numel()
    maps = torch.empty(4, n, h, w, dtype=taps.dtype, device=a.device)  # x - c, y - c, s^2, d^2
    x, y, s2, d2 = maps
    a, b = a.reshape(n, h, w), b.reshape(n, h, w)
    torch.sub(a, centre, out=x)
    torch.sub(b, centre, out=y)
    torch.add(x, y, out=s2).square_()
    torch.sub(x, y, out=d2).square_()
    flat = _valid_separable(maps.view(4 * n, h, w), taps)  # (4N,H',W')
    mu_x, mu_y, mu_s2, mu_d2 = flat.to(formula).mul_(scale).view(4, n, h - k + 1, w - k + 1)  # each (N,H',W')
    v_plus = mu_s2.sub_(torch.add(mu_x, mu_y).square_())  # var(x + y), population
    v_minus = mu_d2.sub_(torch.sub(mu_x, mu_y).square_())  # var(x - y)
    mu_x, mu_y = mu_x.add_(centre), mu_y.add_(centre)
    r = data_range.to(formula).repeat_interleave(ch).view(n, 1, 1)  # (N,1,1): one range per image
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    # use_sample_covariance multiplies both by NP / (NP - 1); the 1/2 turns V+ -/+ V- into 2 cov and vx + vy
    half = 0.5 * cov_norm
    num = torch.mul(mu_x, mu_y).mul_(2).add_(c1).mul_(torch.sub(v_plus, v_minus).mul_(half).add_(c2))
    den = mu_x.mul_(mu_x).addcmul_(mu_y, mu_y).add_(c1).mul_(v_plus.add_(v_minus).mul_(half).add_(c2))
    return num.div_(den).mean(dim=(1, 2), dtype=torch.float64).view(bsz, ch).mean(dim=1)  # float64, then channels


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float | str = 255.0, sigma: float = 1.5, chunk: int | None = None,
    window: str = "gaussian", win_size: int = 7, sample_covariance: bool = False, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-image SSIM of a generated batch `a` and a reference batch `b`, (B,C,H,W) -> (B,) float64 on their device.

    data_range: a number, or "generated" for a.max() - a.min() per image (PATN's and GFLA's argument; nan for a
    flat generated image).
    window "gaussian" (sigma; skimage gaussian_weights=True) or "uniform" (win_size box, skimage's default);
    sample_covariance as skimage's use_sample_covariance. The defaults are skimage's call with
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.
    Inputs are uint8, or float holding values on the 0..255 scale (GFLA's imread / 255 * 255).
    Equal to skimage on each (H,W,C) pair within about 5e-7 in float32 on natural images and 2e-6 with large flat or
    masked regions; within 1e-12 in float64 and with the uniform box on uint8 (tests/test_metrics.py,
    tests/test_protocols.py).
    Runs `chunk` images at a time (default on a CPU 4 in float32 and 1 in float64, where a small working set stays
    in cache: 4 was fastest of 2..32 at 256x176 in float32, 1 of 1, 2, 4 in float64; 64 elsewhere). dtype of the
    filtering, default float32 on a CPU (exact box sums, or centred inputs), float64 elsewhere, because cuDNN may
    use TF32 for float32 convolutions (a 10-bit mantissa).
    """
    taps64 = window_taps(window, sigma, win_size)
    _check(a, b, taps64.numel())
    dtype = dtype or (torch.float32 if a.device.type == "cpu" else torch.float64)
    k = taps64.numel()
    if window == "uniform" and a.dtype == torch.uint8 and k * k * 510**2 < 2**24:
        # a box of ones over uint8 values sums integers below 2^24 (49 * 510^2 at 7x7), which float32 holds
        # exactly; the formula then runs in float64, since E[x^2] - E[x]^2 of uncentred sums cancels badly
        taps, scale, centre = torch.ones(k, dtype=dtype, device=a.device), 1.0 / (k * k), 0.0
        formula = torch.float64
    else:
        # centring at mid-range keeps the float32 sums small. float32 rounds each tap x value product the same
        # way wherever a value repeats, so flat regions (a background, PATN's white padding, the zeros outside a
        # pose mask) leave a bias of up to about 2e-6 of SSIM; dtype=torch.float64 is exact (2-4x slower)
        taps, scale, centre = taps64.to(device=a.device, dtype=dtype), 1.0, 127.5
        formula = dtype
    cov_norm = k * k / (k * k - 1) if sample_covariance else 1.0
    if isinstance(data_range, str):
        if data_range != GENERATED_RANGE:
            raise ValueError(f"ssim: data_range must be a number or {GENERATED_RANGE!r}, got {data_range!r}")
        flat = a.flatten(1)
        ranges = (flat.amax(dim=1).double() - flat.amin(dim=1).double())  # (B,) per generated image
    else:
        ranges = torch.full((a.shape[0],), float(data_range), dtype=torch.float64, device=a.device)
    chunk = chunk or (64 if a.device.type != "cpu" else 1 if dtype == torch.float64 else 4)
    out = [_ssim_chunk(a[i : i + chunk], b[i : i + chunk], taps, scale, centre, ranges[i : i + chunk], cov_norm,
                       formula)
           for i in range(0, a.shape[0], chunk)]
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=a.device)
    # a flat generated image has range 0, so C1 = C2 = 0: the ratio is 0 / 0 or rounding noise (skimage's nan or
    # noise); such an image has no SSIM under data_range = max - min
    return torch.cat(out).masked_fill_(ranges == 0, float("nan"))


def apply_mask(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) images times bool (B,H,W) masks, as PATN's `image * mask[..., np.newaxis]` (stays uint8)."""
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"apply_mask: masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
    return images * masks.to(device=images.device, dtype=images.dtype).unsqueeze(1)


def masked_ssim(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor, data_range: float | str = 255.0,
                **variant) -> torch.Tensor:
    """Mask-SSIM (Ma et al. 2017, Market-1501): SSIM of both images multiplied by the target pose mask (B,H,W).

    With data_range "generated" the range is taken from the masked generated image, as PATN's script does."""
    return ssim(apply_mask(a, masks), apply_mask(b, masks), data_range=data_range, **variant)
