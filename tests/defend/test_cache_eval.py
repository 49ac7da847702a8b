"""The ``cache`` harness defense (Orhan, 2018) on the bundled digits model: its BPDA surrogate,
``--defense`` in ``advimage eval robust`` and the run harness on tiny caches.
The studies' tests are in ``tests/studies/cache``."""

from __future__ import annotations

import json

import pytest
import torch

from advimage.cli import main
from advimage.data import load_dataset
from advimage.defend.cache.defense import CacheDefense
from advimage.defend.registry import build_defense, list_defenses, parse_defense_arg
from advimage.model_flags import model_flags


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
