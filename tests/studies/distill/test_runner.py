"""The three arms: identical batches and recipe, recorded metadata, resume, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from advimage.models import create_model, load_checkpoint
from advimage.models.hub import load_model
from advimage.studies.distill import DistillConfig, distill
from advimage.train import TrainConfig, train

CFG = dict(
    model="small-cnn", dataset="digits", epochs=1, batch_size=64, lr=0.05,
    train_limit=256, test_limit=64, channels_last=False,
)
HINT = dict(teacher_layer="conv2", student_layer="conv2")


@pytest.fixture(scope="module")
def teacher():
    return load_model("bundled:small-cnn-digits")


def _run(arm: str, out, teacher, *, epochs: int = 1, callback=None, **kw):
    t_model, t_meta = teacher
    return distill(
        TrainConfig(**{**CFG, "epochs": epochs}),
        DistillConfig(arm=arm, **kw),
        out,
        teacher=t_model,
        teacher_meta=t_meta,
        device="cpu",
        progress=False,
        batch_callback=callback,
    )


def test_arms_see_identical_batches_and_record_metadata(tmp_path, teacher) -> None:
    seqs, xs = {}, {}
    for arm, kw in (("kd", {}), ("fitnets", HINT), ("independent", {})):
        labels, images = [], []
        _run(arm, tmp_path / arm, teacher, callback=lambda x, y, a=labels, b=images: (
            a.append(y.clone()), b.append(x.sum().item())), **kw)
        seqs[arm], xs[arm] = torch.cat(labels), images
        _, meta = load_checkpoint(tmp_path / arm / "model.safetensors")
        assert meta["distill"]["arm"] == arm
        assert meta["dataset"] == "digits"
    assert len(seqs["kd"]) == 256
    assert torch.equal(seqs["kd"], seqs["fitnets"]) and torch.equal(seqs["kd"], seqs["independent"])
    assert xs["kd"] == xs["fitnets"] == xs["independent"]
    meta = json.loads((tmp_path / "kd" / "model.json").read_text())["distill"]
    assert meta["teacher_fingerprint"] == teacher[0].fingerprint()
    assert (meta["tau"], meta["alpha"], meta["gamma"], meta["beta"]) == (4.0, 0.9, 0.1, 0.0)
    fit = json.loads((tmp_path / "fitnets" / "model.json").read_text())["distill"]
    assert (fit["beta"], fit["gamma"], fit["student_layer"]) == (100.0, 1.0, "conv2")


def test_independent_arm_equals_plain_training(tmp_path, teacher) -> None:
    """gamma*CE with gamma 1 and no teacher is exactly the supervised recipe."""
    student, _ = _run("independent", tmp_path / "ind", teacher)
    plain, _ = train(TrainConfig(**CFG), tmp_path / "plain", device="cpu", progress=False)
    for (k, a), (_, b) in zip(
        student.state_dict().items(), plain.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    kd, _ = _run("kd", tmp_path / "kd", teacher)
    assert not torch.equal(kd.net.fc2.weight, plain.net.fc2.weight)  # the teacher mattered


def test_fitnets_resume_matches_uninterrupted(tmp_path, teacher) -> None:
    full, _ = _run("fitnets", tmp_path / "full", teacher, epochs=2, **HINT)
    calls = []

    def cut(x, y):  # noqa: ANN001
        calls.append(1)
        if len(calls) == 5:  # first batch of epoch 2 (4 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run("fitnets", tmp_path / "cut", teacher, epochs=2, callback=cut, **HINT)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["epoch"] == 1 and state["run_info"]["distill"]["arm"] == "fitnets"
    resumed, _ = _run("fitnets", tmp_path / "cut", teacher, epochs=2, **HINT)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another configuration"):
        _run("kd", tmp_path / "cut", teacher, epochs=2)


def test_bad_inputs(tmp_path, teacher) -> None:
    t_model, t_meta = teacher
    five = create_model("small-cnn", num_classes=5)
    with pytest.raises(ValueError, match="5 classes.*10"):
        distill(TrainConfig(**CFG), DistillConfig(arm="kd"), tmp_path / "a", teacher=five)
    with pytest.raises(ValueError, match=r"\(128,\).*\(64, 8, 8\)"):
        _run("fitnets", tmp_path / "b", teacher, teacher_layer="conv2", student_layer="fc1")
    with pytest.raises(ValueError, match="'mnist'"):
        distill(TrainConfig(**CFG), DistillConfig(arm="kd"), tmp_path / "c",
                teacher=t_model, teacher_meta={**t_meta, "dataset": "mnist"})
    with pytest.raises(ValueError, match="needs a teacher"):
        distill(TrainConfig(**CFG), DistillConfig(arm="kd"), tmp_path / "d")
    with pytest.raises(ValueError, match="arm"):
        DistillConfig(arm="crd")
    with pytest.raises(ValueError, match="hint layers"):
        DistillConfig(arm="fitnets")
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(arm="kd", alpha=-1.0)
