"""CacheModel on a tiny synthetic classifier: output contract, an independent float64 NumPy
recomputation of p_mem and the mixture, errors, save/load, surrogate, FAISS mode, tuning."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advimage.attacks import create_attack
from advimage.defend.cache import CacheModel, load_cache, save_cache
from advimage.models import wrap_model
from advimage.studies.cache.tune import sweep_grid, tune_cache

K = 4  # classes


def _model(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                        nn.Flatten(), nn.Linear(128, K))
    return wrap_model(net, num_classes=K, input_shape=(3, 8, 8)).eval()


def _data(n: int, seed: int):
    """Images whose mean colour depends on the class, so the cache has structure to find."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    colour = torch.rand(K, 3, 1, 1, generator=torch.Generator().manual_seed(99))
    x = (0.6 * colour[y] + 0.4 * torch.rand(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def setup():
    model = _model()
    x, y = _data(200, 1)
    cache = CacheModel.build(model, ["0", "2"], [(x[:100], y[:100]), (x[100:], y[100:])],
                             theta=20.0, lam=0.4)
    return model, cache, x, y


def _np_phi(model, x, layers):
    """Keys through ImageClassifier.features (a separate code path), in float64 NumPy."""
    with torch.no_grad():
        feats = model.features(x, layers)
    flat = np.concatenate([feats[n].double().flatten(1).numpy() for n in layers], axis=1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def test_build_keys_are_unit_float16_with_labels(setup):
    model, cache, x, y = setup
    assert cache.keys.dtype == torch.float16 and cache.keys.shape == (200, 8 * 64 + 128)
    torch.testing.assert_close(cache.keys.float().norm(dim=1), torch.ones(200), atol=2e-3,
                               rtol=0)
    assert torch.equal(cache.key_labels, y)
    assert cache.is_randomized is False and cache.is_differentiable is True


def test_p_mem_and_output_match_independent_numpy(setup):
    model, cache, x, y = setup
    xq, _ = _data(12, 2)
    with torch.no_grad():
        out = cache(xq).double().numpy()  # (B, K) log-probs
        logits = model(xq).double().numpy()
    q = _np_phi(model, xq, ["0", "2"])
    sims = q @ cache.keys.double().numpy().T  # (B, N)
    w = np.exp(20.0 * (sims - sims.max(axis=1, keepdims=True)))
    p_mem = np.stack([w[:, y.numpy() == c].sum(1) for c in range(K)], 1)
    p_mem /= p_mem.sum(1, keepdims=True)
    p_model = np.exp(logits - logits.max(1, keepdims=True))
    p_model /= p_model.sum(1, keepdims=True)
    np.testing.assert_allclose(np.exp(out), 0.6 * p_model + 0.4 * p_mem, atol=2e-5)
    only = cache.replace(lam=1.0)
    with torch.no_grad():
        np.testing.assert_allclose(only(xq).exp().double().numpy(), p_mem, atol=2e-5)


def test_lambda_zero_is_the_base_model_exactly(setup):
    model, cache, x, _ = setup
    base = cache.replace(lam=0.0)
    with torch.no_grad():
        assert torch.equal(base(x[:20]), torch.log_softmax(model(x[:20]), 1))


def test_cache_only_beats_chance_and_outputs_log_probs(setup):
    model, cache, _, _ = setup
    xt, yt = _data(80, 3)
    with torch.no_grad():
        out = cache.replace(lam=1.0)(xt)
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(80))
    assert float((out.argmax(1) == yt).float().mean()) > 0.6  # chance is 0.25


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "x"])
def test_bad_theta(setup, bad):
    with pytest.raises(ValueError, match="theta"):
        setup[1].replace(theta=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_lambda(setup, bad):
    with pytest.raises(ValueError, match="lambda"):
        setup[1].replace(lam=bad)


def test_unknown_layer_lists_valid_ones(setup):
    model, _, x, y = setup
    with pytest.raises(ValueError, match=r"unknown layer 'fc'; valid layers: 0, 1, 2, 3, 4"):
        CacheModel.build(model, ["fc"], [(x, y)])


def test_wraps_only_image_classifiers(setup):
    _, cache, _, _ = setup
    with pytest.raises(ValueError, match="ImageClassifier"):
        CacheModel(nn.Linear(2, 2), ["0"], cache.keys, cache.key_labels)


def test_save_load_roundtrip_and_wrong_model(setup, tmp_path):
    model, cache, x, _ = setup
    path = save_cache(cache, tmp_path / "c", meta={"note": "t"})
    info = json.loads((tmp_path / "c.json").read_text())
    assert path.name == "c.safetensors"
    assert info["layers"] == ["0", "2"] and info["theta"] == 20.0 and info["lam"] == 0.4
    assert info["model_fingerprint"] == model.fingerprint() and info["meta"] == {"note": "t"}
    loaded = load_cache(tmp_path / "c", model)
    with torch.no_grad():
        assert torch.equal(loaded(x[:10]), cache(x[:10]))
    with pytest.raises(ValueError, match="built for another model"):
        load_cache(tmp_path / "c.safetensors", _model(seed=1))


def test_surrogate_gives_useful_gradients_where_large_theta_masks_them(setup):
    _, cache, x, y = setup
    hard = cache.replace(theta=1000.0, lam=1.0)
    soft = hard.surrogate(theta=5.0)
    assert soft.theta == 5.0 and soft.is_differentiable
    assert soft.keys.data_ptr() == hard.keys.data_ptr()  # shared, not copied
    grads = []
    for m in (hard, soft):
        xi = x[:8].clone().requires_grad_()
        nn.functional.nll_loss(m(xi), y[:8]).backward()
        assert torch.isfinite(xi.grad).all()
        grads.append(xi.grad.abs().mean())
    assert grads[1] > 10 * grads[0]


def test_pgd_runs_on_the_cache_without_probability_warning(setup):
    _, cache, x, y = setup
    attack = create_attack("pgd", eps=8 / 255, steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_adv = attack(cache, x[:8], y[:8])
    assert (x_adv - x[:8]).abs().max() <= 8 / 255 + 1e-6


def test_faiss_mode_matches_exact_when_k_covers_all_keys(setup):
    pytest.importorskip("faiss")
    _, cache, x, _ = setup
    approx = cache.approximate(k=200)
    assert approx.mode == "faiss" and approx.is_differentiable is False
    report = approx.approximation_error(x[:30])
    assert report["agreement"] == 1.0 and report["max_abs_prob_diff"] < 1e-5
    small = cache.replace(lam=1.0).approximate(k=5)
    rep = small.approximation_error(x[:30])
    assert 0.0 < rep["max_abs_prob_diff"] < 1.0 and rep["agreement"] >= 0.9


def test_tune_grid_scores_equal_brute_force_and_final_cache_uses_all_images(setup):
    model, _, x, y = setup
    cache, res = tune_cache(model, ["2"], [(x, y)], val_fraction=0.25, thetas=[2.0, 30.0],
                            lambdas=[0.0, 0.5, 1.0], seed=3)
    assert cache.keys.shape[0] == 200 and res.n_keys == 150 and res.n_val == 50
    assert len(res.grid) == 6 and (res.theta, res.lam) in {(r["theta"], r["lam"])
                                                           for r in res.grid}
    best = max(res.grid, key=lambda r: (r["accuracy"], -r["nll"]))
    assert (res.theta, res.lam) == (best["theta"], best["lam"])
    # Brute force one grid point with a CacheModel over the same 150 keys.
    perm = torch.from_numpy(np.random.default_rng(3).permutation(200))
    val, rest = perm[:50], perm[50:]
    probe = CacheModel(model, ["2"], cache.keys[rest], y[rest], theta=30.0, lam=0.5)
    with torch.no_grad():
        logp = probe(x[val])
    row = next(r for r in res.grid if r["theta"] == 30.0 and r["lam"] == 0.5)
    assert row["accuracy"] == pytest.approx(float((logp.argmax(1) == y[val]).float().mean()))
    assert row["nll"] == pytest.approx(float(-logp.gather(1, y[val, None]).mean()), rel=1e-4)


def test_sweep_grid_counts():
    lp = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    lm = torch.log(torch.tensor([[[0.1, 0.9], [0.1, 0.9]]]))
    rows = sweep_grid(lp, lm, torch.tensor([0, 0]), [1.0], [0.0, 1.0])
    assert [r["accuracy"] for r in rows] == [0.5, 0.0]
    assert rows[0]["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.2)) / 2, rel=1e-6)
