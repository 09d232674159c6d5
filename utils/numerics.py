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


def _gpu_precision_settings() -> list:
    """torch >= 2.9's per-operation float32 precision settings for the GPU: cuDNN convolutions, cuDNN RNNs and CUDA
    matrix products, in that order; empty on older torch."""
    b = torch.backends
    candidates = [getattr(b.cudnn, "conv", None), getattr(b.cudnn, "rnn", None), b.cuda.matmul]
    return [c for c in candidates if c is not None and hasattr(c, "fp32_precision")]


@contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 convolutions and matrix products in IEEE precision inside (TF32 off for cuDNN and CUDA matmuls),
    the settings before restored after. Usable as a decorator: @ieee_float32().

    torch >= 2.9 keeps one setting per operation, and reading its legacy `allow_tf32` flags raises once they
    disagree with those (after a caller used the new settings, say), so where the new settings exist only they are
    read and written."""
    settings = _gpu_precision_settings()
    if not settings:  # torch < 2.9: the legacy flags are the only ones
        cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
        saved = cudnn.allow_tf32, matmul.allow_tf32
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = saved
        return
    saved = [s.fp32_precision for s in settings]
    for s in settings:
        s.fp32_precision = "ieee"
    try:
        yield
    finally:
        for s, precision in zip(settings, saved):
            s.fp32_precision = precision


def device_description(device: torch.device) -> str:
    """'cpu', or 'cuda:<GPU model>' (e.g. cuda:NVIDIA H100 80GB HBM3): what a cached result was computed on."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
