"""One per-batch core: the in-memory evaluate_robustness, the resumable run_evaluation and
``advimage eval robust`` give identical counts on the same trained model, data, attacks and seed,
and those counts match a hand-written loop over the same batches and seeds."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

from advimage.attacks import create_attack
from advimage.cli import main
from advimage.data import load_dataset
from advimage.eval.batch import BatchOutcome, attack_batch, batch_seed, predict
from advimage.eval.config import parse_config
from advimage.eval.robust import AttackSpec, evaluate_robustness, rows_from_run
from advimage.eval.runner import run_evaluation
from advimage.models.hub import load_model

SEED = 7
N, BATCH = 40, 10  # 4 batches
NORM = "l2"  # L2 distances of PGD's output depend on its random start: a wrong seed shows
EPS = 0.5  # L2 budget on [0, 1] pixels of the 8x8 digits
STEPS = 5  # PGD iterations


@pytest.fixture(scope="module")
def setup():  # noqa: ANN201
    torch.set_num_threads(1)
    model, _ = load_model("bundled")  # small-cnn trained on the digits (98.9% test accuracy)
    ds = load_dataset("digits", "test").balanced(N)
    return model.eval(), ds


def _attacks() -> dict[str, object]:
    return {
        f"fgsm@{EPS:g}": create_attack("fgsm", eps=EPS, norm=NORM),
        f"pgd@{EPS:g}": create_attack("pgd", eps=EPS, norm=NORM, steps=STEPS),
    }


def _by_hand(model, ds) -> dict[str, dict[str, float]]:
    """Clean/robust counts and the mean L2 distance of fooled samples, written out plainly."""
    out = {}
    for key, attack in _attacks().items():
        n = clean = robust = 0
        dists: list[float] = []
        for b, (x, y) in enumerate(ds.batches(BATCH)):
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            x_adv = dataclasses.replace(attack, seed=batch_seed(SEED, b, "none", key))(model, x, y)
            with torch.no_grad():
                adv_ok = model(x_adv).argmax(1) == y
            n += len(y)
            clean += int(ok.sum())
            robust += int((ok & adv_ok).sum())
            fooled = ok & ~adv_ok
            dists += (x_adv - x)[fooled].flatten(1).norm(dim=1).tolist()
        out[key] = {"n": n, "clean": clean, "robust": robust, "dist": sum(dists) / len(dists)}
    return out


def test_in_memory_run_and_cli_count_identically(setup, tmp_path, capsys) -> None:
    model, ds = setup
    expected = _by_hand(model, ds)
    assert 0 < expected[f"pgd@{EPS:g}"]["robust"] < expected[f"pgd@{EPS:g}"]["clean"]

    # 1) in memory
    specs = [AttackSpec(k, a, EPS, NORM) for k, a in _attacks().items()]
    rows, _ = evaluate_robustness(model, ds.batches(BATCH), specs, progress=False, seed=SEED)
    # 2) the resumable runner
    cfg = parse_config({
        "name": "same", "seed": SEED, "device": "cpu", "examples": 0, "model": "bundled",
        "data": {"name": "digits", "limit": N, "batch_size": BATCH},
        "attacks": [{"name": "fgsm", "eps": [EPS], "norm": NORM},
                    {"name": "pgd", "eps": [EPS], "norm": NORM, "options": {"steps": STEPS}}],
        "checks": {"enabled": False},
    })
    run = run_evaluation(cfg, tmp_path / "run", model=model, dataset=ds, device="cpu")
    stored = {r.attack: r for r in rows_from_run(run)}
    # 3) the command line (a RunConfig built from its options)
    assert main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", str(N),
                 "--batch-size", str(BATCH), "--attacks", "fgsm,pgd", "--eps", str(EPS),
                 "--norm", NORM,
                 "--steps", str(STEPS), "--seed", str(SEED), "--device", "cpu",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    capsys.readouterr()
    cli = {r["attack"]: r for r in csv.DictReader(open(tmp_path / "cli" / "robust.csv",
                                                       encoding="utf-8"))}
    for row in rows:
        e = expected[row.attack]
        assert (row.n, row.clean_correct, row.robust_correct) == (e["n"], e["clean"], e["robust"])
        assert row.mean_distance == pytest.approx(e["dist"], rel=1e-9)
        s = stored[row.attack]
        assert (s.n, s.clean_correct, s.robust_correct) == (row.n, row.clean_correct,
                                                            row.robust_correct)
        assert s.mean_distance == pytest.approx(row.mean_distance, rel=1e-9)
        c = cli[row.attack]
        assert int(c["n"]) == row.n
        assert float(c["clean_accuracy"]) == row.clean_accuracy
        assert float(c["robust_accuracy"]) == row.robust_accuracy
        assert float(c["mean_distance"]) == pytest.approx(row.mean_distance, rel=1e-9)


def test_unseeded_in_memory_keeps_each_attacks_own_seed(setup) -> None:
    """``seed=None``: the attack runs as built (its own seed on every batch)."""
    model, ds = setup
    pgd = create_attack("pgd", eps=EPS, norm="linf", steps=STEPS, seed=3)
    rows, ex = evaluate_robustness(model, ds.batches(N), [AttackSpec("pgd", pgd, EPS, "linf")],
                                   progress=False, keep_examples=N)
    x, y = ds.tensors()
    x_adv = pgd(model, x, y)
    assert torch.equal(ex.x_adv["pgd"], x_adv)
    with torch.no_grad():
        want = int(((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).sum())
    assert rows[0].robust_correct == want


def test_batch_outcome_definitions() -> None:
    """Robust needs a correct clean prediction; fooled = clean-correct and adversarial-wrong;
    the distance sum covers fooled samples only."""
    y = torch.tensor([0, 1, 2, 3])
    out = BatchOutcome(y, pred_clean=torch.tensor([0, 1, 0, 3]), x_adv=torch.zeros(4, 1, 2, 2),
                       pred_adv=torch.tensor([0, 2, 2, 1]), distance=torch.tensor([.1, .2, .3,
                                                                                   .4]),
                       seconds=0.5)
    # sample 2 is wrong clean, right adversarial: neither robust nor fooled
    assert out.robust.tolist() == [True, False, False, False]
    assert out.fooled.tolist() == [False, True, False, True]
    n, clean, robust, fooled, dist = out.counts()
    assert (n, clean, robust, fooled) == (4, 3, 1, 2)
    assert dist == pytest.approx(0.2 + 0.4)


def test_attack_batch_seed_replaces_the_attacks_seed(setup) -> None:
    model, ds = setup
    x, y = ds.tensors()
    pgd = create_attack("pgd", eps=EPS, norm="l2", steps=2, seed=0)
    pred = predict(model, x)
    a = attack_batch(model, pgd, x, y, pred, norm="l2", seed=11)
    want = dataclasses.replace(pgd, seed=11)(model, x, y)
    assert torch.equal(a.x_adv, want)
    assert torch.allclose(a.distance, (want - x).flatten(1).norm(dim=1))  # the L2 norm
    assert a.seconds > 0 and not math.isnan(a.seconds)
    b = attack_batch(model, pgd, x, y, pred, norm="l2", seed=12)
    assert not torch.equal(a.x_adv, b.x_adv)  # the seed reaches the random start
