"""Noisy image modeling (You et al., NeurIPS 2023) and the De^3 defense: tiny 8x8 models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advimage.defend.nim.defense import De3Defense, build_nim_defense
from advimage.defend.nim.io import load_nim, save_nim
from advimage.defend.nim.model import (
    NIMAutoencoder,
    NIMConfig,
    normalized_patches,
    patchify,
    unpatchify,
)
from advimage.defend.registry import build_defense, list_defenses
from advimage.model_flags import model_flags
from advimage.studies.nim.train import pretrain

TINY = dict(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=32, enc_depth=2,
            enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2)


def _digits(n: int = 64) -> torch.Tensor:
    from advimage.data import load_dataset

    return load_dataset("digits", "train").tensors(limit=n)[0]  # (n, 1, 8, 8)


class _Flat(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_sigma_distribution_matches_gamma() -> None:
    model = NIMAutoencoder(NIMConfig(**TINY))
    s = model.sample_sigma(torch.zeros(200_000, 1, 1, 1))  # (B,)
    # Gamma(k=25, theta=3): mean k theta = 75, variance k theta^2 = 225
    assert abs(float(s.mean()) - 75.0) < 0.2
    assert abs(float(s.var()) - 225.0) < 4.0
    assert float(s.min()) > 0


def test_add_noise_scale_is_sigma_over_255() -> None:
    model = NIMAutoencoder(NIMConfig(**TINY))
    x = torch.full((4, 1, 64, 64), 0.5)
    noisy = model.add_noise(x.expand(4, 1, 64, 64).clone(), torch.tensor([0.0, 25.5, 51.0, 255.0]))
    std = (noisy - x).flatten(1).std(dim=1)
    assert torch.allclose(std, torch.tensor([0.0, 0.1, 0.2, 1.0]), atol=0.05)


def test_normalized_target_matches_independent_computation() -> None:
    x = torch.rand(3, 2, 4, 6)
    target, mean, std = normalized_patches(x, 2)
    assert target.shape == (3, 6, 8)
    for b in range(3):
        for i in range(2):
            for j in range(3):
                patch = x[b, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].permute(1, 2, 0).reshape(-1)
                ref = (patch - patch.mean()) / torch.sqrt(patch.var(unbiased=True) + 1e-6)
                assert torch.allclose(target[b, i * 3 + j], ref, atol=1e-5)
                assert torch.allclose(target[b, i * 3 + j] * std[b, i * 3 + j]
                                      + mean[b, i * 3 + j], patch, atol=1e-6)
    assert torch.equal(unpatchify(patchify(x, 2), 2, 2, (4, 6)), x)


def test_mim_masks_exactly_75_percent() -> None:
    model = NIMAutoencoder(NIMConfig(**{**TINY, "image_size": (16, 16)}, mode="mim"))
    mask = model.random_mask(torch.zeros(50, 1, 16, 16))  # 64 patches
    assert mask.shape == (50, 64)
    assert (mask.sum(dim=1) == 48).all()
    assert len({tuple(r.tolist()) for r in mask}) > 40  # random per image


def test_mim_loss_ignores_visible_patches() -> None:
    model = NIMAutoencoder(NIMConfig(**TINY, mode="mim"))
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(3)
    loss, pred = model(x)
    torch.manual_seed(3)
    mask = model.random_mask(x)
    target, _, _ = normalized_patches(x, 2)
    ref = ((pred - target) ** 2).mean(-1)[mask].mean()
    assert torch.allclose(loss, ref)
    assert not torch.allclose(loss, ((pred - target) ** 2).mean())


@pytest.mark.parametrize("mode", ["nim", "mim"])
def test_pretrain_loss_decreases(tmp_path, mode) -> None:
    cfg = NIMConfig(**TINY, mode=mode)
    x = _digits(64)
    _, hist = pretrain(cfg, x, tmp_path / "a", epochs=6, batch_size=16, lr=3e-3,
                       warmup_epochs=0.5)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[0]["imgs_per_s"] > 0
    assert (tmp_path / "a" / "nim.safetensors").exists()
    with pytest.raises(ValueError, match="other settings"):
        pretrain(cfg, x, tmp_path / "a", epochs=7, batch_size=16, lr=3e-3, warmup_epochs=0.5)


def test_resume_is_exact(tmp_path, monkeypatch) -> None:
    import advimage.studies.nim.train as nt

    cfg = NIMConfig(**TINY)
    x = _digits(32)
    kw = dict(epochs=4, batch_size=16, lr=3e-3, warmup_epochs=0.5)
    full, _ = pretrain(cfg, x, tmp_path / "full", **kw)
    calls = {"n": 0}
    real = nt.save_train_state

    def crash_after_two(out, model, opt, meta):  # noqa: ANN001
        real(out, model, opt, meta)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(nt, "save_train_state", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, x, tmp_path / "part", **kw)
    monkeypatch.setattr(nt, "save_train_state", real)
    resumed, hist = pretrain(cfg, x, tmp_path / "part", **kw)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def _defense(tmp_path, **kw) -> De3Defense:
    model = NIMAutoencoder(NIMConfig(**TINY)).eval()
    return De3Defense(model, _Flat(), **kw)


def test_de3_shape_randomness_and_seed(tmp_path) -> None:
    x = _digits(5)
    d = _defense(tmp_path, sigma_test=40.0)
    with torch.no_grad():
        a, b = d(x), d(x)
        assert a.shape == (5, 10)
        assert not torch.allclose(a, b)
        p = d.purify(x)
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    flags = model_flags(d)
    assert flags.is_randomized and flags.is_differentiable and not flags.uses_bpda
    seeded = _defense(tmp_path, sigma_test=40.0, noise_seed=7)
    seeded.load_state_dict(d.state_dict())
    assert not model_flags(seeded).is_randomized  # a fixed draw: deterministic
    with torch.no_grad():
        assert torch.equal(seeded(x), seeded(x))
        # one (C, H, W) draw shared by every image, made on the CPU from the seed
        n = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(7))
        d.set_noise(n)
        assert not d.is_randomized
        assert torch.allclose(d(x), seeded(x), atol=1e-6)
        # each image keeps its draw whichever images share its batch (attacks drop finished ones)
        torch.testing.assert_close(seeded(x[[3, 1]]), seeded(x)[[3, 1]], atol=1e-6, rtol=0)
        d.set_noise(None)
        assert d.is_randomized
        assert not torch.allclose(d(x), seeded(x))
        seeded.noise_seed = 8  # a new seed, a new draw
        assert not torch.allclose(seeded(x), d.classifier(d.nim.reconstruct(
            d.nim.add_noise(x, 40.0, n), x).clamp(0, 1)), atol=1e-6)
    xg = x.clone().requires_grad_(True)
    seeded(xg).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


def test_sigma_zero_is_deterministic(tmp_path) -> None:
    x = _digits(4)
    d = _defense(tmp_path, sigma_test=0)
    assert not d.is_randomized  # no noise at all: EOT has nothing to average
    with torch.no_grad():
        assert torch.equal(d(x), d(x))
        ref = d.nim.reconstruct(x, x).clamp(0, 1)
        assert torch.allclose(d.purify(x), ref)


def test_checkpoint_roundtrip_and_harness(tmp_path) -> None:
    model = NIMAutoencoder(NIMConfig(**TINY)).eval()
    save_nim(model, tmp_path / "m")
    back = load_nim(tmp_path / "m.safetensors", image_size=(8, 8))
    for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert "nim" in list_defenses()
    d = build_defense("nim", _Flat(), {"path": str(tmp_path / "m"), "sigma_test": 0})
    assert isinstance(d, De3Defense) and d.sigma_test == 0.0
    x = _digits(3)
    with torch.no_grad():
        assert d(x).shape == (3, 10)


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="divisible by patch_size"):
        NIMConfig(**{**TINY, "image_size": (9, 8)})
    with pytest.raises(ValueError, match="sigma_test"):
        _defense(tmp_path, sigma_test=-1.0)
    with pytest.raises(ValueError, match="sigma_test"):
        _defense(tmp_path, sigma_test=float("nan"))
    model = NIMAutoencoder(NIMConfig(**TINY))
    save_nim(model, tmp_path / "m")
    with pytest.raises(ValueError, match="trained on 8x8 images, not 32x32"):
        load_nim(tmp_path / "m", image_size=(32, 32))

    class Big(_Flat):
        input_shape = (1, 16, 16)

    with pytest.raises(ValueError, match="trained on 8x8"):
        build_nim_defense(Big(), {"path": str(tmp_path / "m")})
    with pytest.raises(ValueError, match="unknown option"):
        build_nim_defense(_Flat(), {"path": str(tmp_path / "m"), "sigma": 3})
    with pytest.raises(ValueError, match="needs options.path"):
        build_nim_defense(_Flat(), {})
    with pytest.raises(ValueError, match="needs a NIMAutoencoder"):
        De3Defense(nn.Identity(), _Flat())  # type: ignore[arg-type]
    d = _defense(tmp_path, sigma_test=10)
    d.sigma_test = 20
    assert d.sigma_test == 20.0
    with pytest.raises(ValueError, match="sigma_test"):
        d.sigma_test = -0.5
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="noise must have shape"):
        _defense(tmp_path).set_noise(torch.zeros(1, 4, 4))
    d = _defense(tmp_path)
    d.set_noise(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="holds 3 draws"):
        d(torch.rand(2, 1, 8, 8))

    class Rgb(_Flat):
        input_shape = (3, 8, 8)

    with pytest.raises(ValueError, match="1 channels"):
        build_nim_defense(Rgb(), {"path": str(tmp_path / "m")})


def test_trained_nim_denoises_digits(tmp_path) -> None:
    """A few seconds of NIM pre-training on digits already removes most sigma=75 noise."""
    from advimage.data import load_dataset

    cfg = NIMConfig(**{**TINY, "enc_dim": 64})
    model, hist = pretrain(cfg, _digits(1438), tmp_path, epochs=10, batch_size=64, lr=2e-3)
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    test = load_dataset("digits", "test").tensors()[0]  # (359, 1, 8, 8)
    noise = torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        noisy = model.add_noise(test, 75.0, noise)
        mse_noisy = float(((noisy.clamp(0, 1) - test) ** 2).mean())
        mse_nim = float(((model.reconstruct(noisy, test).clamp(0, 1) - test) ** 2).mean())
    assert mse_nim < 0.5 * mse_noisy  # measured: 0.013 vs 0.051
    # the MIM baseline (same network, 75% masking, never saw noise) denoises worse
    mim, _ = pretrain(NIMConfig(**{**TINY, "enc_dim": 64}, mode="mim"), _digits(1438),
                      tmp_path / "mim", epochs=10, batch_size=64, lr=2e-3)
    with torch.no_grad():
        mse_mim = float(((mim.reconstruct(noisy, test).clamp(0, 1) - test) ** 2).mean())
        d = De3Defense(mim, _Flat(), sigma_test=75.0, noise_seed=0)
        assert d(test[:4]).shape == (4, 10)
    assert mse_nim < 0.5 * mse_mim, (mse_nim, mse_mim)  # measured: 0.015 vs 0.10
