"""PGD adversarial training (Madry et al., ICLR 2018) and the model_init hook of the trainer."""

from __future__ import annotations

import pytest
import torch

from advimage.attacks import PGD
from advimage.data import load_dataset
from advimage.train import TrainConfig, train


def _robust_accuracy(model, eps: float) -> float:
    x, y = load_dataset("digits", "test").tensors()
    x_adv = PGD(eps=eps, steps=10, seed=0)(model, x, y)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_adversarial_training_raises_robust_accuracy(tmp_path) -> None:
    common = dict(epochs=12, batch_size=64, lr=0.05)
    std, _ = train(TrainConfig(**common), tmp_path / "std", device="cpu", progress=False)
    adv, metrics = train(TrainConfig(**common, adv_eps=0.1, adv_steps=3), tmp_path / "adv",
                         device="cpu", progress=False)
    assert metrics["test_accuracy"] > 0.8  # still a working classifier
    r_std, r_adv = _robust_accuracy(std.eval(), 0.1), _robust_accuracy(adv.eval(), 0.1)
    assert r_adv > r_std + 0.2, (r_std, r_adv)


def test_adversarial_training_is_reproducible(tmp_path) -> None:
    cfg = TrainConfig(epochs=1, train_limit=256, test_limit=128, batch_size=64, adv_eps=0.1,
                      adv_steps=2)
    a, _ = train(cfg, tmp_path / "a", device="cpu", progress=False)
    b, _ = train(cfg, tmp_path / "b", device="cpu", progress=False)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key


def test_model_init_runs_once_before_training(tmp_path) -> None:
    seen = []

    def init(model) -> None:
        seen.append(model.arch)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()

    cfg = TrainConfig(epochs=1, train_limit=128, test_limit=64, batch_size=64)
    model, _ = train(cfg, tmp_path / "m", device="cpu", progress=False, model_init=init)
    assert seen == ["small-cnn"]
    # all-zero start: gradients only reach the last bias in the first step, so most weights
    # are still exactly zero after one short epoch
    assert sum(int((p == 0).all()) for p in model.parameters()) > 0


@pytest.mark.parametrize("bad", [dict(adv_eps=-0.1), dict(adv_eps=2.0), dict(adv_steps=0),
                                 dict(adv_step_size=0.0)])
def test_bad_adversarial_options_raise(bad) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)
