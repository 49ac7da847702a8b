"""Minimal fooling budget per image (advimage.eval.minimal) on the bundled digits CNN."""

from __future__ import annotations

import pytest
import torch

from advimage.attacks import FGSM, PGD
from advimage.data import load_dataset
from advimage.eval.minimal import minimal_eps, summarize_minimal
from advimage.models.hub import load_model

GRID = [0.02, 0.05, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def digits():
    model, _ = load_model("bundled")
    x, y = load_dataset("digits", "test").balanced(120).tensors()
    return model.eval(), x, y


def test_equals_brute_force_with_a_deterministic_attack(digits) -> None:
    model, x, y = digits
    need = minimal_eps(model, x, y, lambda e: FGSM(eps=e), GRID, batch_size=50)
    with torch.no_grad():
        expected = torch.full((len(y),), float("inf"))
        expected[model(x).argmax(1) != y] = 0.0
        for e in reversed(GRID):  # independent: attack everything at every budget
            fooled = model(FGSM(eps=e)(model, x, y)).argmax(1) != y
            first = torch.isinf(expected) | (expected > e)
            expected[fooled & first & (expected != 0)] = e
    # FGSM success is not monotone in eps; the brute force above takes the smallest fooling
    # budget, the search the first one reached while ascending: the same thing
    assert torch.equal(need, expected)
    s = summarize_minimal(need, scale=1.0)
    assert s["n"] == len(y) and s["clean_wrong"] == int((need == 0).sum())


def test_pgd_needs_no_more_than_fgsm_and_transfer_needs_more(digits) -> None:
    model, x, y = digits
    pgd = minimal_eps(model, x, y, lambda e: PGD(eps=e, steps=10), GRID)
    fgsm = minimal_eps(model, x, y, lambda e: FGSM(eps=e), GRID)
    assert pgd.median() <= fgsm.median()
    torch.manual_seed(1)
    other = load_model("bundled")[0].eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a different network of the same family
    transfer = minimal_eps(other, x, y, lambda e: PGD(eps=e, steps=10), GRID, judge=model)
    fooled = torch.isfinite(transfer) & (transfer > 0)
    assert fooled.any()
    assert bool((transfer[fooled] >= pgd[fooled]).float().mean() >= 0.8)


def test_bad_grid_raises(digits) -> None:
    model, x, y = digits
    for grid in ([], [0.1, 0.05], [0.0, 0.1], [0.1, 0.1]):
        with pytest.raises(ValueError, match="grid"):
            minimal_eps(model, x[:4], y[:4], lambda e: FGSM(eps=e), grid)
