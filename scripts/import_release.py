"""The authors' released weights -> one of our checkpoints (config + weights) that test.py and infer.py load.

    python scripts/import_release.py --config configs/release/deepfashion.yaml \
        --generator checkpoints/deepfashion/latest_net_netG.pth \
        --flow checkpoints/FlowReg_deepfashion/best_net_netF.pth \
        --flow-options checkpoints/FlowReg_deepfashion/train_opt.json \
        --out runs/release-deepfashion/checkpoints/step-00000000.pt [--spatn <our step-*.pt>] [overrides]

--generator is the release's `<id>/latest_net_netG.pth` (DualUnetGenerator_SEAN), --flow Intr-Flow's
`FlowReg_*/<epoch>_net_netF.pth` (FlowUnet_v2), both plain state dicts as the release saves them; the key
mapping is models.release_keys. --flow-options, the flow checkpoint's train_opt.json, is checked against the
config's model.flow keys (which_model unet_v2, nf, max_nf, start_scale, num_scale, norm). Every missing or
unexpected key and every shape mismatch is reported, one `error:` line each, and nothing is written.

The release has no SPATN: test.py then needs `--parsing-dir <pred_seg>` (the release's precomputed target
maps). For infer.py, which predicts the target parsing, pass `--spatn` with one of our joint-stage checkpoints
trained with the same pose, label and model.spatn settings; its SPATN is copied in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models import release_keys as rk
from models.build import build_flow, build_spatn, build_spgnet
from utils import checkpoint as ck
from utils.cli import run_main
from utils.config import Config, flatten, load_config, to_dict
from utils.errors import InputError

# train_opt.json key -> (our model.flow key, value that train_opt.json must hold for the release network)
FLOW_OPTIONS = {"nf": "base_channels", "max_nf": "max_channels", "start_scale": "start_scale",
                "num_scale": "n_scales"}
# the settings a copied SPATN depends on
SPATN_KEYS = ("data.image_size", "data.label_merge", "pose", "model.spatn")


class ReleaseImportError(InputError):
    """Problems that stop the import; printed one `error:` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\nerror: ".join(problems))
        self.problems = problems


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A plain state dict saved with torch.save; a DataParallel 'module.' prefix is dropped."""
    if not path.is_file():
        raise ReleaseImportError([f"{what} file not found: {path}"])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError depending on the damage
        raise ReleaseImportError([f"{path}: cannot read the {what} ({err})"]) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleaseImportError([f"{path}: not a state dict of tensors (the release saves net.state_dict())"])
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def check_flow_options(path: Path, cfg: Config) -> list[str]:
    """train_opt.json of the flow checkpoint against the config's model.flow keys."""
    try:
        opts = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return [f"{path}: cannot read the flow options ({err})"]
    problems = []
    if opts.get("which_model", "unet_v2") != "unet_v2":
        problems.append(f"{path}: which_model = {opts['which_model']!r}; only unet_v2 (FlowUnet_v2) is supported")
    if opts.get("norm", "batch") != "batch":
        problems.append(f"{path}: norm = {opts['norm']!r}; the release flow network has batch norm")
    for theirs, ours in FLOW_OPTIONS.items():
        if theirs in opts and opts[theirs] != getattr(cfg.model.flow, ours):
            problems.append(f"{path}: {theirs} = {opts[theirs]!r}, but the config has model.flow.{ours} = "
                            f"{getattr(cfg.model.flow, ours)!r} (set it with model.flow.{ours}={opts[theirs]})")
    return problems


def convert(release: dict[str, torch.Tensor], net: torch.nn.Module, rules_of, unused: bool, source: Path
            ) -> dict[str, torch.Tensor]:
    ours = net.state_dict()
    extra = rk.unused_release_keys(ours) if unused else None
    state, problems = rk.release_to_ours(release, ours, rules_of(ours), extra)
    if problems:
        raise ReleaseImportError([f"{source}: {p}" for p in problems])
    return state


def spatn_state(path: Path, cfg: Config) -> dict[str, torch.Tensor]:
    """The SPATN of one of our checkpoints, after checking that it was trained with this config's settings."""
    try:
        ckpt = ck.load_checkpoint(path)
    except ck.CheckpointError as err:
        raise ReleaseImportError([str(err)]) from err
    if "spatn" not in ckpt["models"]:
        raise ReleaseImportError([f"{path} holds no SPATN"])
    saved, current = flatten(ckpt["config"]), flatten(to_dict(cfg))
    differ = sorted(k for k in set(saved) | set(current)
                    if any(k == a or k.startswith(a + ".") for a in SPATN_KEYS) and saved.get(k) != current.get(k))
    if differ:
        raise ReleaseImportError([f"{path}: its SPATN was trained with {k} = {saved.get(k)!r}, this config has "
                            f"{current.get(k)!r}" for k in differ])
    return ckpt["models"]["spatn"]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a release config (configs/release/*.yaml)")
    p.add_argument("--generator", required=True, help="the release's latest_net_netG.pth")
    p.add_argument("--flow", required=True, help="Intr-Flow's FlowReg_* netF state dict")
    p.add_argument("--flow-options", default=None, help="the flow checkpoint's train_opt.json (checked if given)")
    p.add_argument("--spatn", default=None, help="one of our joint-stage checkpoints whose SPATN to include")
    p.add_argument("--out", required=True, help="checkpoint to write (step-*.pt)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    problems = []
    if cfg.model.generator.variant != "release":
        problems.append(f"{args.config}: model.generator.variant = {cfg.model.generator.variant!r}; the release "
                        "weights need 'release'")
    if cfg.model.flow.network != "release":
        problems.append(f"{args.config}: model.flow.network = {cfg.model.flow.network!r}; the release weights "
                        "need 'release'")
    if args.flow_options is not None:
        problems += check_flow_options(Path(args.flow_options), cfg)
    if problems:
        raise ReleaseImportError(problems)
    models = {}
    for key, path, build, rules_of, unused in (
        ("generator", Path(args.generator), build_spgnet, rk.generator_rules, True),
        ("flow", Path(args.flow), build_flow, rk.flow_rules, False),
    ):
        try:
            models[key] = convert(load_state_dict(path, key), build(cfg), rules_of, unused, path)
        except ReleaseImportError as err:
            problems += err.problems
    if args.spatn is not None:
        try:
            models["spatn"] = spatn_state(Path(args.spatn), cfg)
            build_spatn(cfg).load_state_dict(models["spatn"])
        except ReleaseImportError as err:
            problems += err.problems
        except RuntimeError as err:
            problems.append(f"{args.spatn}: its SPATN does not fit this config: {err}")
    if problems:
        raise ReleaseImportError(problems)
    out = Path(args.out)
    ck.save_checkpoint(out, cfg, models, reason=f"imported from the authors' release ({Path(args.generator).name}, "
                                                f"{Path(args.flow).name})")
    print(f"wrote {out}: {', '.join(sorted(models))}")
    return out


if __name__ == "__main__":
    run_main(main)
