"""The De^3 report's review fixes (issue 7) on synthetic runs: the per-image worst case from
samples.csv, baselines on other images or attacks, two defenses at one trade-off point, and
"exact noise" only for runs made under the current noise scheme (git ancestry)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from nim_report_synth import (
    DEFENSES,
    EPS4,
    EPS8,
    N,
    attack_key,
    checkpoints,
    worst_pct,
    write_run,
)

import advimage.studies.nim.report as report
from advimage.studies.nim.report_images import NOISE_SCHEME, exact_noise
from advimage.studies.nim.report_run import load_run, series
from advimage.studies.nim.report_worst import with_worst

AT = {"none": (None, None, None, 0.75, {"fgsm": 0.45, "pgd": 0.35, "pgd-eot8": 0.35})}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("nimworst")
    ckpt = checkpoints(root)
    ids = write_run(root / "run", DEFENSES, ckpt, examples=("nim-70-known",))
    write_run(root / "at", AT, ckpt)
    return {"root": root, "ckpt": ckpt, "ids": ids}


def _copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    return Path(shutil.copytree(src, dst))


def _edit_json(path: Path, change) -> None:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_worst_case_is_the_intersection_per_budget(runs: dict) -> None:
    run = with_worst(load_run(runs["root"] / "run"))
    ids = runs["ids"]
    w8, w4 = run.worst
    assert (w8.title, w4.title) == ("worst case 8/255", "worst case 4/255")
    # every bounded attack of its budget; the unbounded check is never part of a worst case
    assert w8.parts == tuple(attack_key(a, EPS8) for a in ("fgsm", "pgd", "pgd-eot8"))
    assert w4.parts == (attack_key("fgsm", EPS4),)
    for label in DEFENSES:
        assert f"{100 * run.robust(label, w8.key):.1f}" == worst_pct(ids, label)
        assert run.robust(label, w4.key) == len(ids[(label, attack_key("fgsm", EPS4))]) / N
    # strictly below the best single attack where the robust images differ between attacks
    assert run.robust("nim-35", w8.key) < min(DEFENSES["nim-35"][4].values())


def test_gzipped_samples_give_the_same_worst_case(runs: dict, tmp_path: Path) -> None:
    """A report's committed data keep samples.csv gzipped; the worst case reads it alike."""
    src = runs["root"] / "run"
    gz = _copy(src, tmp_path / "gz")
    with (gz / "samples.csv").open("rb") as fh, gzip.open(gz / "samples.csv.gz", "wb") as out:
        shutil.copyfileobj(fh, out)
    (gz / "samples.csv").unlink()
    a, b = with_worst(load_run(src)), with_worst(load_run(gz))
    assert [r for r in a.rows if "worst" in r["attack"]] == \
        [r for r in b.rows if "worst" in r["attack"]]
    assert len([r for r in b.rows if "worst" in r["attack"]]) == 2 * len(DEFENSES)


def test_worst_case_input_errors(runs: dict, tmp_path: Path) -> None:
    src = runs["root"] / "run"
    bad = _copy(src, tmp_path / "nosamples")
    (bad / "samples.csv").unlink()
    with pytest.raises(ValueError, match=r"missing .*samples.csv"):
        with_worst(load_run(bad))
    bad = _copy(src, tmp_path / "other")  # samples.csv of another run: robust counts disagree
    _edit_json(bad / "results.json", lambda d: d["results"][1].update(robust_accuracy=0.5))
    with pytest.raises(ValueError, match="none under pgd@0.0313725 gives robust accuracy 0.0000"):
        with_worst(load_run(bad))
    lines = (src / "samples.csv").read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ",nim-35,pgd@" in ln and ln.startswith("39,"))
    bad = _copy(src, tmp_path / "partial")  # one image missing under one attack
    (bad / "samples.csv").write_text("".join(lines[:at] + lines[at + 1:]))
    with pytest.raises(ValueError, match="nim-35 under pgd@0.0313725 has 39 images, results"):
        with_worst(load_run(bad))
    bad = _copy(src, tmp_path / "swapped")  # image 39 (not robust) there as image 40
    (bad / "samples.csv").write_text("".join([*lines[:at], "40" + lines[at][2:], *lines[at + 1:]]))
    with pytest.raises(ValueError, match="nim-35 has rows for other images under pgd@"):
        with_worst(load_run(bad))
    # a defense that lacks one attack of a budget gets no worst case there (a dash, not a
    # worst case over fewer attacks)
    gap = _copy(src, tmp_path / "gap")
    _edit_json(gap / "results.json", lambda d: d.update(results=[
        r for r in d["results"] if not (r["defense"] == "nim-0" and r["label"] == "pgd-eot8")]))
    run = with_worst(load_run(gap))
    assert run.robust("nim-0", run.worst[0].key) is None
    assert run.robust("nim-0", run.worst[1].key) is not None


def test_baseline_must_match_data_and_attacks(runs: dict, tmp_path: Path) -> None:
    root, out = runs["root"], tmp_path / "out"
    cases = [
        (lambda c, r: c["data"].update(limit=30), "config.json",
         "data limit is 30, the run's is 40"),
        (lambda c, r: c["data"].update(split="train"), "config.json", "data split is 'train'"),
        (lambda c, r: c["data"].update(offset=100), "config.json", "data offset is 100"),
        (lambda c, r: [x.update(steps=20) for x in c["results"] if x["label"] == "pgd"],
         "results.json", "attack pgd@0.0313725 has steps 20, the run's has 10"),
        (lambda c, r: [x.update(eot=4) for x in c["results"] if x["label"] == "pgd-eot8"],
         "results.json", "attack pgd-eot8@0.0313725 has eot 4, the run's has 8"),
        (lambda c, r: c.update(results=[x for x in c["results"] if x["label"] != "pgd"]),
         "results.json", "no 'none' row under pgd@0.0313725 .the trade-off's attack"),
    ]
    for i, (change, name, msg) in enumerate(cases):
        b = _copy(root / "at", tmp_path / f"at{i}")
        _edit_json(b / name, lambda d, change=change: change(d, None))
        with pytest.raises(ValueError, match=f"--baseline at={b}: {msg}"):
            report.write_report(root / "run", out, baselines={"at": b}, n_images=1)
        assert not out.exists()
    # a baseline without an attack the run has (not the trade-off's): allowed, dashes there
    b = _copy(root / "at", tmp_path / "fewer")
    _edit_json(b / "results.json", lambda d: d.update(results=[
        x for x in d["results"] if x["label"] != "pgd-eot8"]))
    report.write_report(root / "run", out, baselines={"at": b}, n_images=1)
    row = next(ln for ln in (out / "README.md").read_text().splitlines()
               if ln.startswith("| at (baseline) |"))
    assert row.split(" | ")[5:] == ["–", "37.5", "0.0", "–", "37.5 |"]


def test_two_defenses_at_one_tradeoff_point_raise(runs: dict, tmp_path: Path) -> None:
    root = runs["root"]
    for extra, labels in [
            ({"nim-70b": ("nim", 70, None, 0.7, {"fgsm": 0.5, "pgd": 0.4, "pgd-eot8": 0.3})},
             "'nim-70' and 'nim-70b' are both NIM, noise unknown, sigma_test 70"),
            ({"nim-70-seed2": ("nim", 70, 2, 0.7, {"fgsm": 0.5, "pgd": 0.1, "pgd-eot8": 0.1})},
             "'nim-70-known' and 'nim-70-seed2' are both NIM, noise known, sigma_test 70")]:
        folder = tmp_path / next(iter(extra))
        write_run(folder, {**DEFENSES, **extra}, runs["ckpt"])
        with pytest.raises(ValueError, match=f"defenses {labels}"):
            series(load_run(folder))
        with pytest.raises(ValueError, match=labels):
            report.write_report(folder, tmp_path / "out", n_images=1)
        assert not (tmp_path / "out").exists()
    assert list(series(load_run(root / "run"))) == ["NIM", "NIM, noise known", "MIM"]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=60, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def test_exact_noise_only_under_the_current_scheme(runs: dict, tmp_path: Path) -> None:
    head, scheme = _git("rev-parse", "HEAD"), _git("rev-parse", NOISE_SCHEME)
    if head is None or scheme is None:
        pytest.skip("needs the repository's git history")
    before = _git("rev-parse", f"{NOISE_SCHEME}~1")
    run_dir = _copy(runs["root"] / "run", tmp_path / "run")
    cases = [(head, True), (scheme, True), (before, False), (f"{head}-dirty", True),
             (f"{before}-dirty", False),
             ("unknown", False), ("0" * 40, False), (None, False)]
    for h, want in cases:
        (run_dir / "run.json").write_text(json.dumps({"git_hash": h}))
        assert exact_noise(load_run(run_dir)) is want, h
    out = tmp_path / "out"
    for h, text in [(head, "noise_seed 1: one fixed (C, H, W) pattern shared by all images), "
                           "the evaluation's exact noise, the same draw"),
                    (f"{before}-dirty", "a stand-in for the evaluation's draw (run.json's "
                                        f"git_hash does not descend from {NOISE_SCHEME}")]:
        (run_dir / "run.json").write_text(json.dumps({"git_hash": h}))
        report.write_report(run_dir, out, image_defenses=["nim-70-known"], n_images=1)
        readme = (out / "README.md").read_text()
        assert text in readme and "standing in" not in readme
