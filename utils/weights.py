"""Pretrained backbone weights (VGG19, Inception-v3 x2, AlexNet) from the torch hub cache or an explicit path.

Nothing here downloads: a missing file raises MissingWeightsError naming the file, every path searched and the
command that fetches it (`python scripts/download_weights.py <name>`, which verifies the checksum). File names are
the ones torchvision and pytorch-fid use, so a cache filled by either library is found as is.

Checksums: torchvision and pytorch-fid publish no full SHA-256 for these files; they embed the first hex digits of
the SHA-256 in the file name (`vgg19-dcbb9e9d.pth`), and torch.hub's `check_hash` compares exactly that prefix.
We do the same: `sha256_prefix` is the part after the last '-' of the file name. The OpenPose body model's file
name carries no hash; its full SHA-256 is the one its Hugging Face copy publishes (see OPENPOSE_SHA256). SCHP's LIP
parser has no published digest at all (see SCHP_URL): its `sha256_prefix` is None, and scripts/download_weights.py
checks that file by loading it as the network's state dict instead.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tv_models
from pytorch_fid.inception import FID_WEIGHTS_URL
from torch import nn

from utils.checkpoint import pickled_objects_message
from utils.errors import InputError


@dataclass(frozen=True)
class WeightsInfo:
    """One known checkpoint: its cache file name, where to fetch it, the SHA-256 prefix the file name embeds (None:
    nothing is published to compare with)."""

    name: str
    filename: str
    url: str
    sha256_prefix: str | None
    description: str


def _info(name: str, filename: str, url: str, description: str, sha256: str | None = None,
          unverified: bool = False) -> WeightsInfo:
    """sha256: the published digest (or a prefix of it) when the file name embeds none; unverified: no digest is
    published and the URL is a download link that need not name the file."""
    if unverified:
        return WeightsInfo(name, filename, url, None, description)
    if not url.endswith("/" + filename):
        raise RuntimeError(f"{name}: the library's URL {url} no longer names {filename}; update utils/weights.py")
    prefix = sha256 or filename.rsplit("-", 1)[1].split(".")[0]  # torch.hub's HASH_REGEX r"-([a-f0-9]*)\."
    return WeightsInfo(name, filename, url, prefix, description)


# The CMU OpenPose COCO body model (caffe pose_iter_440000) as converted to PyTorch by the pytorch-openpose project
# (github Hzzone/pytorch-openpose, whose README links the file on Dropbox, without a checksum). The same file is
# mirrored in the Hugging Face repository lllyasviel/Annotators; the digest below is the one its Git LFS pointer
# publishes for that copy (209,267,595 bytes).
OPENPOSE_URL = "https://huggingface.co/lllyasviel/Annotators/resolve/main/body_pose_model.pth"
OPENPOSE_SHA256 = "25a948c16078b0f08e236bda51a385d855ef4c153598947c28c0d47ed94bb746"

# SCHP's LIP model (github GoGoDuck912/Self-Correction-Human-Parsing, whose README links it on Google Drive). The
# authors publish no checksum, and no copy with a digest is known: the download is checked by loading it as the
# network's state dict (every published key with its shape). The link is Google Drive's direct-download form of
# the README's file id.
SCHP_URL = ("https://drive.usercontent.google.com/download?id=1k4dllHpu0bdx38J7H28rVVLpU-kOHmnH&export=download"
            "&confirm=t")


# URLs straight from the libraries that publish the files (torchvision's weight enums, pytorch-fid's constant),
# so they stay right if a host moves; the file names are pinned here because the cache lookup depends on them
KNOWN_WEIGHTS: dict[str, WeightsInfo] = {
    w.name: w
    for w in (
        _info("vgg19", "vgg19-dcbb9e9d.pth", tv_models.VGG19_Weights.IMAGENET1K_V1.url,
              "torchvision VGG19 (ImageNet): the perceptual loss"),
        _info("inception_torchvision", "inception_v3_google-0cc3c7bd.pth",
              tv_models.Inception_V3_Weights.IMAGENET1K_V1.url,
              "torchvision Inception-v3 (ImageNet): the pose-transfer FID protocol (GFLA's script)"),
        _info("inception_fid", "pt_inception-2015-12-05-6726825d.pth", FID_WEIGHTS_URL,
              "pytorch-fid's FID Inception (TF 2015-12-05 graph): the standard FID protocol"),
        _info("alexnet", "alexnet-owt-7be5be79.pth", tv_models.AlexNet_Weights.IMAGENET1K_V1.url,
              "torchvision AlexNet (ImageNet): the LPIPS backbone"),
        _info("openpose_body_coco", "body_pose_model.pth", OPENPOSE_URL,
              "CMU OpenPose COCO body model (pytorch-openpose's conversion): the PCKh keypoint estimator",
              OPENPOSE_SHA256),
        _info("schp_lip", "exp-schp-201908261155-lip.pth", SCHP_URL,
              "SCHP's LIP human parser (Li et al., TPAMI 2020): parsing maps of your own photos", unverified=True),
    )
}


class WeightsError(InputError):
    """A weights file that cannot be read as the state dict it should be (damaged, foreign, pickled objects)."""


class MissingWeightsError(InputError, FileNotFoundError):
    """A checkpoint file is not where we looked; the message says where we looked and how to fetch it."""


def weights_info(name: str) -> WeightsInfo:
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)}")
    return KNOWN_WEIGHTS[name]


def cache_dir() -> Path:
    """torch.hub's checkpoint cache: $TORCH_HOME/hub/checkpoints (TORCH_HOME read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(name: str) -> Path:
    return cache_dir() / weights_info(name).filename


def find_weights(name: str, path: str | os.PathLike | None = None) -> Path:
    """The file to load: `path` when given (must exist), else the hub cache. MissingWeightsError otherwise."""
    info = weights_info(name)
    searched = [Path(path)] if path is not None else [cached_path(name)]
    for candidate in searched:
        if candidate.is_file():
            return candidate
    where = "\n".join(f"  {p}" for p in searched)
    raise MissingWeightsError(
        f"{info.description}: weights file {info.filename} not found. Searched:\n{where}\n"
        f"Fetch it with `python scripts/download_weights.py {name}` (into {cache_dir()}; set TORCH_HOME to change "
        "the cache), or pass an explicit path to a copy of the file."
    )


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_hash(name: str, path: str | os.PathLike) -> bool:
    """True when the file's SHA-256 starts with the published prefix (the one its official file name embeds).
    ValueError for a checkpoint with no published digest (check it by loading it instead)."""
    prefix = weights_info(name).sha256_prefix
    if prefix is None:
        raise ValueError(f"{name}: no published SHA-256 to verify against")
    return sha256_of(path).startswith(prefix)


def state_dict_problems(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> str | None:
    """None when `state` has exactly the `expected` keys with their shapes; else its first missing, unexpected and
    mis-shaped keys (four of each), for an error message."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {v})" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != v]
    problems = [f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "; ".join(problems) or None


def load_state_dict(name: str, path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """State dict of the known checkpoint `name`, from `path` or the torch hub cache, on the CPU.

    torch.load(weights_only=True): tensors only, no pickled code runs. The hash is not re-checked on every load
    (hashing VGG19's 548 MB per run would cost seconds); scripts/download_weights.py checks it when fetching.
    """
    file = find_weights(name, path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = pickled_objects_message(err, file, f"{name} state dict",
                                          f"Use the official file: python scripts/download_weights.py {name}")
        if refused is None:
            raise WeightsError(f"{file}: cannot be read as a {name} state dict ({type(err).__name__})") from err
        raise WeightsError(refused) from None
    except Exception as err:  # truncated or foreign file: say which
        raise WeightsError(f"{file}: cannot be read as a {name} state dict ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise WeightsError(f"{file}: expected a state dict, got {type(state).__name__}")
    return state


def frozen_network(name: str, weights: str | os.PathLike, build: Callable[[], nn.Module], seed: int,
                   prepare: Callable[[dict, str], dict]) -> tuple[nn.Module, str]:
    """(network in eval mode without gradients, description of its weights) for the known checkpoint `name`.

    weights: "published" (the torch hub cache), a path to the file, or "random" (PyTorch's default initialisation
    from `seed`: the real model's cost, meaningless outputs; for tests and offline runs). prepare(loaded, source)
    checks the loaded file and returns the network's state dict; it runs before the network is built, so that a
    wrong file fails fast.
    """
    state = None
    if isinstance(weights, str) and weights == "random":
        source = f"random (seed {seed})"
    else:
        path = None if isinstance(weights, str) and weights == "published" else os.fspath(weights)
        source = path or f"{name} (torch hub cache)"
        state = prepare(load_state_dict(name, path), source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
    if state is not None:
        net.load_state_dict(state)
    net.requires_grad_(False)
    return net.eval(), source
