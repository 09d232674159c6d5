"""The top of every entry point: known bad input -> one `error:` line and exit code 2, bugs -> a traceback.

    if __name__ == "__main__":
        run_main(main)

Known errors are the project's `InputError`s (their messages name the file, line or key), `OSError` (a missing
file, a read-only folder, a full disk: the message names the path) and `FloatingPointError` (a run stopped on a
non-finite loss). Anything else is a bug and keeps its traceback. `SPGNET_DEBUG=1` shows the traceback of known
errors too.

Signals: Ctrl-C (SIGINT) and SIGTERM (`kill`, a scheduler's preemption) unwind the program from where it is, as
Python's KeyboardInterrupt does, so that every atomic write in flight removes its temporary file; then one line
says what was kept and how to continue (the entry point's `interrupted` text, or the `Interrupted`'s own), and the
process exits with 128 + the signal number: 130 for SIGINT, 143 for SIGTERM. train.py stops its loop more gently
(training.loop.StopRequest: the step in flight completes and is checkpointed) and raises `Interrupted` after.

An error raised in a DataLoader worker reaches the main process re-raised by torch as the same type, but with
the worker's whole traceback as its message ("Caught DatasetError in DataLoader worker process 0. Original
Traceback ..."); the line printed is the original message only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable

from tqdm import tqdm

from utils.errors import InputError

KNOWN_ERRORS = (InputError, OSError, FloatingPointError)
EXIT_BAD_INPUT = 2
SIGNAL_NAMES = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


class Interrupted(KeyboardInterrupt):
    """A program stopped by a signal. Its message, when it has one, says what was kept and how to continue; its
    exit code is 128 + `signum`. A KeyboardInterrupt, so that DataLoader workers (which swallow those) and every
    `finally` clean up as for Ctrl-C."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


def raise_interrupted(signum: int, frame: object) -> None:
    """Signal handler: unwind the program as Ctrl-C does."""
    raise Interrupted(signum=signum)


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


def print_last_line(text: str) -> None:
    """Write `text` to stderr as the last line: the open progress bars are closed first (an exception leaves a
    loop's bar open, and tqdm would draw it again below the line, at the next refresh or at exit)."""
    for bar in list(tqdm._instances):
        bar.close()
    tqdm.write(text, file=sys.stderr)


INTERRUPTED = "every file written is complete, none is half-written; run the same command again"


def run_main(main: Callable[[], object], interrupted: str = INTERRUPTED) -> None:
    """Call `main()`. A known error prints `error_line` as the last line of stderr and exits with code 2. SIGINT and
    SIGTERM print one line, "<signal>: <what was kept and how to continue>" (`interrupted`, unless the Interrupted
    raised brings its own), and exit with 128 + the signal number."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # an ignored SIGTERM (nohup-like launchers) stays so
        signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        main()
    except KNOWN_ERRORS as err:
        if os.environ.get("SPGNET_DEBUG"):
            raise
        print_last_line(error_line(err))
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt as err:
        if os.environ.get("SPGNET_DEBUG"):
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        print_last_line(f"{SIGNAL_NAMES.get(signum, f'signal {signum}')}: {str(err) or interrupted}")
        sys.exit(128 + signum)
