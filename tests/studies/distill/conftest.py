"""Fixtures shared by the distillation tests."""

from __future__ import annotations

import pytest

from advimage.models import ImageClassifier
from advimage.models.hub import load_model


@pytest.fixture(scope="module")
def teacher() -> ImageClassifier:
    """The bundled digits CNN (about 97% test accuracy), the teacher of every probe test."""
    return load_model("bundled:small-cnn-digits")[0]
