"""Expectation over Transformation for randomized models.

Athalye, Engstrom, Ilyas & Kwok (2018), "Synthesizing Robust Adversarial Examples", and
Athalye, Carlini & Wagner (2018), "Obfuscated Gradients Give a False Sense of Security":
against a model with random preprocessing or noise, ascend the *expected* loss by averaging
the input gradient over ``n`` random passes. Every gradient attack in this package computes
its gradients with :func:`advimage.attacks.loop.input_gradient` and carries an ``eot`` field,
so EOT is just that field set to ``n``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from advimage.attacks.base import Attack, check_positive_int

__all__ = ["EOT"]

A = TypeVar("A", bound=Attack)


def EOT(attack: A, n: int) -> A:  # noqa: N802 -- reads as a wrapper: EOT(PGD(...), 10)
    """A copy of ``attack`` that averages its input gradient over ``n`` random passes.

    ``EOT(attack, 1)`` behaves exactly like ``attack``. The original is not modified.

    Raises:
        ValueError: ``n < 1``, or ``attack`` is gradient-free (has no ``eot`` field).
    """
    check_positive_int(n, "n")
    if not isinstance(attack, Attack):
        raise ValueError(f"EOT needs an Attack instance, got {type(attack).__name__}")
    names = {f.name for f in dataclasses.fields(attack) if f.init}
    if "eot" not in names:
        raise ValueError(
            f"attack {attack.name!r} does not use input gradients, so EOT does not apply"
        )
    changes: dict[str, Any] = {"eot": n}  # a field of every gradient attack, not of Attack
    return dataclasses.replace(attack, **changes)
