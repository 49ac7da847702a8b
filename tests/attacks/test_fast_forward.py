"""The inference-optimised forward of score-based attacks: used only where it computes the same
function as the model, and Square's results do not depend on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advimage.attacks.fast_forward import inference_forward
from advimage.attacks.square import Square
from advimage.model_flags import DeclaresFlags
from advimage.models import create_model


def _cpu(td):
    if td.x.device.type != "cpu":
        pytest.skip("the optimised trace is CPU-only")
    return td.model.eval(), td.x[:64], td.y[:64]


def test_trace_matches_the_model_at_every_batch_size(trained_digits) -> None:
    model, x, _ = _cpu(trained_digits)
    with torch.no_grad():
        fwd, kind = inference_forward(model, x)
        assert kind == "torchscript"
        for rows in (x, x[:5], x[:1], x.flip(0)):
            want = model(rows)  # (b, 10)
            got = fwd(rows)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_reference_architecture_traces() -> None:
    model = create_model("resnet20", num_classes=10).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fwd, kind = inference_forward(model, x)
        assert kind == "torchscript"
        torch.testing.assert_close(fwd(x), model(x), rtol=1e-4, atol=1e-4)


class _Noisy(nn.Module):
    """Adds fresh noise each call, undeclared (caught by comparing two passes)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


class _DeclaredNoisy(_Noisy, DeclaresFlags):
    """The same, declared randomized (read by ``model_flags``, as EOT reads it)."""

    is_randomized = True
    is_differentiable = True
    uses_bpda = False


@pytest.mark.parametrize("declare", [True, False])
def test_randomized_models_stay_eager(trained_digits, declare: bool) -> None:
    model, x, _ = _cpu(trained_digits)
    noisy = (_DeclaredNoisy if declare else _Noisy)(model).eval()
    fwd, kind = inference_forward(noisy, x)
    assert kind == "eager" and fwd is noisy


def test_training_mode_hooks_callables_and_bad_traces_stay_eager(trained_digits) -> None:
    model, x, _ = _cpu(trained_digits)
    model.train()
    try:
        assert inference_forward(model, x)[1] == "eager"
    finally:
        model.eval()
    seen: list[int] = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        assert inference_forward(model, x)[1] == "eager"
    finally:
        handle.remove()

    def plain(t: torch.Tensor) -> torch.Tensor:
        return model(t)

    assert inference_forward(plain, x)[1] == "eager"

    class DataDependent(nn.Module):
        """Branches on the batch's content: the trace freezes one branch and must be rejected."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            z = self.inner(t)
            return z if float(t[0].mean()) > float(t[-1].mean()) else -z

    x_sorted = x[x.flatten(1).mean(1).argsort(descending=True)]  # first row brighter than last
    branchy = DataDependent().eval()
    branchy.requires_grad_(False)  # as attacks run models (frozen); else tracing itself fails
    try:
        assert inference_forward(branchy, x_sorted)[1] == "eager"
    finally:
        branchy.requires_grad_(True)


def test_square_same_strength_with_and_without_trace(trained_digits) -> None:
    model, x, y = _cpu(trained_digits)
    fast = Square(eps=0.15, queries=80, seed=3)
    slow = Square(eps=0.15, queries=80, seed=3, fast_queries=False)
    run_fast, run_slow = fast.run(model, x, y), slow.run(model, x, y)
    adv_fast, adv_slow = run_fast.x_adv, run_slow.x_adv
    assert run_fast.forward == "torchscript" and run_slow.forward == "eager"
    with torch.no_grad():
        ok_fast = model(adv_fast).argmax(1) == y  # (64,)
        ok_slow = model(adv_slow).argmax(1) == y
    # same seed, same proposals: decisions differ only where a margin ties within ~1e-6
    assert (ok_fast == ok_slow).float().mean().item() >= 0.95
    assert int(run_fast.queries.sum()) == pytest.approx(int(run_slow.queries.sum()), rel=0.05)
