"""Registry: unique names, clear errors, order kept; validation helpers."""

from __future__ import annotations

import pytest
import torch

from advimage.registry import Registry
from advimage.validation import check_images, check_labels, parse_fraction


def test_registry_duplicate_and_unknown() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)

    @reg.register("A")
    def a() -> int:
        return 1

    assert reg.get("a") is a and reg.get("B") == 2
    assert reg.names() == ["a", "b"] and reg.registration_order() == ["b", "a"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 3)
    with pytest.raises(ValueError, match="unknown widget 'c'; choose one of: a, b"):
        reg.get("c")


@pytest.mark.parametrize(
    "text, value", [("8/255", 8 / 255), ("0.03", 0.03), (0.5, 0.5), ("1", 1.0)]
)
def test_parse_fraction(text, value) -> None:
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "1/0", "8/", ""])
def test_parse_fraction_bad(text) -> None:
    with pytest.raises(ValueError, match="fraction"):
        parse_fraction(text, "eps")


@pytest.mark.parametrize(
    "x, msg",
    [
        (torch.zeros(2, 3, 4), "NCHW"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "floating"),
        (torch.full((1, 1, 2, 2), 1.5), r"\[0.0, 1.0\]"),
        (torch.tensor([[[[float("nan")]]]]), "NaN"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_check_images(x, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        check_images(x)


@pytest.mark.parametrize(
    "y, msg",
    [
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([0, 1, 2]), "shape"),
        (torch.tensor([0, 10]), "out of range"),
        (torch.tensor([-1, 0]), "negative"),
    ],
)
def test_check_labels(y, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        check_labels(y, 2, num_classes=10)
