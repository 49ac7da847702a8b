"""The command line: subcommands work end to end; bad input exits 2 with one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from advimage.cli import main
from advimage.eval.export import load_adversarials


def _one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("advimage: error:") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def test_demo_writes_report(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "pgd-10" in out and "report:" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["clean_accuracy"] > 0.95
    pgd = next(r for r in summary["results"] if r["attack"] == "pgd-10")
    assert pgd["robust_accuracy"] < summary["clean_accuracy"] - 0.2
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html


def test_attack_writes_lossless_tensors_and_pngs(tmp_path, capsys) -> None:
    out = tmp_path / "adv"
    assert (
        main(
            [
                "attack",
                "--model",
                "bundled",
                "--data",
                "digits",
                "--attack",
                "pgd",
                "--eps",
                "8/255",
                "--steps",
                "5",
                "--limit",
                "40",
                "--batch-size",
                "16",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    t = load_adversarials(out)
    assert t["x_adv"].shape == (40, 1, 8, 8) and t["x_adv"].dtype == torch.float32
    assert (t["x_adv"] - t["x"]).abs().max() <= 8 / 255 + 1e-6
    assert len(list((out / "png").glob("*.png"))) == 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 40 and summary["batches_done"] == 3
    # class-balanced --limit: 4 images of each digit
    assert torch.bincount(t["y"], minlength=10).tolist() == [4] * 10


def test_eval_robust_table(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "eval",
                "robust",
                "--model",
                "bundled",
                "--data",
                "digits",
                "--limit",
                "100",
                "--attacks",
                "fgsm,pgd",
                "--eps",
                "0.05,0.2",
                "--steps",
                "10",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(tmp_path / "robust.csv", encoding="utf-8")))
    assert len(rows) == 4
    acc = {(r["attack"].split("@")[0], float(r["eps"])): float(r["robust_accuracy"]) for r in rows}
    assert acc[("pgd", 0.2)] <= acc[("pgd", 0.05)]
    assert acc[("pgd", 0.2)] <= acc[("fgsm", 0.2)] + 0.02
    meta = json.loads((tmp_path / "robust.json").read_text())
    assert meta["torch_version"] == torch.__version__
    assert (tmp_path / "results.sqlite").exists()  # --out is a resumable run folder


def _robust_argv(out, *extra: str) -> list[str]:
    return ["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "40",
            "--batch-size", "10", "--attacks", "fgsm,pgd", "--eps", "0.1", "--steps", "3",
            "--device", "cpu", "--no-progress", *([] if out is None else ["--out", str(out)]),
            *extra]


def _csv_without_seconds(path) -> list[dict]:
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    for r in rows:
        r.pop("seconds")
    return rows


def test_eval_robust_resumes_an_interrupted_run(tmp_path, capsys, monkeypatch) -> None:
    """Ctrl-C after 2 of 4 batches; --resume computes only the other 2 and ends with the
    numbers of an uninterrupted run."""
    from advimage.eval.store import ResultStore

    whole = tmp_path / "whole"
    assert main(_robust_argv(whole)) == 0
    write_batch = ResultStore.write_batch

    def interrupted(self, batch, *args):  # noqa: ANN001, ANN202
        write_batch(self, batch, *args)
        if batch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ResultStore, "write_batch", interrupted)
    killed = tmp_path / "killed"
    assert main(_robust_argv(killed)) == 130
    monkeypatch.setattr(ResultStore, "write_batch", write_batch)
    assert not (killed / "robust.csv").exists()
    capsys.readouterr()
    err = _one_line_error(capsys, *_robust_argv(killed))  # rerun without --resume: refused
    assert "--resume" in err
    assert main(_robust_argv(killed, "--resume")) == 0
    assert "pgd@0.1" in capsys.readouterr().out
    with ResultStore(killed / "results.sqlite") as store:
        sessions = dict(store.conn.execute("SELECT batch, session FROM batches").fetchall())
    assert sessions == {0: 1, 1: 1, 2: 2, 3: 2}  # finished batches were not recomputed
    assert _csv_without_seconds(killed / "robust.csv") == _csv_without_seconds(
        whole / "robust.csv")
    assert json.loads((killed / "robust.json").read_text())["config"]["resume"] is True


def test_eval_robust_without_out_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(_robust_argv(None)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["attack", "norm", "eps", "clean", "robust", "sec"]
    assert [ln.split()[0] for ln in lines[1:]] == ["fgsm@0.1", "pgd@0.1"]
    assert list(tmp_path.iterdir()) == []
    assert "needs --out" in _one_line_error(capsys, *_robust_argv(None, "--resume"))


def test_models_list(capsys) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "small-cnn-digits" in out


def test_train_quick(tmp_path, capsys) -> None:
    assert main(["train", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "model.safetensors").exists()
    assert "test accuracy" in capsys.readouterr().out


def test_import_reference_and_eval(tmp_path, capsys, shared_models) -> None:
    src = next(shared_models.glob("resnet20-*.th"))
    ckpt = tmp_path / "r20.safetensors"
    assert main(["models", "import", str(src), "--dataset", "cifar10", "--out", str(ckpt)]) == 0
    assert ckpt.exists() and ckpt.with_suffix(".json").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["eval", "robust", "--model", "bundled", "--eps", "-1"], "eps must be > 0"),
        (["eval", "robust", "--model", "bundled", "--eps", "abc"], "eps"),
        (["eval", "robust", "--model", "bundled", "--attacks", "nope"], "unknown attack"),
        (["eval", "robust", "--model", "bundled", "--norm", "l7"], "norm"),
        (["eval", "robust", "--model", "bundled", "--steps", "0"], "steps"),
        (
            ["attack", "--model", "bundled", "--attack", "fgsm", "--steps", "3", "--out", "x"],
            "no --steps",
        ),
        (["attack", "--model", "missing.safetensors", "--out", "x"], "not found"),
        (
            [
                "models",
                "eval",
                "--model",
                "bundled",
                "--data",
                "cifar10",
                "--data-root",
                "/nonexistent",
            ],
            "nonexistent",
        ),
        (["models", "eval", "--model", "bundled", "--data", "imagenet21k"], "unknown dataset"),
        (["models", "eval", "--model", "bundled:nope"], "no bundled weights"),
        (["train", "--model", "resnet99", "--out", "x", "--epochs", "1"], "resnet99"),
        (["models", "eval", "--model", "bundled", "--limit", "0"], "--limit"),
        (["demo", "--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "device"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, *argv, "--no-progress")
    assert needle.lower() in err.lower(), err


def test_pickle_checkpoint_refused(tmp_path, capsys) -> None:
    bad = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, bad)
    err = _one_line_error(capsys, "models", "eval", "--model", str(bad), "--no-progress")
    assert "pickle" in err.lower()
