"""Read a JSON object from a file that advimage wrote (sidecars, manifests, run state).

One reader, so every damaged JSON file is a one-line :class:`~advimage.errors.CorruptFileError`
naming the file, in the wording its caller chooses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advimage.errors import CorruptFileError

__all__ = ["read_json_object"]


def read_json_object(path: Path, template: str = "{path} is not valid JSON: {reason}",
                     error: type[CorruptFileError] = CorruptFileError) -> dict[str, Any]:
    """The JSON object in ``path``.

    Args:
        path: the file (missing or unreadable files raise their ``OSError`` unchanged).
        template: the message of a damaged file, formatted with ``path`` and ``reason``.
        error: the ``CorruptFileError`` subclass to raise.

    Raises:
        CorruptFileError: (or ``error``) the file is not UTF-8 JSON, or holds no JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(template.format(path=path, reason=exc)) from None
    except UnicodeDecodeError:
        raise error(template.format(path=path, reason="binary data, not UTF-8")) from None
    if not isinstance(data, dict):
        raise error(template.format(path=path, reason="not a JSON object"))
    return data
