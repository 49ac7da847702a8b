"""The transfer experiment (Ojha et al., NeurIPS 2023) on bundled digits models, and its report."""

from __future__ import annotations

import copy
import json
from functools import partial

import pytest
import torch
from distill_helpers import perturbed_copy

from advimage.cli import main
from advimage.data import ColorJitter, load_dataset
from advimage.models import create_model, save_checkpoint
from advimage.studies.distill import (
    fooling_rate,
    gradcam_similarity,
    jitter_invariance,
    transfer_probes,
)
from advimage.studies.distill.transfer import JITTER, last_conv_layer

EPS = (0.1, 0.3)  # L-inf budgets for 8x8 digits (pixel units)



@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("digits", "test").balanced(60).tensors()


_perturbed = partial(perturbed_copy, scale=0.3)  # (model, seed[, scale])


def test_structure_and_independent_computation(teacher, digits) -> None:
    x, y = digits
    kd, ind, foreign = _perturbed(teacher, 1), _perturbed(teacher, 2), _perturbed(teacher, 3)
    out = transfer_probes(teacher, kd, ind, x, y, foreign=foreign, eps=EPS, batch_size=23,
                          device="cpu", seed=5)
    json.dumps(out, allow_nan=False)  # plain JSON numbers
    assert out["n"] == 60 and out["eps"] == list(EPS)
    for name, m in (("teacher", teacher), ("kd", kd), ("independent", ind)):
        expected = (m(x).argmax(1) == y).float().mean().item()
        assert out["accuracy"][name] == pytest.approx(expected)
    assert out["agreement"]["kd"] == pytest.approx(
        (teacher(x).argmax(1) == kd(x).argmax(1)).float().mean().item()
    )
    students = {"kd": kd, "independent": ind, "foreign": foreign}
    victims = {"kd": kd, "independent": ind, "teacher": teacher}
    for i, e in enumerate(EPS):
        # pooled over chunks of 23 == one call on all images
        direct = fooling_rate(teacher, students, x, y, eps=e, steps=5)
        row = out["fooling_rate"][i]
        assert row["kept"] == direct["kept"] > 0 and row["total"] == 60
        for k in students:
            assert row["rates"][k] == pytest.approx(direct["rates"][k])
        # the control crafts on the foreign network: its own kept set and rates
        ctrl = fooling_rate(foreign, victims, x, y, eps=e, steps=5)
        assert out["control"][i]["kept"] == ctrl["kept"] > 0
        for k in victims:
            assert out["control"][i]["rates"][k] == pytest.approx(ctrl["rates"][k])
    assert [r["kept"] for r in out["control"]] != [r["kept"] for r in out["fooling_rate"]]
    sim = gradcam_similarity(teacher, kd, ind, x, "relu2", class_idx=y)
    assert out["gradcam"]["share_closer_to_kd"] == pytest.approx(sim["share_closer_to_kd"])
    assert out["gradcam"]["layers"] == dict.fromkeys(("teacher", "kd", "independent"), "relu2")
    chunks = [(x[i : i + 23], y[i : i + 23]) for i in range(0, 60, 23)]
    inv = jitter_invariance(ind, chunks, ColorJitter(**JITTER), seed=5)
    assert out["invariance"]["rates"]["independent"] == pytest.approx(inv)
    assert JITTER == {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}


def test_student_equal_to_teacher(teacher, digits) -> None:
    x, y = digits
    ind = _perturbed(teacher, 2, scale=1.0)
    out = transfer_probes(teacher, copy.deepcopy(teacher), ind, x, y, eps=(0.3,), jitter=False,
                          device="cpu")
    assert out["fooling_rate"][0]["rates"]["kd"] == 1.0
    assert out["agreement"]["kd"] == 1.0
    assert out["gradcam"]["mean_cosine"]["kd"] == pytest.approx(1.0, abs=1e-5)
    assert out["control"] is None and out["invariance"] is None


def test_last_conv_layer_and_errors(teacher, digits) -> None:
    assert last_conv_layer(teacher) == "relu2"
    assert last_conv_layer(create_model("resnet20", num_classes=10)) == "layer3"
    assert last_conv_layer(create_model("vgg11-cifar", num_classes=10)) == "features.19"
    x, y = digits
    five = create_model("small-cnn", num_classes=5)
    with pytest.raises(ValueError, match="class counts differ"):
        transfer_probes(teacher, teacher, five, x, y, device="cpu")
    with pytest.raises(ValueError, match="cam_layers"):
        transfer_probes(teacher, teacher, teacher, x[:4], y[:4], cam_layers=("relu2",),
                        device="cpu", eps=(0.1,), jitter=False)


def test_cli_end_to_end_and_mismatch(teacher, tmp_path, capsys) -> None:
    ind = save_checkpoint(_perturbed(teacher, 2), tmp_path / "ind" / "model.safetensors",
                          meta={"dataset": "digits", "seed": 1, "accuracy": 0.5})
    out = tmp_path / "run"
    args = ["eval", "transfer", "--teacher", "bundled", "--kd", "bundled", "--independent",
            str(ind), "--foreign", str(ind), "--limit", "30", "--offset", "10", "--eps",
            "0.1,0.3", "--out", str(out), "--device", "cpu", "--tag", "main", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fooling eps=0.3" in printed and "control eps=0.1" in printed
    doc = json.loads((out / "transfer.json").read_text())
    assert (out / "gradcam.png").stat().st_size > 1000
    assert doc["tag"] == "main" and doc["config"]["offset"] == 10
    assert doc["results"]["n"] == 30 and doc["models"]["independent"]["seed"] == 1
    assert doc["models"]["kd"]["fingerprint"] == teacher.fingerprint()
    assert doc["results"]["fooling_rate"][1]["rates"]["kd"] == 1.0
    assert "git_hash" in doc and doc["seed"] == 0
    five = save_checkpoint(create_model("small-cnn", num_classes=5), tmp_path / "five.safetensors")
    bad = ["eval", "transfer", "--teacher", "bundled", "--kd", str(five), "--independent",
           str(ind), "--limit", "10", "--out", str(tmp_path / "bad"), "--device", "cpu"]
    assert main(bad) == 2
    assert "class counts differ: teacher has 10 classes, kd has 5" in capsys.readouterr().err
    other = save_checkpoint(teacher, tmp_path / "mnist.safetensors", meta={"dataset": "mnist"})
    bad[5] = str(other)
    assert main(bad) == 2
    assert "kd checkpoint was trained on 'mnist', not 'digits'" in capsys.readouterr().err


def _fake_transfer(kd_fool: float, ind_fool: float, seed: int, arch: str) -> dict:
    rates = {"kd": kd_fool, "independent": ind_fool}
    ctrl = {"kd": 0.4, "independent": 0.4, "teacher": 0.1}
    return {
        "tag": "main",
        "models": {
            "teacher": {"arch": "resnet56", "augment": None, "imported": True, "seed": None},
            "kd": {"arch": arch, "seed": seed, "arm": "kd", "accuracy": 0.9},
            "independent": {"arch": arch, "seed": seed, "arm": "independent", "accuracy": 0.89},
        },
        "results": {
            "n": 100, "eps": [8 / 255],
            "accuracy": {"teacher": 0.93, "kd": 0.9, "independent": 0.89},
            "fooling_rate": [{"eps": 8 / 255, "kept": 50, "total": 100, "rates": rates}],
            "control": [{"eps": 8 / 255, "kept": 40, "total": 100, "rates": ctrl}],
            "agreement": {"kd": 0.95, "independent": 0.9},
            "gradcam": {"share_closer_to_kd": 0.6 + 0.1 * seed, "ties": 0},
            "invariance": {"rates": {"teacher": 0.9, "kd": 0.8, "independent": 0.7}},
        },
    }


def test_make_report_on_synthetic_runs(tmp_path, report_script) -> None:
    report = report_script("distill")
    runs = tmp_path / "runs"
    for seed, (k, i) in enumerate([(0.5, 0.3), (0.7, 0.3)]):
        d = runs / f"resnet20-s{seed}"
        d.mkdir(parents=True)
        (d / "transfer.json").write_text(json.dumps(_fake_transfer(k, i, seed, "resnet20")))
    train = runs / "train" / "kd-s0"
    train.mkdir(parents=True)
    (train / "model.json").write_text(json.dumps({
        "arch": "resnet20", "accuracy": 0.91, "seed": 0, "distill": {"arm": "kd"},
        "train_config": {"epochs": 3, "augment": "standard", "batch_size": 128, "lr": 0.1},
        "history": [{"seconds": 10.0}, {"seconds": 12.5}],
    }))
    out = tmp_path / "out"
    assert report.main([str(runs), "-o", str(out)]) == 0
    text = (out / "README.md").read_text()
    # fooling rate at 8/255: kd mean 0.6 +- 0.141 (sample std of 0.5, 0.7), independent 0.3,
    # control 0.4 both; paired gaps 0.2 and 0.4 -> 0.3 +- 0.141, control gap 0
    row = "| 60.0 ± 14.1 | 30.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 | 30.0 ± 14.1 | 0.0 ± 0.0 |"
    assert row in text
    assert "48.6" in text and "31.2" in text  # the paper's Table 2 beside
    assert "65.0 ± 7.1" in text  # Grad-CAM share, seeds 0.6 and 0.7
    assert "22.5" in text and "91.0" in text  # training table: seconds, accuracy
    assert sorted(p.name for p in out.glob("*.png")) == [
        "agreement.png", "fooling_rate.png", "gradcam_share.png", "invariance.png"
    ]


def test_build_report_refuses_a_folder_without_runs(tmp_path, report_script) -> None:
    from advimage.studies.distill.report import build_report

    with pytest.raises(ValueError, match="no transfer.json under"):
        build_report(tmp_path, tmp_path / "out")
    with pytest.raises(SystemExit, match="no transfer.json under"):
        report_script("distill").main([str(tmp_path), "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
