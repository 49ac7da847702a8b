"""One wrapper protocol for the model flags (``advimage.model_flags.Wrapper``).

The wrappers an attack puts around a model (``AtDtype``, ``AutocastModel``, the minimal-norm
rounding marker) declare nothing: EOT (``declares_deterministic``/``input_gradient``) and the
fast forward of the score-based attacks read the wrapped model's flags through them, at call
time, so a flag that changes after the wrapper was built is seen.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from advimage.attacks.fast_forward import inference_forward
from advimage.attacks.gradient import declares_deterministic, input_gradient
from advimage.attacks.minimal_norm import _Rounded
from advimage.attacks.preparation import AtDtype
from advimage.attacks.transfer import DiverseInputs
from advimage.defend.registry import build_defense
from advimage.model_flags import DeclaresFlags, Wrapper, model_flags, unwrap
from advimage.precision import AutocastModel


class Switch(nn.Module, DeclaresFlags):
    """A deterministic net whose ``is_randomized`` declaration can be switched later (as
    NIM's is when its noise level is set to zero); counts its forward passes."""

    is_differentiable = True
    uses_bpda = False

    def __init__(self, randomized: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
        self.randomized, self.calls = randomized, 0

    @property
    def is_randomized(self) -> bool:
        return self.randomized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


WRAPPERS = {
    "AtDtype": lambda m: AtDtype(m, torch.float32),
    "Rounded": lambda m: _Rounded(m, torch.float16),
    "Autocast": lambda m: AutocastModel(m, "fp32", "cpu"),
    "nested": lambda m: AtDtype(_Rounded(AutocastModel(m, "fp32", "cpu"), torch.float16),
                                torch.float32),
}


def _x() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _passes(model: nn.Module, inner: Switch, eot: int) -> int:
    """Forward passes of ``inner`` that one EOT gradient of ``model`` takes."""
    y = torch.arange(6) % 5
    before = inner.calls
    input_gradient(model, _x(), lambda z: F.cross_entropy(z, y, reduction="none"), eot=eot)
    return inner.calls - before


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=list(WRAPPERS))
def test_wrappers_pass_the_live_flags_to_eot_and_the_fast_forward(wrap) -> None:
    inner = Switch(randomized=True).eval()
    wrapped = wrap(inner).eval()
    assert isinstance(wrapped, Wrapper) and unwrap(wrapped) is inner
    assert not hasattr(type(wrapped), "is_randomized")  # no copy to go stale
    # declared random: EOT runs every pass, the fast forward stays eager (the net is in fact
    # deterministic, so only the declaration can keep it eager)
    assert model_flags(wrapped).is_randomized is True and not declares_deterministic(wrapped)
    assert _passes(wrapped, inner, eot=4) == 4
    assert inference_forward(wrapped, _x())[1] == "eager"
    inner.randomized = False  # the flag changes after the wrapper was built
    assert model_flags(wrapped).is_randomized is False and declares_deterministic(wrapped)
    assert _passes(wrapped, inner, eot=4) == 1
    fwd, kind = inference_forward(wrapped, _x())  # now declared deterministic: traced
    assert kind == "torchscript"
    with torch.no_grad():
        torch.testing.assert_close(fwd(_x()), inner(_x()), rtol=1e-4, atol=1e-4)


def test_a_wrapped_randomized_defense_is_randomized_for_eot_and_the_fast_forward() -> None:
    """A registry defense that draws noise, behind the attack's wrappers."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).eval()
    noisy = build_defense("gaussian-noise", net, {"sigma": 0.1}).eval()
    for wrap in WRAPPERS.values():
        wrapped = wrap(noisy).eval()
        assert model_flags(wrapped) == model_flags(noisy)
        assert model_flags(wrapped).is_randomized is True and not declares_deterministic(wrapped)
        fwd, kind = inference_forward(wrapped, _x())
        assert kind == "eager" and fwd is wrapped
    quiet = build_defense("none", net, {}).eval()
    assert all(declares_deterministic(w(quiet)) for w in WRAPPERS.values())


def test_diverse_inputs_declare_randomness_and_pass_the_rest() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).eval()
    di = DiverseInputs(net, 1.0, 0.9, torch.Generator().manual_seed(0))
    assert model_flags(di).is_randomized is True and not declares_deterministic(di)
    assert inference_forward(di.eval(), _x())[1] == "eager"
    quantized = build_defense("quantize", net, {"bits": 2})  # not differentiable
    flags = model_flags(DiverseInputs(quantized, 1.0, 0.9, torch.Generator()))
    assert flags.is_randomized and not flags.is_differentiable  # as the quantized defense


def test_a_plain_model_and_a_self_wrapping_wrapper() -> None:
    net = nn.Linear(3, 2)
    assert model_flags(AtDtype(net, torch.float32)) == model_flags(net)
    assert model_flags(net).is_randomized is None  # undeclared: EOT runs every pass
    loop = AtDtype(net, torch.float32)
    loop.inner = _Rounded(loop, torch.float16)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="wraps itself"):
        model_flags(loop)
