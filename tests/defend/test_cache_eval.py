"""Cache evaluation glue (Orhan, 2018) on the bundled digits model: the ``cache`` harness
defense (and its BPDA surrogate), ``--defense`` in ``advimage eval robust``, the paired
bootstrap, the demo section, and the accuracy / depth / robustness studies on tiny caches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advimage.cli import main
from advimage.data import load_dataset
from advimage.defend.cache import CacheModel, save_cache
from advimage.defend.cache.defense import CacheDefense
from advimage.defend.registry import build_defense, list_defenses, parse_defense_arg
from advimage.hub import load_model
from advimage.model_flags import model_flags
from advimage.studies.cache.stats import paired_bootstrap


@pytest.fixture(scope="module")
def digits():
    model, _ = load_model("bundled")
    train = load_dataset("digits", "train").balanced(200)
    x, y = load_dataset("digits", "test").balanced(40).tensors()
    return model, train, x, y


@pytest.fixture
def saved_cache(digits, tmp_path):
    model, train, _, _ = digits
    cache = CacheModel.build(model, ["relu3"], train, theta=20.0, lam=0.5)
    save_cache(cache, tmp_path / "c", meta={"theta_cache_only": 10.0})
    return cache, tmp_path / "c"


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


# ------------------------------------------------------------------ harness defense
def test_cache_defense_is_registered_and_reproduces_the_cache(digits, saved_cache):
    model, _, x, _ = digits
    cache, path = saved_cache
    assert "cache" in list_defenses()
    defended = build_defense("cache", model, {"path": str(path)})
    assert isinstance(defended, CacheDefense)
    assert model_flags(defended).as_row() == {"is_randomized": 0, "is_differentiable": 1,
                                              "uses_bpda": 0}
    with torch.no_grad():
        torch.testing.assert_close(defended(x), cache(x))
        only = build_defense("cache", model, {"path": str(path), "lam": 1, "theta": 10})
        torch.testing.assert_close(only(x), cache.replace(lam=1.0, theta=10.0)(x))


def test_cache_defense_bpda_uses_the_surrogate_gradient(digits, saved_cache):
    model, _, x, y = digits
    cache, path = saved_cache
    defended = build_defense("cache", model, {"path": str(path), "bpda_theta": 2})
    assert model_flags(defended).uses_bpda and not model_flags(defended).is_differentiable
    xa = x[:8].clone().requires_grad_(True)
    out = defended(xa)
    torch.nn.functional.nll_loss(out, y[:8]).backward()
    xb = x[:8].clone().requires_grad_(True)
    torch.nn.functional.nll_loss(cache.surrogate(2.0)(xb), y[:8]).backward()
    torch.testing.assert_close(out.detach(), cache(x[:8]).detach())  # value: the real cache
    torch.testing.assert_close(xa.grad, xb.grad)  # gradient: the theta=2 copy's
    assert xa.grad.abs().sum() > 0


@pytest.mark.parametrize(("options", "message"), [
    ({}, "needs options.path"),
    ({"path": "x", "colour": 1}, "unknown option 'colour'"),
])
def test_cache_defense_bad_options(digits, options, message):
    with pytest.raises(ValueError, match=message):
        build_defense("cache", digits[0], options)


def test_parse_defense_arg():
    assert parse_defense_arg("cache:runs/c,lam=1,theta=2.5,mode=faiss") == (
        "cache", {"path": "runs/c", "lam": 1, "theta": 2.5, "mode": "faiss"})
    assert parse_defense_arg("none") == ("none", {})
    with pytest.raises(ValueError, match="key=value"):
        parse_defense_arg("cache:c,lam")


def test_eval_robust_cli_attacks_the_defended_model(digits, saved_cache, tmp_path, capsys):
    model, _, _, _ = digits
    cache, path = saved_cache
    out = tmp_path / "r"
    rc = main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "40",
               "--attacks", "fgsm", "--eps", "0.1", "--defense", f"cache:{path},lam=1",
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    row = json.loads((out / "robust.json").read_text())["results"][0]
    x, y = load_dataset("digits", "test").balanced(40).tensors()
    only = cache.replace(lam=1.0)
    with torch.no_grad():
        assert row["clean_accuracy"] == pytest.approx(float((only(x).argmax(1) == y).float()
                                                            .mean()))
    assert main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "10",
                 "--defense", "cache", "--no-progress"]) == 2
    assert "needs options.path" in capsys.readouterr().err


# ------------------------------------------------------------------ demo section
def test_demo_section_reports_model_cache_and_cache_only(tmp_path):
    from advimage.demo import _SECTIONS, DemoContext
    from advimage.eval.report import HtmlReport

    model, _ = load_model("bundled")
    test = load_dataset("digits", "test")
    ctx = DemoContext(model, test, torch.device("cpu"), 0, 0.1, tmp_path, {})
    res = _SECTIONS.get("cache")(HtmlReport("t"), ctx)
    rows = {r["classifier"]: r for r in res["rows"]}
    assert list(rows) == ["model", "cache", "cache-only"]
    x, y = test.balanced(200).tensors()
    with torch.no_grad():
        assert rows["model"]["clean_accuracy"] == pytest.approx(
            float((model(x).argmax(1) == y).float().mean()), abs=1e-4)
    for r in rows.values():  # PGD at eps 0.1 hurts every classifier on these digits
        assert r["pgd_whitebox_accuracy"] < r["clean_accuracy"]
        assert r["pgd_transfer_accuracy"] < r["clean_accuracy"]


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


def test_run_harness_with_cache_defenses(digits, saved_cache, tmp_path):
    """`advimage run` machinery: cache, cache-only and BPDA rows; flags recorded; clean
    accuracy of the cache row equals the cache's own accuracy on the same images."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    from harness_helpers import tiny_config

    from advimage.eval.config import parse_config
    from advimage.eval.runner import run_evaluation
    from advimage.eval.store import ResultStore

    cache, path = saved_cache
    cfg = parse_config(tiny_config(
        attacks=[{"name": "pgd", "eps": [0.1], "options": {"steps": 3}}], examples=0,
        defenses=["none", {"name": "cache", "options": {"path": str(path)}},
                  {"name": "cache", "label": "cache-bpda",
                   "options": {"path": str(path), "bpda_theta": 2}}]))
    run = run_evaluation(cfg, tmp_path / "run", device="cpu")
    with ResultStore(run / "results.sqlite") as store:
        rows = {r["defense"]: r for r in store.results()}
        flags = {d["defense"]: d for d in store.defenses()}
    assert set(rows) == {"none", "cache", "cache-bpda"}
    assert flags["cache-bpda"]["uses_bpda"] == 1 and flags["cache"]["is_differentiable"] == 1
    x, y = load_dataset("digits", "test").balanced(20).tensors()
    with torch.no_grad():
        acc = float((cache(x).argmax(1) == y).float().mean())
    assert rows["cache"]["clean_accuracy"] == pytest.approx(acc)
    assert rows["cache-bpda"]["clean_accuracy"] == pytest.approx(acc)  # same forward pass
    assert rows["cache"]["robust_accuracy"] < rows["cache"]["clean_accuracy"]


def test_class_topm_copy_is_exact_with_all_keys_and_unmasks_gradients(digits, saved_cache):
    pytest.importorskip("faiss")
    from advimage.defend.cache.topm import ClassTopMCache

    model, _, x, y = digits
    cache, _ = saved_cache
    only = cache.replace(lam=1.0)
    full = ClassTopMCache(cache, m=1000, lam=1.0)  # every key of every class: exact
    with torch.no_grad():
        torch.testing.assert_close(full(x), only(x), atol=1e-4, rtol=1e-4)
    # a top-k copy drops classes without candidates: confident images get a zero gradient
    grads = {}
    for name, m in (("topk", only.replace(mode="faiss", k=5)), ("topm", ClassTopMCache(
            cache, m=5, lam=1.0))):
        xg = x.clone().requires_grad_(True)
        torch.nn.functional.nll_loss(m(xg), y, reduction="sum").backward()
        grads[name] = (xg.grad.flatten(1).abs().sum(1) == 0).float().mean()
    assert grads["topk"] > 0.5 and grads["topm"] == 0


def test_cache_defense_bpda_in_faiss_mode_uses_class_topm(digits, saved_cache):
    pytest.importorskip("faiss")
    from advimage.defend.cache.topm import ClassTopMCache

    model, _, x, y = digits
    cache, path = saved_cache
    defended = build_defense("cache", model, {"path": str(path), "mode": "faiss", "k": 5,
                                              "lam": 1, "bpda_theta": 20})
    assert isinstance(defended.forward_fn.surrogate, ClassTopMCache)
    xg = x.clone().requires_grad_(True)
    out = defended(xg)
    torch.nn.functional.nll_loss(out, y, reduction="sum").backward()
    assert bool((xg.grad.flatten(1).abs().sum(1) > 0).all())  # no masked image
    with torch.no_grad():  # the value is the FAISS cache's own
        torch.testing.assert_close(out, cache.replace(mode="faiss", k=5, lam=1.0)(x))
