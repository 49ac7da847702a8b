"""ThreatModel in float16/bfloat16: projected in float32, rounded last, never outside the ball.

Rounding a float32 projection to nearest in float16 overshoots the ball by up to half a unit in
the last place (issue 19: 0.031494 > 8/255 = 0.031373). ``project`` must keep every low-precision
result inside the ball however the distance is measured (exactly, in float32, in the dtype) and
inside [0, 1], while float32 results stay bit-identical to the plain projection.
"""

from __future__ import annotations

import math

import pytest
import torch

from advimage.errors import UserInputError
from advimage.threat import ThreatModel, is_low_precision
from precision_helpers import max_distances

LOW = [torch.float16, torch.bfloat16]




def _pair(dtype: torch.dtype, seed: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 256, (32, 3, 8, 8), generator=gen) / 255).to(dtype)
    x_adv = x.float() + scale * torch.randn(x.shape, generator=gen)  # float32, far outside
    return x, x_adv


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "norm,eps", [("linf", 8 / 255), ("linf", 0.3), ("linf", 1e-3), ("l2", 0.5), ("l2", 2.0)]
)
def test_low_precision_projection_stays_inside(dtype, norm, eps) -> None:
    tm = ThreatModel(norm, eps)
    for seed in range(3):
        x, x_adv = _pair(dtype, seed, eps * 3 if norm == "linf" else eps / 4)
        q = tm.project(x, x_adv)
        assert q.dtype == dtype and q.shape == x.shape
        for dist in max_distances(x, q, norm):
            assert dist <= eps, (dtype, norm, eps, dist)
        assert float(q.min()) >= 0.0 and float(q.max()) <= 1.0
        assert torch.equal(tm.project(x, q), q)  # idempotent
        # tight: each element within about one unit in the last place of the float32 projection
        # (rounding towards x, plus at most one shrink by the unit roundoff where needed)
        p = tm.project(x.float(), x_adv)
        ulp = torch.finfo(dtype).eps  # spacing of the dtype's values in [1, 2): more than in [0, 1]
        assert float((q.float() - p).abs().max()) <= 1.5 * ulp
        if norm == "linf":
            assert float((q.double() - x.double()).abs().max()) >= eps - 1.5 * ulp


def test_issue_reproduction_fp16_linf_8_255() -> None:
    """Round to nearest puts x + eps one float16 step beyond the ball; project must not."""
    eps = 8 / 255
    x = torch.tensor([0.7, 0.5, 0.25, 0.1], dtype=torch.float16).view(1, 1, 1, 4)
    naive = (x.float() + eps).to(torch.float16)
    assert float((naive.double() - x.double()).max()) > eps  # the bug the issue reported
    q = ThreatModel("linf", eps).project(x, x.float() + 1.0)
    assert max(max_distances(x, q, "linf")) <= eps
    assert float((q.double() - x.double()).min()) > eps - 2 * 2.0**-11  # still on the surface


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_random_start_and_direction(dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=gen).to(dtype)
    for norm, eps in (("linf", 8 / 255), ("l2", 1.0)):
        tm = ThreatModel(norm, eps)
        s = tm.random_start(x, torch.Generator().manual_seed(1))
        assert s.dtype == dtype and max(max_distances(x, s, norm)) <= eps
        g = torch.zeros(2, 3, 4, 4, dtype=dtype)
        g[0, 0, 0, 0] = 1e-3
        d = tm.direction(g)  # the zero row stays zero (no 0/0 from a 1e-12 floor in fp16)
        assert d.dtype == dtype and bool(torch.isfinite(d).all()) and float(d[1].abs().max()) == 0


def test_float32_projection_unchanged() -> None:
    """The float32 path is the plain projection, bit for bit (reports depend on it)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 6, 6, generator=gen)
    x_adv = x + torch.randn(x.shape, generator=gen)
    linf = ThreatModel("linf", 8 / 255).project(x, x_adv)
    assert torch.equal(linf, (x + (x_adv - x).clamp(-8 / 255, 8 / 255)).clamp(0, 1))
    delta = x_adv - x
    norms = torch.linalg.vector_norm(delta.flatten(1), dim=1)
    factor = torch.where(norms > 0.5, 0.5 / norms.clamp_min(1e-12), torch.ones_like(norms))
    expect = (x + delta * factor.view(-1, 1, 1, 1)).clamp(0, 1)
    assert torch.equal(ThreatModel("l2", 0.5).project(x, x_adv), expect)


def test_is_low_precision() -> None:
    assert is_low_precision(torch.float16) and is_low_precision(torch.bfloat16)
    assert not is_low_precision(torch.float32) and not is_low_precision(torch.float64)
    assert not is_low_precision(torch.int8)


@pytest.mark.parametrize("eps", [1.0001, 2.0, 8.0])
def test_linf_eps_beyond_the_pixel_range_is_refused(eps) -> None:
    with pytest.raises(UserInputError) as info:
        ThreatModel("linf", eps)
    msg = str(info.value)
    assert "\n" not in msg and f"eps={eps:g}" in msg and "8/255" in msg and "[0, 1]" in msg
    assert ThreatModel("linf", 1.0).eps == 1.0  # the whole box: the runner's unbounded check
    assert ThreatModel("linf", math.inf).eps == math.inf
    assert ThreatModel("linf", 2.0, bounds=(-1.0, 1.0)).eps == 2.0  # pixel units of the bounds


def test_l2_eps_beyond_the_diagonal_is_refused() -> None:
    x = torch.rand(2, 3, 4, 4)  # diagonal sqrt(48) ~ 6.93
    ThreatModel("l2", math.sqrt(48)).check_budget(x)
    ThreatModel("l2", math.inf).check_budget(x)
    ThreatModel("linf", 1.0).check_budget(x)
    with pytest.raises(UserInputError) as info:
        ThreatModel("l2", 7.0).check_budget(x)
    msg = str(info.value)
    assert "\n" not in msg and "eps=7" in msg and "6.928" in msg and "3x4x4" in msg


def test_fallback_to_the_clean_image_keeps_the_guarantee(monkeypatch) -> None:
    """With no shrink rounds left, elements that rounding pushed out fall back to x itself."""
    import advimage.threat as threat

    monkeypatch.setattr(threat, "_FIT_ROUNDS", 0)
    x, x_adv = _pair(torch.float16, 0, 1.0)
    tm = ThreatModel("linf", 0.3)
    q = tm.project(x, x_adv)
    assert max(max_distances(x, q, "linf")) <= 0.3
    p = tm.project(x.float(), x_adv)
    fell_back = (q == x) & (p != x.float())
    assert bool(fell_back.any())  # float16 at eps 0.3 needs a shrink round for some elements
