"""Gradient-masking checks: each fires on synthetic results showing its symptom (and stays
quiet on healthy ones), and the zero-gradient/unbounded checks fire on real masked models."""

from __future__ import annotations

import pytest
import torch
from harness_helpers import tiny_config
from torch import nn

from advimage.eval.checks import (
    check_blackbox_vs_whitebox,
    check_bpda,
    check_eot,
    check_eps_monotone,
    check_strength_monotone,
    check_unbounded,
    check_zero_gradients,
    run_checks,
)
from advimage.eval.config import parse_config
from advimage.eval.runner import run_evaluation
from advimage.eval.store import ResultStore
from advimage.models.hub import load_model


def row(acc: float, eps: float = 0.1, *, label: str = "pgd", name: str | None = None,
        kind: str = "white-box", steps: int = 10, restarts: int = 1, eot: int = 1,
        defense: str = "none") -> dict:
    return {"defense": defense, "label": label, "name": name or label, "kind": kind,
            "attack": f"{label}@{eps:g}", "norm": "linf", "eps": eps, "steps": steps,
            "restarts": restarts, "eot": eot, "robust_accuracy": acc, "clean_accuracy": 0.9}


def defense(name: str = "d", *, randomized: bool = False, differentiable: bool = True,
            bpda: bool = False) -> dict:
    return {"defense": name, "is_randomized": randomized, "is_differentiable": differentiable,
            "uses_bpda": bpda}


def test_eps_monotone() -> None:
    healthy = [row(0.6, 0.05), row(0.4, 0.1), row(0.1, 0.2)]
    assert check_eps_monotone(healthy) == []
    bad = [row(0.6, 0.05), row(0.4, 0.1), row(0.5, 0.2)]
    (f,) = check_eps_monotone(bad)
    assert f.check == "eps-monotone" and "0.4000" in f.message and "0.5000" in f.message
    assert "steps" in f.fix
    # rises within the tolerance are noise; other attacks/defenses are separate curves
    assert check_eps_monotone([row(0.40, 0.1), row(0.405, 0.2)], tolerance=0.01) == []
    assert check_eps_monotone([row(0.4, 0.1), row(0.5, 0.2, label="fgsm")]) == []


def test_strength_monotone() -> None:
    assert check_strength_monotone([row(0.5, label="a", name="pgd", steps=10),
                                    row(0.4, label="b", name="pgd", steps=50)]) == []
    (f,) = check_strength_monotone([row(0.4, label="a", name="pgd", steps=10),
                                    row(0.5, label="b", name="pgd", steps=10, restarts=5)])
    assert f.check == "strength-monotone" and "(10, 5, 1)" in f.message
    # incomparable budgets (more steps, fewer restarts) are not flagged
    assert check_strength_monotone([row(0.4, label="a", name="pgd", steps=10, restarts=5),
                                    row(0.5, label="b", name="pgd", steps=50)]) == []


def test_unbounded() -> None:
    assert check_unbounded([row(0.0, 1.0, kind="unbounded"), row(0.8)]) == []
    (f,) = check_unbounded([row(0.3, 1.0, kind="unbounded")], max_accuracy=0.02)
    assert f.check == "unbounded" and "0.3000" in f.message


def test_blackbox_vs_whitebox() -> None:
    ok = [row(0.3), row(0.35, label="square", kind="black-box")]
    assert check_blackbox_vs_whitebox(ok) == []
    bad = [row(0.5), row(0.45, label="fgsm"), row(0.2, label="square", kind="black-box"),
           row(0.1, label="transfer", kind="transfer")]
    found = check_blackbox_vs_whitebox(bad)
    assert {f.message.split()[2] for f in found} == {"square@0.1", "transfer@0.1"}
    assert all("fgsm@0.1" in f.message for f in found)  # compared with the best white-box
    # different eps are not compared
    assert check_blackbox_vs_whitebox([row(0.5, 0.1),
                                       row(0.2, 0.2, label="square", kind="black-box")]) == []


def test_eot_and_bpda() -> None:
    res = [row(0.5, defense="d"), row(0.4, label="square", kind="black-box", defense="d")]
    (f,) = check_eot(res, [defense(randomized=True)])
    assert f.check == "eot" and "pgd@0.1" in f.message and "square" not in f.message
    assert check_eot([row(0.5, defense="d", eot=10)], [defense(randomized=True)]) == []
    assert check_eot(res, [defense()]) == []
    (f,) = check_bpda(res, [defense(differentiable=False)])
    assert f.check == "bpda" and "BPDA" in f.fix
    assert check_bpda(res, [defense(differentiable=False, bpda=True)]) == []


def test_zero_gradients_synthetic() -> None:
    assert check_zero_gradients([{"defense": "none", "n": 10, "n_zero": 0}]) == []
    (f,) = check_zero_gradients([{"defense": "none", "n": 10, "n_zero": 4}])
    assert "4 of 10" in f.message and "40.0%" in f.message


def test_run_checks_collects_all() -> None:
    found = run_checks([row(0.3, 1.0, kind="unbounded", defense="d"), row(0.4, 0.1, defense="d"),
                        row(0.6, 0.2, defense="d")],
                       [defense(randomized=True, differentiable=False)],
                       [{"defense": "d", "n": 5, "n_zero": 5}])
    assert [f.check for f in found] == ["zero-gradients", "bpda", "eot", "unbounded",
                                        "eps-monotone"]


class Saturated(nn.Module):
    """Softmax-temperature saturation: logits x 1e4 make float32 cross-entropy gradients
    underflow to exactly zero on confidently classified images."""

    def __init__(self, model: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def _findings(tmp_path, model: nn.Module | None, **overrides) -> list:
    cfg = parse_config(tiny_config(**{
        "data": {"name": "digits", "limit": 20, "batch_size": 10},
        "attacks": [{"name": "fgsm", "eps": [0.1]}], "checks": {"unbounded_steps": 5},
        "examples": 0, **overrides}))
    run = run_evaluation(cfg, tmp_path / "run", device="cpu", model=model)
    with ResultStore(run / "results.sqlite") as store:
        return run_checks(store.results(), store.defenses(), store.gradients())


@pytest.mark.parametrize("masked", [False, True])
def test_zero_gradient_check_on_a_real_saturated_model(tmp_path, masked) -> None:
    base, _ = load_model("bundled")
    found = _findings(tmp_path, Saturated(base) if masked else base)
    checks = {f.check for f in found}
    if masked:
        assert "zero-gradients" in checks
        # independent count: samples whose input gradient autograd finds exactly zero
        from advimage.data import load_dataset

        x, y = load_dataset("digits", "test").balanced(20).tensors()
        x.requires_grad_(True)
        loss = nn.functional.cross_entropy(Saturated(base)(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        n_zero = int((g.flatten(1).abs().sum(1) == 0).sum())
        assert n_zero > 0
        (f,) = [f for f in found if f.check == "zero-gradients"]
        assert f.message.startswith(f"{n_zero} of 20 inputs")
    else:
        assert found == []


def test_quantized_defense_without_bpda_is_flagged(tmp_path) -> None:
    found = _findings(tmp_path, None, defenses=[{"name": "quantize", "options": {"bits": 2}}])
    assert {"zero-gradients", "bpda"} <= {f.check for f in found}


def test_transfer_from_undefended_surrogate_beats_masked_white_box(tmp_path) -> None:
    """Real masking: PGD on the quantized model (no BPDA) sees zero gradients, while PGD
    crafted on the undefended model transfers; the black-box/transfer check fires."""
    found = _findings(tmp_path, None,
                      attacks=[{"name": "pgd", "eps": [0.2], "options": {"steps": 5}},
                               {"name": "pgd", "eps": [0.2], "options": {"steps": 5},
                                "surrogate": "bundled"}],
                      defenses=[{"name": "quantize", "options": {"bits": 2}}])
    (f,) = [f for f in found if f.check == "blackbox-beats-whitebox"]
    # budgets read as people write them: 0.2 = 51/255
    assert "transfer attack pgd-transfer@51/255" in f.message and "pgd@51/255" in f.message
