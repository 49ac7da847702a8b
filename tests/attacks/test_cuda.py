"""The library on a CUDA device: results agree with the CPU and nothing silently moves devices.

Skipped where no GPU is present (CI); run on a GPU machine with
``ADVIMAGE_TEST_DEVICE=cuda pytest tests/attacks`` (the attack tests then run their
trained-model checks on the GPU too). Also covers the trainer and De3 on CUDA.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fast_configs import fast_config

from advimage.attacks import create_attack, list_attacks
from advimage.eval.accuracy import evaluate_accuracy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def pair(trained_digits):
    t = trained_digits
    cpu = (copy.deepcopy(t.model).cpu().eval(), t.x[:64].cpu(), t.y[:64].cpu())
    gpu = (copy.deepcopy(t.model).cuda().eval(), t.x[:64].cuda(), t.y[:64].cuda())
    return cpu, gpu


@pytest.mark.parametrize("name", list_attacks())
def test_attack_on_cuda_matches_cpu(name, pair) -> None:
    (m_cpu, x_cpu, y_cpu), (m_gpu, x_gpu, y_gpu) = pair
    attack = create_attack(name, **fast_config(name))
    adv_gpu = attack(m_gpu, x_gpu, y_gpu)
    assert adv_gpu.device.type == "cuda" and adv_gpu.dtype == x_gpu.dtype
    assert bool(attack.threat.contains(x_gpu, adv_gpu).all())
    assert torch.equal(adv_gpu, attack(m_gpu, x_gpu, y_gpu)), "not reproducible on CUDA"
    adv_cpu = attack(m_cpu, x_cpu, y_cpu)
    with torch.no_grad():
        acc_gpu = (m_gpu(adv_gpu).argmax(1) == y_gpu).float().mean().item()
        acc_cpu = (m_cpu(adv_cpu).argmax(1) == y_cpu).float().mean().item()
    # different kernels and RNG streams: same strength, not the same pixels
    assert abs(acc_gpu - acc_cpu) <= 0.1, f"{name}: robust acc cuda {acc_gpu} vs cpu {acc_cpu}"


def test_model_on_cuda_images_on_cpu_come_back_on_cpu(pair) -> None:
    (_, x_cpu, y_cpu), (m_gpu, _, _) = pair
    attack = create_attack("pgd", **fast_config("pgd"))
    adv = attack(m_gpu, x_cpu, y_cpu)
    assert adv.device.type == "cpu"
    assert bool(attack.threat.contains(x_cpu, adv).all())


def test_train_and_adversarial_train_on_cuda(tmp_path) -> None:
    from advimage.train import TrainConfig, train

    cfg = TrainConfig(epochs=10, batch_size=64, lr=0.05)  # the digits preset, shortened
    model, metrics = train(cfg, tmp_path / "std", device="cuda", progress=False)
    assert metrics["test_accuracy"] > 0.85  # 0.95 on this CPU
    adv_cfg = TrainConfig(epochs=1, train_limit=256, test_limit=128, batch_size=64,
                          adv_eps=0.1, adv_steps=2)
    train(adv_cfg, tmp_path / "adv", device="cuda", progress=False)
    assert (tmp_path / "adv" / "model.safetensors").exists()


def test_evaluate_accuracy_on_cuda(pair) -> None:
    (m_cpu, x_cpu, y_cpu), (m_gpu, _, _) = pair
    batches = [(x_cpu[:32], y_cpu[:32]), (x_cpu[32:], y_cpu[32:])]
    assert evaluate_accuracy(m_gpu, batches, torch.device("cuda")) == pytest.approx(
        evaluate_accuracy(m_cpu, batches, torch.device("cpu")), abs=1e-6)


def test_de3_defense_on_cuda() -> None:
    from advimage.defend.nim.defense import De3Defense
    from advimage.defend.nim.model import NIMAutoencoder, NIMConfig

    torch.manual_seed(0)
    nim = NIMAutoencoder(NIMConfig(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=32,
                                   enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1,
                                   dec_heads=2))
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    d = De3Defense(nim, clf, sigma_test=35.0, noise_seed=3).cuda()
    x = torch.rand(4, 1, 8, 8, device="cuda")
    out = d(x)
    assert out.device.type == "cuda" and out.shape == (4, 10)
    assert torch.equal(out, d(x))  # fixed draw: deterministic on CUDA too
