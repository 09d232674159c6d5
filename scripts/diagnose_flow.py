"""The flow module alone, on held-out pairs with exact flow files (the synthetic sets): how far its flow is from
the renderer's, and whether the source warped by it carries the clothes' patterns to the target.

    python scripts/diagnose_flow.py --config configs/demo.yaml --checkpoint runs/demo/flow/checkpoints/step-00000300.pt
    python scripts/diagnose_flow.py --config configs/demo.yaml --checkpoint runs/demo/joint/checkpoints/<step>.pt \
        data.root=datasets/synthetic_small --limit 100

A stage-0 checkpoint or a joint one (its frozen flow module) is scored on the test pairs, per kind of pose change
when the image names carry the view (same view, side<->front, front<->back, side<->back):
- end-point error on the exact flow's visible pixels at every scale of the network, in that scale's pixels,
  beside the zero flow's error on the same pixels (metrics/flow.py);
- visibility accuracy over the image and over the target's body;
- texture correlation (metrics/texture.py: per clothing part of the target's true parsing, the Pearson correlation
  of grey-level residuals) of the SOURCE IMAGE WARPED by a flow, on the pixels a visibility map calls visible: the
  model's flow on its own visibility (what the generator gets), the model's flow on the exact visibility, the
  exact flow (the ceiling: what a perfect flow module gives) and the zero flow (the source left in place).
Writes <out>/flow_diagnosis.json (default out: <run>/flow-diagnosis-<step>) and prints the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from data.datasets import stem
from data.loaders import build_dataset, build_loader
from data.synthetic import POSE_CHANGES, pose_change
from data.visual import to_uint8_tensor
from metrics.flow import VISIBLE, flow_error_sums, visibility_sums
from metrics.texture import part_texture, summarise
from models.build import build_pose_encoder
from models.flow import warp
from models.pipeline import add_pose_maps, load_flow
from training.steps import to_device
from utils import checkpoint as ck
from utils.cli import positive_int, run_main
from utils.config import ConfigError, load_config
from utils.io import ensure_writable_folder, read_image, write_json

# warped source images scored for texture: (which flow, which visibility map) -> name
WARPS = {"model flow, its visibility": ("model", "model"), "model flow, exact visibility": ("model", "exact"),
         "exact flow (ceiling)": ("exact", "exact"), "zero flow (source in place)": ("zero", "exact")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML the flow module was trained with")
    p.add_argument("--checkpoint", required=True, help="a stage-0 (train.stage=flow) or joint-stage step-*.pt")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.root=datasets/synthetic_small")
    p.add_argument("--out", default=None, help="output folder (default: <run>/flow-diagnosis-<step>)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N test pairs")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p.parse_intermixed_args(argv)


def target_labels(parsing_dir: Path, names: list[str]) -> torch.Tensor:
    """(B,H,W) CIHP ids of the targets' ground-truth parsing maps, as the dataset stores them."""
    return torch.from_numpy(np.stack([read_image(parsing_dir / (stem(n) + ".png"), cv2.IMREAD_UNCHANGED)
                                      for n in names])).long()


@torch.no_grad()
def score_batch(net: torch.nn.Module, batch: dict, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Per-pair sums (metrics/flow.py) and, per entry of WARPS, the (B,5) texture correlation and contrast; the
    network's scales as 'hxw', coarse to fine."""
    out = net(batch["src_pose"], batch["tgt_pose"], batch["src_keypoints"], batch["tgt_keypoints"])
    exact, vis = batch["flow"], batch["vis"]
    flows = {"model": out.flow.float(), "exact": exact, "zero": torch.zeros_like(exact)}
    visible = {"model": out.vis_logits.argmax(dim=1) == VISIBLE, "exact": vis == VISIBLE}  # (B,H,W)
    scores = {**flow_error_sums(out.flows, exact, vis), **visibility_sums(out.vis_logits.float(), vis)}
    truth = to_uint8_tensor(batch["tgt_image"])
    for name, (flow, mask) in WARPS.items():
        warped = to_uint8_tensor(warp(batch["src_image"], flows[flow]))  # (B,3,H,W)
        # a part's pixels outside the visible ones are set to background: they do not count
        correlation, contrast = part_texture(warped.cpu(), truth.cpu(), torch.where(visible[mask].cpu(), labels, 0))
        scores[f"{name}/correlation"], scores[f"{name}/contrast"] = correlation, contrast
    return {k: v.cpu() for k, v in scores.items()}, [f"{f.shape[2]}x{f.shape[3]}" for f in out.flows]


def summary(scores: dict[str, np.ndarray], rows: np.ndarray, sizes: list[str]) -> dict:
    """The figures of the pairs selected by the boolean `rows`."""
    count = scores["count"][rows].sum(0)
    out: dict = {"pairs": int(rows.sum()),
                 "epe": {s: float(e) for s, e in zip(sizes, scores["epe"][rows].sum(0) / np.maximum(count, 1))},
                 "epe_zero_flow": {s: float(z) for s, z in zip(sizes, scores["zero"][rows].sum(0)
                                                               / np.maximum(count, 1))},
                 "visibility_accuracy": float(scores["correct"][rows].sum() / scores["pixels"][rows].sum()),
                 "visibility_accuracy_body": float(scores["body_correct"][rows].sum()
                                                   / max(scores["body_pixels"][rows].sum(), 1)),
                 "texture": {}}
    for name in WARPS:
        corr, above, contrast, parts = summarise(scores[f"{name}/correlation"][rows], scores[f"{name}/contrast"][rows])
        out["texture"][name] = {"correlation": corr, "above_0.5": above, "contrast": contrast, "parts": parts}
    return out


def print_tables(report: dict) -> None:
    groups = report["groups"]
    sizes = list(groups["all"]["epe"])
    print(f"\n{report['pairs']} held-out pairs, flow module of {report['checkpoint']} (step {report['step']})")
    print("end-point error on visible pixels, in each scale's pixels: model / zero flow; visibility accuracy")
    print(f"{'pairs':>26} " + " ".join(f"{s:>13}" for s in reversed(sizes)) + "   vis (body)")
    for name, g in groups.items():
        errors = " ".join(f"{g['epe'][s]:6.2f}/{g['epe_zero_flow'][s]:6.2f}" for s in reversed(sizes))
        print(f"{name:<20}{g['pairs']:>6} {errors}   {g['visibility_accuracy']:.3f} "
              f"({g['visibility_accuracy_body']:.3f})")
    print("\ntexture correlation of the warped source (share of parts > 0.5, parts scored)")
    print(f"{'':<20}" + "".join(f"{w:>32}" for w in WARPS))
    for name, g in groups.items():
        cells = [g["texture"][w] for w in WARPS]
        print(f"{name:<20}" + "".join(f"{c['correlation']:>16.3f} ({c['above_0.5']:4.0%}, {c['parts']:5d})"
                                      for c in cells))


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, "model.flow.source=net"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt_path = Path(args.checkpoint)
    ckpt = ck.load_checkpoint(ckpt_path)
    ck.check_compatible(ckpt, cfg, ckpt_path)
    if "flow" not in ckpt["models"]:
        raise ConfigError(f"{ckpt_path} holds {', '.join(sorted(ckpt['models']))}: no flow module to diagnose")
    net = load_flow(cfg, ckpt, ckpt_path).to(device)
    encoder = build_pose_encoder(cfg).to(device)
    out_dir = ensure_writable_folder(Path(args.out) if args.out else
                                     ckpt_path.parent.parent / f"flow-diagnosis-{ckpt['step']:08d}")

    dataset = build_dataset(cfg, "test", with_flow=True, max_pairs=args.limit)
    loader = build_loader(dataset, args.batch_size, cfg.data.num_workers)
    batches = []
    for batch in loader:
        labels = target_labels(dataset.parsing_dir, batch["tgt_name"])
        scores, sizes = score_batch(net, add_pose_maps(to_device(batch, device, channels_last=False), encoder), labels)
        batches.append(scores)
    scores = {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}
    kinds = np.array([pose_change(s, t) for s, t in dataset.pairs], dtype=object)
    groups = {"all": summary(scores, np.ones(len(kinds), bool), sizes)}
    for kind in POSE_CHANGES:
        if (kinds == kind).any():
            groups[kind] = summary(scores, kinds == kind, sizes)
    report = {"checkpoint": str(ckpt_path), "step": int(ckpt["step"]), "pairs": len(dataset), "groups": groups}
    print_tables(report)
    path = write_json(out_dir / "flow_diagnosis.json", report)
    print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    run_main(main)
