"""The top of every entry point: known bad input -> one `error:` line and exit code 2, bugs -> a traceback.

    if __name__ == "__main__":
        run_main(main)

Known errors are the project's `InputError`s (their messages name the file, line or key), `OSError` (a missing
file, a read-only folder, a full disk: the message names the path) and `FloatingPointError` (a run stopped on a
non-finite loss). Anything else is a bug and keeps its traceback. `SPGNET_DEBUG=1` shows the traceback of known
errors too.

An error raised in a DataLoader worker reaches the main process re-raised by torch as the same type, but with
the worker's whole traceback as its message ("Caught DatasetError in DataLoader worker process 0. Original
Traceback ..."); the line printed is the original message only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from tqdm import tqdm

from utils.errors import InputError

KNOWN_ERRORS = (InputError, OSError, FloatingPointError)
EXIT_BAD_INPUT = 2


_WORKER = re.compile(r"^Caught (\w+) in .*?\nOriginal Traceback", re.DOTALL)  # torch's ExceptionWrapper.reraise


def positive_int(text: str) -> int:
    """argparse type of a count that must be >= 1 (batch size, limit): anything else is a usage error."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type of a count that may be 0 (loader worker processes)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def original_message(text: str) -> str:
    """The original message of an exception re-raised from a DataLoader worker (else `text` unchanged): what
    follows the last `module.Type: ` header of the formatted traceback."""
    found = _WORKER.match(text)
    if found is None:
        return text
    heads = list(re.finditer(rf"^[\w.]*\b{found.group(1)}: ", text, re.MULTILINE))
    return text[heads[-1].end():] if heads else text


def error_line(err: BaseException) -> str:
    """The one line printed for a known error."""
    return f"error: {original_message(str(err)).strip() or type(err).__name__}"


def run_main(main: Callable[[], object]) -> None:
    """Call `main()`; a known error closes the open progress bars, prints `error_line` as the last line of stderr and
    exits with code 2."""
    try:
        main()
    except KNOWN_ERRORS as err:
        if os.environ.get("SPGNET_DEBUG"):
            raise
        # close the open bars first (an exception leaves a loop's bar open, and tqdm would draw it again below
        # the line, at the next refresh or at exit): the error line is then the last line, on a line of its own
        for bar in list(tqdm._instances):
            bar.close()
        tqdm.write(error_line(err), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
