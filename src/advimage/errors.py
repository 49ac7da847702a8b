"""Typed errors of every advimage layer, and how the command line reports them.

Each error is a one-line message naming the problem and, where there is one, the file. The CLI
(:func:`advimage.cli.main`) prints ``advimage: error: <message>`` and exits with the error's
``exit_code``: **2** for a user error (bad option, bad or damaged input file, an output folder
that holds another configuration's results), **1** for an environment failure (read-only or
full disk, permission denied). ``-v`` adds the traceback.

The user-error classes also derive from :class:`ValueError`, so library callers that already
catch ``ValueError`` for bad input keep working.
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = [
    "USER_ERROR",
    "ENVIRONMENT_ERROR",
    "AdvimageError",
    "ConfigMismatchError",
    "CorruptFileError",
    "EnvironmentFailureError",
    "InputShapeError",
    "TrainingDivergedError",
    "UserInputError",
    "classify",
]

USER_ERROR = 2
ENVIRONMENT_ERROR = 1


class AdvimageError(Exception):
    """Base of advimage's typed errors; ``exit_code`` is the CLI's exit status for it."""

    exit_code: int = USER_ERROR


class UserInputError(AdvimageError, ValueError):
    """A bad option, argument or input value (exit 2)."""


class InputShapeError(UserInputError):
    """Images whose shape, channels or size do not fit the model (exit 2)."""


class CorruptFileError(UserInputError):
    """A file that exists but cannot be read as what it claims to be: truncated, damaged,
    pickled where safetensors are expected, a store that fails its integrity check (exit 2)."""


class ConfigMismatchError(UserInputError):
    """An output folder already holds results of another resolved configuration (exit 2).

    Resuming is allowed only when the fingerprints match; anything else would mix old outputs
    with a new configuration.
    """


class TrainingDivergedError(AdvimageError):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit 2)."""


class EnvironmentFailureError(AdvimageError, OSError):
    """The machine, not the input: a read-only or full disk, permission denied (exit 1)."""

    exit_code = ENVIRONMENT_ERROR


_ENV_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO}


def _describe_os_error(err: OSError) -> tuple[str, int]:
    where = f": {err.filename}" if err.filename else ""
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        reason = "no space left on device (results written so far are kept)"
    elif err.errno == errno.EROFS:
        reason = "read-only file system"
    code = ENVIRONMENT_ERROR if err.errno in _ENV_ERRNOS else USER_ERROR
    return f"{reason}{where}", code


def _describe_sqlite(err: sqlite3.Error) -> tuple[str, int]:
    text = str(err)
    low = text.lower()
    if "full" in low:
        return "no space left on device while writing the result store "\
            "(batches committed so far are kept)", ENVIRONMENT_ERROR
    if "readonly" in low or "read-only" in low:
        return f"cannot write the result store (read-only): {text}", ENVIRONMENT_ERROR
    if "unable to open" in low:
        return (f"cannot open the result store for writing (a read-only or vanished folder?): "
                f"{text}"), ENVIRONMENT_ERROR
    return f"the result store (results.sqlite) is damaged or not a database: {text}", USER_ERROR


def classify(err: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for an error the CLI reports without a traceback, or
    None for an unexpected one (a bug: the CLI still prints one line, and ``-v`` the trace)."""
    if isinstance(err, AdvimageError):
        return _first_line(err), err.exit_code
    if isinstance(err, OSError):  # a missing file or folder is the user's; a full disk is not
        return _describe_os_error(err)
    if isinstance(err, sqlite3.Error):
        return _describe_sqlite(err)
    if isinstance(err, MemoryError):
        return "out of memory (lower --batch-size)", ENVIRONMENT_ERROR
    if type(err).__name__ == "SafetensorError":
        text = _first_line(err)
        if "No space" in text or "os error 28" in text:
            return "no space left on device while writing tensors", ENVIRONMENT_ERROR
        return f"damaged safetensors file: {text}", USER_ERROR
    if isinstance(err, (ValueError, KeyError)):
        return _first_line(err), USER_ERROR
    return None


def _first_line(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err)
    text = text.strip()
    return text.splitlines()[0] if text else type(err).__name__
