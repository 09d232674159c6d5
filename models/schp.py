"""SCHP, the human parser of Li et al., "Self-Correction for Human Parsing" (TPAMI 2020), and its test-time transform:
an RGB photo of one person -> CIHP's 20 labels, the maps data/parsing.py reads.

Network (AugmentCE2P's resnet101, the architecture of the published LIP model `exp-schp-201908261155-lip.pth`):
- ResNet-101 backbone with a deep stem (three 3x3 convolutions 3-64-64-128, the first of stride 2, then a 3x3
  max-pool of stride 2), bottleneck layers of 3, 4, 23, 3 blocks; layer4 has stride 1 and dilation 2: features at
  1/4 (layer1, 256 ch), 1/8 (layer2, 512), 1/16 (layer3, 1024) and 1/16 (layer4, 2048);
- PSP context: adaptive average pools to 1x1, 2x2, 3x3, 6x6, each a 1x1 conv to 512 + ABN, bilinearly upsampled
  (align_corners) and concatenated with layer4; a 3x3 conv to 512 + ABN;
- decoder: the context (1x1 conv to 256 + ABN, upsampled to layer1's size) with layer1 (1x1 conv to 48 + ABN),
  two 1x1 convs to 256 (+ ABN each) -> 256-ch parsing features; a 1x1 conv with bias -> the parsing logits;
- edge branch: layer1, 2, 3 each 1x1 conv to 256 + ABN; one shared 3x3 conv with bias gives 2 edge logits per
  level; features and logits upsampled to layer1's size; a 1x1 conv with bias fuses the 6 logits into 2;
- fusion: [parsing features, edge features] (256 + 768 ch) -> 1x1 conv to 256 + ABN -> dropout -> 1x1 conv with
  bias: the fused logits, the ones SCHP's extractor uses.
ABN is inplace_abn's activated batch norm: batch norm then leaky ReLU (slope 0.01), or batch norm alone in the
backbone (`activation='none'`). SCHP trains with InPlaceABNSync, a CUDA extension; its inference is exactly this
batch norm and leaky ReLU, which `ABN` computes with torch ops (so its state dict has no num_batches_tracked).
Parameter names are the reference's module paths (the published file prefixes each with `module.`, from the
DataParallel it was saved through), so the published state dict loads as is. 66,723,928 parameters (LIP, 20 labels).

Test-time transform (SCHP's `simple_extractor.py`, its default and only extractor: no flipping, one scale):
1. the whole image is the person's box (0, 0, w - 1, h - 1): centre c = ((w - 1) / 2, (h - 1) / 2), side
   S = max(w - 1, h - 1) (the box grown to the square input's aspect ratio); the affine map of c to the input's
   centre (236, 236) with scale 472 / S, built from three float32 points by cv2.getAffineTransform as the reference
   does (`get_affine_transform`, rotation 0), warps the BGR image to 473x473 (cv2.INTER_LINEAR, black border);
2. x / 255, then per channel (B, G, R) minus mean (0.406, 0.456, 0.485) over std (0.225, 0.224, 0.229): ImageNet's
   statistics in BGR order, the channel order the network takes;
3. the fused logits (1/4 of the input, 119x119) are upsampled to 473x473 (bilinear, align_corners=True), warped
   back to the image by the inverse map (cv2.INTER_LINEAR per channel, border 0) and argmax'ed into labels.
LIP's 20 labels are CIHP's, id by id (data.parsing.CIHP_LABELS; see `LIP_LABELS`), left and right as the person's.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import InputError
from utils.weights import frozen_network, state_dict_problems

WEIGHTS_NAME = "schp_lip"  # utils.weights: exp-schp-201908261155-lip.pth
RANDOM_SEED = 0
INPUT_SIZE = 473
NUM_LIP = 20
# simple_extractor.py's LIP label names, in id order; equal to data.parsing.CIHP_LABELS id by id
LIP_LABELS = ("Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks", "Pants",
              "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
              "Right-shoe")
MEAN_BGR = (0.406, 0.456, 0.485)
STD_BGR = (0.225, 0.224, 0.229)
PREFIX = "module."  # the published keys' DataParallel prefix
RESNET101_BLOCKS = (3, 4, 23, 3)
PSP_SIZES = (1, 2, 3, 6)


class SCHPWeightsError(InputError):
    """A checkpoint that is not SCHP's LIP model (missing, unexpected or mis-shaped keys)."""


# ------------------------------------------------------------------------------------------ network


class ABN(nn.Module):
    """inplace_abn's activated batch norm: batch norm, then leaky ReLU (slope 0.01) unless activation='none'.
    Parameters weight, bias; buffers running_mean, running_var (the published keys)."""

    def __init__(self, channels: int, activation: str = "leaky_relu", slope: float = 0.01, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        if activation not in ("leaky_relu", "none"):
            raise ValueError(f"ABN activation must be 'leaky_relu' or 'none', got {activation!r}")
        self.activation, self.slope, self.eps, self.momentum = activation, slope, eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return F.leaky_relu(x, self.slope) if self.activation == "leaky_relu" else x


def conv_abn(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    """Convolution without bias (padding kernel // 2) + ABN with leaky ReLU: children '0' and '1'."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), ABN(cout))


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels), batch norms without activation and a
    ReLU after the first two and after the residual sum."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = ABN(planes, activation="none")
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = ABN(planes, activation="none")
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = ABN(cout, activation="none")
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            ABN(cout, activation="none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def resnet_layer(cin: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """`blocks` bottlenecks; the first changes the width (and stride)."""
    layers = [Bottleneck(cin, planes, stride, dilation)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class PSPModule(nn.Module):
    """Pyramid pooling (Zhao et al., CVPR 2017): stages.i = (pool to s x s, 1x1 conv, ABN); bottleneck = 3x3 conv +
    ABN over [the upsampled stages, the input]."""

    def __init__(self, features: int = 2048, out_features: int = 512, sizes: tuple[int, ...] = PSP_SIZES):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), *conv_abn(features, out_features))
                                    for s in sizes)
        self.bottleneck = conv_abn(features + len(sizes) * out_features, out_features, kernel=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [_upsample(stage(x), size) for stage in self.stages]  # each (B,512,h,w)
        return self.bottleneck(torch.cat([*priors, x], dim=1))  # (B,512,h,w)


class EdgeModule(nn.Module):
    """Edge branch: conv1..3 (1x1 + ABN) per level, the shared 3x3 conv4 to 2 edge logits, conv5 fusing the three
    levels' logits. Returns (edge logits (B,2,h1,w1), edge features (B,768,h1,w1)) at the first level's size."""

    def __init__(self, in_features: tuple[int, ...] = (256, 512, 1024), mid: int = 256, out: int = 2):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (conv_abn(c, mid) for c in in_features)
        self.conv4 = nn.Conv2d(mid, out, 3, padding=1)
        self.conv5 = nn.Conv2d(out * len(in_features), out, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x1.shape[-2:]
        feats = [conv(x) for conv, x in zip((self.conv1, self.conv2, self.conv3), (x1, x2, x3))]  # (B,256,hi,wi)
        edges = [self.conv4(f) for f in feats]  # (B,2,hi,wi): one conv for every level
        feats = [feats[0]] + [_upsample(f, size) for f in feats[1:]]
        edges = [edges[0]] + [_upsample(e, size) for e in edges[1:]]
        return self.conv5(torch.cat(edges, dim=1)), torch.cat(feats, dim=1)


class DecoderModule(nn.Module):
    """Parsing decoder: context (conv1, upsampled) + low-level layer1 features (conv2) -> conv3 -> conv4 logits.
    Returns (parsing logits (B,K,h1,w1), parsing features (B,256,h1,w1))."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = conv_abn(512, 256)
        self.conv2 = conv_abn(256, 48)
        self.conv3 = nn.Sequential(*conv_abn(256 + 48, 256), *conv_abn(256, 256))
        self.conv4 = nn.Conv2d(256, num_classes, 1)

    def forward(self, context: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([_upsample(self.conv1(context), low.shape[-2:]), self.conv2(low)], dim=1)  # (B,304,h1,w1)
        x = self.conv3(x)
        return self.conv4(x), x


class SCHPNet(nn.Module):
    """(B,3,H,W) normalised BGR -> (parsing logits, fused logits, edge logits), each at ((H+1)//2 + 1)//2 (1/4).

    The module paths are the reference's (`fushion` spelled as it spells it), so state_dict() keys are the
    published ones without the `module.` prefix."""

    def __init__(self, num_classes: int = NUM_LIP):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False), ABN(64, activation="none")
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, padding=1, bias=False), ABN(64, activation="none")
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, padding=1, bias=False), ABN(128, activation="none")
        widths = (128, 256, 512, 1024)
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), RESNET101_BLOCKS)):
            self.add_module(f"layer{i + 1}", resnet_layer(widths[i], planes, blocks, strides[i], dilations[i]))
        self.context_encoding = PSPModule(2048, 512)
        self.edge = EdgeModule()
        self.decoder = DecoderModule(num_classes)
        self.fushion = nn.Sequential(*conv_abn(1024, 256), nn.Dropout2d(0.1), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))  # (B,64,H/2,W/2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))  # (B,128,H/2,W/2)
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # (B,128,H/4,W/4)
        x2 = self.layer1(x)  # (B,256,H/4,W/4)
        x3 = self.layer2(x2)  # (B,512,H/8,W/8)
        x4 = self.layer3(x3)  # (B,1024,H/16,W/16)
        x5 = self.layer4(x4)  # (B,2048,H/16,W/16)
        parsing, parsing_features = self.decoder(self.context_encoding(x5), x2)  # (B,K,H/4,W/4), (B,256,...)
        edge, edge_features = self.edge(x2, x3, x4)  # (B,2,H/4,W/4), (B,768,H/4,W/4)
        fused = self.fushion(torch.cat([parsing_features, edge_features], dim=1))  # (B,K,H/4,W/4)
        return parsing, fused, edge


# ------------------------------------------------------------------------------------------ weights


def published_shapes(num_classes: int = NUM_LIP) -> dict[str, tuple[int, ...]]:
    """Every key of the published state dict (with its `module.` prefix) and its shape, from the network itself."""
    with torch.device("meta"):
        net = SCHPNet(num_classes)
    return {PREFIX + k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_state_dict(state: dict[str, torch.Tensor], source: str) -> None:
    """SCHPWeightsError naming the first missing, unexpected or mis-shaped keys of a published-style state dict."""
    problems = state_dict_problems(state, published_shapes())
    if problems:
        raise SCHPWeightsError(f"{source}: not SCHP's LIP model (exp-schp-201908261155-lip.pth); {problems}")


def published_state_dict(checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
    """The network's state dict inside a published SCHP file ({'state_dict': {'module.<path>': tensor}, ...}),
    checked, with the prefix removed."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise SCHPWeightsError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")
    check_state_dict(state, source)
    return {k[len(PREFIX):]: v for k, v in state.items()}


def build_schp(weights: str | os.PathLike = "published", seed: int = RANDOM_SEED) -> tuple[SCHPNet, str]:
    """(network in eval mode, description of its weights).

    weights: "published" (exp-schp-201908261155-lip.pth from the torch hub cache), a path to that file, or "random"
    (PyTorch's default initialisation from `seed`: labels that mean nothing, for offline runs and tests only).
    """
    net, source = frozen_network(WEIGHTS_NAME, weights, SCHPNet, seed, published_state_dict)
    return net, source + (": NOT a trained parser" if isinstance(weights, str) and weights == "random" else "")


# ------------------------------------------------------------------------------------------ test-time transform


def input_affine(height: int, width: int, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(image -> input, input -> image) (2,3) float64 maps of (x, y), as SCHP's get_affine_transform builds them for
    the whole-image box at rotation 0: three float32 point pairs through cv2.getAffineTransform."""
    c = np.array([(width - 1) * 0.5, (height - 1) * 0.5], np.float32)
    half = np.float32(max(width - 1, height - 1) * 0.5)  # the box grown to the square aspect ratio
    mid = np.float32((size - 1) * 0.5)
    src = np.stack([c, c + [0, -half], c + [-half, -half]]).astype(np.float32)  # centre, up, the 90-degree third
    dst = np.array([[mid, mid], [mid, 0], [0, 0]], np.float32)
    return cv2.getAffineTransform(src, dst), cv2.getAffineTransform(dst, src)


def to_input(image: np.ndarray, affine: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """(h,w,3) uint8 RGB -> (3,size,size) float32 normalised BGR: the warp, /255, SCHP's BGR mean and std."""
    bgr = np.ascontiguousarray(image[..., ::-1])
    warped = cv2.warpAffine(bgr, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(0, 0, 0))  # (size,size,3)
    x = torch.from_numpy(warped).permute(2, 0, 1).float().div_(255)  # (3,size,size)
    mean, std = torch.tensor(MEAN_BGR)[:, None, None], torch.tensor(STD_BGR)[:, None, None]
    return (x - mean) / std


def logits_to_image(logits: torch.Tensor, inverse: np.ndarray, height: int, width: int,
                    size: int = INPUT_SIZE) -> np.ndarray:
    """Fused logits (K,h,w) -> (height,width,K) float32 in the image: upsampled to size x size (align_corners),
    then the inverse warp, four channels per cv2 call (cv2.INTER_LINEAR, border 0, as the reference per channel)."""
    up = _upsample(logits[None].float(), (size, size))[0].permute(1, 2, 0).cpu().numpy()  # (size,size,K)
    chunks = [cv2.warpAffine(np.ascontiguousarray(up[..., i : i + 4]), inverse, (width, height),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
              for i in range(0, up.shape[-1], 4)]
    return np.concatenate([c.reshape(height, width, -1) for c in chunks], axis=-1)


class SCHPParser:
    """SCHP's extractor on one RGB image: uint8 (h,w,3) -> (h,w) uint8 LIP (= CIHP) labels.

    weights: "published" (torch hub cache), a path to exp-schp-201908261155-lip.pth, or "random" (offline runs and
    tests: the labels mean nothing; `random` is then True and `weights_source` says so)."""

    def __init__(self, weights: str | os.PathLike = "published", device: str | torch.device | None = None):
        self.net, self.weights_source = build_schp(weights)
        self.random = isinstance(weights, str) and weights == "random"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device)

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> np.ndarray:
        """(h,w,3) uint8 RGB -> (h,w,20) float32 fused logits in the image frame."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"schp: expected a uint8 RGB image (h,w,3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        forward, inverse = input_affine(h, w)
        x = to_input(image, forward).to(self.device)  # (3,473,473)
        fused = self.net(x[None])[1][0]  # (20,119,119)
        return logits_to_image(fused, inverse, h, w)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.logits(image).argmax(axis=-1).astype(np.uint8)  # (h,w)
