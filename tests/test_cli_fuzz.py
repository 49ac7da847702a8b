"""Every command through every class of bad input: one line on stderr and the documented code.

Issue 19's sweep as a test: bad paths, bad files, read-only and full output disks (a real tmpfs
where this machine lets root mount one, else a patched writer), stale output folders and damaged
stores. Each case asserts the exit status of README's table (2 user error, 1 environment) and that
stderr is exactly one ``advimage: error:`` line (warnings aside), never a traceback.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from advimage.cli import main

DIGITS = ["--data", "digits", "--limit", "20", "--batch-size", "10", "--no-progress"]
CONFIG = """name: fuzz
model: {path: bundled}
data: {name: digits, split: test, limit: 20, batch_size: 10}
attacks:
  - {name: fgsm, eps: [0.1]}
examples: 2
checks: {unbounded_steps: 2}
"""


def _commands(model: str, out: Path, config: Path) -> dict[str, list[str]]:
    """Cheap forms of the commands that take a model and write outputs."""
    return {
        "models eval": ["models", "eval", "--model", model, *DIGITS],
        "attack": ["attack", "--model", model, "--attack", "fgsm", "--eps", "0.1", *DIGITS,
                   "--out", str(out)],
        "eval robust": ["eval", "robust", "--model", model, "--attacks", "fgsm", "--eps", "0.1",
                        *DIGITS, "--out", str(out)],
        "detect calibrate": ["detect", "calibrate", "--model", model, *DIGITS, "--criteria",
                             "c1", "--out", str(out / "det.json")],
        "run": ["run", str(config), "--out", str(out), "--no-progress"],
    }


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("advimage: warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("advimage: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "fuzz.yaml"
    path.write_text(CONFIG)
    return path


# ------------------------------------------------------------------ bad model paths and files
def _bad_model(kind: str, tmp_path: Path) -> str:
    p = tmp_path / "model.safetensors"
    if kind == "missing":
        return str(tmp_path / "nope.safetensors")
    if kind == "directory":
        p = tmp_path / "adir.safetensors"
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(64, 64)}, str(p))
        p.write_bytes(p.read_bytes()[:200])
    elif kind == "pickle":
        torch.save({"w": torch.zeros(3)}, p)
    elif kind == "pickle-th":
        p = tmp_path / "resnet20-deadbeef.th"
        p.write_bytes(b"\x80\x04\x95garbage that is not a pickle")
    return str(p)


MODEL_KINDS = ["missing", "directory", "empty", "garbage", "truncated", "pickle", "pickle-th"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("command", ["models eval", "attack", "eval robust", "detect calibrate"])
def test_bad_model_file_is_one_line_exit_2(command: str, kind: str, tmp_path: Path,
                                           config: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = _commands(_bad_model(kind, tmp_path), out, config)[command]
    rc, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert rc == 2, line
    assert "model" in line or ".safetensors" in line or ".th" in line, line
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


@pytest.mark.parametrize("command", ["models eval", "attack", "eval robust", "detect calibrate"])
@pytest.mark.parametrize("data", [["--data", "cifar10", "--data-root", "{tmp}/none"],
                                  ["--data", "folder", "--data-root", "{tmp}/none"],
                                  ["--data", "mnist", "--data-root", "{tmp}/afile"],
                                  ["--data", "nosuchset"]])
def test_bad_data_is_one_line_exit_2(command: str, data: list[str], tmp_path: Path,
                                     config: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    argv = _commands("bundled", tmp_path / "out", config)[command]
    argv += [d.format(tmp=tmp_path) for d in data]  # a later --data wins
    rc, err = _run(argv, capsys)
    _one_error_line(err)
    assert rc == 2


@pytest.mark.parametrize("command", ["attack", "eval robust", "run"])
def test_existing_file_as_out_is_one_line_exit_2(command: str, tmp_path: Path, config: Path,
                                                 capsys) -> None:
    out = tmp_path / "taken"
    out.write_text("precious")
    rc, err = _run(_commands("bundled", out, config)[command], capsys)
    _one_error_line(err)
    assert rc == 2 and out.read_text() == "precious"


# ------------------------------------------------------------------ read-only and full disks
def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``make(options)``: a tmpfs mounted with ``options`` (skips where mounting is refused)."""
    mounted: list[Path] = []

    def make(options: str) -> Path:
        path = tmp_path / f"mnt{len(mounted)}"
        if shutil.which("mount") is None or not _mount(path, options):
            pytest.skip("cannot mount a tmpfs here (needs root in a permissive sandbox)")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("command", ["attack", "eval robust", "detect calibrate", "run"])
def test_read_only_out_is_one_line_exit_1(command: str, small_disk, tmp_path: Path,
                                          config: Path, capsys) -> None:
    ro = small_disk("size=1m,ro")
    rc, err = _run(_commands("bundled", ro / "out", config)[command], capsys)
    line = _one_error_line(err)
    assert rc == 1, line
    assert "read-only" in line, line


@pytest.mark.parametrize("command", ["attack", "eval robust", "run"])
def test_full_disk_is_one_line_exit_1(command: str, small_disk, tmp_path: Path, config: Path,
                                      capsys) -> None:
    disk = small_disk("size=48k")
    rc, err = _run(_commands("bundled", disk / "out", config)[command], capsys)
    line = _one_error_line(err)
    assert rc == 1, line
    assert "no space" in line, line


def test_full_disk_through_a_patched_writer(monkeypatch, tmp_path: Path, capsys) -> None:
    """Where no tmpfs can be mounted: the atomic writer failing with ENOSPC is the same line."""
    import advimage.utils as utils

    real = utils.atomic_writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(utils, "atomic_writer", full)
    argv = _commands("bundled", tmp_path / "out", tmp_path / "x.yaml")["eval robust"]
    rc, err = _run(argv, capsys)
    monkeypatch.setattr(utils, "atomic_writer", real)
    assert rc == 1 and "no space" in _one_error_line(err)


# ------------------------------------------------------------------ stale folders, damaged stores
@pytest.mark.parametrize("command", ["attack", "run"])
def test_rerun_with_another_configuration_is_refused(command: str, tmp_path: Path,
                                                     config: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = _commands("bundled", out, config)[command]
    assert _run(argv, capsys)[0] == 0
    if command == "run":
        config.write_text(CONFIG.replace("eps: [0.1]", "eps: [0.05]"))
        argv = ["run", "--resume", str(out), "--no-progress"]
        changed = ["run", str(config), "--out", str(out), "--no-progress"]
    else:
        changed = [a if a != "0.1" else "0.05" for a in argv]
    rc, err = _run(changed, capsys)
    line = _one_error_line(err)
    assert rc == 2, line
    assert _run(argv, capsys)[0] == 0  # the matching configuration still resumes


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncate", "delete-rows"])
@pytest.mark.parametrize("command", ["report", "resume"])
def test_damaged_store_is_refused_and_exports_kept(damage: str, command: str, tmp_path: Path,
                                                   config: Path, capsys) -> None:
    import sqlite3

    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    exports = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".json")}
    store = out / "results.sqlite"
    data = store.read_bytes()
    if damage == "empty":
        store.write_bytes(b"")
    elif damage == "garbage":
        store.write_bytes(b"not a database" * 100)
    elif damage == "truncate":
        store.write_bytes(data[: len(data) // 2])
    else:
        with sqlite3.connect(store) as con:
            table = "samples"
            con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} LIMIT 3)")
    argv = ["report", str(out)] if command == "report" else ["run", "--resume", str(out),
                                                              "--no-progress"]
    rc, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert rc == 2, line
    assert "results.sqlite" in line, line
    for name, content in exports.items():
        assert (out / name).read_bytes() == content, f"{name} was rewritten"


@pytest.mark.parametrize("argv", [
    ["train", "--quick", "--epochs", "1", "--out", "{ro}/t"],
    ["distill", "--arm", "independent", "--quick", "--epochs", "1", "--out", "{ro}/d"],
    ["demo", "--out", "{ro}/demo", "--no-progress"],
    ["models", "import", "{shared}/models/resnet20-12fca82f.th", "--out", "{ro}/m.safetensors"],
    ["report", "{ro}/run"],
])
def test_read_only_out_of_the_other_commands(argv: list[str], small_disk, capsys) -> None:
    """Training, the demo, imports and reports on a read-only disk: one line, exit 1."""
    shared = Path(__file__).resolve().parents[1].parent / "shared"
    if "{shared}" in " ".join(argv) and not (shared / "models").exists():
        pytest.skip("needs ../shared/models")
    ro = small_disk("size=1m")
    if argv[0] == "report":  # a finished run, then the disk turns read-only under it
        cfg = ro / "fuzz.yaml"
        cfg.write_text(CONFIG)
        assert main(["run", str(cfg), "--out", str(ro / "run"), "--no-progress"]) == 0
        capsys.readouterr()
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
    rc, err = _run([a.format(ro=ro, shared=shared) for a in argv], capsys)
    line = _one_error_line(err)
    assert rc == 1, line
    assert "read-only" in line, line
