"""Generate target images for a test pair list: SPATN predicts the target parsing, SPGNet renders with it.

    python test.py --config configs/deepfashion.yaml --checkpoint runs/00001-deepfashion/checkpoints/step-00200000.pt
    python test.py ... --out results/df --pairs my-pairs.csv --grids --parsing --skip-existing
    python test.py ... --parsing-dir datasets/deepfashion_256/pred_seg     (the release's test: no SPATN)

Writes one image per pair, `<from-stem>___<to-stem>.png`, into --out (default: <run folder>/test-<step>/images).
`--format jpg --names release --quantise truncate` writes the files the authors' test script writes (cv2 JPEG,
quality 95, `<from-stem>_<to-stem>.jpg`, ((x + 1) * 127.5) truncated to uint8), which their metric scripts and
`evaluate.py --protocol release` read; a PNG with `--quantise truncate` holds exactly the uint8 image their
test-time SSIM scored (`--format png+jpg` writes both). `--grids` adds side-by-side pictures
(source | target pose | predicted parsing | generated | ground truth) and `--parsing` the target parsing the
generator used (SPATN's prediction, or --parsing-dir's): label maps in parsing_labels/ (single-channel uint8 PNGs
in the dataset's parsing format, the label ids of data.label_merge: CIHP ids under cihp20; always PNG, since a JPEG
would blur the labels, named as --names says) and the same maps as colour pictures in parsing/.
`--parsing-dir DIR` reads each pair's target parsing from DIR/<from-stem>___<to-stem>.png (precomputed, e.g. the
release's pred_seg/) instead of running SPATN; the checkpoint then needs no SPATN.
Then: python evaluate.py --generated <out>/images --dataset-config <config> [--pred-parsing <out>/parsing_labels].

Every file is written atomically (utils.io): a killed run leaves complete images only, and `--skip-existing`
keeps a pair only when each of its requested outputs decodes completely at the right size, so a rerun after a
kill regenerates exactly what is missing. The output folders are checked for writability before any work; a
write that fails (read-only folder, full disk) stops the run with an error naming the file and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from data.datasets import GENERATED_FORMATS, GENERATED_NAMES, generated_image_name
from data.loaders import build_dataset, build_loader
from data.visual import comparison_grid, parsing_picture, pose_picture, to_uint8
from models.pipeline import load_pipeline
from training.steps import to_device
from utils import checkpoint as ck
from utils.cli import non_negative_int, positive_int, run_main
from utils.config import ConfigError, load_config
from utils.host_memory import keep_freed_memory
from utils.io import ImageReadError, ensure_writable_folder, read_image, remove_orphans, write_image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="dataset/model YAML (the data paths are read from it)")
    p.add_argument("--checkpoint", required=True, help="a joint-stage checkpoint (step-*.pt)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.root=/data/df")
    p.add_argument("--out", default=None, help="output folder (default: <run>/test-<step>)")
    p.add_argument("--pairs", default=None, help="pairs CSV (from,to); default: the config's test pairs")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--workers", type=non_negative_int, default=None)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--grids", action="store_true", help="also write comparison grids")
    p.add_argument("--parsing", action="store_true",
                   help="also write the target parsing used: label maps (parsing_labels/), colour pictures (parsing/)")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip pairs whose requested outputs exist and decode completely at the right size")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N pairs")
    p.add_argument("--format", choices=(*GENERATED_FORMATS, "png+jpg"), default="png",
                   help="png (lossless), jpg (cv2, quality 95, as the authors' test script), or both")
    p.add_argument("--names", choices=GENERATED_NAMES, default="ours",
                   help="ours: <from>___<to>; release: <from>_<to>, the authors' test script's names")
    p.add_argument("--quantise", choices=("round", "truncate"), default="round",
                   help="(x+1)*127.5 to uint8: rounded, or truncated as the authors' test script")
    p.add_argument("--parsing-dir", default=None,
                   help="precomputed target parsing maps <from-stem>___<to-stem>.png (instead of SPATN)")
    return p.parse_intermixed_args(argv)  # overrides may stand before and after the options


JPEG_QUALITY = [cv2.IMWRITE_JPEG_QUALITY, 95]  # cv2's default: what the authors' cv2.imwrite(name.jpg, img) writes


def pair_files(src: str, tgt: str, outputs: dict[str, tuple[int, ...]], names: str, formats: list[str]
               ) -> list[tuple[str, str, tuple[int, ...]]]:
    """(folder, file name, shape) of every file written for a pair: the generated image in each format, the grid
    and the parsing picture in the first, the label map as PNG (a JPEG's artefacts would change its labels)."""
    per_folder = {"images": formats, "parsing_labels": ["png"]}
    return [(sub, generated_image_name(src, tgt, names, fmt), shape) for sub, shape in outputs.items()
            for fmt in per_folder.get(sub, formats[:1])]


def refuse_dataset_folder(out: Path, cfg) -> None:
    """Never write generated images into (or over) a folder of real images."""
    root = Path(cfg.data.root).resolve()
    d = cfg.data
    for sub in (split + suffix for split in (d.train_dir, d.test_dir) for suffix in ("", d.parsing_suffix,
                                                                                     d.flow_suffix)):
        real = (root / sub).resolve()
        if out == real or real in out.parents or out in real.parents or out == root:
            raise ConfigError(f"--out {out} is (inside) the dataset folder {real}: refusing to write there")


def complete(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether `path` is a complete image of `shape`, (H, W, 3) or a (H, W) label map: what --skip-existing may
    keep."""
    try:
        return read_image(path, cv2.IMREAD_COLOR if len(shape) == 3 else cv2.IMREAD_UNCHANGED).shape == shape
    except ImageReadError:
        return False


@torch.no_grad()
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        keep_freed_memory()  # each batch reuses the last one's freed buffers instead of page-faulting new ones
    ckpt_path = Path(args.checkpoint)
    ckpt = ck.load_checkpoint(ckpt_path)
    ck.check_compatible(ckpt, cfg, ckpt_path)

    out = Path(args.out) if args.out else ckpt_path.parent.parent / f"test-{ckpt['step']:08d}"
    out = out.resolve()
    refuse_dataset_folder(out, cfg)
    h, w = cfg.data.image_size
    # each requested output folder and the (H, W, 3) shape of its pictures (a grid has 5 columns, 2 px gaps), (H, W)
    # for the label maps
    outputs = {"images": (h, w, 3)}
    if args.grids:
        outputs["grids"] = (h, 5 * w + 4 * 2, 3)
    if args.parsing:
        outputs["parsing"] = (h, w, 3)
        outputs["parsing_labels"] = (h, w)
    for sub in outputs:
        ensure_writable_folder(out / sub)
        removed = remove_orphans(out / sub)
        if removed:
            print(f"note: removed {removed} temporary files left in {out / sub} by an interrupted run")
    images_dir = out / "images"
    formats = args.format.split("+")

    pipe = load_pipeline(cfg, ckpt, ckpt_path, device, with_spatn=args.parsing_dir is None)

    pairs = str(Path(args.pairs).resolve()) if args.pairs else None
    dataset = build_dataset(cfg, "test", with_flow=cfg.model.flow.source == "files", pairs_file=pairs,
                            pair_parsing_dir=args.parsing_dir)
    indices = list(range(len(dataset) if args.limit is None else min(args.limit, len(dataset))))
    wanted = len(indices)
    if args.skip_existing:
        indices = [i for i in indices if not all(complete(out / sub / name, shape) for sub, name, shape in
                                                  pair_files(*dataset.pairs[i], outputs, args.names, formats))]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = build_loader(subset, args.batch_size or cfg.test.batch_size,
                          cfg.data.num_workers if args.workers is None else args.workers,
                          pin_memory=device.type == "cuda")
    done = 0
    for batch in tqdm(loader, desc="test", dynamic_ncols=True):
        batch = to_device(batch, device, channels_last=False)
        rendered = pipe.render(batch)  # adds the pose maps to the batch when the loader shipped keypoints
        logits = rendered.logits
        generated = to_uint8(rendered.image, truncate=args.quantise == "truncate")
        grid_cols = None
        if args.grids:
            grid_cols = [to_uint8(batch["src_image"]), pose_picture(batch["tgt_pose"]), parsing_picture(logits),
                         generated, to_uint8(batch["tgt_image"])]
        colour_parsing = parsing_picture(logits) if args.parsing else None
        labels = logits.argmax(dim=1).to(torch.uint8).cpu().numpy() if args.parsing else None  # (B,H,W)
        for i, (src_name, tgt_name) in enumerate(zip(batch["src_name"], batch["tgt_name"])):
            for sub, name, _ in pair_files(src_name, tgt_name, outputs, args.names, formats):
                if sub == "images":
                    picture = generated[i]
                elif sub == "grids":
                    picture = comparison_grid([c[i : i + 1] for c in grid_cols])
                elif sub == "parsing":
                    picture = colour_parsing[i]
                else:
                    picture = labels[i]
                write_image(out / sub / name, picture, params=JPEG_QUALITY if name.endswith(".jpg") else ())
            done += 1  # every write above raised if it failed: this counts complete pairs only
    kept = wanted - len(indices)
    print(f"wrote {done} images to {images_dir}" + (f" ({kept} complete ones kept)" if kept else ""))
    return images_dir


if __name__ == "__main__":
    run_main(main)
