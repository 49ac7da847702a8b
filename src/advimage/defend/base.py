"""The :class:`Defense` base: a classifier behind a defense, images in [0, 1] -> logits.

Every defense declares the three properties Athalye, Carlini & Wagner (2018), "Obfuscated
Gradients Give a False Sense of Security", ask about: ``is_randomized`` (attack with EOT),
``is_differentiable`` (else attack through BPDA) and ``uses_bpda``. They are abstract here, so
a defense that forgets one cannot be built; :func:`advimage.model_flags.model_flags` reads them
for the attacks and the evaluation harness.

:class:`TransformDefense` is the generic "preprocess, then classify" defense
(``model(transform(x))``) with the flags given to its constructor.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from advimage.model_flags import DeclaresFlags

__all__ = ["Defense", "TransformDefense"]


class Defense(nn.Module, DeclaresFlags):
    """A defended classifier: ``forward(x)`` maps images ``(B, C, H, W)`` in [0, 1] to ``(B, K)``.

    Subclasses implement ``forward`` and declare ``is_randomized``, ``is_differentiable`` and
    ``uses_bpda`` (class attributes or properties returning bools); there is no default.
    The output is logits or log-probabilities: both work with cross-entropy attacks.
    """


class TransformDefense(Defense):
    """``model(transform(x))`` with the flags declared at construction (all required).

    Args:
        model: the classifier (images in [0, 1] -> logits).
        transform: input preprocessing, images -> images of the same shape.
        is_randomized: the transform draws random numbers (attack with EOT).
        is_differentiable: the transform passes useful gradients.
        uses_bpda: gradients flow through a BPDA surrogate of the transform.
    """

    def __init__(self, model: nn.Module, transform: Callable[[Tensor], Tensor], *,
                 is_randomized: bool, is_differentiable: bool, uses_bpda: bool) -> None:
        super().__init__()
        for name, value in (("is_randomized", is_randomized),
                            ("is_differentiable", is_differentiable), ("uses_bpda", uses_bpda)):
            if not isinstance(value, bool):
                raise ValueError(f"TransformDefense: {name} must be a bool, got {value!r}")
        self.model = model
        self.transform = transform
        self._flags = (is_randomized, is_differentiable, uses_bpda)

    @property
    def is_randomized(self) -> bool:
        """As declared at construction."""
        return self._flags[0]

    @property
    def is_differentiable(self) -> bool:
        """As declared at construction."""
        return self._flags[1]

    @property
    def uses_bpda(self) -> bool:
        """As declared at construction."""
        return self._flags[2]

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> logits ``(B, K)``."""
        return self.model(self.transform(x))  # (B, K)
