"""What the sections measure on: config modes, tiny networks, random-init networks on random batches, and a
small synthetic dataset for the sections that need files."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from data.fake_batch import random_batch
from data.synthetic import generate_dataset
from models.build import build_flow
from training.stages import JointStage
from training.steps import to_device
from utils.config import Config
from utils.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "unit_test" / "tiny.yaml"

MODES = ("fp32", "channels_last", "bf16", "fp16", "compile")
MODE_OVERRIDES = {
    "fp32": [],
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.amp=bf16"],
    "fp16": ["train.amp=fp16"],
    "compile": ["train.compile=true"],
}
# Always: no pretrained weights needed; a random VGG19 costs exactly what the ImageNet one costs.
ALWAYS = ["loss.perceptual_weights=random"]
# Image sizes the synthetic renderer draws, and its style for each.
SYNTHETIC_STYLES = {(256, 176): "deepfashion", (128, 64): "market"}
CSV_KEYS = ("annotation_train", "annotation_test", "pairs_train", "pairs_test")


def mode_overrides(mode: str) -> list[str]:
    """Config overrides of a mode; modes combine with '+', e.g. bf16+channels_last."""
    return [o for part in mode.split("+") for o in MODE_OVERRIDES[part]]


def dotted(mapping: dict, prefix: str = "") -> list[str]:
    """A nested mapping as dotted key=value overrides: {"model": {"spatn": {"ngf": 4}}} -> ["model.spatn.ngf=4"]."""
    out = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            out += dotted(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            out.append(f"{prefix}{key}=[{','.join(map(str, value))}]")
        else:
            out.append(f"{prefix}{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def tiny_overrides(cfg: Config) -> list[str]:
    """configs/unit_test/tiny.yaml's model and loss settings as overrides of `cfg`: tiny networks of its structure
    (variant, scales, norms). A config with per-layer perceptual weights (the release's) keeps its first ones, one
    per tiny layer."""
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    overrides = dotted({section: tiny[section] for section in ("model", "loss")})
    weights = cfg.loss.perceptual_layer_weights
    if weights is not None:
        overrides += dotted({"loss": {"perceptual_layer_weights": weights[: len(tiny["loss"]["perceptual_layers"])]}})
    return overrides


# ------------------------------------------------------------------------------ networks and batches


def random_flow_net(cfg: Config, device: torch.device) -> nn.Module | None:
    """A random-init FlowNet, frozen as models.pipeline.load_flow leaves the stage-0 one; None for flow files."""
    if cfg.model.flow.source == "files":
        return None
    return build_flow(cfg).to(device).eval().requires_grad_(False)


def joint_stage(cfg: Config, device: torch.device) -> JointStage:
    """The joint stage as train.py builds it, over random-init networks (seeded with train.seed)."""
    torch.manual_seed(cfg.train.seed)
    return JointStage(cfg, DistInfo(device=device), random_flow_net(cfg, device))


def joint_setup(cfg: Config, device: torch.device, batch_size: int) -> tuple[JointStage, dict]:
    """The joint stage and one random device batch of the config's shapes."""
    j = joint_stage(cfg, device)
    batch = to_device(random_batch(cfg, batch_size), device, cfg.train.channels_last)
    return j, batch


def take_every_update(terms: dict) -> bool:
    return True  # train.nonfinite=stop: the step never waits for the device to check its losses


def first_adversarial_step(cfg: Config) -> int:
    """A step number at which JointStage.step runs the discriminator (the adversarial warm-up is over)."""
    return max(cfg.train.adv_start_step, 0)


# --------------------------------------------------------------------------------------------- dataset


def synthetic_dataset(cfg: Config, folder: Path, identities: int, poses: int) -> tuple[Path | None, str]:
    """A synthetic set at the config's image size in `folder` (half the identities held out for the test split);
    (root, note), or (None, why not) when the renderer does not draw that size."""
    size = tuple(cfg.data.image_size)
    style = SYNTHETIC_STYLES.get(size)
    if style is None:
        sizes = " or ".join(f"{h}x{w}" for h, w in SYNTHETIC_STYLES)
        return None, (f"skipped: no dataset given (--data) and the synthetic renderer draws only {sizes}, "
                      f"not {size[0]}x{size[1]}")
    root = folder / f"synthetic_{style}"
    generate_dataset(root, style=style, identities=identities, poses=poses, seed=0, test_fraction=0.5)
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
