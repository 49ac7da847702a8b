"""AutoAttack-style ensemble: per-sample worst case, never weaker than its members, report."""

from __future__ import annotations

import json

import pytest
import torch

from advimage.attacks.ensemble import AutoAttack, AutoAttackReport
from advimage.attacks.square import Square


def _correct(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


@pytest.fixture(scope="module")
def ensemble_run(trained_digits):
    td = trained_digits
    x, y = td.x[:96], td.y[:96]
    attack = AutoAttack(eps=0.08, version="fast")
    result = attack.run(td.model, x, y)
    return td.model, x, y, attack, result.x_adv, result.report


def test_worst_case_per_sample(ensemble_run) -> None:
    model, x, y, attack, x_adv, report = ensemble_run
    assert bool(attack.threat.contains(x, x_adv).all())
    correct = _correct(model, x_adv, y).cpu()  # the report's tensors live on the CPU
    assert torch.equal(correct, report.robust)  # the report is the truth about x_adv
    x, x_adv = x.cpu(), x_adv.cpu()
    # robust points come back clean; fooled ones carry the attack that fooled them
    assert torch.equal(x_adv[report.robust], x[report.robust])
    assert bool((report.fooled_by[report.robust] == -1).all())
    clean_wrong = ~_correct(model, x.to(y.device), y).cpu()
    assert bool((report.fooled_by[clean_wrong] == -2).all())
    assert torch.equal(x_adv[clean_wrong], x[clean_wrong])
    assert report.robust_accuracy == pytest.approx(correct.float().mean().item())
    assert report.robust_accuracy < report.clean_accuracy


def test_not_weaker_than_any_member(ensemble_run) -> None:
    model, x, y, attack, _, report = ensemble_run
    for member in attack.members():
        alone = _correct(model, member(model, x, y), y).float().mean().item()
        # the ensemble's members see the same points plus a head start; allow one sample of
        # noise from the different random streams
        assert report.robust_accuracy <= alone + 1 / len(x), member.name


def test_report_structure(ensemble_run) -> None:
    model, x, y, attack, x_adv, report = ensemble_run
    assert not any(isinstance(v, torch.Tensor | AutoAttackReport) for v in vars(attack).values())
    assert torch.equal(attack(model, x, y), x_adv)  # the call returns the run's images
    assert [s.name for s in report.stages] == [m.name for m in attack.members()]
    n_robust = round(report.clean_accuracy * len(x))
    assert report.stages[0].n_attacked == n_robust
    for s in report.stages:  # each attack runs only on the points still robust
        assert s.n_attacked == n_robust
        n_robust -= s.n_fooled
        assert s.robust_accuracy == pytest.approx(n_robust / len(x))
        assert s.seconds >= 0.0
        assert int((report.fooled_by == report.stages.index(s)).sum()) == s.n_fooled
    assert report.stages[-1].robust_accuracy == report.robust_accuracy
    json.dumps(report.as_dict())


def test_members_follow_version_and_norm() -> None:
    std = AutoAttack(eps=0.3).members()  # the original's standard version
    assert [m.name for m in std] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std[0].steps == 100 and std[0].restarts == 1 and std[0].loss == "ce"
    assert std[1].steps == 100 and std[1].n_target_classes == 9 and std[1].loss == "dlr"
    assert std[2].steps == 100 and std[2].n_target_classes == 9 and std[2].restarts == 1
    assert isinstance(std[3], Square) and std[3].queries == 5000
    assert not std[3].rescale_schedule  # the original's resc_schedule=False
    assert all(m.eps == 0.3 for m in std)
    fast = AutoAttack(eps=0.3, version="fast").members()
    assert fast[0].steps < 100 and fast[2].queries < 5000
    l2 = AutoAttack(eps=0.5, norm="l2").members()
    assert [m.name for m in l2] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(m.norm == "l2" for m in l2)
    plus = AutoAttack(eps=0.3, version="plus").members()
    assert [m.name for m in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert [getattr(m, "restarts", None) for m in plus] == [5, 5, 5, 1, 1, 1]
    rand = AutoAttack(eps=0.3, version="rand").members()
    assert [m.name for m in rand] == ["apgd-ce", "apgd-dlr"]
    assert all(m.eot == 20 and m.restarts == 1 for m in rand)


class _Coin(torch.nn.Module):
    """A randomized "defense": the model's logits, or on a coin flip per row a wrong class."""

    def __init__(self, model: torch.nn.Module, p_wrong: float) -> None:
        super().__init__()
        self.model, self.p_wrong = model, p_wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        flip = torch.rand(len(x), device=x.device) < self.p_wrong
        wrong = torch.nn.functional.one_hot((z.argmax(1) + 1) % z.shape[1], z.shape[1]) * 100.0
        return torch.where(flip[:, None], wrong.to(z.dtype), z)


def test_rand_judges_over_several_draws(trained_digits, monkeypatch) -> None:
    """A member's result counts as fooling only when most draws misclassify it."""
    td = trained_digits
    x, y = td.x[:64], td.y[:64]
    monkeypatch.setattr(AutoAttack, "members", lambda self: [])  # judge clean points only
    seen: list[int] = []
    import advimage.attacks.ensemble as ens

    def judge(attack, model, xs, ys, gen, draws=1, seed=None):  # noqa: ANN001, ANN202
        seen.append(draws)
        return ens.__dict__["_member_run_orig"](attack, model, xs, ys, gen, draws, seed)

    monkeypatch.setitem(ens.__dict__, "_member_run_orig", ens._member_run)
    monkeypatch.setattr(ens, "_member_run", judge)
    monkeypatch.setattr(AutoAttack, "members", lambda self: [Square(eps=1e-3, queries=1)])
    torch.manual_seed(0)
    AutoAttack(eps=0.3, version="rand").run(_Coin(td.model, 0.3), x, y)
    AutoAttack(eps=0.3, version="standard").run(td.model, x, y)
    assert seen == [ens.RAND_DRAWS, 1]


def test_bad_use_raises(trained_digits) -> None:
    with pytest.raises(ValueError):
        AutoAttack(version="bogus")
    with pytest.raises(ValueError):
        AutoAttack(eps=float("inf"))
    td = trained_digits
    with pytest.raises(ValueError):
        AutoAttack(version="fast")(td.model, td.x[:4], td.y[:4], target=(td.y[:4] + 1) % 10)


def _square_batch_sizes(monkeypatch) -> list[int]:  # noqa: ANN001
    """Record the batch size of every Square ``_run`` call (the ensemble's last member)."""
    sizes: list[int] = []
    run = Square._run

    def spy(self, model, xs, *args):  # noqa: ANN001, ANN202
        sizes.append(len(xs))
        return run(self, model, xs, *args)

    monkeypatch.setattr(Square, "_run", spy)
    return sizes


def test_chunks_bound_the_batch_and_keep_the_result(trained_digits, monkeypatch) -> None:
    td = trained_digits
    x, y = td.x[:96], td.y[:96]
    whole = AutoAttack(eps=0.08, version="fast", seed=0, batch_size=None).run(td.model, x, y)
    adv_whole = whole.x_adv
    # a chunk as large as the batch is the same computation, bit for bit
    same = AutoAttack(eps=0.08, version="fast", seed=0, batch_size=96)
    assert torch.equal(same(td.model, x, y), adv_whole)
    sizes = _square_batch_sizes(monkeypatch)
    chunked = AutoAttack(eps=0.08, version="fast", seed=0, batch_size=16)
    result = chunked.run(td.model, x, y)
    x_adv, report = result.x_adv, result.report
    assert sizes and max(sizes) <= 16 and sum(sizes) == report.stages[2].n_attacked
    assert bool(chunked.threat.contains(x, x_adv).all())
    assert torch.equal(_correct(td.model, x_adv, y).cpu(), report.robust)
    # other chunks draw other random starts: the same strength up to a few points
    assert abs(report.robust_accuracy - whole.report.robust_accuracy) <= 4 / len(x)
    with pytest.raises(ValueError, match="batch_size"):
        AutoAttack(batch_size=0)


def test_members_never_see_an_empty_batch(trained_digits, monkeypatch) -> None:
    td = trained_digits
    x = td.x[:8]
    with torch.no_grad():
        wrong = (td.model(x).argmax(1) + 1) % 10  # labels the model never predicts
    calls = _square_batch_sizes(monkeypatch)
    result = AutoAttack(eps=0.08, version="fast").run(td.model, x, wrong)
    x_adv, report = result.x_adv, result.report
    assert calls == []  # nothing left to attack: no member ran
    assert [s.n_attacked for s in report.stages] == [0, 0, 0]
    assert report.clean_accuracy == 0.0 and torch.equal(x_adv, x)


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 4])
def test_standard_fools_exactly_the_originals_points(trained_digits, seed: int) -> None:
    """Differential test against Croce & Hein's own ensemble (``pyautoattack``), standard
    version, L-inf, 120 digits in chunks of 40: with the same seed and chunks, every member
    leaves exactly the original's robust points (its APGD iterates and Square proposals are
    the original's; FAB-T is deterministic)."""
    aa = pytest.importorskip("pyautoattack", reason="pyautoattack missing")
    td = trained_digits
    x, y = td.x[:120], td.y[:120]
    original = aa.AutoAttack(td.model, eps=0.1, norm="Linf", seed=seed, version="standard")
    theirs, _ = original.run_standard_evaluation(x, y, batch_size=40)
    ours = AutoAttack(eps=0.1, seed=seed, batch_size=40).run(td.model, x, y)
    assert [s.name for s in ours.report.stages] == original.attacks_to_run
    robust = _correct(td.model, theirs, y)
    assert 0 < int(robust.sum()) < int(_correct(td.model, x, y).sum())
    assert torch.equal(ours.report.robust, robust.cpu())
