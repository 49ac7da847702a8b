"""``eval minimal``: one minimal-norm run turned into the robust-accuracy-vs-eps curve.

The curve is checked against the attack's own images: at each budget, 1 - robust accuracy
must equal the fraction of images whose returned adversarial image fools the model (one
independent forward) within that budget, plus those misclassified clean.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from advimage.attacks import PGD, DeepFool
from advimage.cli import main
from advimage.data import load_dataset
from advimage.eval.minimal import minimal_norms, robust_curve
from advimage.lp_balls import lp_norms
from advimage.models.hub import load_model

N = 60
GRID = [0.05, 0.1, 0.2, 0.4]


@pytest.fixture(scope="module")
def digits():
    model, _ = load_model("bundled")
    x, y = load_dataset("digits", "test").tensors(limit=N)
    return model.eval(), x, y


def test_curve_matches_the_attack_images(digits) -> None:
    model, x, y = digits
    attack = DeepFool(norm="linf", steps=30)
    need = minimal_norms(model, x, y, attack, batch_size=25)
    res = attack.run(model, x, y)
    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
        fooled = model(res.x_adv).argmax(1) != y
    dist = lp_norms(res.x_adv - x, "linf")
    curve = robust_curve(need, GRID)
    for e, r in zip(GRID, curve, strict=True):
        broken = clean_wrong | (fooled & (dist <= e))
        assert r == pytest.approx(1 - broken.float().mean().item(), abs=1e-6), e
    assert curve == sorted(curve, reverse=True)


def test_robust_curve_counts_and_rejects() -> None:
    need = torch.tensor([0.0, 0.1, 0.3, math.inf])
    assert robust_curve(need, [0.05, 0.1, 0.2, 1.0]) == [0.75, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="eps"):
        robust_curve(need, [-1.0])
    with pytest.raises(ValueError, match="minimal-norm"):
        minimal_norms(torch.nn.Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(1).long(),
                      PGD())  # type: ignore[arg-type]


def test_cli_writes_the_curve(digits, tmp_path, capsys) -> None:
    model = digits[0]
    x, y = load_dataset("digits", "test").tensors()  # the CLI's --limit picks balanced images
    out = tmp_path / "run"
    assert main(["eval", "minimal", "--model", "bundled", "--data", "digits",
                 "--attack", "deepfool", "--norm", "linf", "--steps", "30",
                 "--eps", ",".join(map(str, GRID)), "--device", "cpu", "--out", str(out),
                 "--no-progress"]) == 0
    assert "median minimal norm" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "minimal.csv")))
    want = robust_curve(minimal_norms(model, x, y, DeepFool(norm="linf", steps=30)), GRID)
    assert [float(r["robust_accuracy"]) for r in rows] == pytest.approx(want)
    doc = json.loads((out / "minimal.json").read_text())
    assert len(doc["norms"]) == len(x) and doc["attack"] == "deepfool"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--attack", "pgd"], "minimal-norm attack"),
        (["--attack", "ddn", "--norm", "l1"], "does not support norm"),
        (["--attack", "fmn", "--norm", "l0", "--eps", "0"], "eps must be > 0"),
    ],
)
def test_cli_bad_input_is_one_line(args, match, capsys) -> None:
    from cli_helpers import error_message

    assert main(["eval", "minimal", "--model", "bundled", "--limit", "4", "--device", "cpu",
                 *args]) != 0
    assert match in error_message(capsys)
