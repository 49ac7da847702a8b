"""Budgets out of range are refused in one line, for every registered attack and in the CLI.

eps is in pixel units of [0, 1] images: an L-inf eps above 1 (the whole box), an L2 eps above
the box diagonal sqrt(C*H*W) (the largest L2 distance between two images) or an L1 eps above
C*H*W (every value moved across the box) is a unit mistake, e.g. 8 instead of 8/255, and used
to be accepted silently; an L0 eps counts changed pixels, at most H*W.
"""

from __future__ import annotations

import math

import pytest
import torch
from fast_configs import fast_config

from advimage.attacks import create_attack, list_attacks
from advimage.cli import main
from advimage.errors import UserInputError

ATTACKS = list_attacks()


def _create(name: str, **kw):
    """``create_attack`` with the fast config, or None when the attack does not take the norm."""
    try:
        return create_attack(name, **{**fast_config(name), **kw})
    except UserInputError:
        raise
    except ValueError as err:
        if "norm" in str(err):
            return None
        raise


@pytest.mark.parametrize("name", ATTACKS)
def test_linf_eps_above_one_is_refused_at_construction(name) -> None:
    if _create(name, norm="linf", eps=0.1) is None:
        pytest.skip(f"{name} has no linf variant")
    with pytest.raises(UserInputError) as info:
        _create(name, norm="linf", eps=2.0)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}: eps=2 ") and "8/255" in msg
    assert _create(name, norm="linf", eps=1.0).eps == 1.0  # the whole box is a valid budget


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize(("norm", "largest"), [("l2", 8.0), ("l1", 64.0), ("l0", 64.0)])
def test_eps_beyond_the_largest_distance_is_refused_at_call(name, norm, largest,
                                                            trained_digits) -> None:
    """Digits are 1x8x8: the L2 diagonal is 8, the L1 distance at most 64, 64 pixels."""
    attack = _create(name, norm=norm, eps=largest + 1)
    if attack is None:
        pytest.skip(f"{name} has no {norm} variant")
    x, y = trained_digits.x[:4], trained_digits.y[:4]
    with pytest.raises(UserInputError) as info:
        attack(trained_digits.model, x, y)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}: eps={largest + 1:g} ") and "1x8x8" in msg
    assert f"larger than {largest:g}," in msg and norm in msg.lower()
    ok = _create(name, norm=norm, eps=largest)
    assert ok(trained_digits.model, x, y).shape == x.shape


def test_minimal_perturbation_attacks_keep_eps_inf(trained_digits) -> None:
    cw = create_attack("cw-l2", steps=2, binary_steps=1)
    assert math.isinf(cw.eps)
    x, y = trained_digits.x[:4], trained_digits.y[:4]
    assert cw(trained_digits.model, x, y).shape == x.shape


def test_unbounded_sanity_attack_stays_valid(trained_digits) -> None:
    """The run harness's unbounded check is PGD at linf eps = 1 (the whole box)."""
    from advimage.eval.config import parse_config
    from advimage.eval.run_batch import unbounded_attack

    cfg = parse_config({"name": "t", "model": {"path": "bundled"},
                        "attacks": [{"name": "pgd", "eps": [0.1]}]})
    spec = unbounded_attack(cfg)
    attack = create_attack(spec.name, eps=spec.eps, norm=spec.norm, steps=5)
    x, y = trained_digits.x[:16], trained_digits.y[:16]
    with torch.no_grad():
        robust = (trained_digits.model(attack(trained_digits.model, x, y)).argmax(1) == y)
    assert float(robust.float().mean()) == 0.0


def _one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("advimage: error:") and "\n" not in err, err
    return err


_DATA = ("--model", "bundled", "--data", "digits", "--limit", "10", "--no-progress")


def test_cli_attack_refuses_out_of_range_budgets(tmp_path, capsys) -> None:
    err = _one_line_error(capsys, "attack", *_DATA, "--attack", "pgd", "--steps", "1",
                          "--eps", "2", "--out", str(tmp_path / "a"))
    assert "pgd: eps=2 " in err and "8/255" in err
    err = _one_line_error(capsys, "attack", *_DATA, "--attack", "pgd", "--steps", "1",
                          "--norm", "l2", "--eps", "9", "--out", str(tmp_path / "b"))
    assert "pgd: eps=9 " in err and "1x8x8" in err


def test_cli_eval_robust_refuses_out_of_range_budgets(capsys) -> None:
    err = _one_line_error(capsys, "eval", "robust", *_DATA, "--attacks", "fgsm,pgd",
                          "--steps", "1", "--eps", "0.1,1.5")
    assert "fgsm: eps=1.5 " in err
    err = _one_line_error(capsys, "eval", "robust", *_DATA, "--attacks", "pgd",
                          "--steps", "1", "--norm", "l2", "--eps", "9")
    assert "pgd: eps=9 " in err and "1x8x8" in err


def test_run_config_refuses_linf_eps_above_one(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\nmodel: {path: bundled}\ndata: {name: digits, limit: 10}\n"
                   "attacks:\n  - {name: pgd, eps: [0.1, 2], options: {steps: 1}}\n")
    err = _one_line_error(capsys, "run", str(cfg), "--out", str(tmp_path / "run"))
    assert "'attacks[0].eps'" in err and "eps=2 " in err and "8/255" in err
    assert not (tmp_path / "run").exists()


def test_cli_l2_budget_refused_before_anything_is_written(tmp_path, capsys) -> None:
    """The L2 check needs the image size; attack and run make it before creating --out."""
    out = tmp_path / "a"
    _one_line_error(capsys, "attack", *_DATA, "--attack", "pgd", "--steps", "1",
                    "--norm", "l2", "--eps", "9", "--out", str(out))
    assert not out.exists()
    cfg = tmp_path / "l2.yaml"
    cfg.write_text("name: l2\nmodel: {path: bundled}\ndata: {name: digits, limit: 4}\n"
                   "attacks: [{name: pgd, norm: l2, eps: [9], options: {steps: 1}}]\n")
    err = _one_line_error(capsys, "run", str(cfg), "--out", str(tmp_path / "r"), "--no-progress")
    assert "pgd: eps=9 " in err and not (tmp_path / "r").exists()
