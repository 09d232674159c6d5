"""How fast is SPGNet training and inference on this machine, and where does the time go?

    python scripts/benchmark.py                                          # configs/deepfashion.yaml, authors' widths
    python scripts/benchmark.py --config configs/deepfashion_256.yaml --modes fp32,channels_last,bf16
    python scripts/benchmark.py --device cuda --json bench.json          # all modes, fp16 and compile included
    python scripts/benchmark.py --quick --json out.json                  # tiny widths, seconds (the test uses it)

Model timings use RANDOM inputs of the config's shapes and randomly initialised networks at the config's
widths, so no dataset or pretrained weight is needed: the perceptual loss runs a random-init VGG19
(`loss.perceptual_weights=random`, the same cost as the ImageNet weights) and a random-init FlowNet stands in
for the frozen stage-0 flow module. Sections (each: warm-up iterations, then timed ones; median and spread):

  flops      convolution/matmul GFLOP of each piece of a step, counted on the meta device (nothing computed),
             so every timing also reads as achieved GFLOP/s
  train      the full joint training step (JointStage.step: SPATN + generator + discriminator, all losses, both
             optimizer steps, adversarial term on) at --batch-size, once per mode
  infer      generator inference (pose maps + SPATN + flow + SPGNet, eval, no_grad) at --infer-batch-size
  breakdown  the same networks, losses and optimizers timed one component at a time (where a step's time goes)
  pose       data.pose.encode_pose: one pose at a time on one CPU thread (what a loader worker does), batched on
             the CPU, batched on the device
  loader     the training DataLoader alone over a synthetic set, with the configured workers, and the fraction of
             a training step the device would wait on it
  test       test.py end to end (a subprocess, from start-up to the last PNG) on --test-pairs pairs

Modes: fp32 (eager), channels_last, bf16 / fp16 (autocast; fp16 on CUDA only), compile (torch.compile); '+'
combines them (bf16+channels_last). A mode that fails reports its error in the table; the others still run.
The loader and test sections need a dataset: --data ROOT, else a small synthetic set is generated
(scripts/make_synthetic.py) when the config's image size is one the renderer draws (256x176 or 128x64);
otherwise they are skipped with a note.
Peak memory: torch.cuda.max_memory_allocated on a GPU; the host's peak resident set size (VmHWM, reset before
each mode where the kernel allows, else the process-lifetime ru_maxrss) on the CPU.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from data.fake_batch import random_batch, random_keypoints  # noqa: E402
from data.loaders import build_dataset, build_loader  # noqa: E402
from data.parsing import num_labels  # noqa: E402
from data.pose import encode_pose  # noqa: E402
from losses import build_loss  # noqa: E402
from models.build import (  # noqa: E402
    build_discriminator,
    build_flow,
    build_pose_encoder,
    build_spatn,
    build_spgnet,
    pose_channels,
)
from models.pipeline import Pipeline, add_pose_maps, flow_and_visibility, spatn_source  # noqa: E402
from training.stages import JointStage  # noqa: E402
from training.steps import autocast, to_device  # noqa: E402
from utils import checkpoint as ck  # noqa: E402
from utils.config import Config, load_config  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.host_memory import keep_freed_memory  # noqa: E402
from utils.io import write_json  # noqa: E402

MODES = ("fp32", "channels_last", "bf16", "fp16", "compile")
MODE_OVERRIDES = {
    "fp32": [],
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.amp=bf16"],
    "fp16": ["train.amp=fp16"],
    "compile": ["train.compile=true"],
}
def mode_overrides(mode: str) -> list[str]:
    """Config overrides of a mode; modes combine with '+', e.g. bf16+channels_last."""
    return [o for part in mode.split("+") for o in MODE_OVERRIDES[part]]


SECTIONS = ("flops", "train", "infer", "breakdown", "pose", "loader", "test")
# Always: no pretrained weights needed; a random VGG19 costs exactly what the ImageNet one costs.
ALWAYS = ["loss.perceptual_weights=random"]
# --quick: tiny widths on 128x64, every code path of the step in well under a second.
QUICK_OVERRIDES = [
    "model.spatn.ngf=4", "model.spatn.n_blocks=1",
    "model.flow.base_channels=4", "model.flow.max_channels=8", "model.flow.n_scales=3",
    "model.generator.base_channels=4", "model.generator.max_channels=8", "model.generator.style_dim=8",
    "model.generator.norm_hidden=4",
    "model.discriminator.ndf=4", "model.discriminator.n_layers=2",
    "loss.perceptual_layers=[relu1_1,relu2_1]",
]
# Image sizes the synthetic renderer draws, and its style for each.
SYNTHETIC_STYLES = {(256, 176): "deepfashion", (128, 64): "market"}
CSV_KEYS = ("annotation_train", "annotation_test", "pairs_train", "pairs_test")


# ------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict:
    """Median and spread (min, max, interquartile range) of per-iteration seconds."""
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "q1_s": q1, "q3_s": q3,
            "n": len(times), "times_s": times}


def time_calls(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> dict:
    """Seconds per call of `fn`: `warmup` untimed calls, then `iters` calls each closed by a device sync.

    Besides wall time, the CPU time of this process (all its threads) per call: on a shared machine
    it says how much of the wall time was this process working rather than waiting for a core.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {**summarize(times), "cpu_median_s": statistics.median(cpu)}


# ------------------------------------------------------------------------------------------- memory


def _read_vmhwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; True when the host peak could be reset too (Linux clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def peak_memory(device: torch.device, host_reset: bool) -> dict:
    out: dict[str, object] = {}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _read_vmhwm_mb()
    if host_reset and hwm is not None:
        out["host_peak_rss_mb"], out["host_peak_rss_source"] = hwm, "VmHWM since this section began"
    else:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        out["host_peak_rss_mb"] = kib / (2**20 if sys.platform == "darwin" else 1024)
        out["host_peak_rss_source"] = "ru_maxrss over the whole process so far"
    return out


# --------------------------------------------------------------------------------------------- inputs


def random_flow_net(cfg: Config, device: torch.device) -> nn.Module | None:
    """A random-init FlowNet, frozen as models.pipeline.load_flow leaves the stage-0 one; None for flow files."""
    if cfg.model.flow.source == "files":
        return None
    return build_flow(cfg).to(device).eval().requires_grad_(False)


def joint_setup(cfg: Config, device: torch.device, batch_size: int) -> tuple[JointStage, dict]:
    torch.manual_seed(cfg.train.seed)
    j = JointStage(cfg, DistInfo(device=device), random_flow_net(cfg, device))
    batch = to_device(random_batch(cfg, batch_size), device, cfg.train.channels_last)
    return j, batch


def take_every_update(terms: dict) -> bool:
    return True  # train.nonfinite=stop: the step never waits for the device to check its losses


def first_adversarial_step(cfg: Config) -> int:
    """A step number at which JointStage.step runs the discriminator (the adversarial warm-up is over)."""
    return max(cfg.train.adv_start_step, 0)


# ------------------------------------------------------------------------------------------- sections


def bench_train_step(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """JointStage.step on one fixed device batch, as train.py's loop runs it."""
    j, batch = joint_setup(cfg, device, batch_size)
    steps = itertools.count(first_adversarial_step(cfg))
    host_reset = reset_peak_memory(device)
    stats = time_calls(lambda: j.step(dict(batch), next(steps), take_every_update), warmup, iters, device)
    memory = peak_memory(device, host_reset)
    return {"step": stats, "images_per_s": batch_size / stats["median_s"], "memory": memory,
            "reference_conv": reference_conv_rate(cfg, device, warmup=1, iters=max(iters, 3))}


# SPATN's trunk at 256x256: a 3x3 conv of 256 channels on (4,256,64,64), half of a DeepFashion step's work
REFERENCE_CONV = (4, 256, 64, 64)


def reference_conv_rate(cfg: Config, device: torch.device, warmup: int, iters: int) -> dict:
    """GFLOP/s of one large dense convolution (REFERENCE_CONV, forward, in the mode's precision and layout),
    which the backends run near the machine's peak. A step's GFLOP over this rate is a floor for its time:
    what the step would take if every one of its ops ran as fast as this convolution."""
    b, c, h, w = REFERENCE_CONV
    x = torch.randn(b, c, h, w, device=device)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
    if cfg.train.channels_last:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(cfg, device):
        stats = time_calls(lambda: conv(x), warmup, iters, device)
    gflop = 2 * c * c * 9 * b * h * w / 1e9
    return {"shape": list(REFERENCE_CONV), "gflop": gflop, "median_s": stats["median_s"],
            "gflop_per_s": gflop / stats["median_s"]}


def inference_pipeline(cfg: Config, device: torch.device) -> Pipeline:
    """The test-time pipeline over random-init networks, in the mode's layout (and compiled when asked)."""
    torch.manual_seed(cfg.train.seed)
    nets = []
    for net in (build_spatn(cfg), build_spgnet(cfg)):
        net = net.to(device).eval()
        if cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        nets.append(torch.compile(net) if cfg.train.compile else net)
    return Pipeline(spatn=nets[0], generator=nets[1], flow=random_flow_net(cfg, device),
                    pose_encoder=build_pose_encoder(cfg).to(device), num_classes=num_labels(cfg),
                    spatn_takes_image=cfg.model.spatn.input == "image")


def bench_inference(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """Test-time generation (models.pipeline: SPATN's hard one-hot parsing feeds SPGNet), no_grad, eval mode."""
    pipe = inference_pipeline(cfg, device)
    batch = to_device(random_batch(cfg, batch_size, seed=1), device, cfg.train.channels_last)

    def generate() -> torch.Tensor:
        with autocast(cfg, device):
            return pipe.render(dict(batch)).image

    host_reset = reset_peak_memory(device)
    stats = time_calls(generate, warmup, iters, device)
    return {"batch_size": batch_size, "forward": stats, "images_per_s": batch_size / stats["median_s"],
            "memory": peak_memory(device, host_reset)}


def step_parts(cfg: Config, nets: dict[str, nn.Module], flow_net: nn.Module | None, losses: dict[str, nn.Module],
               batch: dict, amp: Callable[[], object]) -> dict[str, Callable[[], object]]:
    """The pieces of one joint step as separate calls, on the step's own networks and losses.

    nets: "spatn", "generator", "discriminator" (the runners joint_step calls) and "discriminator_plain" (the
    module the G step's adversarial term uses). "<piece> fwd" is a forward pass with autograd recording, as
    in training; "<piece> fwd+bwd" adds the backward pass of that piece alone. Backward through the generator
    does not depend on the upstream gradient's values, so a random projection of its output stands in for
    the loss terms.
    """
    b = batch
    src, tgt, tgt_pose = b["src_image"], b["tgt_image"], b["tgt_pose"]
    flow, vis = flow_and_visibility(flow_net, b)
    spatn, gen, disc, disc_plain = nets["spatn"], nets["generator"], nets["discriminator"], nets["discriminator_plain"]
    with torch.no_grad(), amp():
        fake_value = gen(src, tgt_pose, b["src_parsing"], b["tgt_parsing"], flow, vis).float()  # (B,3,H,W)
    probe = torch.randn_like(fake_value)

    def zero_grads() -> None:  # as JointStage.step does before each backward: gradients are written, not added
        for net in nets.values():
            net.zero_grad(set_to_none=True)

    def spatn_part(backward: bool) -> None:
        with amp():
            logits = spatn(spatn_source(cfg.model.spatn.input == "image", b), b["src_pose"], tgt_pose)  # (B,K,H,W)
        if backward:
            losses["ce"](logits.float(), b["tgt_parsing"]).backward()

    def generator_part(backward: bool) -> None:
        with amp():
            fake = gen(src, tgt_pose, b["src_parsing"], b["tgt_parsing"], flow, vis)
        if backward:
            (fake.float() * probe).mean().backward()

    def perceptual_part(backward: bool) -> None:
        fake = fake_value.detach().requires_grad_(True)
        with amp():
            loss = losses["perceptual"](fake, tgt)["perceptual"]
        if backward:
            loss.backward()

    def d_step_part(backward: bool) -> None:  # the D update: real and fake triplets in one batch of 2B
        with amp():
            both = disc(torch.cat([src, src]), torch.cat([tgt, fake_value]), torch.cat([tgt_pose, tgt_pose]))
            real, fake = both.float().chunk(2)
            loss = sum(losses["gan"].discriminator_loss(real, fake).values())
        if backward:
            loss.backward()

    def d_in_g_part(backward: bool) -> None:  # the G step's adversarial term: gradients reach the image only
        fake = fake_value.detach().requires_grad_(True)
        disc_plain.requires_grad_(False)
        with amp():
            loss = losses["gan"].generator_loss(disc_plain(src, fake, tgt_pose).float())
        if backward:
            loss.backward()
        disc_plain.requires_grad_(True)

    parts: dict[str, Callable[[], object]] = {}
    if flow_net is not None:
        parts["flow (frozen, no_grad)"] = lambda: flow_and_visibility(flow_net, b)
    for name, fn in (("spatn", spatn_part), ("generator", generator_part), ("perceptual loss", perceptual_part),
                     ("D step (2B)", d_step_part), ("D in G step", d_in_g_part)):
        parts[f"{name} fwd"] = lambda fn=fn: fn(False)
        parts[f"{name} fwd+bwd"] = lambda fn=fn: (zero_grads(), fn(True))
    return parts


def count_flops(cfg: Config, batch_size: int) -> dict[str, float]:
    """GFLOP (2 per multiply-add; convolutions and matmuls, as torch.utils.flop_counter counts) of each piece
    of step_parts at `batch_size`, on the meta device: shapes only, nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    with meta, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-init VGG19 warning: already stated in the report
        nets = {"spatn": build_spatn(cfg), "generator": build_spgnet(cfg), "discriminator": build_discriminator(cfg)}
        flow_net = random_flow_net(cfg, meta)
        losses = {"ce": build_loss("ce"), "gan": build_loss("adversarial", mode=cfg.loss.gan_mode),
                  "perceptual": build_loss("perceptual", layers=tuple(cfg.loss.perceptual_layers), weights="random")}
    nets["discriminator_plain"] = nets["discriminator"]
    h, w = cfg.data.image_size
    k = num_labels(cfg)
    shapes = {"image": (3, h, w), "pose": (pose_channels(cfg), h, w), "parsing": (k, h, w)}
    batch = {f"{side}_{kind}": torch.empty(batch_size, *shape, device=meta)
             for side in ("src", "tgt") for kind, shape in shapes.items()}
    batch["flow"] = torch.empty(batch_size, 2, h, w, device=meta)
    batch["vis"] = torch.zeros(batch_size, h, w, dtype=torch.long, device=meta)
    out = {}
    for name, fn in step_parts(cfg, nets, flow_net, losses, batch, nullcontext).items():
        with FlopCounterMode(display=False) as counter:
            fn()
        out[name] = counter.get_total_flops() / 1e9
    return out


def flop_summary(cfg: Config, batch_size: int, infer_batch_size: int) -> dict:
    """GFLOP of each step piece, of a whole training step (what its fwd+bwd pieces add up to) and of inference."""
    parts = count_flops(cfg, batch_size)
    flow = parts.get("flow (frozen, no_grad)", 0.0)
    step = flow + sum(v for k, v in parts.items() if k.endswith("fwd+bwd"))
    infer = (flow + parts["spatn fwd"] + parts["generator fwd"]) * infer_batch_size / batch_size  # linear in B
    return {"parts": parts, "train_step": step, "inference_batch": infer}


def bench_breakdown(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """step_parts timed one by one, then both Adam steps (with gradients in place), then their sum.

    The sum against the measured full step shows what the parts miss: the loss arithmetic, the finiteness
    checks, Python overhead, and the cache and allocator effects of running everything in one step.
    """
    j, batch = joint_setup(cfg, device, batch_size)
    batch = add_pose_maps(dict(batch), j.pose_encoder)
    nets = {"spatn": j.spatn, "generator": j.gen, "discriminator": j.disc,
            "discriminator_plain": j.nets["discriminator"]}
    parts = step_parts(cfg, nets, j.flow_net, j.losses, batch, partial(autocast, cfg, device))
    out = {name: time_calls(fn, warmup, iters, device) for name, fn in parts.items()}
    for name, opt, params in (("optimizer G (Adam)", j.opt_g, j.g_params),
                              ("optimizer D (Adam)", j.opt_d, list(j.nets["discriminator"].parameters()))):
        for p in params:  # a step needs gradients; their values do not change its cost
            p.grad = torch.randn_like(p) * 1e-3
        out[name] = time_calls(opt.step, warmup, iters, device)
    counted = [n for n in out if not n.endswith(" fwd")]  # fwd+bwd already contains the fwd
    out["sum of parts"] = {key: sum(out[n][key] for n in counted) for key in ("median_s", "cpu_median_s")}
    return out


def bench_pose(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """encode_pose throughput: per pose on one thread (a loader worker), batched on the CPU, on the device."""
    h, w = cfg.data.image_size
    p = cfg.pose
    kp = random_keypoints(batch_size, h, w, torch.Generator().manual_seed(2))

    def encode(keypoints: torch.Tensor) -> torch.Tensor:
        return encode_pose(keypoints, h, w, p.heatmap, p.sigma, p.radius, p.kappa, p.limbs)

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = time_calls(lambda: [encode(k) for k in kp], warmup, iters, cpu)
    finally:
        torch.set_num_threads(threads)
    batched = time_calls(lambda: encode(kp), warmup, iters, cpu)
    kp_dev = kp.to(device)
    on_device = time_calls(lambda: encode(kp_dev), warmup, iters, device)
    return {
        "image_size": [h, w], "batch_size": batch_size,
        "cpu_single_thread_per_pose": {**single, "poses_per_s": batch_size / single["median_s"]},
        "cpu_batched": {**batched, "threads": threads, "poses_per_s": batch_size / batched["median_s"]},
        "device_batched": {**on_device, "device": str(device), "poses_per_s": batch_size / on_device["median_s"]},
    }


def endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def bench_loader(cfg: Config, batch_size: int, workers: int, batches: int) -> dict:
    """The training DataLoader alone (augmentation as configured for training), samples/s in steady state.

    The first `workers` batches are taken untimed: they were prepared while the workers started, and would
    flatter the rate. Then `batches` batches are timed back to back, as fast as the loader delivers them.
    """
    dataset = build_dataset(cfg, "train", with_flow=cfg.model.flow.source == "files", augment=True)
    loader = build_loader(dataset, batch_size, workers, shuffle=True, drop_last=True)
    batches = max(batches, 4 * workers)
    start = time.perf_counter()
    stream = endless(loader)
    next(stream)
    first = time.perf_counter() - start
    for _ in range(max(workers - 1, 0)):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    per_batch = (time.perf_counter() - start) / batches
    del stream, loader
    return {"pairs": len(dataset), "workers": workers, "batch_size": batch_size, "batches_timed": batches,
            "first_batch_s": first, "s_per_batch": per_batch, "samples_per_s": batch_size / per_batch}


def write_checkpoint(cfg: Config, path: Path) -> None:
    """A joint-stage checkpoint of random-init networks, as test.py reads it (spatn, generator, flow)."""
    torch.manual_seed(cfg.train.seed)
    models = {"spatn": build_spatn(cfg).state_dict(), "generator": build_spgnet(cfg).state_dict()}
    if cfg.model.flow.source == "net":
        models["flow"] = build_flow(cfg).state_dict()
    ck.save_checkpoint(path, cfg, models)


def bench_test_script(config: Path, overrides: list[str], cfg: Config, device: torch.device, pairs: int,
                      batch_size: int, workers: int, tmp: Path) -> dict:
    """`python test.py` in a subprocess on `pairs` test pairs: wall time from start-up to the last image."""
    ckpt = tmp / "checkpoint" / "step-00000000.pt"
    write_checkpoint(cfg, ckpt)
    out = tmp / "test-out"
    cmd = [sys.executable, "test.py", "--config", str(config), *overrides, "--checkpoint", str(ckpt),
           "--out", str(out), "--limit", str(pairs), "--batch-size", str(batch_size), "--workers", str(workers),
           "--device", device.type]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"test.py exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    written = len(list((out / "images").glob("*.png")))
    return {"pairs": written, "batch_size": batch_size, "workers": workers, "wall_s": wall,
            "pairs_per_s": written / wall, "note": "wall time includes interpreter start-up and model loading"}


# --------------------------------------------------------------------------------------------- dataset


def synthetic_dataset(cfg: Config, tmp: Path, quick: bool) -> tuple[Path | None, str]:
    """Generate a small synthetic set at the config's size into `tmp`; (root, note) or (None, why not)."""
    size = tuple(cfg.data.image_size)
    style = SYNTHETIC_STYLES.get(size)
    if style is None:
        sizes = " or ".join(f"{h}x{w}" for h, w in SYNTHETIC_STYLES)
        return None, (f"skipped: no dataset given (--data) and the synthetic renderer draws only {sizes}, "
                      f"not {size[0]}x{size[1]}")
    root = tmp / f"synthetic_{style}"
    identities, poses = (4, 3) if quick else (8, 4)
    # half the identities held out: enough test pairs for the test.py section (4 x 12 ordered pairs)
    cmd = [sys.executable, "scripts/make_synthetic.py", "--out", str(root), "--style", style,
           "--identities", str(identities), "--poses", str(poses), "--seed", "0", "--test-fraction", "0.5"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"skipped: scripts/make_synthetic.py failed: {result.stderr.strip()[-1000:]}"
    return root, f"synthetic {style} set ({identities} identities x {poses} poses) generated for this benchmark"


def dataset_overrides(cfg: Config, root: Path) -> list[str]:
    """data.root, and the CSV names when the set spells them differently from the config (e.g. market-*.csv)."""
    overrides = [f"data.root={root}"]
    for key in CSV_KEYS:
        name = getattr(cfg.data, key)
        if (root / name).is_file():
            continue
        kind, split = key.split("_")
        found = sorted(root.glob(f"*-{kind}-{split}.csv"))
        if len(found) == 1:
            overrides.append(f"data.{key}={found[0].name}")
    return overrides


# ---------------------------------------------------------------------------------------------- report


def machine_info(device: torch.device) -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_model": cpu_model,
            "cpu_cores": os.cpu_count(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if hasattr(os, "sched_getaffinity"):
        info["cpu_cores_usable"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def memory_text(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "cuda_max_allocated_mb" in mem:
        return f"{mem['cuda_max_allocated_mb'] / 1024:.2f} GiB (cuda)"
    return f"{mem['host_peak_rss_mb'] / 1024:.2f} GiB (RSS)"


def rate(gflop: float | None, seconds: float | None) -> str:
    return f"{gflop / seconds:.0f}" if gflop and seconds else "-"


def markdown(report: dict) -> str:
    r = report
    h, w = r["image_size"]
    flops = r.get("gflop", {})
    step_gflop, infer_gflop = flops.get("train_step"), flops.get("inference_batch")
    lines = [f"# SPGNet benchmark: {r['config']} {' '.join(r['overrides'])}".rstrip(),
             "",
             f"device {r['device']} ({r['machine'].get('gpu_name', r['machine']['cpu_model'])}), "
             f"{r['threads']} torch threads, torch {r['torch']}, image {h}x{w}, train batch {r['batch_size']}, "
             f"inference batch {r['infer_batch_size']}, {r['warmup']} warm-up + {r['iters']} timed iterations.",
             f"Perceptual loss: RANDOM-INIT VGG19 (weights=random; same cost as ImageNet weights). Flow: "
             f"{r['flow']}. Discriminator on: {r['discriminator_on']}.",
             f"Convolution/matmul work: {step_gflop or 0:.0f} GFLOP per training step, {infer_gflop or 0:.0f} GFLOP "
             "per inference batch (torch.utils.flop_counter, 2 FLOP per multiply-add).",
             "", "## Training step and inference", "",
             "| mode | step median | min | max | IQR | CPU time/step | train images/s | GFLOP/s | floor | "
             "inference images/s | peak memory (train) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, m in r["modes"].items():
        if "train" not in m:
            lines.append(f"| {mode} | {m.get('error', 'not run')} | | | | | | | | | |")
            continue
        ref = m["train"].get("reference_conv", {}).get("gflop_per_s")
        floor = fmt(step_gflop / ref) if step_gflop and ref else "-"
        s = m["train"]["step"]
        inf = m.get("infer", {})
        inf_text = (f"{inf['images_per_s']:.2f} ({rate(infer_gflop, inf['forward']['median_s'])} GFLOP/s)"
                    if "images_per_s" in inf else inf.get("error", "-"))
        lines.append(f"| {mode} | {fmt(s['median_s'])} | {fmt(s['min_s'])} | {fmt(s['max_s'])} | "
                     f"{fmt(s['q3_s'] - s['q1_s'])} | {fmt(s['cpu_median_s'])} | {m['train']['images_per_s']:.2f} | "
                     f"{rate(step_gflop, s['median_s'])} | {floor} | {inf_text} | "
                     f"{memory_text(m['train'].get('memory'))} |")
    part_gflop = flops.get("parts", {})
    for mode, parts in r.get("breakdown", {}).items():
        step = r["modes"].get(mode, {}).get("train", {}).get("step", {}).get("median_s")
        lines += ["", f"## Breakdown of one training step ({mode})", ""]
        if "error" in parts:
            lines.append(f"error: {parts['error']}")
            continue
        lines += ["| component | median | CPU time | share of step | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
        for name, s in parts.items():
            share = f"{100 * s['median_s'] / step:.0f}%" if step else "-"
            gflop = part_gflop.get(name)
            lines.append(f"| {name} | {fmt(s['median_s'])} | {fmt(s.get('cpu_median_s'))} | {share} | "
                         f"{f'{gflop:.1f}' if gflop else '-'} | "
                         f"{rate(gflop, s['median_s'])} |")
        if step:
            lines.append(f"| full step (measured) | {fmt(step)} | - | 100% | {step_gflop or 0:.1f} | "
                         f"{rate(step_gflop, step)} |")
    if "pose" in r:
        p = r["pose"]
        lines += ["", f"## Pose encoding ({h}x{w}, 30 maps per pose)", ""]
        if "error" in p:
            lines.append(f"error: {p['error']}")
        else:
            lines += ["| how | poses/s |", "|---|---|",
                      f"| CPU, one thread, one pose at a time | {p['cpu_single_thread_per_pose']['poses_per_s']:.1f} |",
                      f"| CPU, {p['cpu_batched']['threads']} threads, batch {p['batch_size']} | "
                      f"{p['cpu_batched']['poses_per_s']:.1f} |",
                      f"| {p['device_batched']['device']}, batch {p['batch_size']} | "
                      f"{p['device_batched']['poses_per_s']:.1f} |"]
    if "loader" in r:
        lo = r["loader"]
        lines += ["", "## DataLoader alone", ""]
        if "samples_per_s" not in lo:
            lines.append(lo.get("error") or lo.get("skipped", ""))
        else:
            lines.append(f"{lo['samples_per_s']:.1f} samples/s ({fmt(lo['s_per_batch'])} per batch of "
                         f"{lo['batch_size']}, {lo['workers']} workers, first batch after {fmt(lo['first_batch_s'])}). "
                         "Loader time per batch / step time (over 1: the device would wait on data):")
            lines.append("")
            lines += ["| mode | data-wait fraction |", "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in lo.get("wait_fraction", {}).items()]
    if "test" in r:
        t = r["test"]
        lines += ["", "## test.py end to end", ""]
        if "pairs_per_s" not in t:
            lines.append(t.get("error") or t.get("skipped", ""))
        else:
            lines.append(f"{t['pairs']} pairs in {fmt(t['wall_s'])}: {t['pairs_per_s']:.2f} pairs/s (batch "
                         f"{t['batch_size']}, {t['workers']} workers; {t['note']}).")
    if r["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/deepfashion.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="tiny widths, 128x64, 1 warm-up + 2 timed iterations, no compile (for tests)")
    p.add_argument("--modes", default=None, help=f"comma-separated subset of {','.join(MODES)} (default: all); "
                   "'+' combines modes, e.g. bf16+channels_last")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--breakdown-modes", default=None, help="modes to break down (default: the first mode)")
    p.add_argument("--batch-size", type=int, default=4, help="training batch")
    p.add_argument("--infer-batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 5; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2; --quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--data", default=None, help="dataset root for the loader and test.py sections")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: data.num_workers)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed in the loader section")
    p.add_argument("--test-pairs", type=int, default=32, help="pairs test.py generates")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile one training step of the first mode with torch.profiler: top N ops")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def selected(text: str, allowed: tuple[str, ...], flag: str, combine: bool = False) -> list[str]:
    """Comma-separated names from `allowed` (each may join several with '+' when `combine`)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if not all(part in allowed for part in (n.split("+") if combine else [n]))]
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


def attempt(wall: dict, name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; an exception becomes its result ({"error": ...}). Its wall time goes to wall[name]."""
    print(f"{name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # a failing mode or section is a result, not a crash
        traceback.print_exc()
        result = {"error": error_text(err)}
    wall[name] = time.perf_counter() - started
    return result


def profile_step(cfg: Config, device: torch.device, batch_size: int, top: int) -> list[dict]:
    """torch.profiler over one joint step (after one warm-up step): the top ops by self time."""
    j, batch = joint_setup(cfg, device, batch_size)
    step = first_adversarial_step(cfg)
    j.step(dict(batch), step, take_every_update)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        j.step(dict(batch), step + 1, take_every_update)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000} for e in events]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return run(args, device)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)


def run(args: argparse.Namespace, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    iters = args.iters if args.iters is not None else (2 if args.quick else 5)
    if iters < 1 or warmup < 0:
        raise SystemExit("--iters must be >= 1 and --warmup >= 0")
    default_modes = [m for m in MODES if not (args.quick and m == "compile")]  # --quick: no minutes of compiling
    modes = selected(args.modes, MODES, "--modes", combine=True) if args.modes else default_modes
    sections = selected(args.sections, SECTIONS, "--sections")
    image_size = args.image_size or ([128, 64] if args.quick else None)
    overrides = [*ALWAYS, *(QUICK_OVERRIDES if args.quick else []), *args.overrides]
    if image_size is not None:
        overrides.append(f"data.image_size=[{image_size[0]},{image_size[1]}]")
    config = Path(args.config).resolve()
    base = load_config(config, overrides)
    workers = args.workers if args.workers is not None else (min(base.data.num_workers, 1) if args.quick
                                                             else base.data.num_workers)
    notes = ["Model timings use random inputs and random-init networks at the configured widths; the perceptual "
             "loss uses a RANDOM-INIT VGG19 (weights=random), which costs the same as the ImageNet one.",
             "floor: the step's GFLOP over the GFLOP/s of one large convolution (3x3, 256 channels, input "
             f"{'x'.join(map(str, REFERENCE_CONV))}, forward) in the same mode: the step time if every op ran at that "
             "rate, about the machine's peak (needs the flops section)."]
    machine = machine_info(device)
    allocator = "default"
    if device.type == "cpu":
        load = ", ".join(f"{x:.1f}" for x in machine["load_average"] or [])
        notes.append(f"CPU run: load average at start {load} on {machine['cpu_cores']} cores; other processes on "
                     "the same cores inflate (and scatter) the timings.")
        if keep_freed_memory():  # as train.py and test.py do on the CPU
            allocator = "glibc malloc keeps freed memory (utils/host_memory.py, as train.py and test.py)"
            notes.append(f"Host allocator: {allocator}. The process keeps what a mode freed, so the peak RSS of a "
                         "mode after the first includes the heap earlier modes left: run one mode per process "
                         "for its own peak.")
    report: dict = {
        "machine": machine, "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": str(device), "threads": torch.get_num_threads(), "config": args.config, "overrides": overrides,
        "quick": args.quick, "batch_size": args.batch_size, "infer_batch_size": args.infer_batch_size,
        "image_size": list(base.data.image_size), "warmup": warmup, "iters": iters, "sections": sections,
        "perceptual_weights": "random", "host_allocator": allocator,
        "flow": ("random-init FlowNet (frozen), standing in for the stage-0 one" if base.model.flow.source == "net"
                 else "flow/visibility tensors as loaded from files"),
        "discriminator_on": base.loss.weights.adversarial > 0, "modes": {}, "notes": notes, "wall_s": {},
    }

    wall = report["wall_s"]
    if "flops" in sections:
        report["gflop"] = attempt(wall, "flop count", partial(flop_summary, base, args.batch_size,
                                                              args.infer_batch_size))
    for mode in modes:
        entry: dict = {}
        report["modes"][mode] = entry
        if "fp16" in mode.split("+") and device.type != "cuda":
            entry["error"] = "skipped: fp16 autocast is benchmarked on CUDA only"
            continue
        cfg = load_config(config, overrides + mode_overrides(mode))
        if "train" in sections:
            result = attempt(wall, f"{mode}/train", partial(bench_train_step, cfg, device, args.batch_size, warmup,
                                                            iters))
            entry.update({"error": result["error"]} if "error" in result else {"train": result})
        if "infer" in sections:
            entry["infer"] = attempt(wall, f"{mode}/infer", partial(bench_inference, cfg, device,
                                                                    args.infer_batch_size, warmup, iters))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if "breakdown" in sections:
        names = (selected(args.breakdown_modes, MODES, "--breakdown-modes", combine=True) if args.breakdown_modes
                 else [m for m in modes if "train" in report["modes"][m]][:1])
        report["breakdown"] = {m: attempt(wall, f"{m}/breakdown", lambda m=m: bench_breakdown(
            load_config(config, overrides + mode_overrides(m)), device, args.batch_size, warmup, iters))
            for m in names}
    if args.profile > 0 and modes:
        report["profile"] = {"mode": modes[0], **attempt(wall, f"{modes[0]}/profile", lambda: {"top_ops": profile_step(
            load_config(config, overrides + mode_overrides(modes[0])), device, args.batch_size, args.profile)})}
    if "pose" in sections:
        report["pose"] = attempt(wall, "pose", lambda: bench_pose(base, device, args.infer_batch_size, warmup,
                                                                  max(iters, 3)))

    with tempfile.TemporaryDirectory(prefix="spgnet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        root, data_note = (Path(args.data).resolve(), f"dataset {args.data}") if args.data else (None, None)
        if root is None and ({"loader", "test"} & set(sections)):
            started = time.perf_counter()
            print("generating a synthetic set ...", flush=True)
            root, data_note = synthetic_dataset(base, tmp, args.quick)
            wall["synthetic set"] = time.perf_counter() - started
        if data_note:
            notes.append(data_note)
        if root is not None:
            data_overrides = overrides + dataset_overrides(base, root)
            data_cfg = load_config(config, data_overrides)
        if "loader" in sections:
            report["loader"] = ({"skipped": data_note} if root is None else attempt(
                wall, "loader", lambda: bench_loader(data_cfg, args.batch_size, workers, args.loader_batches)))
            if "s_per_batch" in report["loader"]:
                report["loader"]["wait_fraction"] = {
                    m: report["loader"]["s_per_batch"] / e["train"]["step"]["median_s"]
                    for m, e in report["modes"].items() if "train" in e}
        if "test" in sections:
            report["test"] = ({"skipped": data_note} if root is None else attempt(
                wall, "test", lambda: bench_test_script(config, data_overrides, data_cfg, device, args.test_pairs,
                                                        data_cfg.test.batch_size, workers, tmp)))

    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
        notes.append("load average at the end: " + ", ".join(f"{x:.1f}" for x in machine["load_average_end"]))
    text = markdown(report)
    print(text)
    if "top_ops" in report.get("profile", {}):
        print(f"\n## torch.profiler, one step ({report['profile']['mode']}): top {args.profile} ops by self time\n")
        print("| op | calls | self time |\n|---|---|---|")
        for e in report["profile"]["top_ops"]:
            print(f"| {e['op']} | {e['calls']} | {e['self_ms']:.1f} ms |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
