"""Perceptual loss on VGG19 features (paper eq. 10).

L_perc = sum_k ||phi_k(I_hat) - phi_k(I)||_2^2 / (C_k H_k W_k), phi_k = relu1_1, relu2_1, relu3_1, relu4_1
(K = 4), i.e. one mean squared error per layer, averaged over the batch.

The VGG19 is torchvision's `features` stack (same layer indices, so torchvision's ImageNet checkpoint
`vgg19-dcbb9e9d.pth` loads as is), cut after the deepest requested layer, frozen and always in eval mode.
Its weights come from the torch hub cache or an explicit path (`utils.weights`); a missing file is an error,
never a silent fallback. weights="random" exists for offline tests only and says so loudly.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.weights import load_state_dict

log = logging.getLogger(__name__)

# torchvision's VGG19 ("E"): conv widths per block, each block closed by a 2x2 max-pool
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WARNING = "perceptual loss uses a RANDOM-INIT VGG19: for offline tests only"


def vgg19_layer_names() -> list[str]:
    """Names of torchvision's vgg19().features[i], i = 0..36: conv1_1, relu1_1, conv1_2, relu1_2, pool1, ..."""
    names = []
    for block, widths in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, len(widths) + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def vgg19_features(num_layers: int) -> nn.Sequential:
    """The first `num_layers` modules of torchvision's vgg19().features, with the same indices (state-dict keys).

    ReLUs are not in place, so any layer's output can be kept while the next one runs.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for widths in VGG19_BLOCKS:
        for width in widths:
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    features = nn.Sequential(*layers[:num_layers])
    for m in features.modules():  # torchvision's VGG init, so a random network has sane activation scales
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def _features_state(state: dict[str, torch.Tensor], num_layers: int, source: str) -> dict[str, torch.Tensor]:
    """torchvision VGG19 state dict ("features.<i>.weight", classifier ignored) -> our truncated stack's keys."""
    prefix = "features."
    if not any(k.startswith(prefix) for k in state):
        raise ValueError(
            f"{source}: not a torchvision VGG19 state dict (no 'features.*' keys; found e.g. {sorted(state)[:4]})"
        )
    out = {}
    for key, value in state.items():
        if key.startswith(prefix) and int(key[len(prefix) :].split(".")[0]) < num_layers:
            out[key[len(prefix) :]] = value
    return out


DISTANCES = {"mse": F.mse_loss, "l1": F.l1_loss}


class VGGPerceptualLoss(nn.Module):
    """Eq. 10 between images in [-1, 1] (B,3,H,W); ImageNet normalisation is applied inside.

    layers: VGG19 layer names (see `vgg19_layer_names`), default the paper's K = 4 ReLUs.
    weights: "imagenet" (torchvision's checkpoint from the torch hub cache; missing -> MissingWeightsError),
      a path to a torchvision VGG19 state dict, or "random" (offline tests only; warns).
    layer_weights: optional per-layer multipliers of the total (default 1 each, eq. 10's plain sum).
    distance: "mse" (eq. 10: mean squared error per layer) or "l1" (mean absolute error, the release's
      content loss; with layer_weights 0.125 each over relu1_1..relu5_1).

    forward(pred, target) -> {"perceptual": sum_k layer_weight_k * d_k, "perceptual/<layer>": d_k, ...}:
    the per-layer terms are the unweighted distances, for logging; the training loop weights "perceptual" only.
    Gradients flow to `pred` only: the target's features are computed under no_grad.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
        weights: str | os.PathLike = "imagenet",
        layer_weights: Sequence[float] | None = None,
        distance: str = "mse",
    ):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"VGGPerceptualLoss: unknown distance {distance!r}; expected {' or '.join(DISTANCES)}")
        self.distance = distance
        names = vgg19_layer_names()
        layers = tuple(layers)
        if not layers:
            raise ValueError("VGGPerceptualLoss: no layers given")
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"VGGPerceptualLoss: unknown VGG19 layer(s) {unknown}; known: {', '.join(names)}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"VGGPerceptualLoss: repeated layer in {list(layers)}")
        if layer_weights is not None and len(layer_weights) != len(layers):
            raise ValueError(f"VGGPerceptualLoss: {len(layer_weights)} layer_weights for {len(layers)} layers")
        self.layers = layers
        self.layer_weights = [1.0] * len(layers) if layer_weights is None else [float(w) for w in layer_weights]
        self.indices = [names.index(name) for name in layers]
        num_layers = max(self.indices) + 1
        self.vgg = vgg19_features(num_layers)

        if isinstance(weights, str) and weights == "random":
            warnings.warn(RANDOM_WARNING, stacklevel=2)
            log.warning(RANDOM_WARNING)
            self.weights_source = "random"
        else:
            path = None if isinstance(weights, str) and weights == "imagenet" else os.fspath(weights)
            state = load_state_dict("vgg19", path)  # MissingWeightsError names the file and the fetch command
            source = path or "vgg19 (torch hub cache)"
            try:
                self.vgg.load_state_dict(_features_state(state, num_layers, source), strict=True)
            except RuntimeError as err:
                raise ValueError(f"{source}: does not fit VGG19 features[:{num_layers}]: {err}") from err
            self.weights_source = source

        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """The VGG stays in eval mode whatever the parent does."""
        super().train(mode)
        self.vgg.eval()
        return self

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] (B,3,H,W) -> the requested layers' activations, in `layers` order."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VGGPerceptualLoss: images must be (B,3,H,W), got {tuple(images.shape)}")
        x = ((images + 1) * 0.5 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        wanted = {index: k for k, index in enumerate(self.indices)}
        out: list[torch.Tensor | None] = [None] * len(self.indices)
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if pred.shape != target.shape:
            raise ValueError(
                f"VGGPerceptualLoss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        target = target.to(pred.dtype)
        if torch.is_grad_enabled() and pred.requires_grad:
            # two passes: a batched one would keep the target's activations for backward and run the backward
            # over both halves; this way the target costs a forward only (batch 4 at 256x176, up to relu4_1:
            # 337 vs 661 MiB saved for backward, forward + backward 1.6 vs 3.3 s on a 2-core CPU)
            pred_feats = self.features(pred)
            with torch.no_grad():
                target_feats = self.features(target)
        else:  # nothing to differentiate (validation): one batched pass
            both = self.features(torch.cat([pred, target]))
            pred_feats, target_feats = zip(*(f.chunk(2) for f in both))
        term = DISTANCES[self.distance]
        terms = {f"perceptual/{name}": term(p, t) for name, p, t in zip(self.layers, pred_feats, target_feats)}
        total = sum(w * v for w, v in zip(self.layer_weights, terms.values()))
        return {"perceptual": total, **terms}

    def extra_repr(self) -> str:
        return (f"layers={list(self.layers)}, layer_weights={self.layer_weights}, distance={self.distance!r}, "
                f"weights={self.weights_source!r}")
