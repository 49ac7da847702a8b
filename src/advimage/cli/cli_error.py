"""The command line's own user error (one module, so every ``cli`` module can import it)."""

from __future__ import annotations

from advimage.errors import AdvimageError

__all__ = ["CliError"]


class CliError(AdvimageError):
    """A user error of the command line, reported as one line with exit status 2 (not a
    ValueError: argparse would swallow it inside an option's type)."""
