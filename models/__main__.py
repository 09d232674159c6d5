"""Print every network of a config: parameter count, forward cost and output shapes on a dummy batch.

    python -m models --config configs/deepfashion.yaml [dotted.key=value ...]

The batch is one random sample at the configured image size (pose maps in [0, 1], one-hot parsing maps, a
small random flow, random visibility labels); the networks run in eval mode under no_grad.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from data.fake_batch import random_batch
from data.parsing import num_labels
from models.build import build_all
from utils.cli import run_main
from utils.config import Config, load_config


def run_network(name: str, net: nn.Module, cfg: Config, b: dict[str, torch.Tensor]) -> object:
    """The network's output on the dummy batch, called as train.py calls it."""
    if name == "spatn":
        source = b["src_parsing"] if cfg.model.spatn.input == "parsing" else b["src_image"]
        return net(source, b["src_pose"], b["tgt_pose"])
    if name == "flow":
        return net(b["src_pose"], b["tgt_pose"], b["src_keypoints"], b["tgt_keypoints"])
    if name == "generator":
        return net(b["src_image"], b["tgt_pose"], b["src_parsing"], b["tgt_parsing"], b["flow"], b["vis"])
    if name == "discriminator":
        return net(b["src_image"], b["src_image"], b["tgt_pose"])
    raise ValueError(f"no dummy call for network {name!r}")


def describe(output: object) -> str:
    """Shapes of a tensor, a (named) tuple or a list of tensors."""
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if hasattr(output, "_fields"):
        return ", ".join(f"{field}={describe(getattr(output, field))}" for field in output._fields)
    if isinstance(output, (list, tuple)):
        return "[" + ", ".join(describe(o) for o in output) + "]"
    return type(output).__name__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file in configs/")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. model.generator.variant=sean")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    h, w = cfg.data.image_size
    print(
        f"{args.config}: image {h}x{w}, {num_labels(cfg)} parsing classes, generator variant "
        f"'{cfg.model.generator.variant}'; dummy batch of 1"
    )
    batch = random_batch(cfg, 1)
    for name, net in build_all(cfg).items():
        params = sum(p.numel() for p in net.parameters())
        net.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = run_network(name, net, cfg, batch)
        print(
            f"{name:14s} {params / 1e6:8.3f} M parameters  {counter.get_total_flops() / 1e9:8.2f} GFLOP forward"
            f"  -> {describe(output)}"
        )


if __name__ == "__main__":
    run_main(main)
