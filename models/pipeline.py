"""The test-time path of SPGNet, from a checkpoint to images (paper sec. 3): the one forward that train.py's
validation, test.py, infer.py and the scripts share.

    pose maps      keypoints -> (B,30,H,W) on the device, unless the loader already drew them
    flow           the frozen flow module (or the batch's precomputed flow) -> target->source flow, visibility
    SPATN          source parsing (SPATN*: source image) + both poses -> target parsing logits (B,K,H,W)
    SPGNet         source image, target pose, source parsing, one-hot of SPATN's argmax, flow -> image (B,3,H,W)

SPGNet sees SPATN's prediction here; while training it sees the ground-truth target parsing instead
(training/stages.py). `load_pipeline` reads the networks of a joint-stage checkpoint, with one policy for the
frozen flow module (`load_flow`). One source person in many poses (infer.py's sequences, app.py's edits):
`source_parsing` makes its parsing input, `render_poses` renders it in a batch of poses, `render_sequence` in any
number of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data.parsing import label_merge, merge_labels, num_labels, one_hot
from data.visual import parsing_picture, to_uint8
from models.build import build_flow, build_pose_encoder, build_spatn, build_spgnet
from models.flow import warp
from models.pose_encoding import PoseEncoder
from utils import checkpoint as ck
from utils.config import Config, FlowConfig, to_dict

VISIBLE, INVISIBLE = 0, 1  # the flow module's visibility labels; 2 is background


@dataclass
class Rendered:
    """What one pass of the pipeline produces for a batch."""

    logits: torch.Tensor  # (B,K,H,W) SPATN's target parsing logits
    parsing: torch.Tensor  # (B,K,H,W) one-hot of their argmax: the parsing SPGNet rendered with
    image: torch.Tensor  # (B,3,H,W) in [-1, 1]
    flow: torch.Tensor  # (B,2,H,W) target->source flow in pixels (x, y), what SPGNet warped the source with
    vis: torch.Tensor  # (B,H,W) long visibility labels: 0 visible, 1 invisible (occluded in the source), 2 background


def hard_parsing(logits: torch.Tensor) -> torch.Tensor:
    """(B,K,H,W) logits -> (B,K,H,W) one-hot of the argmax, in the logits' dtype."""
    return one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)


def add_pose_maps(batch: dict, pose_encoder: PoseEncoder) -> dict:
    """Draw src_pose / tgt_pose (B,30,H,W) from the keypoints when the loader shipped keypoints only."""
    if "src_pose" not in batch:
        batch["src_pose"] = pose_encoder(batch["src_keypoints"])  # (B,30,H,W)
        batch["tgt_pose"] = pose_encoder(batch["tgt_keypoints"])
    return batch


@torch.no_grad()
def flow_and_visibility(flow_net: nn.Module | None, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Target->source flow (B,2,H,W) in pixels and visibility labels (B,H,W) long: from the frozen flow module,
    or the batch's precomputed `flow` / `vis` when there is none (model.flow.source=files)."""
    if flow_net is None:
        return batch["flow"], batch["vis"]
    out = flow_net(batch["src_pose"], batch["tgt_pose"], batch["src_keypoints"], batch["tgt_keypoints"])
    return out.flow.float(), out.vis_logits.argmax(dim=1)


def spatn_source(spatn_takes_image: bool, batch: dict) -> torch.Tensor:
    """SPATN reads the source parsing; SPATN* (model.spatn.input=image) the source image."""
    return batch["src_image"] if spatn_takes_image else batch["src_parsing"]


@dataclass
class Pipeline:
    """SPATN, SPGNet, the frozen flow module and the pose encoder, in eval mode; `render` is the test-time pass."""

    spatn: nn.Module | None  # None: the batches carry the target parsing (precomputed, test.py --parsing-dir)
    generator: nn.Module
    flow: nn.Module | None  # None: the batches carry precomputed flow and visibility
    pose_encoder: PoseEncoder
    num_classes: int
    spatn_takes_image: bool

    @torch.no_grad()
    def render(self, batch: dict) -> Rendered:
        """A device batch (src_image, src_parsing, keypoints or pose maps, [flow, vis]) -> Rendered."""
        batch = add_pose_maps(batch, self.pose_encoder)
        flow, vis = flow_and_visibility(self.flow, batch)
        if self.spatn is None:
            logits = parsing = batch["tgt_parsing"]  # (B,K,H,W) one-hot, read by the loader
        else:
            logits = self.spatn(spatn_source(self.spatn_takes_image, batch), batch["src_pose"], batch["tgt_pose"])
            parsing = hard_parsing(logits.float())  # (B,K,H,W)
        image = self.generator(batch["src_image"], batch["tgt_pose"], batch["src_parsing"], parsing, flow, vis)
        return Rendered(logits=logits.float(), parsing=parsing, image=image.float(), flow=flow, vis=vis)

    def own_parsing(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return predict_own_parsing(self.spatn, image, pose)


def source_parsing(pipe: Pipeline, src_image: torch.Tensor, src_keypoints: torch.Tensor, labels: np.ndarray | None,
                   cfg: Config) -> torch.Tensor:
    """(K,H,W) one-hot source parsing of one person, src_image (3,H,W), src_keypoints (18,2): its CIHP labels (H,W)
    merged into the config's label set, or SPATN*'s own prediction when there are none."""
    if labels is None:
        own = pipe.own_parsing(src_image[None], pipe.pose_encoder(src_keypoints[None]))  # (1,H,W)
        return one_hot(own, pipe.num_classes)[0]
    merged = merge_labels(labels, label_merge(cfg)).astype(np.uint8)
    return one_hot(torch.from_numpy(merged).to(src_image.device), pipe.num_classes)


@torch.no_grad()
def render_poses(pipe: Pipeline, src_image: torch.Tensor, src_keypoints: torch.Tensor, src_parsing: torch.Tensor,
                 tgt_keypoints: torch.Tensor) -> Rendered:
    """One source, src_image (3,H,W), src_keypoints (18,2), src_parsing (K,H,W), in B target poses (B,18,2)."""
    b = tgt_keypoints.shape[0]
    return pipe.render({"src_image": src_image[None].expand(b, -1, -1, -1),  # (B,3,H,W)
                        "src_parsing": src_parsing[None].expand(b, -1, -1, -1),  # (B,K,H,W)
                        "src_keypoints": src_keypoints[None].expand(b, -1, -1), "tgt_keypoints": tgt_keypoints})


def render_sequence(pipe: Pipeline, src_image: torch.Tensor, src_keypoints: torch.Tensor, src_parsing: torch.Tensor,
                    tgt_keypoints: torch.Tensor, batch_size: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`render_poses` over N target poses (N,18,2), batch_size at a time -> frames (N,H,W,3) uint8 and the predicted
    target parsing pictures (N,H,W,3) uint8 (CIHP palette)."""
    frames, parsings = [], []
    starts = range(0, len(tgt_keypoints), batch_size)
    for start in tqdm(starts, desc="render", dynamic_ncols=True, leave=False, disable=not progress):
        out = render_poses(pipe, src_image, src_keypoints, src_parsing, tgt_keypoints[start : start + batch_size])
        frames.append(to_uint8(out.image))
        parsings.append(parsing_picture(out.logits))
    return np.concatenate(frames), np.concatenate(parsings)


def warped_source(src_image: torch.Tensor, flow: torch.Tensor, vis: torch.Tensor,
                  blank: float = 1.0, dim: float = 0.4) -> torch.Tensor:
    """What SPGNet's appearance path receives at full resolution, as a picture: the source (B,3,H,W) in [-1,1]
    backward-warped by the target->source flow (B,2,H,W), split by the visibility labels (B,H,W) as its gate splits
    it: visible pixels as warped, invisible ones (occluded in the source: the generator must invent them) blended
    `dim` of the way to black, background ones `blank` (1: white). -> (B,3,H,W) in [-1,1]."""
    warped = warp(src_image, flow)  # (B,3,H,W)
    label = vis.unsqueeze(1)  # (B,1,H,W)
    invisible = warped + dim * (-1.0 - warped)  # (B,3,H,W)
    return torch.where(label == VISIBLE, warped, torch.where(label == INVISIBLE, invisible, blank))


@torch.no_grad()
def predict_own_parsing(spatn: nn.Module, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """SPATN*(image, pose, pose): each image's own parsing labels (B,H,W) long, in the merged label set (the
    paper's Market-1501 recipe: the source pose as both poses)."""
    return spatn(image, pose, pose).argmax(dim=1)  # (B,K,H,W) logits -> (B,H,W)


def load_flow(cfg: Config, ckpt: dict | None, path: Path | None) -> nn.Module | None:
    """The frozen flow module of a run, by one policy: None when flow comes from files (model.flow.source=files);
    else the one a joint-stage checkpoint carries, else the stage-0 checkpoint `model.flow.checkpoint`, whose
    model.flow.* keys must equal the config's. Returned on the CPU, in eval mode, without gradients."""
    if cfg.model.flow.source == "files":
        return None
    state, source = None if ckpt is None else ckpt["models"].get("flow"), path
    if state is None:
        flow_path = cfg.model.flow.checkpoint
        if flow_path is None:
            where = f"{path} holds no flow module and key" if ckpt is not None else "key"
            raise ck.CheckpointError(
                f"{where} 'model.flow.checkpoint' is null: the joint stage needs a trained flow module. Train it "
                "first (python train.py --config <cfg> train.stage=flow) and pass model.flow.checkpoint=<its "
                "step-*.pt>, or use precomputed flow files with model.flow.source=files")
        flow_ckpt = ck.load_checkpoint(flow_path)
        # a key the saved config lacks is newer than the checkpoint: it was trained with that key's default
        saved = {**to_dict(FlowConfig()), **flow_ckpt["config"].get("model", {}).get("flow", {})}
        ours = to_dict(cfg)["model"]["flow"]
        diffs = [f"model.flow.{k}: {saved.get(k)!r} -> {ours[k]!r}" for k in ours
                 if k not in ("checkpoint", "source") and saved.get(k) != ours[k]]
        if diffs or "flow" not in flow_ckpt["models"]:
            raise ck.CheckpointError(f"flow checkpoint {flow_path} does not fit this config: "
                                     + "; ".join(diffs or ["it holds no flow module"]))
        state, source = flow_ckpt["models"]["flow"], flow_path
    flow = build_flow(cfg)
    ck.load_weights(flow, state, source, "flow module")
    return flow.eval().requires_grad_(False)


def load_pose_encoder(cfg: Config, ckpt: dict, path: Path) -> PoseEncoder:
    """Keypoints -> 30 (pose.limbs: 18) pose maps, with the checkpoint's learnt kappa when it has one."""
    encoder = build_pose_encoder(cfg)
    if "pose_encoder" in ckpt["models"]:
        ck.load_weights(encoder, ckpt["models"]["pose_encoder"], path, "pose encoder")
    return encoder.eval()


def load_spatn(cfg: Config, ckpt: dict, path: Path) -> nn.Module:
    spatn = build_spatn(cfg)
    ck.load_weights(spatn, ckpt["models"]["spatn"], path, "SPATN")
    return spatn.eval()


def load_pipeline(cfg: Config, ckpt: dict, path: Path, device: torch.device, with_spatn: bool = True) -> Pipeline:
    """The networks of a joint-stage checkpoint (`cfg` must fit it: utils.checkpoint.check_compatible).
    with_spatn=False: no SPATN, the batches bring the target parsing (an imported release checkpoint has none)."""
    models = ckpt["models"]
    if "generator" not in models or (with_spatn and "spatn" not in models):
        raise ck.CheckpointError(f"{path} holds {', '.join(sorted(models))}; a joint-stage checkpoint (spatn, "
                                 "generator and the frozen flow module) is needed (an imported release checkpoint "
                                 "has no SPATN: test.py --parsing-dir, or scripts/import_release.py --spatn)")
    generator = build_spgnet(cfg)
    ck.load_weights(generator, models["generator"], path, "generator")
    flow = load_flow(cfg, ckpt, path)
    spatn = load_spatn(cfg, ckpt, path).to(device) if with_spatn else None
    return Pipeline(spatn=spatn, generator=generator.eval().to(device),
                    flow=None if flow is None else flow.to(device),
                    pose_encoder=load_pose_encoder(cfg, ckpt, path).to(device), num_classes=num_labels(cfg),
                    spatn_takes_image=cfg.model.spatn.input == "image")
