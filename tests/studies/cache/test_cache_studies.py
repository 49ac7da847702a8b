"""The cache studies of Orhan (2018), "A Simple Cache Model for Image Recognition": the paired
bootstrap, the accuracy, depth and robustness studies (advimage.studies.cache), on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advimage.data import load_dataset
from advimage.studies.cache.stats import paired_bootstrap


# ------------------------------------------------------------------ paired bootstrap
def test_paired_bootstrap_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    a = rng.random(4000) < 0.80  # (N,) correct under model a
    b = np.where(rng.random(4000) < 0.9, a, ~a)  # 10% of outcomes flipped
    res = paired_bootstrap(a, b, n_boot=4000, seed=0)
    d = a.astype(float) - b.astype(float)
    se = d.std(ddof=1) / np.sqrt(d.size)  # independent: CLT standard error of the mean gain
    assert res["gain"] == pytest.approx(a.mean() - b.mean())
    assert res["lo"] == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert res["hi"] == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)


def test_paired_bootstrap_identical_models_and_errors():
    a = np.array([1, 0, 1, 1], bool)
    assert paired_bootstrap(a, a) == {"gain": 0.0, "lo": 0.0, "hi": 0.0, "n": 4, "n_boot": 2000}
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_bootstrap(a, a[:3])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(a, a, n_boot=0)


# ------------------------------------------------------------------ studies
def test_accuracy_study_tunes_and_bootstraps(digits, tmp_path):
    from advimage.studies.cache.study import accuracy_study

    model = digits[0]
    res = accuracy_study(model, "cnn", data_root=None, out=tmp_path / "a",
                         feats_dir=tmp_path / "f", layers=["relu3"], data="digits",
                         train_limit=300, test_limit=100, n_boot=200)
    correct = np.load(tmp_path / "a" / "correct.npz")
    for kind in ("baseline", "cache", "cache_only"):
        assert res[f"{kind}_test_accuracy"] == pytest.approx(correct[kind].mean())
    assert res["gain_cache"]["gain"] == pytest.approx(
        correct["cache"].mean() - correct["baseline"].mean())
    x, y = load_dataset("digits", "test").balanced(100).tensors()
    with torch.no_grad():  # independent: the network's own predictions
        assert res["baseline_test_accuracy"] == pytest.approx(
            float((model(x).argmax(1) == y).float().mean()))
    assert len(res["grid"]) == 9 * 21 and res["n_keys"] == 300


def test_depth_study_matches_a_float64_cache(digits, tmp_path):
    from advimage.studies.cache.study import depth_study

    model = digits[0]
    res = depth_study(model, "cnn", data_root=None, out=tmp_path, feats_dir=tmp_path / "f",
                      layers=("relu1", "fc2"), n_test=50, n_val=50, n_keys=300, data="digits")
    assert [r["layer"] for r in res["rows"]] == ["relu1", "fc2"]
    row = res["rows"][1]  # keys = logits
    train = load_dataset("digits", "train").balanced(300)
    xt, yt = train.tensors()
    xq, yq = load_dataset("digits", "test").balanced(50).tensors()
    with torch.no_grad():
        k = torch.nn.functional.normalize(model(xt).double(), dim=1)  # (N, K) unit logits
        q = torch.nn.functional.normalize(model(xq).double(), dim=1)
    w = torch.exp(row["theta"] * (q @ k.T - 1))  # (B, N), float64 cache weights
    p = torch.zeros(len(yq), 10, dtype=torch.float64).index_add_(1, yt, w)
    assert row["test_accuracy"] == pytest.approx(float((p.argmax(1) == yq).double().mean()),
                                                  abs=1 / 50 + 1e-9)


def test_robustness_study_worst_case_and_min_eps(digits, saved_cache, tmp_path):
    pytest.importorskip("faiss")
    from advimage.studies.cache.robust import robustness_study

    model = digits[0]
    _, path = saved_cache
    res = robustness_study(model, path, data_root=None, out=tmp_path / "r", data="digits",
                           n=20, eps=0.2, curve_eps=(0.05,), steps=3, curve_steps=2,
                           eval_mode="exact", k=50)
    saved = json.loads((tmp_path / "r" / "robust.json").read_text())
    assert saved["attacks"] == res["attacks"] and len(res["attacks"]) == 9 + 3
    for e, worst in res["worst_case"].items():
        rows = [r for r in res["attacks"] if f"{r['eps']:.6g}" == e]
        for c, acc in worst.items():
            assert acc <= min(r[c] for r in rows) + 1e-9  # worst case over attacks
    assert res["worst_case"]["0.2"]["baseline"] < res["clean"]["baseline"]
    for c, m in res["min_eps"].items():
        need = np.array(m["per_image_eps_255"]) / 255
        assert ((need == 0).mean()) == pytest.approx(1 - res["clean"][c])
        assert m["survive_all"] <= round(res["worst_case"]["0.2"][c] * 20)


