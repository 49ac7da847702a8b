"""``advimage run`` and ``advimage eval robust`` with L1 and L0 attacks (issue 18, item 2).

The harness stores, per sample, whether the attack fooled the model and the perturbation's
distance in the attack's norm. Here both are recomputed independently from the adversarial
images the run keeps (``examples``: every image of the single batch): the L1 distance as the sum
of absolute differences, the L0 distance as the number of pixels with any change, the prediction
with the model itself. The checks (robust accuracy falls as the budget grows) run on the L1 and
L0 rows, and the report labels them by norm.
"""

from __future__ import annotations

import json

import pytest
import torch
from harness_helpers import tiny_config
from safetensors.torch import load_file

from advimage.cli import main
from advimage.eval.checks import run_checks
from advimage.eval.store import ResultStore
from advimage.models.hub import load_model

N = 20  # digits test images, one batch
ATTACKS = [
    {"name": "apgd-ce", "norm": "l1", "eps": [1.0, 3.0], "options": {"steps": 10}},
    {"name": "square", "norm": "l1", "eps": [1.0], "options": {"queries": 40}},
    {"name": "fmn", "norm": "l0", "eps": [1, 4], "options": {"steps": 20}},
]
L1_KEYS = ("apgd-ce@1", "apgd-ce@3", "square@1")
L0_KEYS = ("fmn@1", "fmn@4")


def _distance(norm: str, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Independent per-sample distances (B,): no advimage code."""
    d = (x_adv.double() - x.double()).flatten(1)
    if norm == "l1":
        return d.abs().sum(dim=1)
    return (d != 0).sum(dim=1).double()  # one channel: a changed value is a changed pixel


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sparse")
    cfg = tiny_config(attacks=ATTACKS, examples=N,
                      data={"name": "digits", "split": "test", "limit": N, "batch_size": N})
    path = base / "sparse.json"
    path.write_text(json.dumps(cfg))
    run = base / "run"
    assert main(["run", str(path), "--out", str(run), "--no-progress"]) == 0
    return run


def test_stored_outcomes_match_the_kept_adversarial_images(sparse_run) -> None:
    model = load_model("bundled")[0].eval()
    ex = load_file(str(sparse_run / "examples" / "none.safetensors"))
    x, y = ex["x"], ex["y"]
    with ResultStore(sparse_run / "results.sqlite") as store:
        samples = store.samples()
        rows = {r["attack"]: r for r in store.results()}
    for key in L1_KEYS + L0_KEYS:
        norm, eps = ("l1" if key in L1_KEYS else "l0"), float(key.split("@")[1])
        assert rows[key]["norm"] == norm and rows[key]["eps"] == eps
        x_adv = ex[f"adv/{key}"]
        dist = _distance(norm, x, x_adv)
        assert float(dist.max()) <= eps * (1 + 1e-5), (key, dist.max())  # inside the budget
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == y) & (model(x).argmax(1) == y)
        mine = sorted((s for s in samples if s["attack"] == key), key=lambda s: s["sample"])
        assert [bool(s["robust_correct"]) for s in mine] == robust.tolist(), key
        stored = torch.tensor([s["distance"] for s in mine], dtype=torch.float64)
        torch.testing.assert_close(stored, dist, rtol=1e-5, atol=1e-5)
        assert rows[key]["robust_accuracy"] == pytest.approx(float(robust.double().mean()))
    # the budgets did something: more budget, no more robust points (and some were fooled)
    assert rows["apgd-ce@3"]["robust_accuracy"] <= rows["apgd-ce@1"]["robust_accuracy"]
    assert rows["fmn@4"]["robust_accuracy"] < rows["fmn@4"]["clean_accuracy"]


def test_checks_and_report_read_the_sparse_rows(sparse_run) -> None:
    with ResultStore(sparse_run / "results.sqlite") as store:
        rows = store.results()
        findings = run_checks(rows, store.defenses(), store.gradients())
    # robust accuracy never rises with the budget here; an invented rise must be flagged
    assert not [f for f in findings if "rises" in f.message]
    bad = [dict(r) for r in rows]
    for r in bad:
        if r["attack"] == "fmn@4":
            r["robust_accuracy"] = 1.0
    flagged = [f.message for f in run_checks(bad, {}, [])]
    assert any("fmn (l0) robust accuracy rises" in m for m in flagged), flagged
    report = (sparse_run / "report.html").read_text()
    assert ">L1 3<" in report and ">L0 4<" in report  # the table's budget column
    # one curve figure per norm: L1 and L0 budgets never share an axis
    assert "robust accuracy vs eps, defense none, l1;" in report
    assert "robust accuracy vs eps, defense none, l0;" in report


def test_eval_robust_cli_at_l1(tmp_path, capsys) -> None:
    out = tmp_path / "er"
    assert main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "10",
                 "--attacks", "apgd-ce,fab", "--norm", "l1", "--eps", "2", "--steps", "5",
                 "--out", str(out), "--no-progress"]) == 0
    table = json.loads((out / "robust.json").read_text())
    assert {(r["attack"], r["norm"]) for r in table["results"]} == {("apgd-ce@2", "l1"),
                                                                  ("fab@2", "l1")}


def test_eval_robust_cli_refuses_a_norm_the_attack_lacks(capsys) -> None:
    code = main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "4",
                 "--attacks", "pgd", "--norm", "l1", "--eps", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "l1" in err and "pgd" in err, err


def test_compare_counts_the_l1_worst_case_per_image(sparse_run, tmp_path) -> None:
    """``advimage compare``: at L1 1 an image is robust only if apgd-ce and square both left it
    classified correctly (recounted here from the stored samples); fmn's L0 budget of 1 is
    another budget, not part of that worst case."""
    assert main(["compare", str(sparse_run), "--out", str(tmp_path / "cmp")]) == 0
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    worst = {w["budget"]: w for w in doc["rows"][0]["worst_case"]}
    assert set(worst) == {"L1 1", "L1 3", "L0 1", "L0 4"}
    with ResultStore(sparse_run / "results.sqlite") as store:
        samples = store.samples()
    both = {}
    for s in samples:
        if s["attack"] in ("apgd-ce@1", "square@1"):
            both[s["sample"]] = both.get(s["sample"], True) and bool(s["robust_correct"])
    assert len(both) == N
    assert worst["L1 1"]["robust_accuracy"] == pytest.approx(sum(both.values()) / N)
    assert worst["L1 1"]["method"] == "per image" and worst["L1 1"]["norm"] == "l1"
    assert sorted(worst["L1 1"]["attacks"]) == ["apgd-ce", "square"]
    assert worst["L0 1"]["attacks"] == ["fmn"] and worst["L0 1"]["norm"] == "l0"
