"""SPGNet networks. The generator registry is reached through `build_generator` / `GENERATORS`, imported lazily:
this package's __init__ stays free of network imports, so `models.build` (which imports `build_generator` from
here) and the network modules can import each other's submodules in any order."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_generator(variant: str, **kwargs: Any) -> nn.Module:
    """See models.variants.build_generator (keyword arguments: num_classes, image_size, pose_channels,
    base_channels, max_channels, n_scales, n_res_blocks, n_warp_scales, style_dim)."""
    from models.variants import build_generator as build

    return build(variant, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "GENERATORS":
        from models.variants import GENERATORS

        return GENERATORS
    raise AttributeError(f"module 'models' has no attribute {name!r}")
