"""forward_with_features: one pass gives the plain logits and the hooked layer outputs."""

from __future__ import annotations

import pytest
import torch

from advimage.models import create_model


def test_forward_with_features_matches_separate_calls() -> None:
    model = create_model("resnet20").eval()
    x = torch.rand(3, 3, 32, 32)
    logits, feats = model.forward_with_features(x, ["layer3.2", "layer1.0"])
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(feats["layer3.2"], model.features(x, ["layer3.2"])["layer3.2"])
    assert list(feats) == ["layer3.2", "layer1.0"]
    assert feats["layer1.0"].shape == (3, 16, 32, 32)
    with pytest.raises(ValueError, match="valid layers"):
        model.forward_with_features(x, ["layer9"])
