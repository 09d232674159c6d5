"""Images as the published evaluation scripts see them: the decoder, the order they list a folder in, how many
images whole batches keep, and the DeepFashion crop and padding (metrics/protocols.py says which script does what).

- Readers: "cv2" (cv2.imread, BGR -> RGB; our clean protocol) or "pil" (Pillow, the decoder behind the
  imageio.imread and skimage.io.imread calls of PATN's, the authors' and GFLA's scripts).
- Orders: "sorted" (by file name: the scripts' get_image_list sorts), "glob" (pathlib's glob('*.jpg') and then
  glob('*.png'), each in directory order, os.scandir's; the FID code of the authors and of GFLA) and "listdir"
  (os.listdir's order, .jpg files only; the authors' Market LPIPS).
- Whole batches: the scripts run `n // 64` batches of 64 and never the remainder (LPIPS first shrinks the batch to
  n when n < 64; the authors' FID does not, and gets no features at all).
- DeepFashion sizes: the authors' release generates 256x256 and crops columns 40..215 before FID and LPIPS (PIL
  `crop((40, 0, 216, 256))`, saved under the same name, so a .jpg is re-encoded with Pillow's defaults: quality
  75, 4:2:0);
  PATN pads its 256x176 images to 256x256 with 40 white columns each side before SSIM (`addBounding`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils import io as utils_io
from utils.errors import InputError
from utils.io import ImageReadError

READERS = ("cv2", "pil")
ORDERS = ("sorted", "glob", "listdir")
FASHION_SQUARE = (256, 256)  # the authors' DeepFashion outputs
FASHION_NARROW = (256, 176)  # PATN's / GFLA's DeepFashion images
CROP_COLUMNS = (40, 216)  # PIL box (40, 0, 216, 256): columns 40..215
PAD_COLUMNS = 40


def read_image(path: str | os.PathLike, reader: str = "cv2", size: tuple[int, int] | None = None) -> np.ndarray:
    """(H,W,3) uint8 RGB of a complete image file; ImageReadError naming the file when it is missing, truncated,
    undecodable or not of `size` (H, W)."""
    if reader == "cv2":
        image = np.ascontiguousarray(utils_io.read_image(path, cv2.IMREAD_COLOR)[..., ::-1])
    elif reader == "pil":
        data = utils_io.read_image_bytes(path)
        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:
                image = np.array(im.convert("RGB"))  # a writable copy
        except (OSError, ValueError) as err:
            raise ImageReadError(f"{path}: not a readable image ({err})") from err
    else:
        raise ValueError(f"unknown image reader {reader!r}; known: {', '.join(READERS)}")
    if size is not None and image.shape[:2] != tuple(size):
        raise ImageReadError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW), expected {size[0]}x{size[1]}")
    return image


def script_listing(folder: str | os.PathLike, order: str) -> list[str]:
    """The file names a script reads from `folder`, in the order it reads them."""
    folder = Path(folder)
    if order == "sorted":
        return sorted(e.name for e in os.scandir(folder) if e.name.endswith((".jpg", ".png")) and e.is_file())
    if order == "glob":
        names = [e.name for e in os.scandir(folder) if e.is_file()]
        return [n for n in names if n.endswith(".jpg")] + [n for n in names if n.endswith(".png")]
    if order == "listdir":
        return [n for n in os.listdir(folder) if n.endswith(".jpg")]
    raise ValueError(f"unknown file order {order!r}; known: {', '.join(ORDERS)}")


def order_of(names: list[str], folder: str | os.PathLike, order: str) -> np.ndarray:
    """Positions of `names` (files in `folder`) when read in the script's order: (N,) indices into names.

    Only the given names take part (the generated folder is expected to hold the pair images alone)."""
    if order == "sorted":
        return np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
    rank = {n: i for i, n in enumerate(script_listing(folder, order))}
    absent = [n for n in names if n not in rank]
    if absent:
        reads = ".jpg files only" if order == "listdir" else ".jpg and .png files only"
        raise InputError(f"{folder}: {absent[0]} is not read by the script's {order!r} listing ({reads})")
    return np.array(sorted(range(len(names)), key=lambda i: rank[names[i]]), dtype=np.int64)


def whole_batches(n: int, batch: int | None, shrink: bool) -> int:
    """How many of n images the script's `n // batch` whole batches use; batch None: all of them.

    shrink: the script first sets batch = n when batch > n (LPIPS, GFLA's FID), so n < batch keeps all n."""
    if batch is None or (shrink and batch > n):
        return n
    return n // batch * batch


def kept_mask(names: list[str], folder: str | os.PathLike, order: str, batch: int | None,
              shrink: bool) -> np.ndarray:
    """(N,) bool: which of the named files the script's whole batches read, in its order."""
    positions = order_of(names, folder, order)
    kept = np.zeros(len(names), dtype=bool)
    kept[positions[: whole_batches(len(names), batch, shrink)]] = True
    return kept


def crop_square_fashion(image: np.ndarray) -> np.ndarray:
    """A 256x256 (H,W,3) image -> its columns 40..215 (256x176), the box of the authors' crop_img."""
    if image.shape[:2] != FASHION_SQUARE:
        raise ValueError(f"crop_square_fashion: expected a 256x256 image, got {image.shape[0]}x{image.shape[1]}")
    return np.ascontiguousarray(image[:, CROP_COLUMNS[0] : CROP_COLUMNS[1]])


def write_release_crops(folder: str | os.PathLike, names: list[str], crop_folder: str | os.PathLike) -> Path:
    """The authors' crop_img for the named files: in os.listdir order of `folder`, each image opened with Pillow,
    cropped to (40, 0, 216, 256) and saved under its own name in crop_folder with Pillow's defaults (a .jpg is
    re-encoded at quality 75), atomically (utils.io). Their FID then lists crop_folder, so its directory order,
    that of creation, is the one that counts."""
    folder, crop_folder = Path(folder), utils_io.ensure_writable_folder(crop_folder, "release crop folder")
    wanted = set(names)
    for name in os.listdir(folder):
        if name not in wanted:
            continue
        data = utils_io.read_image_bytes(folder / name)
        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:
                if (im.height, im.width) != FASHION_SQUARE:
                    raise ImageReadError(f"{folder / name}: image is {im.height}x{im.width}, the release crops "
                                         f"256x256")
                buffer = io.BytesIO()
                # no options, as crop_img's imgcrop.save(path): Pillow picks the format from the extension
                im.crop((CROP_COLUMNS[0], 0, CROP_COLUMNS[1], FASHION_SQUARE[0])).save(
                    buffer, format=Image.registered_extensions()[Path(name).suffix.lower()])
        except OSError as err:
            raise ImageReadError(f"{folder / name}: not a readable image ({err})") from err
        utils_io.write_bytes(crop_folder / name, buffer.getvalue(), fsync=False)
    return crop_folder


def pad_narrow_fashion(images: torch.Tensor) -> torch.Tensor:
    """PATN's addBounding: (B,C,256,176) -> (B,C,256,256) with 40 columns of 255 on each side."""
    if tuple(images.shape[-2:]) != FASHION_NARROW:
        raise ValueError(f"pad_narrow_fashion: expected 256x176 images, got {images.shape[-2]}x{images.shape[-1]}")
    return F.pad(images, (PAD_COLUMNS, PAD_COLUMNS), value=255)
