"""``advimage compare``: leaderboard numbers against the runs' own exports, the per-image worst
case, Wilson intervals, k/255 budgets, refusals and the self-contained page."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.eval.compare import find_mismatches, load_run
from advimage.eval.compare_html import render_comparison
from advimage.formatting import (
    attack_label,
    budget_label,
    display_path,
    format_eps,
    format_rate,
    wilson_interval,
)

ATTACKS = [{"name": "fgsm", "eps": ["8/255", 0.2]},
           {"name": "pgd", "eps": ["8/255"], "options": {"steps": 3}}]


def _run(root: Path, name: str, *extra: str, **overrides: object) -> Path:
    cfg = root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(**{"name": name, "attacks": ATTACKS, **overrides})),
                   encoding="utf-8")
    out = root / name
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--device", "cpu",
                 *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")  # one torch thread: tests/conftest.py's session fixture
    return {
        "a": _run(root, "a", defenses=[{"name": "none"}]),
        "b": _run(root, "b", defenses=[{"name": "quantize", "options": {"bits": 3}},
                                       {"name": "none"}]),
        "c": _run(root, "c", data={"name": "digits", "split": "test", "limit": 10,
                                   "batch_size": 10}),
        "d": _run(root, "d", "--shard", "1/2", attacks=[{"name": "fgsm", "eps": ["8/255"]}]),
    }


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)


def _compare(runs: dict[str, Path], names: str, out: Path, *extra: str) -> int:
    return main(["compare", *(str(runs[k]) for k in names), "--out", str(out), *extra])


def test_numbers_match_the_runs_exports(runs: dict[str, Path], tmp_path: Path) -> None:
    assert _compare(runs, "ab", tmp_path / "cmp") == 0
    rows = _csv(tmp_path / "cmp" / "compare.csv")
    assert [(r["run"], r["defense"]) for r in rows] == [
        ("../../runs0/a", "none"), ("../../runs0/b", "quantize"), ("../../runs0/b", "none")]
    checked = 0
    for row in rows:
        own = [r for r in _csv(runs[row["run"].rsplit("/", 1)[1]] / "results.csv")
               if r["defense"] == row["defense"] and r["kind"] != "unbounded"]
        for r in own:
            col = f"{r['label']} {'8/255' if r['eps'].startswith('0.031') else '51/255'}"
            n, rate = int(r["n"]), float(r["robust_accuracy"])
            assert float(row[col]) == pytest.approx(rate)
            lo, hi = _wilson(round(rate * n), n)
            assert (float(row[f"{col}_lo"]), float(row[f"{col}_hi"])) == pytest.approx((lo, hi))
            assert float(row["clean_accuracy"]) == pytest.approx(float(r["clean_accuracy"]))
            assert int(row["n"]) == n == 20
            checked += 1
    assert checked == 9
    quantize = rows[1]
    assert "bpda" in quantize["flags"].split(";") and rows[0]["flags"] == ""


def test_worst_case_is_per_image(runs: dict[str, Path], tmp_path: Path) -> None:
    assert _compare(runs, "ab", tmp_path / "cmp") == 0
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    budget = {r["attack"]: round(float(r["eps"]), 9) for r in _csv(runs["b"] / "results.csv")
              if r["kind"] != "unbounded"}
    survived: dict[tuple[str, float], dict[str, bool]] = defaultdict(dict)
    for s in _csv(runs["b"] / "samples.csv"):
        if s["attack"] in budget:
            cell = survived[(s["defense"], budget[s["attack"]])]
            cell[s["sample"]] = cell.get(s["sample"], True) and s["robust_correct"] == "1"
    rows = [r for r in doc["rows"] if r["run"].endswith("/b")]
    seen = 0
    for row in rows:
        for w in row["worst_case"]:
            images = survived[(row["defense"], w["eps"])]
            want = sum(images.values()) / len(images)
            assert w["robust_accuracy"] == pytest.approx(want) and w["n"] == len(images) == 20
            assert w["method"] == "per image"
            per_attack = [c["robust_accuracy"] for c in row["attacks"]
                          if round(c["eps"], 9) == w["eps"]]
            assert w["robust_accuracy"] <= min(per_attack) + 1e-12
            seen += 1
    assert seen == 4
    none = next(r for r in rows if r["defense"] == "none")
    assert [w["budget"] for w in none["worst_case"]] == ["8/255", "51/255"]
    assert sorted(none["worst_case"][0]["attacks"]) == ["fgsm", "pgd"]


def test_formatting() -> None:
    assert format_eps(8 / 255) == "8/255" and format_eps(0.03137255) == "8/255"
    assert format_eps(8 / 255 + 5e-6) == "0.03138" and format_eps(0.5) == "0.5"
    assert format_eps(0.0) == "0" and format_eps(1.0) == "255/255"
    assert format_eps(2 / 255, "l2") == "0.007843" and budget_label(0.5, "l2") == "L2 0.5"
    assert budget_label(4 / 255) == "4/255"
    row = {"label": "pgd", "kind": "white-box", "norm": "linf", "eps": 8 / 255}
    assert attack_label(row) == "pgd@8/255"
    assert attack_label({**row, "norm": "l2", "eps": 0.5}) == "pgd@L2 0.5"
    assert attack_label({**row, "label": "unbounded-pgd", "kind": "unbounded", "eps": 1.0}) \
        == "unbounded-pgd"
    for k, n in [(0, 20), (7, 20), (20, 20), (1, 1), (300, 500)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson(k, n))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    assert format_rate(0.35, 20) == "35.0% [18.1, 56.7]"
    assert display_path("runs/a", "/x") == "runs/a"
    assert display_path("/data/runs/a", "/data/cmp") == "../runs/a"


def test_page_is_self_contained_and_relative(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(runs, "ab", out) == 0
    page = (out / "compare.html").read_text(encoding="utf-8")
    for name in ("compare.html", "compare.csv", "compare.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(runs["a"].parent) not in text
        assert "/tmp/" not in text
    for attr in ("src=", "href="):
        for proto in ("http://", "https://", "//"):
            assert f'{attr}"{proto}' not in page
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 1
    assert "How to read this" in page and 'class="sortable"' in page and "<script>" in page
    assert "worst case 8/255" in page and "worst case 51/255" in page
    assert "fgsm 8/255" in page and "0.031" not in page


def test_different_data_or_budgets_refused(runs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for names, words in (("ac", ("data differs", "limit 20 vs 10", "n_images 20 vs 10")),
                         ("ad", ("budgets differ", "{8/255, 51/255}", "{8/255}"))):
        out = tmp_path / names
        assert _compare(runs, names, out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("advimage: error: ")
        assert all(w in err[0] for w in words) and "--allow-mismatch" in err[0], err
        assert not (out / "compare.html").exists()


def test_allow_mismatch_shows_it(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(runs, "acd", out, "--allow-mismatch") == 0
    doc = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert len(doc["mismatches"]) == 2
    assert doc["mismatches"][0].startswith("data differs between ../../runs0/a and ../../runs0/c")
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert page.count("Mismatch (shown because of --allow-mismatch)") == 2
    d = next(r for r in doc["rows"] if r["run"].endswith("/d"))
    assert d["partial"] and d["flags"][0] == "partial" and d["n"] == 10
    assert "is partial: 1 of 2 batches" in page
    assert [b["label"] for b in doc["budgets"]] == ["8/255", "51/255"]


def test_budget_mismatch_alone_and_bad_inputs(runs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = load_run(runs["a"], tmp_path)
    other = replace(a, given="x", budgets=[("linf", 0.1)])
    assert find_mismatches([a, a]) == []
    assert find_mismatches([a, other]) == [
        f"budgets differ between {runs['a']} {{8/255, 51/255}} and x {{0.1}}"]
    (tmp_path / "file").write_text("x", encoding="utf-8")
    for argv in ([str(tmp_path), "--out", str(tmp_path / "o")],
                 [str(runs["a"]), "--out", str(tmp_path / "file")],
                 [str(runs["a"]), str(runs["a"]), "--out", str(tmp_path / "o")]):
        assert main(["compare", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("advimage: error: "), err


def test_autoattack_column() -> None:
    cell = {"attack": "autoattack", "name": "autoattack", "kind": "white-box", "norm": "linf",
            "eps": 8 / 255, "budget": "8/255", "robust_accuracy": 0.25, "n": 40,
            "ci": list(wilson_interval(10, 40))}
    row = {"run": "r", "model": "m", "defense": "none", "n": 40, "clean_accuracy": 0.9,
           "clean_ci": list(wilson_interval(36, 40)), "attacks": [cell], "autoattack": [cell],
           "worst_case": [{**cell, "method": "per image"}], "flags": [], "findings": []}
    doc = {"runs": [{"run": "r", "name": "n", "model": "m", "data": {}, "budgets": ["8/255"],
                     "partial": False, "batches_done": 1, "batches_total": 1}],
           "rows": [row], "mismatches": [],
           "budgets": [{"norm": "linf", "eps": 8 / 255, "label": "8/255"}]}
    page = render_comparison(doc).render()
    assert "<th>AutoAttack 8/255</th>" in page and "25.0% [14.2, 40.2]" in page
