"""`advimage detect calibrate|score` end to end on the bundled digits model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from advimage.cli import main
from advimage.data import load_dataset

FAST = ["--set", "sigma=0.05", "--set", "c2t_lr=0.005", "--set", "c2t_cap=40"]


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.json"
    rc = main(["detect", "calibrate", "--model", "bundled", "--fpr", "0.1", "--out", str(out),
               "--threads", "1", *FAST])
    assert rc == 0
    return out


def test_calibrate_writes_detector(detector_file, capsys):
    data = json.loads(detector_file.read_text())
    assert data["criteria"] == ["c1", "c2t"]
    assert data["config"]["c2t_cap"] == 40 and data["config"]["sigma"] == 0.05
    assert data["calibration"]["fpr_achieved"] <= 0.1
    assert set(data["thresholds"]) == {"c1", "c2t"}
    assert len(data["model"]["fingerprint"]) == 64


def test_score_prints_verdicts(detector_file, tmp_path, capsys):
    x, _ = load_dataset("digits", "test").tensors(limit=3)
    path = tmp_path / "imgs.safetensors"
    save_file({"x_adv": x.contiguous()}, str(path))
    capsys.readouterr()
    rc = main(["detect", "score", "--detector", str(detector_file), "--model", "bundled",
               str(path), "--threads", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[0].split("\t") == ["image", "pred", "c1", "c2t", "verdict"]
    assert len(out) == 4 and all(r.split("\t")[-1] in ("clean", "adversarial") for r in out[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--criteria", "c1,c9"], "unknown criterion 'c9'"),
        (["--fpr", "0.001"], "needs at least 1000 calibration images"),
        (["--fpr", "1.5"], "fpr must be in (0, 1)"),
        (["--set", "speed=3"], "--set takes KEY=VALUE"),
        (["--preset", "svhn"], "unknown detector preset"),
    ],
)
def test_calibrate_errors(args, message, tmp_path, capsys):
    rc = main(["detect", "calibrate", "--model", "bundled", "--out", str(tmp_path / "d.json"),
               "--limit", "30", "--threads", "1", *FAST, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_score_with_another_model_is_refused(detector_file, tmp_path, capsys):
    from advimage.models import save_checkpoint
    from advimage.models.hub import load_model

    model, _ = load_model("bundled")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 0.5
    ckpt = save_checkpoint(model, tmp_path / "other.safetensors", meta={})
    x, _ = load_dataset("digits", "test").tensors(limit=1)
    img = tmp_path / "one.safetensors"
    save_file({"x": x.contiguous()}, str(img))
    rc = main(["detect", "score", "--detector", str(detector_file), "--model", str(ckpt),
               str(img)])
    err = capsys.readouterr().err
    assert rc == 2 and "calibrated for another model" in err


def test_eval_detection_device_option(tmp_path, capsys, monkeypatch):
    """`eval detection --device` moves the model (the GPU run needs it); a GPU asked for on a
    machine without one is one line, exit 2, before anything is written."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if not (repo.parent / "shared/models/resnet20-12fca82f.th").exists():
        pytest.skip("needs ../shared/models (the quick config's model)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "det"
    rc = main(["eval", "detection", "--config",
               str(repo / "configs/detection-resnet20-quick.yaml"),
               "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err == ("advimage: error: device 'cuda' requested but no CUDA GPU is available; "
                   "use --device cpu\n")
    assert not (out / "results.json").exists()
