"""The one way the project writes a file: complete or not at all, and an OSError naming the path otherwise;
and the one way it reads an image: decoded completely, or an error naming the file.

Every writer goes through `atomic_write`: the content is written to a temporary file in the target's folder
(`.NAME.tmp-PID.SUFFIX`, so a renamed file never crosses a file system), flushed, optionally fsynced, then
renamed over the target with os.replace. A kill, a full disk or a file-size limit therefore leaves either the
previous file or no file, never a partial one, and the temporary file is removed on any error (a SIGKILL can
still leave one behind: `remove_orphans` deletes those at the next start). Files that belong together
(`write_files`: a result and its tables) are all written to temporary files before the first is renamed, so a
failure while writing leaves the previous set, never a new file beside an old one.

fsync: checkpoints, configs and metrics are fsynced (a power loss must not leave a renamed but empty file);
generated images are not by default (one fsync per image would dominate test.py on a slow disk, and
`test.py --skip-existing` decodes every kept image anyway, so an image lost to a power cut is regenerated).

Any failure -- a read-only or missing folder, a full disk (ENOSPC), a file-size limit (EFBIG), an encoder
that refuses the picture -- raises `WriteError`, an OSError whose message names the path.

Reading (`read_image`): libjpeg decodes a truncated JPEG without an error (the missing rows come out grey,
with only a warning on stderr), so a JPEG must end with its EOI marker and a PNG with its IEND chunk before
it is decoded. The check reads the bytes the decoder needs anyway and looks at the last kilobyte.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from utils.errors import InputError

# .NAME.tmp-PID or .NAME.tmp-PID.SUFFIX (the suffix keeps writers that choose a format by extension working)
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(\.[^.]+)?$")
_JPEG, _PNG = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
_TAIL = 1024  # bytes after the end marker that are tolerated (some cameras pad files)


class ImageReadError(InputError):
    """An image file that is missing, unreadable, truncated or not an image; the message starts with its path."""


class WriteError(OSError):
    """A file that could not be written completely; the message names it. Constructed from one message (as
    every exception must be, so that DataLoader workers can re-raise it)."""


def _failure(path: Path, err: BaseException) -> WriteError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    out = WriteError(f"cannot write {path}: {reason}")
    out.errno = getattr(err, "errno", None)
    return out


def temporary_path(path: str | Path) -> Path:
    """Where `path` is written before the rename: `.NAME.tmp-PID.SUFFIX` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True, require_data: bool = True) -> Iterator[Path]:
    """Yield a temporary path for a writer that takes a file name (a video writer, np.savez, PIL); after the
    block the file must exist (and be non-empty when require_data: writers that fail quietly leave nothing or
    an empty file) and is renamed over `path`. Raises WriteError naming `path`."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.is_file() or (require_data and tmp.stat().st_size == 0):
            raise WriteError(f"cannot write {path}: the writer produced no data")
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        raise _failure(path, err) from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _write_temporary(tmp: Path, path: Path, write: Callable[[IO[bytes]], None], fsync: bool) -> None:
    """Call `write(file)` on the binary file `tmp`, flushed and optionally fsynced; WriteError naming `path`."""
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as err:  # ENOSPC/EFBIG surface at write, flush or close
        raise _failure(path, err) from err


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], fsync: bool = True) -> Path:
    """Call `write(file)` on a temporary binary file, then rename it over `path` (the one mechanism)."""
    path = Path(path)
    with atomic_path(path, fsync=False, require_data=False) as tmp:
        _write_temporary(tmp, path, write, fsync)
    return path


def write_files(contents: Mapping[str | Path, bytes], fsync: bool = True) -> list[Path]:
    """Write several files that belong together (a result and its tables): every one to its temporary file
    first, and only when all are complete rename them over their targets, one after the other. A failure while
    writing (a full disk, a size limit) therefore leaves every previous file as it was and no temporary file;
    what follows is renames within the targets' folders. Raises WriteError naming the file."""
    staged: list[tuple[Path, Path]] = []  # (temporary, target)
    try:
        for target, data in contents.items():
            staged.append((temporary_path(target), Path(target)))
            _write_temporary(staged[-1][0], staged[-1][1], lambda f, data=data: f.write(data), fsync)
        for tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as err:
                raise _failure(target, err) from err
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return [target for _, target in staged]


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), fsync)


def write_text(path: str | Path, text: str, fsync: bool = True) -> Path:
    """UTF-8, '\\n' line ends whatever the platform."""
    return write_bytes(path, text.encode("utf-8"), fsync)


def json_text(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent) + "\n"


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json_text(obj, indent))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV of `header` and `rows` (csv module quoting, '\\n' line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV of `header` and `rows` (csv module quoting, '\\n' line ends)."""
    return write_text(path, csv_text(header, rows))


def encode_image(path: str | Path, image: np.ndarray, params: Sequence[int] = ()) -> bytes:
    """(H,W,3) BGR or (H,W) uint8 -> the bytes of the format `path`'s extension names (cv2.imencode)."""
    path = Path(path)
    if image.dtype != np.uint8 and not (image.dtype == np.uint16 and path.suffix.lower() in (".png", ".tif")):
        # cv2 would convert other depths to uint8 with only a warning: a silently wrong picture
        raise WriteError(f"cannot write {path}: cannot encode {image.dtype} pixels (uint8 expected)")
    try:
        ok, buffer = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image), list(params))
    except cv2.error as err:
        reason = str(err).strip().splitlines()[-1]
        raise WriteError(f"cannot write {path}: cannot encode a {image.dtype} {image.shape} picture as "
                         f"{path.suffix or '.png'} ({reason})") from err
    if not ok:
        raise WriteError(f"cannot write {path}: cannot encode a {image.dtype} {image.shape} picture")
    return buffer.tobytes()


def write_image(path: str | Path, image: np.ndarray, rgb: bool = True, fsync: bool = False,
                params: Sequence[int] = ()) -> Path:
    """Write an (H,W,3) uint8 picture (RGB unless rgb=False) or an (H,W) label map, atomically."""
    if rgb and image.ndim == 3:
        image = image[..., ::-1]  # cv2 encodes BGR
    return write_bytes(path, encode_image(path, image, params), fsync)


def append_text(path: str | Path, text: str) -> None:
    """Append to a log (log.txt, metrics.jsonl): not atomic -- a log grows line by line -- but flushed and
    checked, so a full disk is an OSError naming the file instead of a silently short log."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
    except OSError as err:
        raise _failure(path, err) from err


def ensure_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` (and its parents) and prove a file can be created in it, before any work starts.
    Raises WriteError naming the folder (read-only, not a folder, no space for even an empty file)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(folder / ".write-test")
        with open(probe, "wb") as f:
            f.write(b"\0")
            f.flush()
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        out = WriteError(f"{what} {folder} is not writable: {reason}")
        out.errno = err.errno
        raise out from err
    return folder


def process_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: str | Path) -> int:
    """Delete the temporary files (`.NAME.tmp-PID...`) that a killed writer left in `folder`; returns how many.
    Files of a process still running on this host are kept (it may be writing them right now)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.iterdir():
        m = TEMPORARY.match(p.name)
        if m and p.is_file() and not process_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def truncation(data: np.ndarray | bytes) -> str | None:
    """Why the encoded JPEG/PNG `data` is incomplete (its end marker is missing), or None when it is complete
    or of another format (left to the decoder). Inside JPEG entropy-coded data 0xFF is always followed by 0x00
    or a restart marker, so the EOI bytes FF D9 occur only as the real end."""
    head, tail = bytes(data[:8]), bytes(data[-_TAIL:])
    if head[:2] == _JPEG and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head == _PNG and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode a complete image file with cv2 (`flags` as cv2.imread: BGR for IMREAD_COLOR). ImageReadError
    naming the file when it is missing, unreadable, truncated or not decodable."""
    image = cv2.imdecode(read_image_bytes(path), flags)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt file or unknown format)")
    return image


def read_image_bytes(path: str | Path) -> np.ndarray:
    """The bytes (uint8 array) of a complete image file, for any decoder; ImageReadError naming the file when
    it is missing, unreadable, empty or truncated."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read: {err.strerror or err}") from err
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    reason = truncation(data)
    if reason is not None:
        raise ImageReadError(f"{path}: {reason}; the file is incomplete, download or copy it again")
    return data
