"""Detector-test fixtures: the bundled digits CNN,
its test images, and a fast detector configuration.

The bundled ``small-cnn-digits`` is a trained classifier (about 97% on the digits test set),
so clean images behave like natural images; the fast configuration keeps the step caps and
noise draws small so every test runs in seconds.
"""

from __future__ import annotations

import pytest

from advimage.data import load_dataset
from advimage.detect import DetectorConfig
from advimage.models.hub import load_model

# Larger steps than the CIFAR preset (8x8 digits need ~70 steps at lr 5e-4) and small caps.
FAST = DetectorConfig(
    sigma=0.05, n_noise=4, c2t_lr=0.005, c2t_radius=0.5, c2t_cap=40,
    c2u_lr=0.5, c2u_radius=0.5, c2u_cap=40,
)


@pytest.fixture(scope="module")
def digits_model():
    model, _ = load_model("bundled")
    return model


@pytest.fixture(scope="module")
def digits_test():
    x, y = load_dataset("digits", "test").tensors()  # (359, 1, 8, 8), (359,)
    return x, y


@pytest.fixture(scope="module")
def fast_config() -> DetectorConfig:
    return FAST
