"""Stale outputs: `advimage attack` and `advimage eval detection` resume only what was written
for the same resolved configuration, refuse any other in one line, and readers read only the
files their folder's manifest lists; damaged stored files are one-line CorruptFileErrors."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os

import pytest
import torch

from advimage.attacks import PGD
from advimage.cli import main
from advimage.detect import NoiseSignatureDetector, SignatureDetector
from advimage.errors import CorruptFileError
from advimage.eval import export
from advimage.eval.detection import DetectionAttack, DetectionJob, run_detection
from advimage.eval.export import load_adversarials
from advimage.eval.store import DB_NAME, ResultStore

ATTACK = ["attack", "--model", "bundled", "--attack", "pgd", "--steps", "2", "--no-progress",
          "--threads", "1"]


def _one_line(capsys, argv: list[str], code: int = 2) -> str:  # noqa: ANN001
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.startswith("advimage: error:") and "\n" not in err, err
    return err


def _robust(capsys) -> str:  # noqa: ANN001
    out = capsys.readouterr().out
    return out.split("robust accuracy ")[1].split()[0]


# ----------------------------------------------------------------------------- attack
def test_attack_rerun_with_other_options_is_refused(tmp_path, capsys) -> None:
    out = str(tmp_path / "X")
    base = [*ATTACK, "--limit", "20", "--out", out]
    assert main([*base, "--eps", "0.5"]) == 0
    assert _robust(capsys) == "0.0000"
    for extra, key in ((["--eps", "1e-3"], "attack.options.eps: 0.5 -> 0.001"),
                       (["--eps", "0.5", "--batch-size", "8"], "batch_size: 256 -> 8"),
                       (["--eps", "0.5", "--seed", "1"], "attack.options.seed: 0 -> 1")):
        err = _one_line(capsys, [*base, *extra])
        assert f"{out} holds results of another configuration" in err and key in err, err
    err = _one_line(capsys, [*ATTACK, "--limit", "10", "--out", out, "--eps", "0.5"])
    assert "n_images: 20 -> 10" in err
    # a fresh folder gives the true number, and the refused reruns left the old one intact
    assert main([*ATTACK, "--limit", "20", "--out", str(tmp_path / "Y"), "--eps", "1e-3"]) == 0
    assert _robust(capsys) == "1.0000"
    assert json.loads((tmp_path / "X" / "summary.json").read_text())["robust_accuracy"] == 0.0
    assert len(load_adversarials(out)["x_adv"]) == 20


def test_attack_resumes_only_listed_shards(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "X"
    argv = [*ATTACK, "--limit", "30", "--batch-size", "10", "--eps", "0.3", "--out", str(out)]
    assert main([*argv[:-2], "--out", str(tmp_path / "full")]) == 0
    want = load_adversarials(tmp_path / "full")
    craft, calls = export._craft, []

    def interrupted(model, attack, x, y, device):  # noqa: ANN001, ANN202
        calls.append(len(y))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return craft(model, attack, x, y, device)

    monkeypatch.setattr(export, "_craft", interrupted)
    assert main(argv) == 130  # killed during batch 1: batch 0 is listed
    # a leftover that the manifest does not list (e.g. another run's) is not reused
    (out / "tensors" / "batch_00001.safetensors").write_bytes(b"stale")
    calls.clear()
    monkeypatch.setattr(export, "_craft", lambda *a: (calls.append(1), craft(*a))[1])
    assert main(argv) == 0
    assert len(calls) == 2  # batches 1 and 2 crafted, batch 0 reused
    got = load_adversarials(out)
    assert all(torch.equal(got[k], want[k]) for k in want)
    capsys.readouterr()
    # a listed shard changed afterwards is refused, by the reader and by a rerun
    shard = out / "tensors" / "batch_00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    err = _one_line(capsys, ["detect", "score", "--detector", "d.json", "--model", "bundled",
                             str(out)])
    assert "detector file not found" in err  # --detector first; the folder read next
    with pytest.raises(CorruptFileError, match="batch_00002.safetensors was changed"):
        load_adversarials(out)
    assert "batch_00002.safetensors was changed" in _one_line(capsys, argv)


def test_old_attack_folder_without_manifest_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "tensors").mkdir()
    (tmp_path / "tensors" / "batch_00000.safetensors").write_bytes(b"old")
    (tmp_path / "summary.json").write_text("{}")
    err = _one_line(capsys, [*ATTACK, "--limit", "10", "--eps", "0.1", "--out", str(tmp_path)])
    assert "no manifest.json" in err and str(tmp_path) in err
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_detect_score_reads_exactly_the_listed_images(tmp_path, capsys) -> None:
    det = tmp_path / "d.json"
    assert main(["detect", "calibrate", "--model", "bundled", "--fpr", "0.1", "--limit", "40",
                 "--set", "n_noise=2", "--set", "c2t_cap=10", "--criteria", "c1",
                 "--out", str(det), "--threads", "1"]) == 0
    out = tmp_path / "X"
    assert main([*ATTACK, "--limit", "12", "--eps", "0.3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["detect", "score", "--detector", str(det), "--model", "bundled",
                 str(out)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(rows) == 12 and rows[-1].startswith(f"{out}[11]\t")
    (tmp_path / "g.json").write_bytes(b"\x80\x81 not json")
    err = _one_line(capsys, ["detect", "score", "--detector", str(tmp_path / "g.json"),
                             "--model", "bundled", str(out)])
    assert f"detector file {tmp_path / 'g.json'} is not valid JSON" in err


@pytest.mark.parametrize("failure, code, text", [
    (errno.EROFS, 1, "read-only file system"), (errno.ENOSPC, 1, "no space left on device")])
def test_unwritable_run_folder_is_one_line(tmp_path, capsys, monkeypatch, failure, code,
                                           text) -> None:
    from advimage import rundir

    def refuse(folder, manifest):  # noqa: ANN001, ANN202
        raise OSError(failure, os.strerror(failure), str(folder / "manifest.json"))

    monkeypatch.setattr(rundir, "_write_manifest", refuse)
    err = _one_line(capsys, [*ATTACK, "--limit", "10", "--eps", "0.1", "--out",
                             str(tmp_path / "X")], code=code)
    assert text in err and "manifest.json" in err, err


# ----------------------------------------------------------------------------- detection eval
YAML = ("name: t\nmodel: bundled\ndata: {name: digits}\n"
        "calibration: {split: train, limit: 40}\ntest: {split: test, limit: 20}\n"
        "detector: {criteria: c1, set: {sigma: 0.01, n_noise: 2}}\nfprs: [0.1]\n"
        "attacks:\n  - {label: g, kind: pgd, eps: [0.2], options: {steps: 3}}\n")


def test_eval_detection_refuses_other_settings(tmp_path, capsys) -> None:
    cfg, out = tmp_path / "d.yaml", str(tmp_path / "o")
    cfg.write_text(YAML)
    argv = ["eval", "detection", "--config", str(cfg), "--out", out]
    assert main(argv) == 0
    before = (tmp_path / "o" / "results.json").read_text()
    cfg.write_text(YAML.replace("sigma: 0.01", "sigma: 0.5"))
    assert "source.detector.options.set.sigma: 0.01 -> 0.5" in _one_line(capsys, argv)
    cfg.write_text(YAML.replace("steps: 3", "steps: 4"))
    assert "source.attacks.g@0.2.options.steps: 3 -> 4" in _one_line(capsys, argv)
    cfg.write_text(YAML.replace("limit: 20", "limit: 10"))
    assert "test.n: 20 -> 10" in _one_line(capsys, argv)
    assert (tmp_path / "o" / "results.json").read_text() == before
    cfg.write_text(YAML)  # the same config (or a subset of its attacks) resumes
    assert main([*argv, "--only", "g"]) == 0
    # a damaged store is one line naming it
    db = tmp_path / "o" / DB_NAME
    db.write_bytes(db.read_bytes()[:100])
    assert f"{db}" in _one_line(capsys, argv)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "clean.pt").write_bytes(b"x")
    assert "no manifest.json" in _one_line(capsys, [*argv[:-1], str(tmp_path / "old")])


def _shard_worker(args: tuple) -> list[str]:
    (model, det, cal, test, out, shard) = args
    crafted: list[str] = []

    def make(name: str, eps: float):  # noqa: ANN202
        def factory(calib):  # noqa: ANN001, ANN202
            crafted.append(name)
            return PGD(eps=eps, steps=3)
        return factory

    torch.set_num_threads(1)
    attacks = {n: DetectionAttack(make(n, e), "pgd", e, {"steps": 3})
               for n, e in (("a", 0.05), ("b", 0.1))}
    job = DetectionJob(model, SignatureDetector(det), cal, test, attacks, batch_size=10)
    run_detection(job, out, shard=shard)
    return crafted


def test_shards_started_at_once_share_a_fresh_folder(tmp_path, digits_model, digits_test,
                                                     fast_config) -> None:
    x, y = digits_test
    det = NoiseSignatureDetector(digits_model, fast_config, "c1", seed=0)
    common = (digits_model, det, (x[:60], y[:60]), (x[200:220], y[200:220]), tmp_path / "s")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        crafted = pool.map(_shard_worker, [(*common, (0, 2)), (*common, (1, 2))])
    assert crafted == [["a"], ["b"]]
    last = _shard_worker((*common, (0, 2)))  # joins the finished folder: nothing crafted
    assert last == []
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert list(res["attacks"]) == ["a", "b"] and res["pending"] == []
    with ResultStore(tmp_path / "s" / DB_NAME) as store:  # verified on open
        assert store.done_batches() == {0, 1, 2, 3} and store.progress()["partial"] is False
