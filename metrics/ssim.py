"""SSIM and mask-SSIM, batched in torch, equal to the field's skimage call.

The published pose-transfer numbers use (PATN's tool/getMetrics_*.py, GFLA's script/metrics.py)

    skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          channel_axis=-1, data_range=255)

on (H,W,3) uint8 images: per channel, Gaussian-weighted local means/variances (sigma 1.5, truncate 3.5, so an
11-tap window), the SSIM map of Wang et al. 2004 eq. 13 with C1 = (0.01 R)^2, C2 = (0.03 R)^2, averaged after
cropping (win - 1) // 2 = 5 pixels at every border, then averaged over channels. skimage filters the whole image
(reflect padding) and crops; the cropped pixels are exactly those whose window lies inside the image, so a
"valid" filtering gives the same numbers without any padding.

Note: PATN's and GFLA's scripts pass data_range = generated.max() - generated.min() rather than 255; for natural
images that span the full range the two agree. We use 255, the uint8 range (DESIGN.md section 6).

Speed: the separable filter runs as two depthwise convolutions over all maps of a chunk at once (on a CPU about
10x faster than conv2d on a (N,1,H,W) batch and 4x faster than banded matrix products), and vx + vy is filtered as
one map since only their sum enters the formula (4 filtered maps per channel instead of skimage's 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03


def gaussian_taps(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _check(a: torch.Tensor, b: torch.Tensor, window: int) -> None:
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise TypeError(f"ssim: expected uint8 images, got {a.dtype} and {b.dtype}")
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"ssim: expected two (B,C,H,W) batches of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if min(a.shape[2:]) < window:
        raise ValueError(f"ssim: images {tuple(a.shape[2:])} are smaller than the {window}x{window} window")


def _ssim_chunk(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor, data_range: float) -> torch.Tensor:
    """(B,C,H,W) uint8 pairs -> (B,) mean SSIM, filtered in taps.dtype."""
    bsz, ch, h, w = a.shape
    n = bsz * ch
    k = taps.numel()
    # centring at mid-range leaves (co)variances unchanged and keeps E[x^2] - E[x]^2 well conditioned in float32
    centre = data_range / 2
    maps = torch.empty(4, n, h, w, dtype=taps.dtype, device=a.device)  # x, y, x^2 + y^2, xy
    x, y, sum_sq, xy = maps
    torch.sub(a.reshape(n, h, w), centre, out=x)
    torch.sub(b.reshape(n, h, w), centre, out=y)
    torch.mul(x, x, out=sum_sq).addcmul_(y, y)
    torch.mul(x, y, out=xy)
    # separable Gaussian as two depthwise "valid" convolutions: output (H - k + 1, W - k + 1) is exactly the
    # region skimage keeps after cropping (k - 1) // 2 pixels per border
    flat = maps.view(1, 4 * n, h, w)
    flat = F.conv2d(flat, taps.view(1, 1, k, 1).expand(4 * n, 1, k, 1), groups=4 * n)
    flat = F.conv2d(flat, taps.view(1, 1, 1, k).expand(4 * n, 1, 1, k), groups=4 * n)
    mu_x, mu_y, mu_sq, mu_xy = flat.view(4, n, h - k + 1, w - k + 1)  # each (N,H',W')
    cov = torch.addcmul(mu_xy, mu_x, mu_y, value=-1)  # population covariance (use_sample_covariance=False)
    var_sum = mu_sq.addcmul_(mu_x, mu_x, value=-1).addcmul_(mu_y, mu_y, value=-1)  # vx + vy
    mu_x, mu_y = mu_x.add_(centre), mu_y.add_(centre)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    num = torch.mul(mu_x, mu_y).mul_(2).add_(c1).mul_(cov.mul_(2).add_(c2))  # (2 mx my + C1)(2 cov + C2)
    den = mu_x.mul_(mu_x).addcmul_(mu_y, mu_y).add_(c1).mul_(var_sum.add_(c2))  # (mx^2 + my^2 + C1)(vx + vy + C2)
    s = num.div_(den)
    return s.mean(dim=(1, 2), dtype=torch.float64).view(bsz, ch).mean(dim=1)  # skimage: float64 mean, then channels


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, sigma: float = 1.5, chunk: int | None = None
) -> torch.Tensor:
    """Per-image SSIM of two uint8 batches (B,C,H,W) -> (B,) float64 on their device.

    Equal (within 1e-6 measured in float32; the tests demand 1e-4) to skimage's structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255) on each (H,W,C)
    pair. Runs `chunk` images at a
    time (default 4 on a CPU, where a small working set stays in cache: 4 was fastest of 2..32 at 256x176; 64
    elsewhere). CPU: float32 (centred inputs keep it accurate); other devices: float64, because cuDNN may use TF32
    for float32 convolutions, whose 10-bit mantissa would cost about 1e-3 of SSIM.
    """
    taps64 = gaussian_taps(sigma)
    _check(a, b, taps64.numel())
    dtype = torch.float32 if a.device.type == "cpu" else torch.float64
    taps = taps64.to(device=a.device, dtype=dtype)
    chunk = chunk or (4 if a.device.type == "cpu" else 64)
    out = [_ssim_chunk(a[i : i + chunk], b[i : i + chunk], taps, data_range) for i in range(0, a.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=a.device)


def apply_mask(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) images times bool (B,H,W) masks, as PATN's `image * mask[..., np.newaxis]` (stays uint8)."""
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"apply_mask: masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
    return images * masks.to(device=images.device, dtype=images.dtype).unsqueeze(1)


def masked_ssim(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Mask-SSIM (Ma et al. 2017, Market-1501): SSIM of both images multiplied by the target pose mask (B,H,W)."""
    return ssim(apply_mask(a, masks), apply_mask(b, masks), data_range=data_range)

