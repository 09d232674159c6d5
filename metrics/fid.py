"""FID (Heusel et al., 2017): Inception pool features of two image sets, and the Frechet distance of their Gaussians.

Two networks: "torchvision" (torchvision's ImageNet Inception-v3, `inception_v3_google-0cc3c7bd.pth`, the network of
the authors' and GFLA's scripts, which build it with `torchvision.models.inception_v3(pretrained=True)`) and
"standard" (pytorch-fid's FID Inception, the TF 2015-12-05 graph ported to PyTorch, pt_inception-2015-12-05-
6726825d.pth, with its patched Mixed blocks: the general GAN-literature convention).

Both: images in [0, 1] resized bilinearly to 299x299 (align_corners=False, what the scripts' F.upsample does), an
input transform, the Inception blocks up to Mixed_7c and a global average pool; torchvision's own
`transform_input` is not applied (the wrappers call the blocks directly). Input transforms: "2x-1" (pytorch-fid's
normalize_input) or "imagenet" (the authors' and GFLA's InceptionV3: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5 with
ImageNet mean/std, torchvision's transform_input applied to [0, 1] images). mu = mean, sigma = covariance with
n - 1 (np.cov).

Which images, in which order, and how many whole batches a published script keeps is the protocol's business
(metrics/protocols.py); real_statistics takes it as arguments. Real-set statistics are cached in a cache folder,
keyed by the folder listing (names, sizes, mtimes), the extractor, the reader, the order and the batching.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pytorch_fid import inception as pf_inception
from scipy import linalg
from torch import nn

from metrics.files import read_image, script_listing, whole_batches
from utils.errors import InputError
from utils.io import atomic_path, ensure_writable_folder
from utils.numerics import device_description, ieee_float32
from utils.weights import load_state_dict, weights_info

NETWORKS = ("torchvision", "standard")
WEIGHTS_NAME = {"torchvision": "inception_torchvision", "standard": "inception_fid"}
INPUT_TRANSFORMS = ("2x-1", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 2  # bump when the feature computation changes, to invalidate old caches
RANDOM_SEED = 0


# ------------------------------------------------------------------------------------------ networks


def fid_inception_v3() -> nn.Module:
    """pytorch-fid's FID Inception architecture (pytorch_fid.inception.fid_inception_v3) without its download."""
    net = pf_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = pf_inception.FIDInceptionE_2(2048)
    return net


def torchvision_inception_v3() -> nn.Module:
    """torchvision's Inception-v3 with the ImageNet checkpoint's layout (1000 classes, aux head), no download."""
    return torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)


def build_inception(network: str, weights: str | os.PathLike = "imagenet", seed: int = RANDOM_SEED) -> tuple:
    """(network, weights description); weights "imagenet" (hub cache), a path, or "random"."""
    if network not in NETWORKS:
        raise ValueError(f"unknown FID network {network!r}; known: {', '.join(NETWORKS)}")
    net = fid_inception_v3() if network == "standard" else torchvision_inception_v3()
    if isinstance(weights, str) and weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # "random" is one fixed network, so its cached statistics stay valid
            for m in net.modules():
                # variance-preserving init: with PyTorch's default init and BatchNorm's unit running variance the
                # pool features shrink to ~1e-7 and the Frechet distance drowns in rounding
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return net, f"random (seed {seed})"
    path = None if isinstance(weights, str) and weights == "imagenet" else os.fspath(weights)
    name = WEIGHTS_NAME[network]
    state = load_state_dict(name, path)
    source = path or weights_info(name).filename
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"{source}: does not fit the {network} FID Inception ({name}): {err}") from err
    return net, source


def transform_input(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B,3,H,W) RGB in [0, 1] -> the network's input: "2x-1" or "imagenet" (x * (std / 0.5) + (mean - 0.5) / 0.5)."""
    if kind == "2x-1":
        return 2 * x - 1
    if kind == "imagenet":
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5
    raise ValueError(f"unknown FID input transform {kind!r}; known: {', '.join(INPUT_TRANSFORMS)}")


class PoolFeatures(nn.Module):
    """uint8 (B,3,H,W) RGB -> (B,D) features: x / 255, bilinear resize to `resize`, the input transform, `blocks`,
    in IEEE float32 (no TF32: utils.numerics).

    network: the network and its weights, which with the transform and the device make `identity`."""

    def __init__(self, blocks: nn.Module, input_transform: str, network: str, weights_source: str,
                 random: bool, resize: int = 299):
        super().__init__()
        if input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f"unknown FID input transform {input_transform!r}; known: {', '.join(INPUT_TRANSFORMS)}")
        self.blocks, self.input_transform, self.resize = blocks, input_transform, resize
        self.features_of, self.weights_source, self.random = f"{network}|{input_transform}", weights_source, random
        self.requires_grad_(False)
        self.eval()

    @property
    def identity(self) -> str:
        """What the features depend on (part of the real-statistics cache key): the network, its weights and input
        transform, and where and how they are computed (the device, float32 without TF32)."""
        return f"{self.features_of}|{device_description(next(self.parameters()).device)}|float32"

    def train(self, mode: bool = True) -> PoolFeatures:
        return super().train(False)  # BatchNorm must use its stored statistics

    @torch.no_grad()
    @ieee_float32()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FID features: expected uint8 (B,3,H,W), got {images.dtype} {tuple(images.shape)}")
        x = images.to(next(self.parameters()).device).float() / 255
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return self.blocks(transform_input(x, self.input_transform)).flatten(1)  # (B,D)


class InceptionFeatures(PoolFeatures):
    """uint8 (B,3,H,W) RGB -> (B,2048) pool3 features of the pytorch-fid / the scripts' InceptionV3 wrapper."""

    def __init__(self, network: str = "torchvision", weights: str | os.PathLike = "imagenet",
                 seed: int = RANDOM_SEED, input_transform: str = "2x-1"):
        net, source = build_inception(network, weights, seed)
        blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
            net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )
        random = isinstance(weights, str) and weights == "random"
        if random:
            identity = f"{network}|{source}"
        else:
            path = Path(source)
            identity = f"{network}|{path.name}|{path.stat().st_size if path.is_file() else 'hub'}"
        super().__init__(blocks, input_transform, identity, source, random)
        self.network = network


# ------------------------------------------------------------------------------------------ statistics


class RunningMoments:
    """Mean and covariance (n - 1, as np.cov(rowvar=False)) of features arriving in batches, in float64.

    Sums are taken around the first batch's mean (a fixed shift), so S - n mu mu^T does not cancel badly.
    """

    def __init__(self):
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        x = feats.detach().to(torch.float64).flatten(1)  # (B,D)
        if self.shift is None:
            self.shift = x.mean(dim=0)
            self.total = torch.zeros_like(self.shift)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        x = x - self.shift
        self.total += x.sum(dim=0)
        self.outer += x.T @ x
        self.n += x.shape[0]

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.n}")
        m = self.total / self.n
        cov = (self.outer - self.n * torch.outer(m, m)) / (self.n - 1)
        return (m + self.shift).cpu().numpy(), cov.cpu().numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, method: str = "sqrtm") -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    method "sqrtm": scipy.linalg.sqrtm of the product S1 S2 (pytorch-fid's and GFLA's computation, with their
    guards: eps on the diagonals when the product is singular, an imaginary part is an error above 1e-3 on the
    diagonal and dropped otherwise). "eigh": Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), the same
    quantity through two symmetric eigendecompositions, several times faster at 2048 dimensions.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma "
                         f"{sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    if method == "sqrtm":
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))}")
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    elif method == "eigh":
        w, v = np.linalg.eigh(sigma1)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2), symmetric PSD
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sigma2 @ root1), 0, None)).sum()
    else:
        raise ValueError(f"frechet_distance: unknown method {method!r} (sqrtm or eigh)")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


# ------------------------------------------------------------------------------------------ image folders


def read_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H,W,3) uint8 RGB read with cv2; ImageReadError (a ValueError) naming the file when unreadable, truncated or
    not of `size` (H, W)."""
    return read_image(path, "cv2", size)


def image_files(folder: str | os.PathLike, order: str | None = None) -> list[Path]:
    """The images of a real-set folder: order None = every .jpg/.jpeg/.png by name (our clean protocol), or a
    script's listing (metrics.files.script_listing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FID real-image folder not found: {folder}")
    if order is None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    else:
        files = [folder / n for n in script_listing(folder, order)]
    if not files:
        raise FileNotFoundError(f"{folder}: no .jpg/.png images for FID")
    return files


def listing_fingerprint(files: list[Path]) -> str:
    """sha256 over (name, size, mtime_ns) of every file: changes when a file is added, removed or rewritten."""
    digest = hashlib.sha256()
    for p in files:
        st = p.stat()
        digest.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Folder(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], size: tuple[int, int] | None, reader: str):
        self.files, self.size, self.reader = files, size, reader

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.files[i], self.reader, self.size)).permute(2, 0, 1)  # (3,H,W) uint8


@dataclass
class RealStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    folder: str
    cache_file: Path | None
    cache_hit: bool


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spgnet" / "fid"


def real_statistics(folder: str | os.PathLike, extractor, cache_dir: str | os.PathLike | None = None,
                    batch_size: int = 32, size: tuple[int, int] | None = None, workers: int = 0,
                    progress=None, reader: str = "cv2", order: str | None = None,
                    whole_batches_of: int | None = None, shrink: bool = False) -> RealStatistics:
    """mu, sigma of the extractor's features over the images of `folder`, cached as npz in cache_dir.

    extractor: callable uint8 (B,3,H,W) -> (B,D) features with an `identity` string (InceptionFeatures).
    reader, order: metrics.files' decoder and listing (order None: every image by name). whole_batches_of: keep
    only the images of the script's n // b whole batches of b, in that order (the published FID scripts); shrink:
    b becomes n when n < b (GFLA's guard).
    The cache file name is a hash of the listing fingerprint, the identity, the reader, order and batching and
    CACHE_VERSION, so a changed file, protocol or weights file is a miss. cache_dir None: no caching; on a miss,
    a cache_dir that cannot be written is a WriteError naming it before any feature is computed.
    """
    files = image_files(folder, order)
    files = files[: whole_batches(len(files), whole_batches_of, shrink)]
    if len(files) < 2:
        raise InputError(f"{folder}: FID needs at least 2 real images, the protocol keeps {len(files)} (whole "
                         f"batches of {whole_batches_of})")
    key = hashlib.sha256(
        f"{listing_fingerprint(files)}|{extractor.identity}|{size}|{reader}|{order}|{whole_batches_of}|{shrink}"
        f"|v{CACHE_VERSION}".encode()
    ).hexdigest()[:24]
    cache_file = Path(cache_dir) / f"real-{key}.npz" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as data:
            return RealStatistics(data["mu"], data["sigma"], int(data["count"]), str(folder), cache_file, True)
    if cache_file is not None:  # a folder the result cannot be saved in is found before the work, not after it
        ensure_writable_folder(cache_file.parent, "FID cache folder")
    loader = torch.utils.data.DataLoader(_Folder(files, size, reader), batch_size=batch_size, num_workers=workers)
    moments = RunningMoments()
    for batch in progress(loader) if progress else loader:
        moments.update(extractor(batch))
    mu, sigma = moments.statistics()
    if cache_file is not None:
        info = json.dumps({"folder": str(folder), "identity": extractor.identity, "count": moments.n})
        with atomic_path(cache_file) as tmp:  # a killed run never leaves a half-written cache
            np.savez(tmp, mu=mu, sigma=sigma, count=moments.n, info=info)
    return RealStatistics(mu, sigma, moments.n, str(folder), cache_file, False)

