"""Animate one person: a source image, its pose (and parsing map) and a sequence of target poses -> frames.

    python infer.py --checkpoint runs/00001-deepfashion/checkpoints/step-00200000.pt \
        --source me.jpg --source-pose me_keypoints.json --source-parsing me_parsing.png \
        --target-poses dance/ --out out/dance --gif --mp4 --fps 8
    python infer.py --checkpoint ... --source photo.jpg --keypoints mediapipe --save-inputs checked/ \
        --target-poses dance/ --out out/dance      # a photo of any size: keypoints and parsing estimated

Pipeline per target pose (paper sec. 3, test-time path as in test.py): SPATN predicts the target parsing, the
frozen flow module gives target->source flow and visibility, SPGNet renders with the predicted parsing. Target
poses are processed in batches of --batch-size. Writes frame_0000.png, frame_0001.png, ... (the model's H x W),
and with --gif / --mp4 an animated GIF (Pillow) / an mp4 (OpenCV, mp4v) of the sequence.

The config is the checkpoint's own (dotted overrides apply on top), or --config FILE [overrides].

Poses (18 OpenPose-COCO joints), any of:
  - an annotation CSV of the release format (name:keypoints_y:keypoints_x): every row in file order, or
    `FILE.csv:NAME` for one row. For the source, a CSV without :NAME uses the row named like the source image.
  - an OpenPose JSON file (`people[*].pose_keypoints_2d`, flat [x, y, c] lists, BODY_25 or COCO-18; the person
    with the largest total confidence is used; a joint with confidence < 0.1 is missing).
  - a JSON list of 18 [y, x] pairs ([-1, -1] or null = missing), or a JSON list of such lists (a sequence).
  - for the target poses also a folder of such JSON files, sorted by file name.
Target poses are given in the model's frame (data.image_size, e.g. 256x176), or with --target-size H W in a
frame of that size, which is then fitted into the model's frame exactly as --resize fits the source image.
A pose needs at least 4 joints inside the frame and a torso (the neck and a shoulder or hip), and finite
coordinates; otherwise the error names the pose (file, row or index) and the joint.

Output: --out is checked for writability before anything is computed; every frame, GIF and mp4 is written
atomically and checked (the mp4 is read back and its frames counted), and a failed write stops with an error
naming the file (exit code 2).

The source image must have the model's size, unless --resize: it is then scaled to fit inside the model's
frame keeping its aspect ratio and centred, the rest padded (--pad border: the median colour of the image's
outermost pixel ring, which continues a plain studio background; --pad white). Its keypoints follow the same
map, in the pixel-centre convention of cv2.resize: y' = (y + 0.5) * s_y - 0.5 + top (x likewise with s_x, left);
the parsing map is resized with nearest-neighbour sampling and padded with background (0).

From a photo (no --source-pose): the person's keypoints are estimated (--keypoints openpose: the built-in OpenPose
of metrics/openpose.py; mediapipe: the optional MediaPipe backend), the person is framed as DeepFashion's images are
(centred, full height, padded with the border colour; photos/framing.py), and the photo is refused with one error
line when it holds no person, several, a person too small for the frame or without a torso (photos/inputs.py).
Without --source-parsing the source parsing is estimated: by the checkpoint's SPATN* when it has one
(model.spatn.input=image: the source image with the source pose as both poses, the paper's Market-1501 recipe), else
by SCHP (models/schp.py, weights exp-schp-201908261155-lip.pth; `--parser schp|spatn` chooses). --save-inputs DIR
writes what was estimated (the framed photo, its keypoint CSV, its parsing PNG and a picture of both) to check, correct
and pass back with --source / --source-pose / --source-parsing. With `--keypoint-weights random` or
`--parser-weights random` (offline tests) every frame is stamped RANDOM WEIGHTS; estimated.txt in --out names the
estimators and their weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from data.parsing import NUM_CIHP, label_merge, merge_labels, one_hot
from data.pose_files import check_pose, read_poses, read_source_pose
from data.visual import border_colour, from_uint8, parsing_picture, read_image, to_uint8
from models.pipeline import Pipeline, load_pipeline
from photos.framing import fit_image, fit_into, fit_keypoints, fit_labels
from photos.inputs import (
    KEYPOINT_BACKENDS,
    PhotoInputs,
    keypoint_estimator,
    photo_inputs,
    read_photo,
    save_inputs,
    schp_parser,
    stamp,
)
from utils import checkpoint as ck
from utils.cli import positive_int, run_main
from utils.config import Config, config_from_dict, load_config, parse_override
from utils.errors import InputError
from utils.io import ImageReadError, WriteError, atomic_path, ensure_writable_folder, write_image, write_text
from utils.io import read_image as read_image_file


class InferenceError(InputError):
    """Input infer.py cannot use: a pose, image or parsing file; the message names it."""


# ----------------------------------------------------------------------------------- images and labels


def read_cihp_labels(path: Path) -> np.ndarray:
    """A single-channel uint8 PNG of CIHP labels 0..19 -> (h,w) uint8."""
    try:
        labels = read_image_file(path, cv2.IMREAD_UNCHANGED)
    except ImageReadError as err:
        raise InferenceError(f"parsing map {err}") from err
    if labels.ndim == 3:
        if not (labels == labels[..., :1]).all():
            raise InferenceError(f"parsing map {path}: a colour picture; a single-channel PNG of CIHP label ids "
                                 "(0..19) is needed")
        labels = labels[..., 0]
    if labels.dtype != np.uint8:
        raise InferenceError(f"parsing map {path}: {labels.dtype} pixels; uint8 CIHP label ids are needed")
    if int(labels.max()) >= NUM_CIHP:
        raise InferenceError(f"parsing map {path}: label {int(labels.max())} is not a CIHP label (0..19)")
    return labels


# ----------------------------------------------------------------------------------------- config


def merge_dicts(base: dict, update: dict) -> dict:
    """Nested dict `base` with `update`'s leaves written over it (both left unchanged)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_config(ckpt: dict, path: Path, config_file: str | None, overrides: list[str]) -> Config:
    """--config FILE [overrides], or the checkpoint's own config with the overrides on top; must fit the nets."""
    if config_file is not None:
        cfg = load_config(config_file, overrides)
    else:
        data = ckpt["config"]
        for text in overrides:
            data = merge_dicts(data, parse_override(text))
        cfg = config_from_dict(data, origin=f"the config saved in {path} with the command-line overrides")
    ck.check_compatible(ckpt, cfg, path)
    return cfg


# ----------------------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(pipe: Pipeline, src_image: torch.Tensor, src_keypoints: torch.Tensor, src_parsing: torch.Tensor,
             tgt_keypoints: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One source (3,H,W), (18,2), (K,H,W) and N target poses (N,18,2) -> frames (N,H,W,3) uint8 and the
    predicted target parsing pictures (N,H,W,3) uint8 (CIHP palette)."""
    frames, parsings = [], []
    for start in tqdm(range(0, len(tgt_keypoints), batch_size), desc="infer", dynamic_ncols=True, leave=False):
        tgt = tgt_keypoints[start : start + batch_size]  # (B,18,2)
        b = tgt.shape[0]
        out = pipe.render({"src_image": src_image[None].expand(b, -1, -1, -1),  # (B,3,H,W)
                           "src_parsing": src_parsing[None].expand(b, -1, -1, -1),  # (B,K,H,W)
                           "src_keypoints": src_keypoints[None].expand(b, -1, -1), "tgt_keypoints": tgt})
        frames.append(to_uint8(out.image))
        parsings.append(parsing_picture(out.logits))
    return np.concatenate(frames), np.concatenate(parsings)


def write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    pictures = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps),
                         loop=0)


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """mp4v through OpenCV, into a temporary file that is read back before the rename: the writer reports no
    write errors (a full disk gives a short file), so the frame count is the check."""
    h, w = frames.shape[1:3]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise InferenceError(f"{path}: this OpenCV build cannot write mp4v video; use --gif")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        reader = cv2.VideoCapture(str(tmp))
        count = 0
        while reader.grab():
            count += 1
        reader.release()
        if count != len(frames):
            raise WriteError(f"cannot write {path}: the video holds {count} of {len(frames)} frames (disk full?)")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a joint-stage checkpoint (step-*.pt)")
    p.add_argument("--config", default=None, help="YAML config (default: the one saved in the checkpoint)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--source", required=True, help="source person image, or any photo of one person")
    p.add_argument("--source-pose", default=None,
                   help="its pose: CSV[:NAME], OpenPose JSON or [y, x] list JSON (default: estimated, --keypoints)")
    p.add_argument("--source-parsing", default=None,
                   help="its parsing map: single-channel PNG of CIHP labels (default: estimated, --parser)")
    p.add_argument("--target-poses", required=True, help="CSV[:NAME], a JSON file or a folder of JSON files")
    p.add_argument("--target-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="the frame the target poses are given in (default: the model's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gif", action="store_true", help="also write sequence.gif")
    p.add_argument("--mp4", action="store_true", help="also write sequence.mp4")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--resize", action="store_true", help="fit a source image of another size into the model's")
    p.add_argument("--pad", choices=("border", "white"), default="border", help="padding colour for --resize")
    p.add_argument("--keypoints", choices=KEYPOINT_BACKENDS, default="openpose",
                   help="estimator of the source keypoints when --source-pose is not given")
    p.add_argument("--keypoint-weights", default="published",
                   help="OpenPose's weights: 'published' (torch hub cache), a path, or 'random' (offline tests only)")
    p.add_argument("--parser", choices=("auto", "schp", "spatn"), default="auto",
                   help="estimator of the source parsing when --source-parsing is not given (auto: the checkpoint's "
                        "SPATN* when it has one, else SCHP)")
    p.add_argument("--parser-weights", default="published",
                   help="SCHP's weights: 'published' (torch hub cache), a path, or 'random' (offline tests only)")
    p.add_argument("--save-inputs", default=None, metavar="DIR",
                   help="write the estimated source inputs (framed photo, keypoint CSV, parsing PNG, a picture) here")
    p.add_argument("--parsing", action="store_true", help="also write the predicted target parsing maps")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="target poses per forward pass")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


def prepare_source(args: argparse.Namespace, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The source image (H,W,3), keypoints (18,2) and CIHP parsing labels (H,W) or None, in the model's frame,
    from an image with its pose (--source-pose)."""
    frame = tuple(cfg.data.image_size)
    source = Path(args.source)
    image = read_image(source)
    name, keypoints = read_source_pose(args.source_pose, source)
    labels = read_source_parsing(args, image.shape[:2])
    size = image.shape[:2]
    if size != frame:
        if not args.resize:
            raise InferenceError(f"image {source}: {size[0]}x{size[1]} (HxW), but the model takes {frame[0]}x"
                                 f"{frame[1]}; resize it, or pass --resize to fit it in (aspect kept, padded)")
        fit = fit_into(size, frame)
        pad = border_colour(image) if args.pad == "border" else np.full(3, 255, np.uint8)
        image, keypoints = fit_image(image, fit, frame, pad), fit_keypoints(keypoints, fit)
        labels = None if labels is None else fit_labels(labels, fit, frame)
    check_pose(keypoints, name, *frame, margin=cfg.data.keypoint_margin)
    return image, keypoints, labels


def read_source_parsing(args: argparse.Namespace, size: tuple[int, int]) -> np.ndarray | None:
    """--source-parsing's CIHP labels (h,w), which must have the source image's size, or None."""
    if args.source_parsing is None:
        return None
    labels = read_cihp_labels(Path(args.source_parsing))
    if labels.shape != size:
        raise InferenceError(f"parsing map {args.source_parsing}: {labels.shape[0]}x{labels.shape[1]}, but the "
                             f"source image {args.source} is {size[0]}x{size[1]}")
    return labels


def parser_choice(args: argparse.Namespace, cfg: Config) -> str | None:
    """Which network parses the source: None (--source-parsing is given), "spatn" (SPATN*) or "schp"."""
    if args.source_parsing is not None:
        return None
    star = cfg.model.spatn.input == "image"
    if args.parser == "spatn" and not star:
        raise InferenceError("--parser spatn: this checkpoint's SPATN reads the source parsing "
                             "(model.spatn.input=parsing), it cannot predict it; use --parser schp")
    return "spatn" if args.parser == "spatn" or (args.parser == "auto" and star) else "schp"


def source_inputs(args: argparse.Namespace, cfg: Config, parser: str | None) -> PhotoInputs:
    """The source in the model's frame with what it was not given estimated: from a photo (no --source-pose: the
    keypoints estimated, the person framed) or from an image with its pose; the parsing by SCHP when `parser` is
    "schp" (SPATN* runs later, with the pipeline)."""
    if args.source_pose is None:
        frame, path = tuple(cfg.data.image_size), Path(args.source)
        photo = read_photo(path, frame)  # the cheap checks before any network is built
        given = read_source_parsing(args, photo.shape[:2])
        estimator = keypoint_estimator(args.keypoints, args.keypoint_weights, args.device)
        schp = schp_parser(args.parser_weights, args.device) if parser == "schp" else None
        inputs = photo_inputs(photo, path, frame, estimator, schp, cfg.data.keypoint_margin)
        if given is not None:
            inputs.labels = inputs.framing.labels(given)
        return inputs
    image, keypoints, labels = prepare_source(args, cfg)
    schp = schp_parser(args.parser_weights, args.device) if parser == "schp" else None
    inputs = PhotoInputs(image, keypoints, labels, framing=None)
    if schp is not None:
        inputs.labels = schp(image)
        inputs.notes.append(f"parsing: SCHP LIP, weights {schp.weights_source}")
        inputs.random = schp.random
    return inputs


def prepare_targets(args: argparse.Namespace, cfg: Config) -> np.ndarray:
    """(N,18,2) float32 target keypoints in the model's frame, each checked."""
    frame = tuple(cfg.data.image_size)
    poses = read_poses(args.target_poses)
    fit = fit_into(tuple(args.target_size), frame) if args.target_size else None
    out = []
    for name, keypoints in poses:
        keypoints = fit_keypoints(keypoints, fit) if fit is not None else keypoints.astype(np.float32)
        check_pose(keypoints, name, *frame, margin=cfg.data.keypoint_margin)
        out.append(keypoints)
    return np.stack(out)


def source_parsing(pipe: Pipeline, src_image: torch.Tensor, src_kp: torch.Tensor, labels: np.ndarray | None,
                   cfg: Config) -> torch.Tensor:
    """(K,H,W) one-hot source parsing: the CIHP labels merged, or SPATN*'s own prediction when there are none."""
    if labels is None:
        own = pipe.own_parsing(src_image[None], pipe.pose_encoder(src_kp[None]))  # (1,H,W)
        return one_hot(own, pipe.num_classes)[0]
    merged = merge_labels(labels, label_merge(cfg)).astype(np.uint8)
    return one_hot(torch.from_numpy(merged).to(src_image.device), pipe.num_classes)


def write_outputs(args: argparse.Namespace, out: Path, frames: np.ndarray, parsings: np.ndarray,
                  src_parsing: torch.Tensor, notes: list[str]) -> None:
    """Frames (and parsing pictures, GIF, mp4) into `out`; a notes file naming the estimators when there are any."""
    for i, frame in enumerate(frames):
        write_image(out / f"frame_{i:04d}.png", frame)
        if args.parsing:
            write_image(out / f"parsing_{i:04d}.png", parsings[i])
    if args.parsing:
        write_image(out / "source_parsing.png", parsing_picture(src_parsing[None])[0])
    if args.gif:
        write_gif(frames, out / "sequence.gif", args.fps)
    if args.mp4:
        write_mp4(frames, out / "sequence.mp4", args.fps)
    if notes:
        write_text(out / "estimated.txt", "\n".join(notes) + "\n")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.fps <= 0:
        raise InferenceError(f"--fps {args.fps}: must be positive")
    ckpt_path = Path(args.checkpoint)
    ckpt = ck.load_checkpoint(ckpt_path)
    cfg = resolve_config(ckpt, ckpt_path, args.config, args.overrides)
    parser = parser_choice(args, cfg)
    out = ensure_writable_folder(Path(args.out))
    save = ensure_writable_folder(Path(args.save_inputs), "--save-inputs folder") if args.save_inputs else None
    tgt_keypoints = prepare_targets(args, cfg)  # cheap checks before the estimators run
    inputs = source_inputs(args, cfg, parser)
    if save is not None:
        save_inputs(save, Path(args.source).stem, inputs)
        print(f"wrote the estimated source inputs to {save}")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # new poses have no precomputed flow: the flow module computes it (from the checkpoint or model.flow.checkpoint)
    cfg.model.flow.source = "net"
    pipe = load_pipeline(cfg, ckpt, ckpt_path, device)
    src_image = from_uint8(inputs.image).to(device)  # (3,H,W)
    src_kp = torch.from_numpy(inputs.keypoints).to(device)  # (18,2)
    src_parsing = source_parsing(pipe, src_image, src_kp, inputs.labels, cfg)  # (K,H,W)
    if parser == "spatn":
        inputs.notes.append(f"parsing: the checkpoint's SPATN* ({ckpt_path})")
    frames, parsings = generate(pipe, src_image, src_kp, src_parsing, torch.from_numpy(tgt_keypoints).to(device),
                                args.batch_size or cfg.test.batch_size)
    if inputs.random:
        print("warning: randomly initialised estimator weights: every output is stamped as such", file=sys.stderr)
        frames = np.stack([stamp(f, "RANDOM WEIGHTS") for f in frames])
        inputs.notes.insert(0, "WARNING: made with randomly initialised weights; the estimates mean nothing")
    write_outputs(args, out, frames, parsings, src_parsing, inputs.notes)
    print(f"wrote {len(frames)} frames to {out}")
    return out


if __name__ == "__main__":
    run_main(main)
