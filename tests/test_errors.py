"""advimage.errors and the CLI's one-line reporting: exit codes, -v tracebacks, warnings."""

from __future__ import annotations

import errno
import sqlite3
import warnings

import pytest

from advimage import errors
from advimage.cli import main


@pytest.mark.parametrize(
    ("err", "code", "text"),
    [
        (errors.UserInputError("bad --eps"), 2, "bad --eps"),
        (errors.CorruptFileError("x.pt is damaged\nsecond line"), 2, "x.pt is damaged"),
        (errors.EnvironmentFailureError("disk gone"), 1, "disk gone"),
        (OSError(errno.ENOSPC, "No space left on device", "out/a.csv"), 1,
         "no space left on device (results written so far are kept): out/a.csv"),
        (OSError(errno.EROFS, "Read-only file system", "out"), 1, "read-only file system: out"),
        (PermissionError(errno.EACCES, "Permission denied", "out"), 1, "Permission denied: out"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "m.safetensors"), 2,
         "No such file or directory: m.safetensors"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "runs"), 2, "Is a directory: runs"),
        (sqlite3.DatabaseError("file is not a database"), 2,
         "the result store (results.sqlite) is damaged or not a database: file is not a database"),
        (sqlite3.OperationalError("database or disk is full"), 1,
         "no space left on device while writing the result store (batches committed so far are "
         "kept)"),
        (KeyError("unknown attack 'foo'"), 2, "unknown attack 'foo'"),
        (ValueError(""), 2, "ValueError"),
    ],
)
def test_classify_gives_one_line_and_the_documented_code(err: BaseException, code: int,
                                                         text: str) -> None:
    assert errors.classify(err) == (text, code)


def test_unexpected_errors_are_left_to_the_cli() -> None:
    assert errors.classify(TypeError("boom")) is None
    assert errors.classify(RuntimeError("boom")) is None


def test_user_errors_stay_value_errors() -> None:
    """Library callers that catch ValueError for bad input keep working."""
    for cls in (errors.UserInputError, errors.InputShapeError, errors.CorruptFileError,
                errors.ConfigMismatchError):
        assert issubclass(cls, ValueError) and cls.exit_code == 2
    assert issubclass(errors.EnvironmentFailureError, OSError)


def _command_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """Make `advimage models list` warn once, then raise ``exc``."""
    import advimage.models.hub

    def boom() -> list[str]:
        warnings.warn("a library warning\nwith a second line", UserWarning, stacklevel=1)
        raise exc

    monkeypatch.setattr(advimage.models.hub, "list_bundled", boom)


def test_cli_prints_one_line_and_warnings_without_source(monkeypatch, capsys) -> None:
    _command_raising(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "r/x"))
    assert main(["models", "list"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "advimage: warning: a library warning",
        "advimage: error: no space left on device (results written so far are kept): r/x",
    ]


def test_cli_internal_error_is_one_line_and_verbose_shows_the_traceback(monkeypatch,
                                                                       capsys) -> None:
    _command_raising(monkeypatch, TypeError("unexpected"))
    assert main(["models", "list"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("advimage: error: internal error: TypeError: unexpected "
                       "(rerun with -v for the traceback)")
    assert not any(line.startswith("Traceback") for line in err)
    assert main(["models", "list", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "advimage: error: internal error: TypeError: unexpected"


def test_an_error_clears_live_progress_bars_first(monkeypatch, capsys) -> None:
    """A command failing inside a progress bar: the bar is closed before the error line."""
    from tqdm import tqdm

    import advimage.models.hub

    bars = []

    def fail_mid_bar() -> list[str]:
        bar = tqdm(range(3), leave=False)
        bars.append(bar)
        next(iter(bar))
        raise errors.UserInputError("stopped mid-bar")

    monkeypatch.setattr(advimage.models.hub, "list_bundled", fail_mid_bar)
    assert main(["models", "list"]) == 2
    assert bars[0] not in getattr(tqdm, "_instances", set())
    assert capsys.readouterr().err.splitlines()[-1] == "advimage: error: stopped mid-bar"
