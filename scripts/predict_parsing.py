"""Parsing maps for Market-1501 from SPATN* (step 2 of the recipe in configs/market.yaml; paper sec. 4.1).

    python scripts/predict_parsing.py --checkpoint runs/<NNNNN>-spatn_star/checkpoints/step-<N>.pt \
        --config configs/market.yaml [data.root=...] [--split train|test|both] [--overwrite]

A human parser fails on Market's low-resolution images, so the paper trains SPATN* (source IMAGE + poses ->
parsing) on DeepFashion resized to 128x64 and lets it parse Market. For every image listed in the config's
annotation CSVs, SPATN* takes the image with its own pose as both the source and the target pose and predicts
its parsing, written as `<split>_parsing/<stem>.png` (single-channel uint8 CIHP label ids) under data.root: the
standard layout, so Market then trains with the same code as DeepFashion. Existing files are kept unless
--overwrite; images are read with their annotations directly, so the parsing folders need not exist.

Labels: the checkpoint's classes are written as CIHP ids. With an identity label merge (cihp20) these are the
CIHP labels themselves; when the checkpoint used the same merge as the Market config (e.g. cihp8), each merged
class is written as its smallest CIHP id, so that the dataset's merge of the file gives back exactly the
predicted class. Any other merge is refused (key data.label_merge).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.annotations import read_annotations
from data.parsing import NUM_CIHP, label_merge
from data.visual import from_uint8, read_image
from models.pipeline import load_pose_encoder, load_spatn, predict_own_parsing
from utils import checkpoint as ck
from utils.cli import non_negative_int, positive_int, run_main
from utils.config import Config, ConfigError, config_from_dict, load_config
from utils.io import (
    ImageReadError,
    ensure_writable_folder,
    write_image,
)


def check_spatn_star(ckpt: dict, spatn_cfg: Config, cfg: Config, path: Path) -> None:
    """Refuse anything but an SPATN* of the Market config's image size and a compatible label merge."""
    if "spatn" not in ckpt["models"]:
        raise ck.CheckpointError(f"{path} holds {', '.join(sorted(ckpt['models']))}, no SPATN*; train one with "
                                 "model.spatn.input=image (see configs/market.yaml)")
    if spatn_cfg.model.spatn.input != "image":
        raise ck.CheckpointError(
            f"{path}: key 'model.spatn.input' = {spatn_cfg.model.spatn.input!r}; predicting parsing maps needs "
            "SPATN* (model.spatn.input=image), which reads the source image instead of a parsing map")
    if tuple(spatn_cfg.data.image_size) != tuple(cfg.data.image_size):
        raise ck.CheckpointError(
            f"{path}: key 'data.image_size' = {list(spatn_cfg.data.image_size)}, but the config's images are "
            f"{list(cfg.data.image_size)}; train SPATN* on DeepFashion resized to the Market size")
    ours, theirs = label_merge(spatn_cfg), label_merge(cfg)
    if ours != list(range(NUM_CIHP)) and ours != theirs:
        raise ck.CheckpointError(
            f"{path}: key 'data.label_merge' = {spatn_cfg.data.label_merge!r} differs from the config's "
            f"{cfg.data.label_merge!r}; use an SPATN* trained with cihp20 or with the config's merge")
    if sorted(set(ours)) != list(range(max(ours) + 1)):
        raise ConfigError(f"{path}: key 'data.label_merge' = {ours}: some merged classes have no CIHP label")


def representative_ids(merge: list[int]) -> np.ndarray:
    """(K,) uint8: for each merged class the smallest CIHP id mapped onto it, so merging the file returns it."""
    table = np.zeros(max(merge) + 1, dtype=np.uint8)
    for cihp in reversed(range(len(merge))):
        table[merge[cihp]] = cihp
    return table


class AnnotatedImages(torch.utils.data.Dataset):
    """Images of one split with their keypoints, straight from the annotation CSV (no parsing files needed)."""

    def __init__(self, image_dir: Path, items: list[tuple[str, np.ndarray]], size: tuple[int, int]):
        self.image_dir, self.items, self.size = image_dir, items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, keypoints = self.items[index]
        path = self.image_dir / name
        image = read_image(path)
        if image.shape[:2] != self.size:
            raise ImageReadError(f"image {path}: {image.shape[0]}x{image.shape[1]}, but data.image_size is "
                                 f"{self.size[0]}x{self.size[1]}")
        return {"image": from_uint8(image), "keypoints": torch.from_numpy(keypoints.astype(np.float32)),
                "index": index}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an SPATN* checkpoint (model.spatn.input=image)")
    p.add_argument("--config", required=True, help="the Market config (data paths, image size, label merge)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of --config, e.g. data.root=...")
    p.add_argument("--split", choices=("train", "test", "both"), default="both")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="loader processes (default: data.num_workers)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace existing parsing maps")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    """Returns the number of maps written."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    ckpt_path = Path(args.checkpoint)
    ckpt = ck.load_checkpoint(ckpt_path)
    spatn_cfg = config_from_dict(ckpt["config"], origin=f"the config saved in {ckpt_path}")
    check_spatn_star(ckpt, spatn_cfg, cfg, ckpt_path)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spatn = load_spatn(spatn_cfg, ckpt).to(device)
    pose_encoder = load_pose_encoder(spatn_cfg, ckpt).to(device)  # the pose maps SPATN* was trained on
    to_cihp = torch.from_numpy(representative_ids(label_merge(spatn_cfg))).to(device)  # (K,)

    d, root, written = cfg.data, Path(cfg.data.root), 0
    for split in ("train", "test") if args.split == "both" else (args.split,):
        image_dir = d.train_dir if split == "train" else d.test_dir
        annotation = root / (d.annotation_train if split == "train" else d.annotation_test)
        keypoints = read_annotations(annotation, tuple(d.image_size))
        out_dir = root / (image_dir + d.parsing_suffix)
        ensure_writable_folder(out_dir)
        items = [(name, kp) for name, kp in keypoints.items()
                 if args.overwrite or not (out_dir / f"{Path(name).stem}.png").is_file()]
        print(f"{split}: {len(keypoints)} images in {annotation.name}, {len(items)} to parse into {out_dir}")
        dataset = AnnotatedImages(root / image_dir, items, tuple(d.image_size))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                             num_workers=d.num_workers if args.workers is None else args.workers,
                                             pin_memory=device.type == "cuda")
        for batch in tqdm(loader, desc=f"parsing {split}", dynamic_ncols=True):
            pose = pose_encoder(batch["keypoints"].to(device))  # (B,30,H,W)
            labels = to_cihp[predict_own_parsing(spatn, batch["image"].to(device), pose)]  # (B,H,W) CIHP ids
            for index, lab in zip(batch["index"].tolist(), labels.cpu().numpy()):
                # atomic: an interrupted run never leaves a truncated map that a rerun would skip
                write_image(out_dir / f"{Path(items[index][0]).stem}.png", lab.astype(np.uint8), rgb=False)
                written += 1
    print(f"wrote {written} parsing maps")
    return written


if __name__ == "__main__":
    run_main(main)
