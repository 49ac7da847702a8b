"""The De^3 report (You et al., NeurIPS 2023) on synthetic harness runs: the library
(advimage.studies.nim.report*) and, end to end, the script reports/nim/make_report.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nim_report_synth import (
    ATTACKS,
    DEFENSES,
    EPS8,
    N_STORED,
    N,
    checkpoints,
    robust_frac,
    table_rows,
    worst_pct,
    write_run,
)
from PIL import Image
from torch import nn

import advimage.studies.nim.report as report
from advimage.defend.nim.defense import De3Defense
from advimage.defend.nim.io import load_nim
from advimage.studies.nim.report_images import CELL_IN, IMG_DPI, image_stack
from advimage.studies.nim.report_run import load_run, parse_pairs, pick_attack


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("nimreport")
    ckpt = checkpoints(root)
    ids = write_run(root / "run", DEFENSES, ckpt, examples=("nim-35", "mim-70", "nim-70-known"))
    at = {"none": (None, None, None, 0.75, {"fgsm": 0.45, "pgd": 0.35, "pgd-eot8": 0.35})}
    ids |= {("at " + k[0], k[1]): v for k, v in write_run(root / "at", at, ckpt).items()}
    cls = root / "cls"
    cls.mkdir()
    (cls / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"epoch": e, "seconds": 2.5, "test_acc": 0.5 + 0.1 * e}) for e in (1, 2, 3)) + "\n")
    (cls / "config.json").write_text(json.dumps({"train": {"model": "resnet20", "epochs": 3,
                                                           "adv_eps": EPS8, "adv_steps": 7,
                                                           "test_limit": 40}}))
    # the same report as library keywords and as the script's command line
    kwargs = dict(baselines={"pgd-at": root / "at"},
                  trains={"nim-pretrain": ckpt["nim"].parent, "at-cls": cls}, n_images=5)
    args = [str(root / "run"), "--baseline", f"pgd-at={root / 'at'}", "--train",
            f"nim-pretrain={ckpt['nim'].parent}", "--train", f"at-cls={cls}", "--images", "5"]
    out = root / "out"
    report.write_report(root / "run", out, **kwargs)
    return {"root": root, "out": out, "args": args, "kwargs": kwargs, "ckpt": ckpt, "ids": ids}


def test_main_table_values_and_baseline(setup: dict) -> None:
    readme = (setup["out"] / "README.md").read_text()
    rows = {r[0]: r for r in table_rows(readme, "## Accuracy per defense")}
    # columns: defense, n, clean, the attacks in the run's order, worst case 8/255 then 4/255
    ids, worse = setup["ids"], 0
    for label, (_, _, _, clean, robust) in DEFENSES.items():
        at = [f"{100 * robust_frac(clean, robust, a, eps):.1f}" for a, *_, eps, _k in ATTACKS]
        assert rows[label][1:] == [str(N), f"{100 * clean:.1f}", *at, worst_pct(ids, label), at[3]]
        worse += float(worst_pct(ids, label)) < min(float(x) for x in at[:3])
    assert worse >= 3  # the per-image worst case is below the best attack for some defenses
    assert rows["nim-35"][4] == "37.5" and "| worst case 8/255 | worst case 4/255 |" in readme
    assert rows["pgd-at (baseline)"][2:] == ["75.0", "45.0", "35.0", "35.0", "37.5", "0.0",
                                             worst_pct(ids, "at none"), "37.5"]
    assert ("- **worst case 8/255**: an image counts as robust only if it is robust under every "
            "attack above at that budget (fgsm 8/255, pgd 8/255, pgd-eot8 8/255)") in readme
    assert "EOT on a deterministic defense (sigma_test 0, noise known): one pass" in readme
    setup_rows = {r[0]: r for r in table_rows(readme, "## Defenses")}
    assert [setup_rows[x][3] for x in ("nim-0", "nim-35")] == ["no noise", "unknown (fresh draw)"]
    assert setup_rows["nim-70-known"][3] == ("known (noise_seed 1): one fixed (C, H, W) noise "
                                             "pattern shared by all images (a single noise "
                                             "realization)")


def test_tradeoff_sorted_by_sigma(setup: dict) -> None:
    readme, ids = (setup["out"] / "README.md").read_text(), setup["ids"]
    header = [ln for ln in readme.split("## Trade-off", 1)[1].splitlines()
              if ln.startswith("| sigma_test")][0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = table_rows(readme, "## Trade-off")
    assert [r[0] for r in rows] == ["0", "35", "70"]
    col = dict(zip(cols, zip(*rows, strict=True), strict=True))
    assert col["NIM pgd 8/255"] == ("5.0", "37.5", "40.0")
    assert col["NIM pgd-eot8 8/255"] == ("5.0", "20.0", "30.0")
    assert col["NIM worst case 8/255"] == tuple(worst_pct(ids, f"nim-{s}") for s in (0, 35, 70))
    # the known-noise line starts at the noise-free defense (nothing to know at sigma 0)
    assert col["NIM, noise known pgd 8/255"] == ("5.0", "–", "10.0")
    assert col["NIM, noise known worst case 8/255"] == (
        worst_pct(ids, "nim-0"), "–", worst_pct(ids, "nim-70-known"))
    assert "NIM, noise known pgd-eot8 8/255" not in col  # EOT on a fixed draw: one pass
    assert col["MIM clean"] == ("–", "60.0", "50.0")
    assert col["MIM worst case 8/255"] == ("–", worst_pct(ids, "mim-35"), worst_pct(ids, "mim-70"))
    assert ("- pgd-at (baseline): clean 75.0, pgd 8/255 35.0, worst case 8/255 "
            f"{worst_pct(ids, 'at none')}") in readme
    assert (setup["out"] / "tradeoff.png").stat().st_size > 0


def test_claims_are_computed(setup: dict) -> None:
    readme, ids = (setup["out"] / "README.md").read_text(), setup["ids"]
    claims = readme.split("## Claims beside the paper", 1)[1]
    rob = {k: {**v[4], "worst": float(worst_pct(ids, k)) / 100} for k, v in DEFENSES.items()}
    titles = {"pgd": "pgd 8/255", "pgd-eot8": "pgd-eot8 8/255", "worst": "worst case 8/255"}
    a = table_rows(claims, "**(a)")
    assert a == [[t, s, f"{100 * rob[f'nim-{s}'][k]:.1f}", f"{100 * rob[f'mim-{s}'][k]:.1f}",
                  f"{100 * (rob[f'nim-{s}'][k] - rob[f'mim-{s}'][k]):+.1f}"]
                 for k, t in titles.items() for s in ("35", "70")]
    assert a[1][1:] == ["70", "40.0", "25.0", "+15.0"]
    b = table_rows(claims, "**(b)")
    # best NIM under pgd: nim-70 (40.0); under pgd-eot8: nim-70 (30.0); PGD-AT 35.0 / 75.0
    assert b[0] == ["pgd 8/255", "nim-70 (sigma 70)", "40.0", "70.0", "pgd-at", "35.0", "75.0",
                    "+5.0", "-5.0"]
    assert b[1][:3] == ["pgd-eot8 8/255", "nim-70 (sigma 70)", "30.0"]
    assert b[1][7] == "-5.0"
    best = max((f"nim-{s}" for s in (0, 35, 70)), key=lambda d: (rob[d]["worst"], DEFENSES[d][3]))
    assert b[2][:3] == ["worst case 8/255", f"{best} (sigma {best[4:]})", worst_pct(ids, best)]
    assert b[2][5] == worst_pct(ids, "at none")
    c = table_rows(claims, "**(c)")
    assert c == [[t, "70", f"{100 * rob['nim-70'][k]:.1f}", f"{100 * rob['nim-70-known'][k]:.1f}",
                  f"{100 * (rob['nim-70-known'][k] - rob['nim-70'][k]):+.1f}", "70.0", "67.5"]
                 for k, t in titles.items()]
    assert c[0][3] == "10.0" and "(NIM; known: one fixed (C, H, W) noise pattern" in claims


def test_findings_training_and_images(setup: dict) -> None:
    out = setup["out"]
    readme = (out / "README.md").read_text()
    assert ("- [eot] nim-0: randomized defense attacked without EOT by fgsm@0.0313725. "
            "Fix: set options: {eot: 10}.") in readme
    train = {r[0]: r for r in table_rows(readme, "## Training runs")}
    assert train["nim-pretrain"][1:6] == ["autoencoder", "2", "30.0", "loss 0.5000", "–"]
    assert train["at-cls"][1:6] == ["classifier", "3", "7.5", "test acc. 80.0%", "40"]
    assert "PGD-AT eps 8/255" in train["at-cls"][6]
    # default image defenses: the middle sigma of NIM (0, 35, 70) and of MIM (35, 70)
    for label in ("nim-35", "mim-70"):
        png = out / f"images-{label}.png"
        assert f"]({png.name})" in readme
        w, h = Image.open(png).size  # 5 asked, 3 stored: 3 columns x 6 rows
        px = CELL_IN * IMG_DPI
        assert (w, h) == (round(N_STORED * px), round(6 * px))
    assert not (out / "images-nim-70.png").exists()


def test_second_build_is_byte_identical(setup: dict, tmp_path: Path, report_script) -> None:
    """The script, end to end, rebuilds the library's report byte for byte."""
    again = tmp_path / "again"
    assert report_script("nim").main([*setup["args"], "-o", str(again)]) == 0
    first = sorted(p.name for p in setup["out"].iterdir())
    assert first == sorted(p.name for p in again.iterdir())
    for name in first:
        assert (setup["out"] / name).read_bytes() == (again / name).read_bytes(), name


def test_attack_option(setup: dict, tmp_path: Path) -> None:
    run = load_run(setup["root"] / "run")
    att, eot = pick_attack(run, None)
    assert (att.label, eot.label) == ("pgd", "pgd-eot8")
    att, eot = pick_attack(run, "fgsm@8/255")
    assert (att.label, eot) == ("fgsm", None)
    with pytest.raises(ValueError, match="pgd@4/255 is not in the run"):
        pick_attack(run, "pgd@4/255")


def test_parse_pairs() -> None:
    assert parse_pairs(["a=x/y", "b=z=w"], "--train") == {"a": Path("x/y"), "b": Path("z=w")}
    assert parse_pairs(None, "--train") == {}
    for bad in ("a", "=x", "a="):
        with pytest.raises(ValueError, match=f"--baseline expects NAME=DIR, got '{bad}'"):
            parse_pairs([bad], "--baseline")


def test_bad_inputs_raise_clear_error(setup: dict, tmp_path: Path, report_script) -> None:
    root = setup["root"]
    out = tmp_path / "out"
    cases = [
        ((tmp_path / "nowhere", {}), "results.json"),
        ((root / "run", {"baselines": {"bad": root / "nonone"}}), "no 'none'"),
        ((root / "run", {"trains": {"t": root / "cls" / "empty"}}),
         "neither nim.json nor metrics.jsonl"),
        ((root / "missing-ckpt", {}), "NIM checkpoint"),
    ]
    nonone = {k: v for k, v in DEFENSES.items() if k != "none"}
    if not (root / "nonone").exists():
        write_run(root / "nonone", nonone, setup["ckpt"])
        (root / "cls" / "empty").mkdir()
        write_run(root / "missing-ckpt", {"nim-70": DEFENSES["nim-70"]},
                   {"nim": root / "ae" / "gone" / "nim"})
    for (run_dir, kwargs), msg in cases:
        with pytest.raises(ValueError, match=msg):
            report.write_report(run_dir, out, **kwargs)
        assert not (out / "README.md").exists()
    # the script turns the library's ValueError into a one-line exit
    with pytest.raises(SystemExit, match=r"^NIM checkpoint '.+' of the run config not found"):
        report_script("nim").main([str(root / "missing-ckpt"), "-o", str(out)])
    assert not out.exists()
    # a baseline's own De^3 checkpoints are not needed (only its 'none' rows are used)
    write_run(root / "at-gone", {"none": DEFENSES["none"], "nim-70": DEFENSES["nim-70"]},
               {"nim": root / "ae" / "gone" / "nim"})
    report.write_report(root / "run", out, baselines={"b": root / "at-gone"}, n_images=1)
    assert "| b (baseline) | 40 | 90.0 |" in (out / "README.md").read_text()


def test_image_stack_uses_the_defense_draw(setup: dict) -> None:
    """Known noise: the reconstruction row equals the defense's own output on the evaluation's
    images (noise_seed 1: one CPU draw shared by every image), computed here independently."""
    run = load_run(setup["root"] / "run")
    d = next(x for x in run.defenses if x.label == "nim-70-known")
    batch = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    adv = batch.flip(0)
    rows = image_stack(d, batch[:3], adv[:3])
    assert len(rows) == 6 and all(r.shape == (3, 3, 32, 32) for r in rows)
    defense = De3Defense(load_nim(setup["ckpt"]["nim"]), nn.Identity(), sigma_test=70.0,
                         noise_seed=1)
    with torch.no_grad():
        want, want_adv = defense.purify(batch)[:3], defense.purify(adv)[:3]
    noise = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))  # (C, H, W)
    torch.testing.assert_close(rows[2], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[5], want_adv, atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[1], (batch[:3] + 70 / 255 * noise).clamp(0, 1))
    assert torch.equal(rows[0], batch[:3]) and torch.equal(rows[3], adv[:3])
    # noise unknown: a fixed generator, so the picture is the same on every build
    u = next(x for x in run.defenses if x.label == "nim-70")
    first, second = (image_stack(u, batch[:3], adv[:3])[1] for _ in range(2))
    assert torch.equal(first, second) and not torch.equal(first, rows[1])


def test_failure_mid_build_leaves_no_report(setup: dict, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run_dir = setup["root"] / "run"
    for extra, msg in [({"image_defenses": ["none"]}, "not a De"), ({"n_images": 0}, "--images"),
                       ({"attack": "pgd@x"}, "eps")]:
        with pytest.raises(ValueError, match=msg):
            report.write_report(run_dir, out, **{**setup["kwargs"], **extra})
    assert not out.exists()

    def boom(*_a: object, **_k: object) -> list[str]:
        raise RuntimeError("image failure")

    monkeypatch.setattr(report, "image_rows", boom)
    with pytest.raises(RuntimeError, match="image failure"):
        report.write_report(run_dir, out, **setup["kwargs"])
    assert list(out.iterdir()) == []  # tradeoff.png was staged, nothing moved in


def test_config_paths_are_shown_relative_to_the_working_directory(tmp_path, monkeypatch) -> None:
    from advimage.studies.nim.report import _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(str(tmp_path / "runs" / "m.safetensors")) == "runs/m.safetensors"
    assert _shown("runs/m.safetensors") == "runs/m.safetensors"
    outside = str(tmp_path.parent / "elsewhere" / "m.safetensors")
    assert _shown(outside) == outside
