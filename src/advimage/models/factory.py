"""Model registry: ``create_model("resnet20")`` builds any registered architecture by name.

The timm/torchvision pattern: factories register under a unique name, so checkpoints only need
to record the name and the factory kwargs to be rebuilt (``load_checkpoint``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from advimage.models.classifier import ImageClassifier
from advimage.registry import Registry

__all__ = ["MODELS", "create_model", "list_models", "register_model"]

ModelFactory = Callable[..., ImageClassifier]

MODELS: Registry[ModelFactory] = Registry("model")


def input_chw(input_shape: object, name: str, min_side: int = 1) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)`` ints; ``ValueError`` naming the model unless it has
    three entries, C >= 1 and H, W >= ``min_side`` (the smallest image the architecture takes)."""
    try:
        shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape[0] < 1 or min(shape[1:]) < min_side:
        raise ValueError(f"{name} needs input_shape (C, H, W) with C >= 1 and H, W >= {min_side}, "
                         f"got {input_shape}")
    return shape  # type: ignore[return-value]


def register_model(name: str, factory: ModelFactory | None = None):
    """Register ``factory(num_classes, **kw) -> ImageClassifier`` under ``name``.

    Usable as ``@register_model("name")``; registering a taken name raises ``ValueError``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    return MODELS.register(name, factory)


def list_models() -> list[str]:
    """Sorted names of every registered architecture."""
    return MODELS.names()


def create_model(name: str, num_classes: int = 10, **kwargs) -> ImageClassifier:
    """Build the architecture registered as ``name`` with ``num_classes`` logits.

    ``kwargs`` go to the factory and are recorded on the model (``arch_kwargs``) so that
    ``save_checkpoint`` can store them; they must therefore be JSON-serializable.
    Unknown names raise ``ValueError`` listing the registered ones.
    """
    factory = MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise ValueError(f"create_model kwargs must be JSON-serializable: {exc}") from None
    model = factory(num_classes, **kwargs)
    if not isinstance(model, ImageClassifier):
        raise ValueError(
            f"factory for {name!r} returned {type(model).__name__}, expected ImageClassifier"
        )
    model.arch = str(name).lower()
    model.arch_kwargs = json.loads(json.dumps(kwargs))  # tuples -> lists, as stored on disk
    return model
