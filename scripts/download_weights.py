"""Fetch the pretrained backbones into the torch hub cache, with checksums.

    python scripts/download_weights.py vgg19                 # the perceptual loss
    python scripts/download_weights.py inception_torchvision alexnet
    python scripts/download_weights.py --all --dir /somewhere/checkpoints

Names: vgg19, inception_torchvision (FID, pose-transfer protocol), inception_fid (FID, pytorch-fid protocol),
alexnet (LPIPS), openpose_body_coco (PCKh's keypoint estimator, body_pose_model.pth), schp_lip (the human parser
of your own photos, exp-schp-201908261155-lip.pth). Files land in
$TORCH_HOME/hub/checkpoints (torch.hub.get_dir()/checkpoints, where utils.weights looks) under the names
torchvision, pytorch-fid and pytorch-openpose use, so those libraries find them too.
Each download goes to a temporary file first and is verified against the SHA-256 prefix its official file name
carries (torch.hub's check; for body_pose_model.pth, whose name carries none, the full published SHA-256); a
mismatching or interrupted download is removed. SCHP's authors publish no checksum for exp-schp-201908261155-lip.pth:
that file is checked by loading it as SCHP's state dict (every published key with its shape) instead, which catches
a truncated file or a web page, not a file altered with its shapes kept. A file already present is verified, not
fetched again. Every name is tried; when any failed, the last line says how many and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from models.schp import build_schp
from utils.cli import run_main
from utils.errors import InputError
from utils.weights import KNOWN_WEIGHTS, cache_dir, verify_hash

# checkpoints with no published digest: loading the file as its network is the check
LOAD_CHECKS = {"schp_lip": build_schp}


class DownloadError(OSError):
    """A download that failed or a file whose checksum does not match; the message names the checkpoint."""


def fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """url -> dest through a temporary file in dest's folder (renamed only when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_file(name: str, path: Path) -> str | None:
    """None when the file is the checkpoint (its SHA-256 prefix, or, with no published digest, its state dict
    loads into the network), else why not."""
    info = KNOWN_WEIGHTS[name]
    if info.sha256_prefix is not None:
        ok = verify_hash(name, path)
        return None if ok else f"checksum mismatch (SHA-256 should start with {info.sha256_prefix})"
    try:
        LOAD_CHECKS[name](path)
    except InputError as err:
        return f"not the network's state dict ({err}; no checksum is published to compare with)"
    return None


def download(name: str, directory: Path) -> Path:
    """Fetch (unless present) and verify one known checkpoint; DownloadError with a clear message otherwise."""
    info = KNOWN_WEIGHTS[name]
    dest = directory / info.filename
    what = "checksum" if info.sha256_prefix is not None else "state dict (no published checksum)"
    if dest.is_file():
        problem = check_file(name, dest)
        if problem is None:
            print(f"{name}: {dest} present, {what} ok")
            return dest
        raise DownloadError(f"{name}: {dest} exists but {problem}; delete it and run again")
    print(f"{name}: fetching {info.url} -> {dest}")
    try:
        fetch(info.url, dest)
    except (OSError, ValueError) as err:  # URLError/HTTPError/timeouts are OSErrors
        raise DownloadError(f"{name}: download of {info.url} failed ({type(err).__name__}: {err}). Without network "
                            f"access, copy {info.filename} into {directory} by other means") from err
    problem = check_file(name, dest)
    if problem is not None:
        dest.unlink(missing_ok=True)
        raise DownloadError(f"{name}: {problem} for {info.url}; the download was removed")
    print(f"{name}: {what} ok")
    return dest


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"any of: {', '.join(KNOWN_WEIGHTS)}")
    p.add_argument("--all", action="store_true", help="every known checkpoint")
    p.add_argument("--dir", type=Path, default=None, help="target folder (default: torch.hub.get_dir()/checkpoints)")
    args = p.parse_args(argv)
    names = list(KNOWN_WEIGHTS) if args.all else args.names
    if not names:
        p.error("name at least one checkpoint, or pass --all")
    unknown = [n for n in names if n not in KNOWN_WEIGHTS]
    if unknown:
        p.error(f"unknown name(s) {unknown}; known: {', '.join(KNOWN_WEIGHTS)}")
    directory = args.dir or cache_dir()
    done, failed = [], []
    for name in names:
        try:
            done.append(download(name, directory))
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(name)
    if failed:
        raise DownloadError(f"{len(failed)} of {len(names)} downloads failed: {', '.join(failed)}")
    return done


if __name__ == "__main__":
    run_main(main)
