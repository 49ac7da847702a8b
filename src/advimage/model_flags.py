"""What a (defended) classifier declares about itself, read in one place.

Athalye, Carlini & Wagner (2018), "Obfuscated Gradients Give a False Sense of Security", ask
of every defense: does it draw random numbers (attack it with EOT), does it pass useful
gradients (else attack it through BPDA), and does it already use a BPDA surrogate. A
:class:`DeclaresFlags` object (every ``advimage.defend.Defense``) answers the three itself;
:func:`model_flags` reads the answers, and gives ONE documented answer for anything else:

- ``is_randomized = None`` (unknown: EOT runs every pass it is asked for),
- ``is_differentiable = True``, ``uses_bpda = False`` (a plain classifier).

A model that only wraps another (a precision adapter, an attack's rounding marker) is a
:class:`Wrapper`: it declares nothing itself and :func:`model_flags` reads the flags of the
model it wraps (``.inner``), at every call, so a flag that changes later is never frozen in a
copy.

The attack loop (:func:`advimage.attacks.loop.declares_deterministic`), the fast forward of
the score-based attacks (:mod:`advimage.attacks.fast_forward`) and the evaluation harness (the
stored ``defenses`` table and the gradient-masking checks) all read this module, so they
cannot disagree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["DeclaresFlags", "ModelFlags", "Wrapper", "model_flags", "unwrap"]


class DeclaresFlags(ABC):
    """Mixin of objects that declare the three flags; every one is required (no default).

    A subclass that leaves one undeclared cannot be instantiated (``TypeError``). Declare
    each as a class attribute (``is_randomized = False``) or a property returning a bool.
    """

    @property
    @abstractmethod
    def is_randomized(self) -> bool:
        """Each call draws fresh random numbers (evaluate with EOT)."""

    @property
    @abstractmethod
    def is_differentiable(self) -> bool:
        """Input gradients are useful (False: attack through BPDA or a surrogate)."""

    @property
    @abstractmethod
    def uses_bpda(self) -> bool:
        """Gradients come from a BPDA surrogate, not from the forward computation."""


class Wrapper:
    """Mixin of a model that runs ``self.inner`` and declares no flag of its own.

    :func:`model_flags` (and so EOT and the fast forward) reads the wrapped model's flags
    through it. A wrapper that changes what the flags say (one that adds randomness, say)
    must be a :class:`DeclaresFlags` instead, which answers for itself.
    """

    inner: Any  # the wrapped model (a module or any callable)


def unwrap(model: Any) -> Any:
    """``model`` with the :class:`Wrapper` layers around it removed (stops at a model that
    declares its own flags)."""
    seen: set[int] = set()
    while isinstance(model, Wrapper) and not isinstance(model, DeclaresFlags):
        if id(model) in seen:  # a wrapper that (indirectly) wraps itself
            raise ValueError(f"{type(model).__name__} wraps itself")
        seen.add(id(model))
        model = model.inner
    return model


@dataclass(frozen=True)
class ModelFlags:
    """The three flags of a model; ``is_randomized`` None means "not declared".

    Attributes:
        is_randomized: True/False as declared; None for a model that declares nothing.
        is_differentiable: the model passes useful input gradients.
        uses_bpda: gradients flow through a BPDA surrogate.
    """

    is_randomized: bool | None
    is_differentiable: bool
    uses_bpda: bool

    def as_row(self) -> dict[str, int]:
        """The flags as the store's integer columns (an undeclared model counts as 0)."""
        return {"is_randomized": int(bool(self.is_randomized)),
                "is_differentiable": int(self.is_differentiable),
                "uses_bpda": int(self.uses_bpda)}


UNDECLARED = ModelFlags(is_randomized=None, is_differentiable=True, uses_bpda=False)


def _declared(model: DeclaresFlags, name: str) -> bool:
    value = getattr(model, name)
    if not isinstance(value, bool):
        raise ValueError(f"{type(model).__name__}.{name} must be a bool, got {value!r}")
    return value


def model_flags(model: Any) -> ModelFlags:
    """The flags ``model`` declares (a :class:`DeclaresFlags`, looked up through any
    :class:`Wrapper` around it), else :data:`UNDECLARED`.

    Raises:
        ValueError: a declared flag is not a bool.
    """
    model = unwrap(model)
    if not isinstance(model, DeclaresFlags):
        return UNDECLARED
    return ModelFlags(is_randomized=_declared(model, "is_randomized"),
                      is_differentiable=_declared(model, "is_differentiable"),
                      uses_bpda=_declared(model, "uses_bpda"))
