"""How exactly a network computes: float32 without TF32, and the name of the device a result was computed on.

Metric networks (FID's Inception, LPIPS's AlexNet, OpenPose) run under `ieee_float32`: cuDNN convolutions
default to TF32 (a 10-bit mantissa) on Ampere and later GPUs, so without it a metric would be another number on
a GPU than on a CPU, and OpenPose's peak thresholds could keep or drop other joints. Cached features record
`device_description`, since even in IEEE float32 a GPU sums in another order than a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 convolutions and matrix products in IEEE precision inside (TF32 off for cuDNN and CUDA matmuls),
    the settings before restored after. Usable as a decorator: @ieee_float32()."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def device_description(device: torch.device) -> str:
    """'cpu', or 'cuda:<GPU model>' (e.g. cuda:NVIDIA H100 80GB HBM3): what a cached result was computed on."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
