"""NIM fine-tuning (You et al., NeurIPS 2023): encoder copy, De^3 reconstruction hook, a short
digits run that learns, checkpoints that load like any other, a frozen autoencoder, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advimage.cli import main
from advimage.data import load_dataset
from advimage.defend.nim.defense import De3Defense, build_nim_defense
from advimage.defend.nim.io import load_nim, save_nim
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.models import create_model
from advimage.models.hub import load_model
from advimage.studies.nim.finetune import (
    NIMFinetuneLoss,
    copy_encoder,
    encoder_kwargs,
    finetune,
    nim_fingerprint,
)
from advimage.studies.nim.train import pretrain
from advimage.train.config import TrainConfig

TINY = dict(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=32, enc_depth=2, enc_heads=2,
            dec_dim=32, dec_depth=1, dec_heads=2)


@pytest.fixture(scope="module")
def nim_path(tmp_path_factory):
    """A tiny NIM autoencoder pre-trained for 3 epochs on 512 digits (about 1 s)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("nim")
    images = load_dataset("digits", "train").balanced(512).tensors()[0]
    pretrain(NIMConfig(**TINY), images, out, epochs=3, batch_size=64, lr=2e-3, device="cpu")
    return out / "nim"


@pytest.fixture(scope="module")
def run(nim_path, tmp_path_factory):
    """One short fine-tuning run on all digits training images (about 5 s on one thread).

    SGD on this tiny ViT is seed-sensitive at short schedules: 15 epochs gave 0.22-0.80 test
    accuracy over seeds, 30 epochs at lr 0.05 gave 0.86-0.87 for seeds 0, 1, 2.
    """
    out = tmp_path_factory.mktemp("ft")
    cfg = TrainConfig(dataset="digits", epochs=30, batch_size=64, lr=0.05, augment="none",
                      test_limit=200, channels_last=False, seed=0)
    model, metrics = finetune(nim_path, cfg, out, sigma_max=30.0, sigma_test=70.0,
                              device="cpu", progress=False)
    return out, model, metrics


def _classifier(nim: NIMAutoencoder, pool: str = "mean"):
    model = create_model("nim-vit", 10, **encoder_kwargs(nim.config, pool))
    copy_encoder(nim, model)
    return model


def test_encoder_copied_head_new(nim_path) -> None:
    nim = load_nim(nim_path)
    fresh = create_model("nim-vit", 10, **encoder_kwargs(nim.config))
    head_before = fresh.net.head.weight.clone()
    names = copy_encoder(nim, fresh)
    nim_state, net_state = nim.state_dict(), fresh.net.state_dict()
    assert {n.split(".")[0] for n in names} == {"patch_embed", "cls_token", "pos_embed", "blocks",
                                               "norm"}
    assert len(names) == len(net_state) - 2  # everything but head.weight / head.bias
    for name in names:
        assert torch.equal(net_state[name], nim_state[name]), name
    assert not any(k.startswith("head") for k in nim_state)
    assert torch.equal(fresh.net.head.weight, head_before)  # untouched, MAE init N(0, 2e-5)
    assert fresh.net.head.weight.abs().max() < 1e-4 and not fresh.net.head.bias.any()
    assert fresh.mean.eq(0).all() and fresh.std.eq(1).all()  # the encoder saw raw [0, 1] pixels
    # the trunk computes exactly the encoder: class-token model vs NIMAutoencoder.encode
    x = torch.rand(4, 1, 8, 8)
    cls_model = _classifier(nim, "cls")
    with torch.no_grad():
        tokens = cls_model.features(x, ["norm"])["norm"]  # (B, N+1, D)
        torch.testing.assert_close(tokens, nim.encode(x), atol=1e-5, rtol=1e-5)
        # mean pooling: LayerNorm of the average of the last block's patch tokens
        mean_model = _classifier(nim)
        last = mean_model.features(x, ["blocks.1"])["blocks.1"]  # (B, N+1, D)
        pooled = F.layer_norm(last[:, 1:].mean(1), (32,), nim.norm.weight, nim.norm.bias)
        want = pooled @ mean_model.net.head.weight.T + mean_model.net.head.bias
        torch.testing.assert_close(mean_model(x), want, atol=1e-6, rtol=1e-5)


def _manual_reconstruction(nim: NIMAutoencoder, x, sigma, noise):
    """Independent De^3: noisy = x + sigma/255 n, decode(encode), un-normalize with x's patches."""
    noisy = x + sigma.view(-1, 1, 1, 1) / 255.0 * noise
    pred = nim.decode(nim.encode(noisy))  # (B, 16, 4) normalized 2x2 patches
    patches = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)  # (B, 16, 4), 1 channel
    mean = patches.mean(-1, keepdim=True)
    std = (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    img = F.fold((pred * std + mean).transpose(1, 2), (8, 8), kernel_size=2, stride=2)
    return img.clamp(0, 1)


def test_loss_hook_input_is_de3_reconstruction(nim_path) -> None:
    nim = load_nim(nim_path)
    x = load_dataset("digits", "test").balanced(20).tensors()[0][:6]
    y = torch.arange(6)
    seen = {}

    class Capture(nn.Module):
        def forward(self, z):
            seen["x"] = z
            return torch.zeros(z.shape[0], 10, requires_grad=True)

    hook = NIMFinetuneLoss(nim, sigma_max=30.0)
    torch.manual_seed(7)
    loss, logits = hook(Capture(), x, y)
    assert logits.shape == (6, 10)
    torch.testing.assert_close(loss, torch.tensor(10.0).log())  # CE of uniform logits
    torch.manual_seed(7)  # the documented draw order: sigma (B,) then noise (B, C, H, W)
    sigma = 30.0 * torch.rand(6)
    noise = torch.randn_like(x)
    assert 0 <= sigma.min() and sigma.max() <= 30 and sigma.std() > 1  # per-image levels
    with torch.no_grad():
        for i in range(6):  # De3Defense itself, one image at a time at its own sigma
            de3 = De3Defense(nim, nn.Identity(), sigma_test=float(sigma[i]))
            de3.set_noise(noise[i])
            torch.testing.assert_close(seen["x"][i:i + 1], de3.purify(x[i:i + 1]),
                                       atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(seen["x"], _manual_reconstruction(nim, x, sigma, noise),
                                   atol=1e-5, rtol=1e-5)
    assert seen["x"].min() >= 0 and seen["x"].max() <= 1
    assert not (seen["x"] - x).abs().max() < 1e-3  # it really was reconstructed


def test_finetune_learns_and_checkpoint_round_trips(run, nim_path) -> None:
    out, model, metrics = run
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1 (measured 0.86-0.87, 3 seeds)
    assert metrics["de3_accuracy"] > 0.5 and metrics["de3_sigma_test"] == 70.0
    assert json.loads((out / "metrics.json").read_text())["de3_accuracy"] == metrics["de3_accuracy"]
    loaded, meta = load_model(out / "model.safetensors")
    assert meta["arch"] == "nim-vit" and meta["arch_kwargs"]["patch_size"] == 2
    assert meta["nim_fingerprint"] == nim_fingerprint(load_nim(nim_path))
    assert meta["nim_path"] == str(nim_path) and meta["nim_mode"] == "nim"
    assert meta["nim_sigma_max"] == 30.0 and meta["nim_pool"] == "mean"
    x = torch.rand(5, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the harness's ``nim`` defense accepts the fine-tuned classifier
    de3 = build_nim_defense(loaded, {"path": str(nim_path), "sigma_test": 70.0, "noise_seed": 0})
    with torch.no_grad():
        assert de3(x).shape == (5, 10)
    # resuming the finished run with other settings is refused
    cfg = TrainConfig(dataset="digits", epochs=30, batch_size=64, lr=0.05, augment="none",
                      test_limit=200, channels_last=False, seed=0)
    with pytest.raises(ValueError, match="another configuration"):
        finetune(nim_path, cfg, out, sigma_max=20.0, device="cpu", progress=False)


def test_mim_model_stays_frozen(tmp_path) -> None:
    torch.manual_seed(1)
    mim = NIMAutoencoder(NIMConfig(**TINY, mode="mim"))
    before = {k: v.clone() for k, v in mim.state_dict().items()}
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=32, lr=0.05, train_limit=64,
                      test_limit=20, channels_last=False)
    model, metrics = finetune(mim, cfg, tmp_path / "mim", sigma_test=None, device="cpu",
                              progress=False)
    assert "de3_accuracy" not in metrics
    for k, v in mim.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not mim.training and not any(p.requires_grad for p in mim.parameters())
    _, meta = load_model(tmp_path / "mim" / "model.safetensors")
    assert meta["nim_mode"] == "mim" and meta["nim_path"] is None
    assert meta["nim_fingerprint"] == nim_fingerprint(mim)
    # training moved the encoder copy, not the autoencoder
    assert not torch.equal(model.net.blocks[0].attn.qkv.weight, mim.blocks[0].attn.qkv.weight)


def test_bad_input(tmp_path, nim_path) -> None:
    cfg = TrainConfig(dataset="digits", epochs=1, train_limit=32, test_limit=20)
    with pytest.raises(ValueError, match="sigma_max must be"):
        finetune(nim_path, cfg, tmp_path / "a", sigma_max=-1.0)
    with pytest.raises(ValueError, match="sigma_max must be"):
        NIMFinetuneLoss(load_nim(nim_path), sigma_max=float("nan"))
    with pytest.raises(ValueError, match="pool must be"):
        finetune(nim_path, cfg, tmp_path / "a", pool="max")
    big = tmp_path / "big" / "nim"
    save_nim(NIMAutoencoder(NIMConfig(image_size=(16, 16), in_channels=1, patch_size=4,
                                      enc_dim=16, enc_depth=1, enc_heads=2, dec_dim=16,
                                      dec_depth=1, dec_heads=2)), big)
    with pytest.raises(ValueError, match=r"1x16x16 images, digits has 1x8x8") as err:
        finetune(big, cfg, tmp_path / "a")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="adv_eps must be 0"):
        finetune(nim_path, TrainConfig(dataset="digits", adv_eps=0.1), tmp_path / "a")
    with pytest.raises(ValueError, match="model_kwargs must be empty"):
        finetune(nim_path, TrainConfig(dataset="digits", model_kwargs={"enc_dim": 8}),
                 tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_cli_finetune(tmp_path, nim_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["nim", "finetune", "--nim", str(nim_path), "--data", "digits", "--out", str(out),
            "--epochs", "1", "--batch-size", "32", "--train-limit", "64", "--test-limit", "20",
            "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "De3 (sigma_test 70) accuracy" in text
    assert f"{out}/model.safetensors" in text and (out / "model.safetensors").exists()
    assert main([*args[:-2], "--sigma-max", "-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sigma_max must be" in err[0]
