"""Training: learns, checkpoints every epoch, resumes exactly after an interruption."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import advimage.train.trainer as trainer_mod
from advimage.models import load_checkpoint
from advimage.train import TrainConfig, train
from advimage.train.trainer import lr_at

CFG = dict(
    model="small-cnn",
    dataset="digits",
    epochs=3,
    batch_size=64,
    lr=0.05,
    train_limit=384,
    test_limit=128,
    seed=3,
)


def test_lr_schedule_warmup_then_cosine() -> None:
    lrs = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-3


def test_train_writes_checkpoints_and_learns(tmp_path) -> None:
    model, metrics = train(
        TrainConfig(**{**CFG, "epochs": 4, "train_limit": None}),
        tmp_path,
        device="cpu",
        progress=False,
    )
    assert metrics["test_accuracy"] > 0.8  # 10 classes: chance is 0.1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
    loaded, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert meta["dataset"] == "digits" and meta["train_config"]["seed"] == 3
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["torch_version"] == torch.__version__ and "git_hash" in cfg
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model.cpu()(x))


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch) -> None:
    full, _ = train(TrainConfig(**CFG), tmp_path / "full", device="cpu", progress=False)

    original = trainer_mod.save_train_state
    calls = {"n": 0}

    def crash_after_first(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was checkpointed

    monkeypatch.setattr(trainer_mod, "save_train_state", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**CFG), tmp_path / "cut", device="cpu", progress=False)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(trainer_mod, "save_train_state", original)
    resumed, _ = train(TrainConfig(**CFG), tmp_path / "cut", device="cpu", progress=False)

    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 3
    del full, resumed


def test_resume_with_other_config_is_refused(tmp_path) -> None:
    train(TrainConfig(**{**CFG, "epochs": 1}), tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(
            TrainConfig(**{**CFG, "epochs": 1, "lr": 0.01}), tmp_path, device="cpu", progress=False
        )


@pytest.mark.parametrize(
    "bad",
    [dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(augment="rotate"), dict(train_limit=0)],
)
def test_bad_config(bad) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**{**CFG, **bad})


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"modle": "resnet20"})
