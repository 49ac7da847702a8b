"""Reading tensor files safely: one place that tells a safetensors file from a pickle, a damaged
file or a directory, and turns each into a one-line typed error naming the file.

Every loader of weights (``load_checkpoint``, training resume, NIM checkpoints, reference import)
goes through :func:`read_safetensors` / :func:`check_file`, so a pickled, truncated or garbage
``.safetensors`` and a directory given where a file is expected read the same way everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from advimage.errors import CorruptFileError, UserInputError

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "PICKLE_REFUSED",
    "check_file",
    "looks_like_pickle",
    "looks_like_safetensors",
    "read_safetensors",
]

# Why a pickle is never loaded, said the same way by every loader.
PICKLE_REFUSED = "refused because loading a pickle could run code"


class CheckpointError(UserInputError):
    """A checkpoint file is missing, unsafe (pickle) or does not match its architecture."""


class CorruptCheckpointError(CheckpointError, CorruptFileError):
    """A weights file or its sidecar is damaged, a pickle, or disagrees with the weights."""


def _head(path: Path, n: int = 9) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def looks_like_safetensors(path: Path) -> bool:
    """True if ``path`` starts as safetensors do: a u64 header length, then ``{``."""
    head = _head(path)
    return len(head) == 9 and head[8:9] == b"{" and \
        int.from_bytes(head[:8], "little") < path.stat().st_size


def looks_like_pickle(path: Path) -> bool:
    """True for a ``torch.save`` zip archive (``PK\\x03\\x04``) or a raw pickle (PROTO 2-5)."""
    if looks_like_safetensors(path):
        return False
    head = _head(path)
    return head.startswith(b"PK\x03\x04") or (
        len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5))


def check_file(path: str | os.PathLike, what: str = "model file") -> Path:
    """``path`` as a :class:`Path` if it is an existing regular file, else a one-line
    :class:`CheckpointError` (not found; a directory, with the checkpoint inside it if any)."""
    p = Path(path)
    if p.is_dir():
        inside = [c.name for c in (p / "model.safetensors", p / "nim.safetensors") if c.is_file()]
        hint = f"; did you mean {p / inside[0]}?" if inside else ""
        raise CheckpointError(f"{p} is a directory, but a {what} is expected{hint}")
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    return p


def read_safetensors(
    path: str | os.PathLike, *, device: str = "cpu", hint: str = ""
) -> dict[str, Tensor]:
    """The tensors of a safetensors file, or one line naming the file and what is wrong with it.

    Args:
        path: the ``.safetensors`` file.
        device: where the tensors are loaded.
        hint: appended to damage messages (e.g. ``": remove it or use --no-resume"``).

    Raises:
        CheckpointError: the file is missing or a directory.
        CorruptCheckpointError: a pickle (never loaded), or not a readable safetensors file.
    """
    p = check_file(path, "safetensors file")
    if looks_like_pickle(p):
        raise CorruptCheckpointError(
            f"{p} is a pickle (torch.save) file, not safetensors: {PICKLE_REFUSED}{hint}")
    try:
        return load_file(str(p), device=device)
    except (SafetensorError, ValueError) as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptCheckpointError(
            f"{p} is not a readable safetensors file ({text}){hint}") from None
