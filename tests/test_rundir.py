"""advimage.rundir: output folders bound to one resolved configuration, and advimage.outpath's
--out check that every command makes (one line, exit 2, before any work)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from advimage.cli import main
from advimage.errors import ConfigMismatchError, CorruptFileError, UserInputError
from advimage.outpath import check_out
from advimage.rundir import (
    MANIFEST_NAME,
    config_diff,
    fingerprint,
    open_run_dir,
    read_run_dir,
)

CFG = {"attack": {"name": "pgd", "options": {"eps": 0.5, "steps": 2}}, "batch_size": 8,
       "limit": 20}


def _tmp(run, name: str, text: str) -> Path:  # noqa: ANN001
    p = run.path / f".{name}.tmp"
    p.write_text(text)
    return p


def test_fingerprint_is_canonical() -> None:
    a = {"b": (1, 2), "a": {"y": 1.0, "x": Path("p")}}
    b = {"a": {"x": "p", "y": 1.0}, "b": [1, 2]}
    assert fingerprint(a) == fingerprint(b)  # key order, tuples and paths do not matter
    assert fingerprint(a) != fingerprint({**b, "b": [2, 1]})
    assert len(fingerprint(a)) == 64
    assert config_diff(CFG, {**CFG, "limit": 10, "new": 1}) == [("limit", 20, 10),
                                                                ("new", "(absent)", 1)]


def test_same_config_resumes_with_its_files(tmp_path) -> None:
    run = open_run_dir(tmp_path / "o", "attack", CFG)
    assert run.publish(_tmp(run, "a", "one"), "a.txt", n=3) is True
    again = open_run_dir(tmp_path / "o", "attack", json.loads(json.dumps(CFG)))
    assert again.fingerprint == run.fingerprint == fingerprint(CFG)
    assert again.entry("a.txt")["n"] == 3 and again.has("a.txt")
    assert again.verified("a.txt").read_text() == "one"
    # first writer wins: a second publish of the same name keeps the listed file
    assert again.publish(_tmp(again, "b", "two"), "a.txt") is False
    assert (tmp_path / "o" / "a.txt").read_text() == "one"
    assert not list((tmp_path / "o").glob(".b.tmp"))
    manifest = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text())
    assert manifest["config"] == CFG and manifest["kind"] == "attack"


def test_other_config_is_refused_naming_folder_and_keys(tmp_path) -> None:
    open_run_dir(tmp_path / "o", "attack", CFG)
    other = {**CFG, "attack": {"name": "pgd", "options": {"eps": 0.001, "steps": 2}}}
    with pytest.raises(ConfigMismatchError) as exc:
        open_run_dir(tmp_path / "o", "attack", other)
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "o") in msg
    assert "attack.options.eps: 0.5 -> 0.001" in msg and "remove" in msg and "--out" in msg
    with pytest.raises(ConfigMismatchError, match="outputs of `attack`, not `detection`"):
        open_run_dir(tmp_path / "o", "detection", CFG)


def test_outputs_without_manifest_are_refused(tmp_path) -> None:
    (tmp_path / "tensors").mkdir()
    (tmp_path / "tensors" / "batch_00000.safetensors").write_bytes(b"old")
    with pytest.raises(ConfigMismatchError, match="no manifest.json"):
        open_run_dir(tmp_path, "attack", CFG, legacy=("tensors/batch_*.safetensors",))
    assert not (tmp_path / MANIFEST_NAME).exists()
    with pytest.raises(UserInputError, match="no manifest.json"):
        read_run_dir(tmp_path, "attack")
    # an unrelated folder is fine
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "notes.txt").write_text("x")
    assert open_run_dir(tmp_path / "u", "attack", CFG, legacy=("summary.json",)).has("x") is False


def test_damaged_manifest_and_files(tmp_path) -> None:
    run = open_run_dir(tmp_path, "attack", CFG)
    run.publish(_tmp(run, "a", "one"), "a.txt")
    (tmp_path / "a.txt").write_text("ONE")  # same size, other bytes
    with pytest.raises(CorruptFileError, match="changed or damaged"):
        read_run_dir(tmp_path, "attack").verified("a.txt")
    (tmp_path / "a.txt").unlink()  # removed: recomputed, not an error
    again = open_run_dir(tmp_path, "attack", CFG)
    assert not again.has("a.txt")
    assert again.publish(_tmp(again, "c", "new"), "a.txt") is True
    (tmp_path / MANIFEST_NAME).write_bytes(b"\x00\xff garbage")
    with pytest.raises(CorruptFileError, match="manifest.json is damaged"):
        open_run_dir(tmp_path, "attack", CFG)


def _publish_many(args: tuple[str, int]) -> None:
    folder, worker = args
    run = open_run_dir(folder, "detection", CFG)  # all start on a fresh folder at once
    for i in range(8):
        p = Path(folder) / f".w{worker}-{i}.tmp"
        p.write_text(f"{worker}-{i}")
        run.publish(p, f"f{worker}-{i}.txt", worker=worker)


def test_concurrent_processes_share_one_manifest(tmp_path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        pool.map(_publish_many, [(str(tmp_path / "o"), w) for w in range(4)])
    run = read_run_dir(tmp_path / "o", "detection")
    names = sorted(f"f{w}-{i}.txt" for w in range(4) for i in range(8))
    assert sorted(json.loads((tmp_path / "o" / MANIFEST_NAME).read_text())["files"]) == names
    assert all(run.verified(n).read_text() == n[1:-4] for n in names)


# ----------------------------------------------------------------------------- --out paths
def test_check_out(tmp_path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert check_out(None) is None
    assert check_out(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    with pytest.raises(UserInputError, match="is an existing file; give a folder"):
        check_out(f, "dir")
    with pytest.raises(UserInputError, match=r"f.txt is a file, not a folder"):
        check_out(f / "sub", "dir")
    with pytest.raises(UserInputError, match="is a folder; give a file path ending in "
                                             ".safetensors"):
        check_out(tmp_path, "file", suffixes=(".safetensors",))
    with pytest.raises(UserInputError, match=r"must end in \.safetensors \(e\.g\. .*m\.safe"):
        check_out(tmp_path / "m", "file", suffixes=(".safetensors",))
    assert check_out(tmp_path / "m.SAFETENSORS", "file", suffixes=(".safetensors",))
    with pytest.raises(UserInputError, match="is a folder"):
        check_out(tmp_path, "prefix")
    assert check_out(tmp_path / "cache", "prefix") == tmp_path / "cache"


# every command with --out: (argv before --out, kind of --out)
COMMANDS = [
    (["demo"], "dir"),
    (["attack", "--model", "bundled"], "dir"),
    (["eval", "robust", "--model", "bundled"], "dir"),
    (["eval", "detection", "--config", "c.yaml"], "dir"),
    (["eval", "transfer", "--teacher", "bundled", "--kd", "k", "--independent", "i"], "dir"),
    (["run", "c.yaml"], "dir"),
    (["report", "RUN"], "file"),
    (["train", "--quick"], "dir"),
    (["distill"], "dir"),
    (["models", "import", "r.th"], "file"),
    (["cache", "build", "--model", "bundled", "--layers", "pool"], "prefix"),
    (["cache", "tune", "--model", "bundled", "--layers", "pool"], "prefix"),
    (["detect", "calibrate", "--model", "bundled"], "file"),
    (["nim", "pretrain"], "dir"),
    (["nim", "finetune", "--nim", "n"], "dir"),
]


@pytest.mark.parametrize("argv, kind", COMMANDS, ids=lambda v: " ".join(v[:2]) if
                         isinstance(v, list) else v)
def test_every_command_refuses_a_wrong_out(argv, kind, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "taken"
    if kind == "dir":
        existing.write_text("keep me")
        want = "is an existing file; give a folder"
    else:
        existing.mkdir()
        want = "is a folder; give a file path"
    rc = main([*argv, "--out", str(existing)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("advimage: error: --out ") and "\n" not in err and want in err, err
    if kind == "dir":
        assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing written


def test_models_import_refuses_a_suffixless_out(tmp_path, capsys) -> None:
    rc = main(["models", "import", "r.th", "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "must end in .safetensors" in err and "\n" not in err
    assert not (tmp_path / "ckpt.safetensors").exists()
