"""CacheModel on CIFAR-10 with the reference ResNet-20 (../shared): a 2,000-image balanced cache
(the full 50k-key run is `advimage.studies.cache.experiment`, too slow for tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advimage.data import load_dataset
from advimage.defend.cache import CacheModel, save_cache
from advimage.models.hub import load_model

pytestmark = pytest.mark.shared
LAYERS = ["layer3.2", "pool"]


@pytest.fixture(scope="module")
def cifar(cifar10_root, shared_models):
    torch.set_num_threads(1)
    model, _ = load_model(next(shared_models.glob("resnet20-*.th")))
    train = load_dataset("cifar10", "train", data_root=cifar10_root).balanced(2000)
    x, y = load_dataset("cifar10", "test", data_root=cifar10_root).balanced(300).tensors()
    cache = CacheModel.build(model, LAYERS, train, theta=30.0, lam=0.5, batch_size=500)
    with torch.no_grad():
        logits, phi = cache.embed(x)
        log_p_mem = cache.memory_log_probs(phi)
    return model, cache, x, y, logits, phi, log_p_mem


def test_cache_only_accuracy_is_far_above_chance(cifar):
    _, _, _, y, logits, _, log_p_mem = cifar
    acc_mem = float((log_p_mem.argmax(1) == y).float().mean())
    acc_base = float((logits.argmax(1) == y).float().mean())
    assert acc_mem > 0.75  # chance 0.10; 2,000 keys of a 91.7% network
    assert acc_mem > acc_base - 0.1


def test_lambda_zero_equals_the_base_model(cifar):
    model, cache, x, _, logits, _, _ = cifar
    with torch.no_grad():
        out = cache.replace(lam=0.0)(x[:50])
    assert torch.equal(out.argmax(1), logits[:50].argmax(1))
    torch.testing.assert_close(out, torch.log_softmax(model(x[:50]), 1), rtol=0, atol=0)


def test_p_mem_matches_float64_numpy(cifar):
    model, cache, x, _, _, _, log_p_mem = cifar
    with torch.no_grad():
        feats = model.features(x[:20], LAYERS)
    flat = np.concatenate([feats[n].double().flatten(1).numpy() for n in LAYERS], axis=1)
    q = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    s = 30.0 * (q @ cache.keys.double().numpy().T)  # (20, 2000)
    w = np.exp(s - s.max(1, keepdims=True))
    labels = cache.key_labels.numpy()
    p = np.stack([w[:, labels == c].sum(1) for c in range(10)], 1)
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(log_p_mem[:20].exp().double().numpy(), p, atol=1e-4)


def test_mixture_output_and_faiss_agreement(cifar):
    _, cache, x, y, logits, _, log_p_mem = cifar
    with torch.no_grad():
        out = cache(x[:100])
    ref = 0.5 * torch.softmax(logits[:100], 1) + 0.5 * log_p_mem[:100].exp()
    torch.testing.assert_close(out.exp(), ref, atol=1e-5, rtol=1e-4)
    pytest.importorskip("faiss")
    report = cache.approximate(k=200).approximation_error(x[:100])
    assert report["agreement"] >= 0.97


def test_minimal_budget_study(cifar, cifar10_root, tmp_path):
    from advimage.studies.cache.minimal import minimal_study

    model, cache, *_ = cifar
    path = save_cache(cache, tmp_path / "c", meta={"theta_cache_only": 20.0})
    res = minimal_study(model, path, data_root=str(cifar10_root), out=tmp_path / "m", n=20,
                        grid_255=(1, 2, 4, 8, 16), steps=3, k=50)
    s, per = res["summary"], res["per_image_255"]
    settings = ("white-box", "transfer", "surrogate", "topm", "worst")
    assert set(s) == {"baseline/white-box", "baseline/worst"} | {
        f"{c}/{t}" for c in ("cache", "cache_only") for t in settings}
    assert s["baseline/white-box"]["median"] <= 2  # undefended ResNet-20 falls at tiny budgets
    for c in ("cache", "cache_only"):  # worst case = smallest budget over the threat models
        rows = [per[f"{c}/{t}"] for t in ("white-box", "transfer", "surrogate", "topm")]
        assert per[f"{c}/worst"] == [min(v) for v in zip(*rows, strict=True)]
    assert (tmp_path / "m" / "minimal.json").exists()
