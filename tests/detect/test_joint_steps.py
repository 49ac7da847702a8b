"""C2t and C2u in shared, chunked passes vs the per-image official loop and separate searches."""

from __future__ import annotations

import pytest
import torch
from detect_reference import official_steps

from advimage.detect import NoiseSignatureDetector, random_targets, steps_to_flip
from advimage.detect.row_chunks import RowChunks, chunk_sizes
from advimage.detect.step_search import StepSearch, joint_steps_to_flip


class Rows:
    """Records the number of rows of every pass and its grad mode."""

    def __init__(self, net) -> None:
        self.net, self.passes = net, []

    def __call__(self, x):
        self.passes.append((len(x), torch.is_grad_enabled()))
        return self.net(x)


def test_chunk_sizes_brute_force():
    for rows in range(1, 200):
        assert chunk_sizes(rows, None) == [rows]
        for most in range(1, 70):
            sizes = chunk_sizes(rows, most)
            assert sum(sizes) == rows and max(sizes) <= most
            assert len(sizes) == -(-rows // most)  # the fewest chunks that fit
            assert max(sizes) - min(sizes) <= 1  # near-equal: no runt chunk


def test_row_chunks_values_and_gradients(digits_model, digits_test):
    x = digits_test[0][:50].clone().requires_grad_(True)
    rec = Rows(digits_model)
    out = RowChunks(rec, 16)(x)
    assert [n for n, _ in rec.passes] == [13, 13, 12, 12]
    want = digits_model(x)
    assert torch.allclose(out, want, atol=1e-5)
    (g,) = torch.autograd.grad(out.logsumexp(1).sum(), x)
    (g_want,) = torch.autograd.grad(want.logsumexp(1).sum(), x)
    assert torch.allclose(g, g_want, atol=1e-6)
    with pytest.raises(ValueError, match="max_rows"):
        RowChunks(digits_model, 0)


def test_joint_searches_match_official_loop(digits_model, digits_test):
    x = digits_test[0][:40]
    with torch.no_grad():
        label = digits_model(x).argmax(1)
    target = random_targets(label, 10, torch.Generator().manual_seed(4))
    searches = [StepSearch(0.005, 0.5, 30, target), StepSearch(0.5, 0.3, 12)]
    rec = Rows(digits_model)
    got = joint_steps_to_flip(rec, x, label, searches, max_rows=16, stop_at_fixed_point=False)
    for s, counts in zip(searches, got, strict=True):
        want = [official_steps(digits_model, x[i : i + 1], int(label[i]), s.lr, s.radius, s.cap,
                               None if s.target is None else int(s.target[i]))
                for i in range(len(x))]
        assert counts.tolist() == want
        alone = steps_to_flip(digits_model, x, label, lr=s.lr, radius=s.radius, cap=s.cap,
                              target=s.target)
        assert torch.equal(alone, counts)
    assert 12 in got[1].tolist() and min(got[1].tolist()) < 12  # capped and flipped rows
    # every gradient pass is chunked to <= 16 rows; the untargeted search's last step (11) is
    # a plain forward of its capped rows, never a backward
    assert max(n for n, _ in rec.passes) <= 16
    assert any(not grad for _, grad in rec.passes)
    assert sum(n for n, grad in rec.passes if grad) == sum(
        min(c + 1, s.cap - 1) for s, cs in zip(searches, got, strict=True) for c in cs.tolist()
    )


def test_detector_pass_rows_keep_every_decision(digits_model, digits_test, fast_config):
    x = digits_test[0][:150]
    crit = "c1,c2t,c2u"
    whole = NoiseSignatureDetector(digits_model, fast_config, crit, pass_rows=None).score(x)
    chunked = NoiseSignatureDetector(digits_model, fast_config, crit, pass_rows=32).score(x)
    for k in ("c2t", "c2u"):
        assert torch.equal(whole[k], chunked[k])
    assert torch.allclose(whole["c1"], chunked["c1"], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="pass_rows"):
        NoiseSignatureDetector(digits_model, fast_config, crit, pass_rows=0)


def test_fast_copy_keeps_decisions_and_the_model(digits_model, digits_test, fast_config):
    from advimage.detect.fast_model import scoring_copy

    x = digits_test[0][:60]
    state = {k: v.clone() for k, v in digits_model.state_dict().items()}
    plain = NoiseSignatureDetector(digits_model, fast_config, "c1,c2t,c2u", fast_copy=False)
    fast = NoiseSignatureDetector(digits_model, fast_config, "c1,c2t,c2u")
    a, b = plain.score(x), fast.score(x)
    for k in ("c2t", "c2u"):
        assert torch.equal(a[k], b[k])
    assert torch.allclose(a["c1"], b["c1"], atol=1e-5)
    after = digits_model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # the copy, not the model
    copy_ = scoring_copy(digits_model.eval())
    assert copy_ is not digits_model
    with torch.no_grad():
        assert torch.allclose(copy_(x), digits_model(x), atol=1e-5)


def test_scoring_copy_folds_batchnorm():
    from torch import nn

    from advimage.detect.fast_model import scoring_copy

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    bn = net[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    net.eval()
    fast = scoring_copy(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(5, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), atol=1e-5)
    assert scoring_copy(net.train()) is net  # training mode: batch statistics, no folding


def test_scoring_copy_leaves_randomized_models_alone():
    """A model with a submodule that declares itself randomized is scored as it is: a copy
    would draw from its own copy of the generator (and leave the model's state behind)."""
    from torch import nn

    from advimage.detect.fast_model import scoring_copy
    from advimage.model_flags import DeclaresFlags

    class Noise(nn.Module, DeclaresFlags):
        is_randomized, is_differentiable, uses_bpda = True, True, False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.01 * torch.randn_like(x)

    class Malformed(nn.Identity, DeclaresFlags):
        is_randomized, is_differentiable, uses_bpda = "yes", True, False  # type: ignore[assignment]

    def net(first: nn.Module) -> nn.Module:
        return nn.Sequential(first, nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                             nn.LazyLinear(3)).eval()

    plain = net(nn.Identity())
    plain(torch.rand(1, 1, 6, 6))  # materialize the lazy layer
    assert scoring_copy(plain) is not plain  # the control: a deterministic model is copied
    for first in (Noise(), Malformed()):
        model = net(first)
        model(torch.rand(1, 1, 6, 6))
        assert scoring_copy(model) is model
