"""Print every network of a config: parameter count, forward cost and output shapes on a dummy batch.

    python -m models --config configs/deepfashion.yaml [dotted.key=value ...]

The batch is one random sample at the configured image size (pose maps in [0, 1], one-hot parsing maps, a
small random flow, random visibility labels); the networks run in eval mode under no_grad.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from data.loaders import num_labels
from models.build import POSE_CHANNELS, build_all
from utils.config import Config, ConfigError, load_config


def dummy_batch(cfg: Config, batch_size: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    h, w = cfg.data.image_size
    k = num_labels(cfg)
    g = torch.Generator().manual_seed(seed)

    def parsing() -> torch.Tensor:
        labels = torch.randint(0, k, (batch_size, h, w), generator=g)
        return F.one_hot(labels, k).permute(0, 3, 1, 2).float()  # (B,K,H,W)

    return {
        "src_image": torch.rand(batch_size, 3, h, w, generator=g) * 2 - 1,
        "src_pose": torch.rand(batch_size, POSE_CHANNELS, h, w, generator=g),
        "tgt_pose": torch.rand(batch_size, POSE_CHANNELS, h, w, generator=g),
        "src_parsing": parsing(),
        "tgt_parsing": parsing(),
        "flow": torch.randn(batch_size, 2, h, w, generator=g) * 4,
        "vis": torch.randint(0, 3, (batch_size, h, w), generator=g),
    }


def run_network(name: str, net: nn.Module, cfg: Config, b: dict[str, torch.Tensor]) -> object:
    """The network's output on the dummy batch, called as train.py calls it."""
    if name == "spatn":
        source = b["src_parsing"] if cfg.model.spatn.input == "parsing" else b["src_image"]
        return net(source, b["src_pose"], b["tgt_pose"])
    if name == "flow":
        return net(b["src_pose"], b["tgt_pose"])
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
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    h, w = cfg.data.image_size
    print(
        f"{args.config}: image {h}x{w}, {num_labels(cfg)} parsing classes, generator variant "
        f"'{cfg.model.generator.variant}'; dummy batch of 1"
    )
    batch = dummy_batch(cfg)
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
    main()
