"""The CUDA code paths against the CPU: the same networks, batches and metrics on both devices give the same
numbers. Marked `cuda`: skipped without a CUDA device; scripts/gpu_check.sh runs them (`pytest -m cuda`).

Convolutions are compared with TF32 off (cuDNN's default lets fp32 convolutions round their inputs to TF32, a
relative error near 1e-3 that would hide a real difference); bf16 is compared with fp32 on the device.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.inference import inference_pipeline
from benchmarks.inputs import TINY_CONFIG, first_adversarial_step, joint_stage, take_every_update
from data.fake_batch import random_batch, random_keypoints
from data.loaders import build_dataset, build_loader
from metrics.fid import InceptionFeatures
from metrics.lpips import LPIPSMetric
from metrics.openpose import build_openpose, multiscale_maps
from metrics.ssim import masked_ssim, ssim
from models.build import build_pose_encoder
from training.steps import to_device
from utils import checkpoint as ck
from utils.config import Config, load_config

pytestmark = pytest.mark.cuda
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 convolutions in fp32 (matmuls already are: torch's default precision is "highest")."""
    conv = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9: a precision per backend
    if conv is None:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
        return
    saved, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = saved


def tiny(*overrides: str) -> Config:
    return load_config(TINY_CONFIG, ["train.adv_start_step=0", *overrides])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| over all elements, on the CPU in float64."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def one_step(cfg: Config, device: torch.device) -> tuple[dict[str, float], torch.Tensor]:
    """One joint step (D and G updates, adversarial term on) from the seeded initial weights on a fixed batch:
    its loss terms and the flattened gradient of SPATN and the generator."""
    stage = joint_stage(cfg, device)
    batch = to_device(random_batch(cfg, 2, seed=3), device, cfg.train.channels_last)
    terms = stage.step(batch, first_adversarial_step(cfg), take_every_update)
    grads = torch.cat([p.grad.flatten() for p in stage.g_params if p.grad is not None])
    return {k: float(v) for k, v in terms.items()}, grads


def test_pose_encoder_on_cuda_matches_the_cpu():
    cfg = tiny()
    h, w = cfg.data.image_size
    keypoints = random_keypoints(4, h, w, torch.Generator().manual_seed(0))  # (4,18,2)
    encoder = build_pose_encoder(cfg)
    expected = encoder(keypoints)  # (4,30,H,W)
    got = encoder.to(CUDA)(keypoints.to(CUDA))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_joint_step_on_cuda_matches_the_cpu():
    """Same weights, same batch: the loss terms agree and so does the gradient (fused Adam on CUDA, the plain one on
    the CPU, then the G step after D's update)."""
    cfg = tiny()
    cpu_terms, cpu_grads = one_step(cfg, CPU)
    cuda_terms, cuda_grads = one_step(cfg, CUDA)
    assert cuda_terms.keys() == cpu_terms.keys() and any(name.startswith("d/") for name in cuda_terms)
    for name, value in cpu_terms.items():
        assert cuda_terms[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
    assert relative_error(cuda_grads, cpu_grads) < 1e-3


@pytest.mark.parametrize(("mode", "tolerance"), [("train.amp=bf16", 5e-2), ("train.channels_last=true", 1e-3)])
def test_bf16_and_channels_last_steps_stay_close_to_fp32(mode, tolerance):
    """bf16 autocast rounds the activations to 8 bits of mantissa: its losses stay within a few percent of fp32's;
    channels_last changes the memory layout only."""
    reference, _ = one_step(tiny(), CUDA)
    terms, _ = one_step(tiny(mode), CUDA)
    assert all(np.isfinite(v) for v in terms.values()), terms
    for name in ("g/l1", "g/ce", "g/perceptual", "g/total"):
        assert terms[name] == pytest.approx(reference[name], rel=tolerance), name


def test_test_time_pipeline_on_cuda_matches_the_cpu():
    """SPATN's logits, and the generator's image rendered with the batch's own target parsing (so that a tie in
    SPATN's argmax cannot make the two images differ)."""
    cfg = tiny()
    batch = random_batch(cfg, 2, seed=4)
    out = {}
    for device in (CPU, CUDA):
        pipe = inference_pipeline(cfg, device)
        logits = pipe.render(to_device(batch, device, False)).logits
        image = dataclasses.replace(pipe, spatn=None).render(to_device(batch, device, False)).image
        out[device.type] = logits, image
    assert relative_error(out["cuda"][0], out["cpu"][0]) < 1e-4
    torch.testing.assert_close(out["cuda"][1].cpu(), out["cpu"][1], rtol=1e-4, atol=1e-4)


def test_metrics_on_cuda_match_the_cpu():
    gen = torch.Generator().manual_seed(5)
    a, b = (torch.randint(0, 256, (3, 3, 128, 64), generator=gen, dtype=torch.uint8) for _ in range(2))
    masks = torch.rand(3, 128, 64, generator=gen) > 0.5
    exact = torch.float64  # the CPU's default filtering is float32 (within 2e-6); CUDA's is float64
    torch.testing.assert_close(ssim(a.to(CUDA), b.to(CUDA)).cpu(), ssim(a, b, dtype=exact), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(masked_ssim(a.to(CUDA), b.to(CUDA), masks.to(CUDA)).cpu(),
                               masked_ssim(a, b, masks, dtype=exact), rtol=1e-9, atol=1e-9)
    lpips = LPIPSMetric("random")
    expected = lpips(a, b)
    torch.testing.assert_close(lpips.to(CUDA)(a.to(CUDA), b.to(CUDA)).cpu(), expected, rtol=1e-4, atol=1e-6)
    inception = InceptionFeatures("torchvision", "random")
    expected = inception(a)  # (3,2048)
    assert relative_error(inception.to(CUDA)(a.to(CUDA)), expected) < 1e-4


def test_openpose_maps_on_cuda_match_the_cpu():
    """PCKh's estimator: the averaged heatmaps and summed PAFs of two scales (random weights, the real network)."""
    net, _ = build_openpose("random")
    image = torch.randint(0, 256, (1, 128, 64, 3), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    heat, paf = multiscale_maps(net, image, scales=(0.5, 1.0))
    cuda_heat, cuda_paf = multiscale_maps(net.to(CUDA), image, scales=(0.5, 1.0))
    assert relative_error(cuda_heat, heat) < 1e-4 and relative_error(cuda_paf, paf) < 1e-4


def test_pinned_loader_batches_reach_the_device_intact(market_people: Path):
    """train.py's loader on CUDA: pinned host batches (a worker process), copied without blocking, arrive exact."""
    cfg = tiny(f"data.root={market_people}")
    loader = build_loader(build_dataset(cfg, "train"), 2, 1, pin_memory=True)
    batch = next(iter(loader))
    assert batch["src_image"].is_pinned()
    moved = to_device(batch, CUDA, channels_last=False)
    torch.cuda.synchronize()
    for key, value in batch.items():
        if torch.is_tensor(value):
            assert torch.equal(moved[key].cpu(), value), key


def test_cuda_random_state_round_trips_through_a_checkpoint():
    state = ck.rng_state()
    first = torch.randn(8, device=CUDA)
    ck.set_rng_state(state)
    assert torch.equal(torch.randn(8, device=CUDA), first)
