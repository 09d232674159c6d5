"""Mixed precision and float32 exactness: the fp16 GradScaler on a skipped update and across a resume (the CPU
GradScaler runs the same logic as the CUDA one), the flow heads under bf16 autocast, and the metric networks in
IEEE float32 with the device and precision in the FID cache key."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

import losses
import metrics.fid
import train
import training.stages
from losses.flow import MultiScaleEPE
from losses.reconstruction import L1Loss
from metrics.fid import InceptionFeatures, real_statistics
from metrics.lpips import LPIPSMetric
from metrics.openpose import OpenPoseEstimator
from models.flow import FlowNet
from models.release_flow import ReleaseFlowNet
from tests.test_train import args
from training.steps import autocast, native_bf16, precision
from utils import checkpoint as ck
from utils.config import load_config
from utils.io import write_image

# ------------------------------------------------------------------------------------------ fp16 scaler


def nan_on_call(base: type, n: int) -> type:
    """A loss class equal to `base` but NaN on its n-th call."""

    class NaNOnCall(base):
        calls = 0

        def forward(self, *inputs):
            type(self).calls += 1
            loss = super().forward(*inputs)
            return loss * float("nan") if type(self).calls == n else loss

    return NaNOnCall


@pytest.fixture
def cpu_fp16_forward_in_float32(monkeypatch):
    """train.amp=fp16 as configured (its GradScaler, scaled losses, inf checks and scale updates), but the CPU forward
    in float32: the CPU's fp16 convolutions take a reference path (40 s for one tiny joint step), bf16 is emulated on
    a CPU without bf16 units (minutes a test on an AVX2 machine), and the scaler's logic, what these tests check,
    does not depend on the forward's dtype."""
    monkeypatch.setattr(training.stages, "autocast", lambda cfg, device: nullcontext())


@pytest.mark.parametrize("stage, loss, base", [("joint", "l1", L1Loss), ("flow", "flow_epe", MultiScaleEPE)])
def test_fp16_step_whose_only_update_is_skipped(market_people, tmp_path, monkeypatch, cpu_fp16_forward_in_float32,
                                                stage, loss, base):
    """fp16 with train.nonfinite=skip: a NaN loss at step 3 skips the step's only update (the joint stage with
    D still off). The GradScaler has recorded no inf check then, and must not update its scale."""
    monkeypatch.setitem(losses.LOSSES, loss, nan_on_call(base, 3))
    run = tmp_path / "run"
    train.main(args(market_people, "--run-dir", str(run), "model.flow.source=files", f"train.stage={stage}",
                    "train.amp=fp16", "train.nonfinite=skip", "train.adv_start_step=100", "train.max_steps=4",
                    "train.val_every=100", "train.ckpt_every=100"))
    log = (run / "log.txt").read_text()
    assert "non-finite loss at step 3" in log and "finished at step 4" in log
    assert ck.load_checkpoint(run / "checkpoints" / "step-00000004.pt")["scaler"]["scale"] > 0


def test_fp16_run_resumes_a_checkpoint_written_without_fp16(market_people, tmp_path, cpu_fp16_forward_in_float32):
    """A run without fp16 saves a disabled GradScaler's empty state; an fp16 run resumed from it starts a fresh
    scale."""
    run = tmp_path / "run"
    common = args(market_people, "--run-dir", str(run), "model.flow.source=files", "train.val_every=100")
    train.main([*common, "train.max_steps=1"])
    assert ck.load_checkpoint(run / "checkpoints" / "step-00000001.pt")["scaler"] == {}
    train.main([*common, "train.amp=fp16", "train.max_steps=2"])
    assert "finished at step 2" in (run / "log.txt").read_text()
    assert ck.load_checkpoint(run / "checkpoints" / "step-00000002.pt")["scaler"]["scale"] > 0


def test_a_fused_adam_resumes_a_non_fused_checkpoint_under_fp16(market_people, tmp_path, monkeypatch,
                                                               cpu_fp16_forward_in_float32):
    """A CPU run's checkpoint holds Adam with fused=False; a CUDA run (here: the same Adam built fused on the CPU)
    resumes it as its own fused Adam, which the fp16 GradScaler steps with its scale."""
    run = tmp_path / "run"
    common = args(market_people, "--run-dir", str(run), "model.flow.source=files", "train.val_every=100",
                  "train.amp=fp16")
    train.main([*common, "train.max_steps=1"])
    assert not ck.load_checkpoint(run / "checkpoints" / "step-00000001.pt")["optimizers"]["g"]["param_groups"][0][
        "fused"]
    made = []

    def fused_adam(params, lr, betas, device, weight_decay=0.0):  # what make_adam builds on CUDA
        made.append(torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=True))
        return made[-1]

    monkeypatch.setattr(training.stages, "make_adam", fused_adam)
    train.main([*common, "train.max_steps=2"])
    assert "finished at step 2" in (run / "log.txt").read_text()
    assert all(group["fused"] for opt in made for group in opt.param_groups)
    assert ck.load_checkpoint(run / "checkpoints" / "step-00000002.pt")["optimizers"]["g"]["param_groups"][0]["fused"]


# ------------------------------------------------------------------------------------------ bf16 flow heads


def flow_net(network: str) -> torch.nn.Module:
    """A small flow network whose heads give flows of tens of pixels (their biases), as a trained one does."""
    torch.manual_seed(0)
    if network == "ours":
        net = FlowNet(30, base_channels=8, max_channels=16, n_scales=4)
        bias = torch.tensor([0.8, -0.55])  # four levels: raw about (3.2, -2.2), i.e. (64, -44) px
    else:
        net = ReleaseFlowNet(30, nf=8, max_nf=16, start_scale=2, num_scales=3)
        bias = torch.tensor([2.9, -1.7])  # each level's own: (58, -34) px
    with torch.no_grad():
        for head in net.flow_heads:
            conv = head if isinstance(head, torch.nn.Conv2d) else head[-1]
            conv.bias.copy_(bias)
    return net.eval()


@pytest.mark.parametrize("network", ["ours", "release"])
def test_flows_under_bf16_autocast_agree_with_float32_to_a_sub_pixel(network):
    net = flow_net(network)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.rand(2, 2, 30, 64, 32, generator=g)
    with torch.no_grad():
        reference = net(src, tgt).flows
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(src, tgt).flows
    assert reference[-1].abs().max() > 20  # tens of pixels
    # per level, coarse to fine: the largest difference in full-resolution pixels
    errors = [float((got.float() - want).abs().max()) * src.shape[-1] / got.shape[-1] for want, got in
              zip(reference, mixed)]
    assert max(errors) < 0.05, f"{', '.join(f'{e:.3f}' for e in errors)} px"
    assert all(got.dtype == torch.float32 for got in mixed)


# ------------------------------------------------------------------------------------------ metric networks


@pytest.fixture
def tf32_on():
    """TF32 on, as cuDNN convolutions default on Ampere+ GPUs (and matmuls with set_float32_matmul_precision)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def tf32_allowed() -> tuple[bool, bool]:
    """Whether cuDNN convolutions and CUDA matmuls may use TF32: torch >= 2.9's per-operation settings where they
    exist (its legacy flags raise once the two disagree, as they do inside `ieee_float32`), else the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision == "tf32", torch.backends.cuda.matmul.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def tf32_flags_seen_by(module: torch.nn.Module, run, read=tf32_allowed) -> set[tuple]:
    """What `read()` said (by default the (cuDNN, matmul) TF32 flags) at every convolution of `module`, while
    `run()` ran."""
    seen = set()

    def record(*_):
        seen.add(read())

    hooks = [m.register_forward_pre_hook(record) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    run()
    for h in hooks:
        h.remove()
    return seen


def test_metric_networks_run_without_tf32(tf32_on):
    images = torch.randint(0, 256, (2, 3, 64, 32), dtype=torch.uint8)
    fid = InceptionFeatures("torchvision", "random")
    assert tf32_flags_seen_by(fid, lambda: fid(images)) == {(False, False)}
    lpips = LPIPSMetric("random")
    assert tf32_flags_seen_by(lpips, lambda: lpips(images, images.flip(0))) == {(False, False)}
    pose = OpenPoseEstimator("random", device="cpu", boxsize=64, scales=(1.0,))
    assert tf32_flags_seen_by(pose.net, lambda: pose(images.permute(0, 2, 3, 1).numpy())) == {(False, False)}
    assert tf32_allowed() == (True, True)  # and back on after
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # the legacy flags readable


@pytest.fixture
def disagreeing_precision_settings():
    """cuDNN convolutions set to IEEE through torch >= 2.9's per-operation setting, its RNNs left at TF32: the state
    in which reading the legacy `cudnn.allow_tf32` raises (a GPU session met it when a caller used the new API)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("torch < 2.9 has no per-operation precision settings")
    rnn, matmul = torch.backends.cudnn.rnn, torch.backends.cuda.matmul
    saved = conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision
    conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision = "ieee", "tf32", "tf32"
    with pytest.raises(RuntimeError, match="allow_tf32"):
        torch.backends.cudnn.allow_tf32  # noqa: B018  (the legacy read that used to fail inside the metrics)
    yield conv, rnn, matmul
    conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision = saved


def test_metric_networks_run_in_ieee_when_the_precision_settings_disagree(disagreeing_precision_settings):
    conv, rnn, matmul = disagreeing_precision_settings
    lpips = LPIPSMetric("random")
    images = torch.randint(0, 256, (2, 3, 64, 32), dtype=torch.uint8)
    seen = tf32_flags_seen_by(lpips, lambda: lpips(images, images.flip(0)),
                              read=lambda: (conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision))
    assert seen == {("ieee", "ieee", "ieee")}
    assert (conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision) == ("ieee", "tf32", "tf32")  # restored


def test_fid_cache_key_holds_the_device_and_the_precision(tmp_path, monkeypatch):
    folder = tmp_path / "real"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"{i}.png", rng.integers(0, 256, (32, 16, 3), dtype=np.uint8))
    features = InceptionFeatures("torchvision", "random")
    assert "|cpu|float32" in features.identity
    first = real_statistics(folder, features, tmp_path / "cache")
    assert real_statistics(folder, features, tmp_path / "cache").cache_hit
    # the same network and images on a GPU: another device, so another entry (not the CPU's features)
    monkeypatch.setattr(metrics.fid, "device_description", lambda device: "cuda:NVIDIA H100 80GB HBM3")
    on_gpu = real_statistics(folder, features, tmp_path / "cache")
    assert not on_gpu.cache_hit and on_gpu.cache_file != first.cache_file



# ------------------------------------------------------------------------------------------ train.amp=auto


def cpu_flags() -> set[str]:
    """The kernel's list of this CPU's features, read independently of torch's own dispatch checks."""
    text = Path("/proc/cpuinfo").read_text()
    line = next(line for line in text.splitlines() if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the CPU's feature list is read from /proc/cpuinfo")
def test_auto_takes_bf16_exactly_where_this_cpu_has_bf16_instructions():
    native = bool(cpu_flags() & {"amx_tile", "avx512_bf16"})
    assert native_bf16(torch.device("cpu")) == native
    assert precision(load_config("configs/demo.yaml", ["train.amp=auto"]), torch.device("cpu")) == \
        ("bf16" if native else "off")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(False, False, None), (True, False, torch.bfloat16),
                                                         (False, True, torch.bfloat16), (True, True, torch.bfloat16)])
def test_auto_autocasts_in_bf16_on_a_cpu_with_either_bf16_unit(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    context = autocast(load_config("configs/demo.yaml", ["train.amp=auto"]), torch.device("cpu"))
    assert getattr(context, "fast_dtype", None) == expected
    with context:
        y = torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))
    assert y.dtype == (expected or torch.float32)


@pytest.mark.parametrize("bf16_units", [False, True])
def test_auto_on_cuda_asks_for_bf16_units_not_emulation(monkeypatch, bf16_units):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return bf16_units or including_emulation  # every GPU emulates bf16; only Ampere and later have the units

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cfg = load_config("configs/synthetic.yaml", ["train.amp=auto"])
    assert precision(cfg, torch.device("cuda")) == ("bf16" if bf16_units else "off") and asked == [False]
    # a configured precision is taken as it is, whatever the device
    assert precision(load_config("configs/synthetic.yaml", ["train.amp=fp16"]), torch.device("cuda")) == "fp16"
    assert precision(load_config("configs/synthetic.yaml", ["train.amp=bf16"]), torch.device("cpu")) == "bf16"
