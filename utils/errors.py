"""The one base class of the project's known bad-input errors.

Every error whose message already names the file, line, key or value at fault derives from `InputError`
(config keys, annotation CSVs, datasets, checkpoints, pose files, weights, ...). An entry point catches
`InputError` and `OSError` once, at the top, and prints one `error:` line; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input the user can fix; the message names the file, line, key or value."""
