"""Named evaluation protocols: each published script's SSIM, Mask-SSIM, FID, LPIPS, Mask-LPIPS and PCKh, exactly.

Published numbers of pose transfer differ as much by how they were computed as by the method. Each preset below
is what one public script computes, read from its source (DESIGN.md section 6); `clean` is ours and reproduces no
table. DeepFashion rules apply to 256x256 and 256x176 images, Market-1501 rules to any other size (128x64).

release: the authors' SPGNet code (cszy98/SPGNet), Tables 1-2 of the paper.
  SSIM: the test-time `SSIM` module (models/modules.py), on the network output and the target in memory: both
    mapped to uint8 by ((x + 1) * 127.5).clip(0, 255).astype(uint8), i.e. *truncated*, the target after its
    float32 round trip through [-1, 1] (v / 255, (v - 0.5) / 0.5: 63 of the 256 values come back one lower);
    `compare_ssim(x, y, multichannel=True)` with skimage's defaults: 7x7 uniform window, sample covariance
    (x 49/48), data range 255 (uint8); at the generated size (256x256 DeepFashion, 128x64 Market); the mean of
    per-batch means over the test batches (4 at DeepFashion, so a last batch of 2 weighs as much as a full one;
    1 at Market). A PNG written by `test.py --quantise truncate` holds exactly the release's uint8 output.
  Mask-SSIM (Market, tools/metrics_market.py): PATN's call (below) on the decoded JPEG files times the mask.
  FID (tools/metrics_*.py): torchvision's Inception, input x * (std / 0.5) + (mean - 0.5) / 0.5; the generated
    folder listed as glob('*.jpg') + glob('*.png') in directory order, only n // 64 whole batches of 64 (the
    remainder dropped; fewer than 64 images give no FID); real set = the *training* folder, same listing and
    dropping. DeepFashion 256x256 outputs are first cropped to columns 40..215 by crop_img, which saves the crops
    under their own names in a new folder (a .jpg re-encoded by Pillow's defaults, quality 75) that FID then
    lists: evaluate.py writes that folder the same way (<out>/release_crop) and reads it.
  LPIPS / Mask-LPIPS: lpips AlexNet v0.1 on x / 127.5 - 1 (Mask-LPIPS: times the mask), whole batches of 64:
    DeepFashion in sorted name order, on the same crops (the ground truth, from a `ground_truth` folder the
    release does not make, is taken as the target cropped alike); Market in os.listdir order of the .jpg files.
patn: PATN's tool/getMetrics_fashion.py and getMetrics_market.py (tengteng95/Pose-Transfer) and its PCKh.
  SSIM: compare_ssim(reference, generated, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    multichannel=True, data_range=generated.max() - generated.min()); every image; DeepFashion 256x176 images
    padded to 256x256 with 40 white columns each side first (addBounding). Mask-SSIM (Market): the same call on
    both images times produce_ma_mask of the target pose. PCKh: metrics/pckh.py (calPCKH_*.py). No FID or LPIPS
    (its scripts compute the Inception Score instead).
gfla: GFLA's script/metrics.py (RenYurui/Global-Flow-Local-Attention) where it differs from the release.
  SSIM: its `ssim_256`, PATN's call on imread / 255 * 255 in float32, without padding (its DeepFashion is
    256x176). FID: the release's computation without the crop (its outputs are 256x176), and when fewer than 64
    images exist the batch shrinks to n; real set = the whole training set (its PERSON_IMAGE_GENERATION.md).
    LPIPS / Mask-LPIPS: as the release's, in sorted name order at both datasets; it ran a clone of
    PerceptualSimilarity's DistModel('net-lin', 'alex'), which the lpips package's AlexNet v0.1 continues. No
    Mask-SSIM and no PCKh in its script.
clean (default): ours. SSIM with Gaussian window, population covariance and data range 255 on every image, as
  decoded; FID on every image with pytorch-fid's 2x - 1 input (network "torchvision", real set = the training
  images, or "standard", pytorch-fid's FID Inception with the test images); LPIPS on every image; PCKh as patn.
  Our own measures, which no published script computes and so only clean defines: the per-part colour error
  (metrics/colour.py), the per-part texture correlation and contrast (metrics/texture.py) and SPATN's parsing
  pixel accuracy and mIoU (metrics/parsing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metrics.colour import MIN_PART_PIXELS
from metrics.files import FASHION_NARROW, FASHION_SQUARE, pad_narrow_fashion
from metrics.ssim import GENERATED_RANGE, apply_mask, ssim
from metrics.texture import MIN_TEXTURE_STD
from utils.errors import InputError

PROTOCOLS = ("clean", "release", "patn", "gfla")
SCRIPT_BATCH = 64  # the published FID / LPIPS batch size, whose remainder they drop
METRIC_FIELDS = ("ssim", "mssim", "fid", "lpips", "mlpips", "pckh", "colour", "texture", "parsing")
# our own measures: in no published script, so only the clean protocol defines them
OURS = ("colour", "texture", "parsing")
PCKH_TEXT = "PATN's calPCKH (alpha 0.5 of the target head box; targets with < 2 head joints skipped)"


class ProtocolError(InputError):
    """A metric the chosen protocol does not define, or an unknown protocol."""


def release_truth_roundtrip(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> uint8 as the release's target reaches its SSIM: v / 255, (v - 0.5) / 0.5, ((x + 1) * 127.5)
    clipped and truncated, every step in float32 as numpy and torchvision's Normalize compute it."""
    x = images.float() / 255
    x = (x - 0.5) / 0.5
    return ((x + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)  # .to(uint8) truncates, as astype


def gfla_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 imread / 255 * 255 (GFLA's ssim_256 input)."""
    return images.float() / 255.0 * 255.0


@dataclass(frozen=True)
class SSIMSpec:
    """One script's SSIM call and what it does to the images first."""

    text: str
    window: str = "gaussian"  # or "uniform" (7x7, skimage's default)
    sample_covariance: bool = False
    data_range: float | str = 255.0  # or "generated": generated.max() - generated.min() per image
    pad_narrow_fashion: bool = False  # PATN: 256x176 -> 256x256 with white columns
    truth_roundtrip: bool = False  # release: the target through float32 [-1, 1] and truncation
    float_input: bool = False  # GFLA: imread / 255 * 255
    batch_mean: int = 1  # release: the mean of per-batch means over test batches of this size
    exact: bool = True  # the published scripts' values to 1e-6 per image (see __call__); clean: float32 speed

    def prepare(self, generated: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two (B,3,H',W') batches the script's SSIM call receives."""
        a, b = generated, truth
        if masks is not None:
            a, b = apply_mask(a, masks), apply_mask(b, masks)
        if self.truth_roundtrip:
            b = release_truth_roundtrip(b)
        if self.pad_narrow_fashion and tuple(a.shape[-2:]) == FASHION_NARROW:
            a, b = pad_narrow_fashion(a), pad_narrow_fashion(b)
        if self.float_input:
            a, b = gfla_float(a), gfla_float(b)
        return a, b

    def __call__(self, generated: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """uint8 (B,3,H,W) generated and ground-truth images, optional (B,H,W) bool masks -> (B,) float64."""
        a, b = self.prepare(generated, truth, masks)
        # the uniform box sums uint8 exactly in float32; a Gaussian window in float32 is within about 2e-6 of
        # skimage on flat or masked images, so an exact preset filters it in float64 (2-4x slower on a CPU)
        dtype = torch.float64 if self.exact and self.window == "gaussian" else None
        return ssim(a, b, data_range=self.data_range, window=self.window, sample_covariance=self.sample_covariance,
                    dtype=dtype)

    def aggregate(self, values: np.ndarray) -> float:
        """Per-image values in pair order -> the script's reported mean."""
        values = np.asarray(values, dtype=np.float64)
        if self.batch_mean == 1:
            return float(values.mean())
        return float(np.mean([values[i : i + self.batch_mean].mean() for i in range(0, len(values), self.batch_mean)]))


@dataclass(frozen=True)
class FIDSpec:
    text: str
    network: str = "torchvision"  # metrics.fid.NETWORKS
    input_transform: str = "2x-1"  # metrics.fid.INPUT_TRANSFORMS
    real_set: str = "train"  # "train" or "test" folder of the dataset
    order: str | None = None  # None: every image; else the scripts' listing (metrics.files.ORDERS)
    whole_batches_of: int | None = None  # keep n // b * b images in that order
    shrink: bool = False  # the batch becomes n when n < b (GFLA); the release then has no features
    crop_square_fashion: bool = False  # release: 256x256 -> columns 40..215 (and a .jpg re-encoded)


@dataclass(frozen=True)
class LPIPSSpec:
    text: str
    order: str | None = None  # None: every image; else "sorted" or "listdir" (metrics.files.ORDERS)
    whole_batches_of: int | None = None
    crop_square_fashion: bool = False
    shrink: bool = True  # every LPIPS script sets the batch to n when n < 64


@dataclass(frozen=True)
class Protocol:
    name: str
    reproduces: str
    reader: str  # metrics.files.READERS
    ssim: SSIMSpec | None = None
    mssim: SSIMSpec | None = None
    fid: FIDSpec | None = None
    lpips: LPIPSSpec | None = None
    mlpips: LPIPSSpec | None = None
    pckh: str | None = None
    colour: str | None = None
    texture: str | None = None
    parsing: str | None = None

    def spec(self, metric: str):
        value = getattr(self, metric)
        if value is None:
            offered = ", ".join(m for m in METRIC_FIELDS if getattr(self, m))
            why, use = (("our own measure, in no published script", "clean for it") if metric in OURS
                        else ("its script computes none", "release or clean for the others"))
            raise ProtocolError(f"protocol {self.name!r} defines no {metric} ({why}); it offers {offered}; use "
                                f"--protocol {use}")
        return value

    def note(self, metric: str, kept: np.ndarray | None = None) -> str:
        """How `metric` is computed, in words, prefixed with the protocol's name; `kept`, the (N,) pairs the
        script's whole batches score, adds their count when some are left out."""
        spec = self.spec(metric)
        text = spec if isinstance(spec, str) else spec.text
        if kept is not None and not kept.all():
            text += f"; {int(kept.sum())} of {len(kept)} images in whole batches"
        return f"{self.name}: {text}"

    def crops(self, size: tuple[int, int]) -> bool:
        """Whether FID / LPIPS see the release's DeepFashion crop at this image size."""
        specs = [s for s in (self.fid, self.lpips, self.mlpips) if s is not None]
        return tuple(size) == FASHION_SQUARE and any(s.crop_square_fashion for s in specs)


def is_fashion(size: tuple[int, int]) -> bool:
    return tuple(size) in (FASHION_SQUARE, FASHION_NARROW)


def get_protocol(name: str, size: tuple[int, int], clean_fid_network: str = "torchvision") -> Protocol:
    """The preset `name` for images of `size` (H, W); clean_fid_network picks the clean protocol's FID network."""
    fashion = is_fashion(size)
    if name == "clean":
        real = "train" if clean_fid_network == "torchvision" else "test"
        return Protocol(
            "clean", "no published table (ours: every image, as decoded)", "cv2",
            ssim=SSIMSpec("Gaussian sigma 1.5, population covariance, data range 255, every image", exact=False),
            mssim=SSIMSpec("SSIM as clean of both images times the target pose mask (produce_ma_mask)", exact=False),
            fid=FIDSpec(f"{clean_fid_network} Inception pool3, input 2x - 1, every image, real set = {real} images",
                        network=clean_fid_network, real_set=real),
            lpips=LPIPSSpec("lpips AlexNet v0.1, [-1, 1], every image"),
            mlpips=LPIPSSpec("LPIPS of [-1, 1] images times the target pose mask, every image"),
            pckh=PCKH_TEXT,
            colour=f"per pair and target ground-truth part (CIHP ids, >= {MIN_PART_PIXELS} px, not background), the "
                   f"mean over R,G,B of |mean colour generated - mean colour truth|",
            texture=f"per pair and target ground-truth clothing part (CIHP 5, 6, 7, 9, 12; >= {MIN_PART_PIXELS} px, "
                    f"true grey std >= {MIN_TEXTURE_STD:g}), the Pearson correlation of the generated and true "
                    f"grey-level residuals around the part's mean",
            parsing="predicted label maps vs. the ground truth through data.label_merge, one confusion matrix "
                    "pooled over all pairs",
        )
    patn_call = dict(window="gaussian", sample_covariance=False, data_range=GENERATED_RANGE)
    if name == "release":
        crop = " on the 40..215 column crop" if fashion else ""
        lpips_order = "sorted" if fashion else "listdir"
        return Protocol(
            "release", "SPGNet (CVPR 2021) Tables 1-2, the authors' code", "pil",
            ssim=SSIMSpec(f"authors' test-time SSIM: truncated uint8, 7x7 uniform window, sample covariance, data "
                          f"range 255, mean of batch means (batch {4 if fashion else 1})", window="uniform",
                          sample_covariance=True, truth_roundtrip=True, batch_mean=4 if fashion else 1),
            mssim=None if fashion else SSIMSpec(
                "authors' metrics_market.py: PATN's call (Gaussian, population covariance, data range = masked "
                "generated max - min) on the files times the target pose mask", **patn_call),
            fid=FIDSpec(f"authors' metrics script: torchvision Inception, input x*(std/0.5)+(mean-0.5)/0.5, glob "
                        f"order, whole batches of 64{crop}, real set = training images (same rules)",
                        input_transform="imagenet", order="glob", whole_batches_of=SCRIPT_BATCH,
                        crop_square_fashion=True),
            lpips=LPIPSSpec(f"authors' metrics script: lpips AlexNet v0.1, {lpips_order} order, whole batches of "
                            f"64{crop}", order=lpips_order, whole_batches_of=SCRIPT_BATCH, crop_square_fashion=True),
            mlpips=None if fashion else LPIPSSpec(
                "authors' metrics_market.py: LPIPS of [-1, 1] images times the target pose mask, listdir order, "
                "whole batches of 64", order="listdir", whole_batches_of=SCRIPT_BATCH),
            pckh=PCKH_TEXT,
        )
    if name == "patn":
        pad = ", 256x176 padded to 256x256 with white columns" if fashion else ""
        return Protocol(
            "patn", "PATN (CVPR 2019) getMetrics_*.py and calPCKH_*.py: the SSIM / Mask-SSIM / PCKh convention",
            "pil",
            ssim=SSIMSpec(f"PATN's getMetrics: Gaussian sigma 1.5, population covariance, data range = generated "
                          f"max - min{pad}", pad_narrow_fashion=True, **patn_call),
            mssim=None if fashion else SSIMSpec(
                "PATN's getMetrics_market: its SSIM of both images times produce_ma_mask", **patn_call),
            pckh=PCKH_TEXT,
        )
    if name == "gfla":
        return Protocol(
            "gfla", "GFLA (CVPR 2020) script/metrics.py", "pil",
            ssim=SSIMSpec("GFLA's ssim_256: PATN's call on imread/255*255 float32, no padding", float_input=True,
                          **patn_call),
            fid=FIDSpec("GFLA's script: as release without the crop (glob order, whole batches of 64, the batch "
                        "shrinks to n below 64), real set = training images", input_transform="imagenet",
                        order="glob", whole_batches_of=SCRIPT_BATCH, shrink=True),
            lpips=LPIPSSpec("GFLA's script: lpips AlexNet v0.1, sorted order, whole batches of 64", order="sorted",
                            whole_batches_of=SCRIPT_BATCH),
            mlpips=None if fashion else LPIPSSpec(
                "GFLA's calculate_mask_lpips: LPIPS of [-1, 1] images times the target pose mask, sorted order, "
                "whole batches of 64", order="sorted", whole_batches_of=SCRIPT_BATCH),
        )
    raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
