"""What every CLI error test asserts: stderr is one ``advimage: error:`` line."""

from __future__ import annotations

import pytest


def error_message(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command, without the ``advimage: error:`` prefix."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("advimage: error: "), err
    return err[0].removeprefix("advimage: error: ")
