"""Probes on constructed cases with known answers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advimage.data import load_dataset
from advimage.models import ImageClassifier, create_model
from advimage.studies.distill import (
    agreement,
    fooling_rate,
    gradcam,
    gradcam_similarity,
    jitter_invariance,
)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("digits", "test").tensors(limit=64)


class _Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 10) + torch.arange(10.0)  # always class 9


def test_student_equal_to_teacher_is_always_fooled(teacher, digits) -> None:
    x, y = digits
    out = fooling_rate(teacher, {"same": copy.deepcopy(teacher), "const": _Constant()}, x, y,
                       eps=0.3, steps=5)
    assert out["total"] == 64 and out["kept"] > 20
    assert out["rates"]["same"] == 1.0
    assert out["rates"]["const"] == 0.0
    # kept = teacher right on clean, wrong after the attack: at most the clean-correct count
    clean_right = int((teacher(x).argmax(1) == y).sum())
    assert out["kept"] <= clean_right


def test_fooling_rate_bad_input(teacher, digits) -> None:
    x, y = digits
    with pytest.raises(ValueError, match="eps"):
        fooling_rate(teacher, [teacher], x, y, eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        fooling_rate(teacher, [teacher], x, y[:3], eps=0.1)


def test_agreement(teacher, digits) -> None:
    x, y = digits
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    assert agreement(teacher, copy.deepcopy(teacher), batches) == 1.0
    expected = (teacher(x).argmax(1) == 9).float().mean().item()
    assert agreement(teacher, _Constant(), batches) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one"):
        agreement(teacher, teacher, [])


class _Tiny(nn.Module):
    """conv -> relu -> global average pool -> linear: Grad-CAM has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_gradcam_matches_hand_computation() -> None:
    net = _Tiny()
    model = ImageClassifier(net, None, None, num_classes=4, input_shape=(1, 5, 5))
    x = torch.rand(2, 1, 5, 5)
    cam = gradcam(model, x, "relu", class_idx=2)  # (2, 5, 5)
    with torch.no_grad():
        acts = net.relu(net.conv(x))  # (2, 3, 5, 5)
        # d y_c / d A_k(i, j) = W[c, k] / (h * w), so alpha_k = W[c, k] / 25
        alpha = net.fc.weight[2] / 25.0  # (3,)
        expected = torch.relu((alpha.view(1, 3, 1, 1) * acts).sum(1))
    assert cam.shape == (2, 5, 5)
    assert torch.allclose(cam, expected, atol=1e-6)
    # per-image class and upsampling
    per = gradcam(model, x, "relu", class_idx=torch.tensor([2, 0]), size=(10, 10))
    assert per.shape == (2, 10, 10)
    with pytest.raises(ValueError, match="class_idx"):
        gradcam(model, x, "relu", class_idx=7)
    with pytest.raises(ValueError, match="fc"):
        gradcam(model, x, "fc", class_idx=0)
    with pytest.raises(ValueError, match="ImageClassifier"):
        gradcam(net, x, "relu", class_idx=0)


def test_gradcam_similarity(teacher, digits) -> None:
    x, _ = digits
    torch.manual_seed(3)
    other = create_model("small-cnn", num_classes=10).eval()
    out = gradcam_similarity(teacher, copy.deepcopy(teacher), other, x[:16], "relu2")
    assert torch.allclose(out["kd"], torch.ones(16), atol=1e-5)  # identical maps
    expected = (out["kd"] > out["independent"]).float().mean().item()
    assert out["share_closer_to_kd"] == expected and expected > 0.5
    with pytest.raises(ValueError, match="three"):
        gradcam_similarity(teacher, teacher, other, x[:2], ["relu2", "relu2"])


def test_jitter_invariance(teacher, digits) -> None:
    x, y = digits
    batches = [(x[:40], y[:40]), (x[40:], y[40:])]
    assert jitter_invariance(teacher, batches, lambda b, g: b) == 1.0
    blank = teacher(torch.zeros(1, 1, 8, 8)).argmax(1)
    expected = (teacher(x).argmax(1) == blank).float().mean().item()
    assert jitter_invariance(teacher, batches, lambda b, g: torch.zeros_like(b)) == pytest.approx(
        expected
    )
