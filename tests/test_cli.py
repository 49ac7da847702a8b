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
        (["models", "eval", "--model", "bundled", "--data", "imagenet"], "unknown dataset"),
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
