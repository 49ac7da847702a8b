"""APGD / APGD-T: checkpoint and halving rule against an independent re-implementation, threat
model, strength relative to PGD, targeted behaviour, DLR invariances, early stop and restarts."""

from __future__ import annotations

import math

import pytest
import torch

import advimage.attacks.apgd as apgd_mod
from advimage.attacks.apgd import APGD, StepSizeRule, apgd_checkpoints
from advimage.attacks.apgd_targeted import APGDT
from advimage.attacks.losses import dlr_loss
from advimage.attacks.pgd import PGD


def _robust(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


# ---------------------------------------------------------------- checkpoints / halving rule
def _reference_checkpoints(steps: int) -> list[int]:
    # the paper's recurrence in exact arithmetic (percent units): p1 = 22, dp shrinks by 3, >= 6
    p, prev, out = 22, 0, []
    while p <= 100:
        out.append(-(-p * steps // 100))  # ceil(p * steps / 100)
        p, prev = p + max(p - prev - 3, 6), p
    return sorted({w for w in out if 1 <= w <= steps})


@pytest.mark.parametrize("steps", [1, 5, 10, 37, 100, 250])
def test_checkpoints_match_paper_recurrence(steps: int) -> None:
    assert apgd_checkpoints(steps) == _reference_checkpoints(steps)
    if steps == 100:
        assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def _reference_halving(trace: list[float], steps: int, rho: float = 0.75) -> dict[int, bool]:
    """The reference code's rule for one sample (``pyautoattack``'s ``check_oscillation`` and
    ``fl_reduce_no_impr``, transcribed), at the paper's checkpoints (the code's own at 100
    steps): trace = [f(x^0), ..., f(x^steps)]."""
    loss_steps = [0.0] * steps  # the code's zero-filled buffer: loss_steps[i] = f(x^(i+1))
    result, prev_w, reduced_last, best_last = {}, 0, True, trace[0]
    for w in _reference_checkpoints(steps):
        loss_steps[prev_w:w] = trace[prev_w + 1:w + 1]
        j, k = w - 1, w - prev_w
        # index -1 is the buffer's last entry, still 0 at the first checkpoint
        n_inc = sum(loss_steps[j - c] > loss_steps[j - c - 1] for c in range(k))
        best = max(trace[: w + 1])
        result[w] = n_inc <= k * rho or (not reduced_last and best_last >= best)
        reduced_last, best_last, prev_w = result[w], best, w
    return result


def test_step_size_rule_matches_reference_on_synthetic_traces() -> None:
    steps, n = 60, 48
    g = torch.Generator().manual_seed(3)
    traces = torch.cat([
        torch.randn(16, steps + 1, generator=g).cumsum(1),  # random walks
        (torch.arange(steps + 1.0) + 1).expand(8, -1),  # increasing from 1: never halves
        torch.zeros(8, steps + 1),  # flat: condition 1 every time
        (torch.arange(steps + 1.0) % 2).expand(8, -1),  # oscillating 0,1,0,1: ~50% increases
        torch.randn(8, steps + 1, generator=g).sign().cumsum(1) * 0.5,  # +-1 walks with ties
    ]).t().contiguous().double()  # (steps + 1, n)
    assert traces.shape == (steps + 1, n)
    rule = StepSizeRule(steps, traces[0])
    got: dict[int, torch.Tensor] = {}
    for it in range(1, steps + 1):
        improved, halve = rule.update(traces[it], it)
        assert torch.equal(improved, traces[it] > traces[:it].max(0).values)
        if halve is not None:
            got[it] = halve
    assert sorted(got) == _reference_checkpoints(steps)
    n_halved = 0
    for b in range(n):
        ref = _reference_halving(traces[:, b].tolist(), steps)
        for w, flag in ref.items():
            assert bool(got[w][b]) == flag, f"sample {b} checkpoint {w}"
            n_halved += flag
    assert 0 < n_halved < n * len(got)  # both outcomes exercised
    # an increasing trace never halves (from 0: its first loss counts as an increase)
    assert not any(bool(h[16:24].any()) for h in got.values())
    assert all(bool(h[24:32].all()) for h in got.values())  # flat trace always halves


def test_step_size_rule_select_keeps_rows() -> None:
    rule = StepSizeRule(10, torch.tensor([0.0, 1.0, 2.0]))
    rule.update(torch.tensor([1.0, 0.0, 3.0]), 1)
    rule.select(torch.tensor([0, 2]))
    assert torch.equal(rule.best, torch.tensor([1.0, 3.0]))
    assert torch.equal(rule.n_increase, torch.tensor([1.0, 1.0]))


def test_halving_happens_in_a_real_run(trained_digits, monkeypatch) -> None:
    halvings: list[torch.Tensor] = []
    original = StepSizeRule.update

    def spy(self, loss, it):
        improved, halve = original(self, loss, it)
        if halve is not None:
            halvings.append(halve.clone())
        return improved, halve

    monkeypatch.setattr(apgd_mod.StepSizeRule, "update", spy)
    td = trained_digits
    APGD(eps=0.05, steps=30, early_stop=False)(td.model, td.x[:64], td.y[:64])
    assert len(halvings) == len(apgd_checkpoints(30))
    assert any(bool(h.any()) for h in halvings)


# ---------------------------------------------------------------- threat model and strength
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_stays_in_ball(trained_digits, norm: str, eps: float, loss: str) -> None:
    td = trained_digits
    x, y = td.x[:64], td.y[:64]
    attack = APGD(eps=eps, norm=norm, loss=loss, steps=10)
    raw = attack._run(td.model, x, y, None, torch.Generator(x.device).manual_seed(0))  # raw
    assert bool(attack.threat.contains(x, raw, atol=1e-5).all())
    x_adv = attack(td.model, x, y)
    assert bool(attack.threat.contains(x, x_adv).all())
    assert _robust(td.model, x_adv, y).float().mean() < _robust(td.model, x, y).float().mean()


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.8)])
def test_apgd_ce_at_least_as_strong_as_pgd(trained_digits, norm: str, eps: float) -> None:
    td = trained_digits
    x, y = td.x[:160], td.y[:160]
    steps = 20
    acc_pgd = _robust(td.model, PGD(eps=eps, norm=norm, steps=steps)(td.model, x, y), y)
    acc_apgd = _robust(td.model, APGD(eps=eps, norm=norm, steps=steps)(td.model, x, y), y)
    # within noise: at most 2 more robust points out of 160
    assert acc_apgd.sum() <= acc_pgd.sum() + 2
    assert acc_apgd.float().mean() < 0.9


def test_targeted_hits_target_more_often_than_untargeted(trained_digits) -> None:
    td = trained_digits
    x, y = td.x[:96], td.y[:96]
    target = (y + 1 + torch.arange(len(y), device=y.device) % 9) % 10  # != y
    for cls in (APGD, APGDT):
        attack = cls(eps=0.15, steps=20)
        with torch.no_grad():
            hit_t = (td.model(attack(td.model, x, y, target=target)).argmax(1) == target)
            hit_u = (td.model(attack(td.model, x, y)).argmax(1) == target)
        assert hit_t.float().mean() > hit_u.float().mean() + 0.2, cls.__name__


def test_apgdt_more_targets_and_restarts_only_help(trained_digits) -> None:
    td = trained_digits
    x, y = td.x[:96], td.y[:96]
    # later target classes / restarts only run on points the earlier runs left robust, with the
    # same random stream, so the robust set can only shrink
    r1 = _robust(td.model, APGDT(eps=0.08, steps=10, n_target_classes=1)(td.model, x, y), y)
    r3 = _robust(td.model, APGDT(eps=0.08, steps=10, n_target_classes=3)(td.model, x, y), y)
    assert bool((r3 <= r1).all())
    q1 = _robust(td.model, APGD(eps=0.08, steps=10, restarts=1)(td.model, x, y), y)
    q3 = _robust(td.model, APGD(eps=0.08, steps=10, restarts=3)(td.model, x, y), y)
    assert bool((q3 <= q1).all())
    assert r3.sum() < r1.sum() or q3.sum() < q1.sum()  # the extra work did something


def test_early_stop_does_not_change_the_result(trained_digits) -> None:
    td = trained_digits
    x, y = td.x[:96], td.y[:96]
    fast = APGD(eps=0.1, steps=15, early_stop=True)(td.model, x, y)
    full = APGD(eps=0.1, steps=15, early_stop=False)(td.model, x, y)
    r_fast, r_full = _robust(td.model, fast, y), _robust(td.model, full, y)
    # samples are independent, so dropping finished ones leaves the others' trajectories alone
    assert int((r_fast != r_full).sum()) <= 1
    assert r_fast.float().mean() < 0.9


# ---------------------------------------------------------------- DLR loss and config checks
@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_invariant_to_logit_shift_and_scale(targeted: bool) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (32,), generator=g)
    t = (y + 3) % 10 if targeted else None
    base = dlr_loss(z, y, t)
    for a, b in [(0.01, 0.0), (7.0, -4.0), (1.0, 100.0)]:
        torch.testing.assert_close(dlr_loss(a * z + b, y, t), base, rtol=1e-6, atol=1e-9)
    # independent value check on one row (Eq. 4 / Eq. 5 of the paper)
    s = z[0].sort(descending=True).values
    zy = z[0, y[0]]
    if targeted:
        ref = -(zy - z[0, t[0]]) / (s[0] - 0.5 * (s[2] + s[3]))
    else:
        other = torch.cat([z[0, : y[0]], z[0, y[0] + 1 :]]).max()
        ref = -(zy - other) / (s[0] - s[2])
    assert math.isclose(float(base[0]), float(ref), rel_tol=1e-9)


@pytest.mark.parametrize(
    "config",
    [{"eps": math.inf}, {"steps": 0}, {"restarts": 0}, {"loss": "mse"}, {"rho": 1.5},
     {"momentum": 1.0}, {"eot": 0}, {"norm": "l0", "eps": 3}],
)
def test_bad_config_raises(config: dict) -> None:
    with pytest.raises(ValueError):
        APGD(**config)
    with pytest.raises(ValueError):
        APGDT(n_target_classes=0)
