"""Test-time generation: pose maps + SPATN + flow + SPGNet, eval mode, no_grad, on random batches."""

from __future__ import annotations

import torch

from benchmarks.inputs import random_flow_net
from benchmarks.timing import peak_memory, reset_peak_memory, time_calls
from data.fake_batch import random_batch
from data.parsing import num_labels
from models.build import build_pose_encoder, build_spatn, build_spgnet
from models.pipeline import Pipeline
from training.steps import autocast, to_device
from utils.config import Config


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
