"""The De^3 report (You et al., NeurIPS 2023) on synthetic harness runs: the library
(advimage.defend.nim_report*) and, end to end, the script reports/nim/make_report.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import advimage.defend.nim_report as report
from advimage.defend.nim_defense import De3Defense
from advimage.defend.nim_io import load_nim, save_nim
from advimage.defend.nim_model import NIMAutoencoder, NIMConfig
from advimage.defend.nim_report_images import CELL_IN, IMG_DPI, image_stack
from advimage.defend.nim_report_run import load_run, parse_pairs, pick_attack

EPS8 = 8 / 255
TINY = dict(image_size=(32, 32), patch_size=4, enc_dim=16, enc_depth=1, enc_heads=2, dec_dim=16,
            dec_depth=1, dec_heads=2)
ATTACKS = [  # label, name, steps, eot
    ("fgsm", "fgsm", 1, 1), ("pgd", "pgd", 10, 1), ("pgd-eot8", "pgd", 10, 8)]
# defense label -> (mode, sigma_test, noise_seed, clean, {attack label: robust}); the config
# lists nim-70 before nim-35 so the trade-off table has to sort by sigma
DEFENSES = {
    "none": (None, None, None, 0.90, {"fgsm": 0.10, "pgd": 0.00, "pgd-eot8": 0.00}),
    "nim-70": ("nim", 70, None, 0.70, {"fgsm": 0.55, "pgd": 0.40, "pgd-eot8": 0.30}),
    "nim-0": ("nim", 0, None, 0.85, {"fgsm": 0.20, "pgd": 0.05, "pgd-eot8": 0.05}),
    "nim-35": ("nim", 35, None, 0.80, {"fgsm": 0.45, "pgd": 0.375, "pgd-eot8": 0.20}),
    "nim-70-known": ("nim", 70, 1, 0.69, {"fgsm": 0.35, "pgd": 0.10, "pgd-eot8": 0.10}),
    "mim-35": ("mim", 35, None, 0.60, {"fgsm": 0.30, "pgd": 0.125, "pgd-eot8": 0.10}),
    "mim-70": ("mim", 70, None, 0.50, {"fgsm": 0.30, "pgd": 0.25, "pgd-eot8": 0.15}),
}
N_STORED = 3  # example images per defense in the synthetic run


def _load_report_script():  # noqa: ANN202
    path = Path(__file__).resolve().parents[2] / "reports" / "nim" / "make_report.py"
    spec = importlib.util.spec_from_file_location("nim_make_report", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _key(label: str, eps: float) -> str:
    return f"{label}@{eps:.6g}"


def _row(defense: str, label: str, name: str, steps: int, eot: int, clean: float,
         robust: float) -> dict:
    return {"defense": defense, "label": label, "name": name, "kind": "white-box",
            "attack": _key(label, EPS8), "norm": "linf", "eps": EPS8, "steps": steps,
            "restarts": 1, "eot": eot, "n": 40, "clean_accuracy": clean,
            "robust_accuracy": robust, "mean_distance": None, "seconds": 1.0}


def _write_run(folder: Path, defenses: dict, ckpt: dict[str, Path], examples: tuple = ()) -> None:
    rows, cfg_defs = [], []
    for label, (mode, sigma, seed, clean, robust) in defenses.items():
        rows += [_row(label, a, n, s, e, clean, robust[a]) for a, n, s, e in ATTACKS]
        if mode is None:
            cfg_defs.append({"name": "none", "label": label, "options": {}})
            continue
        opts = {"path": str(ckpt[mode]), "sigma_test": sigma}
        if seed is not None:
            opts["noise_seed"] = seed
        cfg_defs.append({"name": "nim", "label": label, "options": opts})
    folder.mkdir(parents=True)
    findings = [{"check": "eot", "defense": "nim-0", "message": "randomized defense attacked "
                 "without EOT by fgsm@0.0313725.", "fix": "set options: {eot: 10}."}]
    (folder / "results.json").write_text(json.dumps({"results": rows, "findings": findings}))
    (folder / "config.json").write_text(json.dumps({
        "name": "synthetic", "model": {"path": str(folder / "model.safetensors")},
        "data": {"limit": 40, "batch_size": 20}, "defenses": cfg_defs}))
    (folder / "run.json").write_text(json.dumps({"device": "cpu"}))
    gen = torch.Generator().manual_seed(0)
    for label in examples:
        x = torch.rand(N_STORED, 3, 32, 32, generator=gen)
        adv = (x + EPS8 * torch.randn(x.shape, generator=gen).sign()).clamp(0, 1)
        tensors = {"x": x, "y": torch.tensor([0, 1, 2]), "pred_clean": torch.tensor([0, 1, 3])}
        for a, *_ in ATTACKS:
            tensors[f"adv/{_key(a, EPS8)}"] = adv.clone()
            tensors[f"pred/{_key(a, EPS8)}"] = torch.tensor([5, 5, 5])
        (folder / "examples").mkdir(exist_ok=True)
        save_file(tensors, str(folder / "examples" / f"{label}.safetensors"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("nimreport")
    torch.manual_seed(0)
    ckpt = {}
    for mode in ("nim", "mim"):
        hist = [{"epoch": e, "loss": 1.0 / e, "seconds": 10.0 * e, "imgs_per_s": 5.0}
                for e in (1, 2)]
        settings = {"epochs": 2, "batch_size": 64, "lr": 1e-3, "n_images": 100}
        save_nim(NIMAutoencoder(NIMConfig(**TINY, mode=mode)), root / "ae" / mode / "nim",
                 meta={"history": hist, "settings": settings})
        ckpt[mode] = root / "ae" / mode / "nim"
    _write_run(root / "run", DEFENSES, ckpt, examples=("nim-35", "mim-70"))
    at = {"none": (None, None, None, 0.75, {"fgsm": 0.45, "pgd": 0.35, "pgd-eot8": 0.35})}
    _write_run(root / "at", at, ckpt)
    cls = root / "cls"
    cls.mkdir()
    (cls / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"epoch": e, "seconds": 2.5, "test_acc": 0.5 + 0.1 * e}) for e in (1, 2, 3)) + "\n")
    (cls / "config.json").write_text(json.dumps({"train": {"model": "resnet20", "epochs": 3,
                                                           "adv_eps": EPS8, "adv_steps": 7}}))
    # the same report as library keywords and as the script's command line
    kwargs = dict(baselines={"pgd-at": root / "at"},
                  trains={"nim-pretrain": ckpt["nim"].parent, "at-cls": cls}, n_images=5)
    args = [str(root / "run"), "--baseline", f"pgd-at={root / 'at'}", "--train",
            f"nim-pretrain={ckpt['nim'].parent}", "--train", f"at-cls={cls}", "--images", "5"]
    out = root / "out"
    report.write_report(root / "run", out, **kwargs)
    return {"root": root, "out": out, "args": args, "kwargs": kwargs, "ckpt": ckpt}


def _table_rows(readme: str, heading: str) -> list[list[str]]:
    """Cells of the first markdown table after ``heading``."""
    part = readme.split(heading, 1)[1]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    first = part.splitlines().index(lines[0])
    block = []
    for ln in part.splitlines()[first:]:
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip("|").split("|")])
    return block[2:]  # below the header and rule


def test_main_table_values_and_baseline(setup: dict) -> None:
    readme = (setup["out"] / "README.md").read_text()
    rows = {r[0]: r for r in _table_rows(readme, "## Accuracy per defense")}
    # columns: defense, n, clean, fgsm, pgd, pgd-eot8 (in the run's order)
    for label, (_, _, _, clean, robust) in DEFENSES.items():
        assert rows[label][1:] == ["40", f"{100 * clean:.1f}",
                                   *(f"{100 * robust[a]:.1f}" for a, *_ in ATTACKS)]
    assert rows["nim-35"][4] == "37.5"
    assert rows["pgd-at (baseline)"][2:] == ["75.0", "45.0", "35.0", "35.0"]


def test_tradeoff_sorted_by_sigma(setup: dict) -> None:
    readme = (setup["out"] / "README.md").read_text()
    header = [ln for ln in readme.split("## Trade-off", 1)[1].splitlines()
              if ln.startswith("| sigma_test")][0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = _table_rows(readme, "## Trade-off")
    assert [r[0] for r in rows] == ["0", "35", "70"]
    col = dict(zip(cols, zip(*rows, strict=True), strict=True))
    assert col["NIM pgd 8/255"] == ("5.0", "37.5", "40.0")
    assert col["NIM pgd-eot8 8/255"] == ("5.0", "20.0", "30.0")
    # the known-noise line starts at the noise-free defense (nothing to know at sigma 0)
    assert col["NIM, noise known pgd 8/255"] == ("5.0", "–", "10.0")
    assert col["MIM clean"] == ("–", "60.0", "50.0")
    assert "- pgd-at (baseline): clean 75.0, pgd 8/255 35.0" in readme
    assert (setup["out"] / "tradeoff.png").stat().st_size > 0


def test_claims_are_computed(setup: dict) -> None:
    readme = (setup["out"] / "README.md").read_text()
    claims = readme.split("## Claims beside the paper", 1)[1]
    a = _table_rows(claims, "**(a)")
    nim, mim = DEFENSES["nim-70"][4]["pgd"], DEFENSES["mim-70"][4]["pgd"]
    assert a == [["35", "37.5", "12.5", "+25.0"], ["70", "40.0", "25.0", f"{100*(nim-mim):+.1f}"]]
    assert a[1][3] == "+15.0"
    b = _table_rows(claims, "**(b)")
    # best NIM under pgd: nim-70 (40.0); under pgd-eot8: nim-70 (30.0); PGD-AT 35.0 / 75.0
    assert b[0] == ["pgd 8/255", "nim-70 (sigma 70)", "40.0", "70.0", "pgd-at", "35.0", "75.0",
                    "+5.0", "-5.0"]
    assert b[1][:3] == ["pgd-eot8 8/255", "nim-70 (sigma 70)", "30.0"]
    assert b[1][7] == "-5.0"
    c = _table_rows(claims, "**(c)")
    assert c == [["70", "40.0", "10.0", "-30.0", "70.0", "69.0"]]


def test_findings_training_and_images(setup: dict) -> None:
    out = setup["out"]
    readme = (out / "README.md").read_text()
    assert ("- [eot] nim-0: randomized defense attacked without EOT by fgsm@0.0313725. "
            "Fix: set options: {eot: 10}.") in readme
    train = {r[0]: r for r in _table_rows(readme, "## Training runs")}
    assert train["nim-pretrain"][1:5] == ["autoencoder", "2", "30.0", "loss 0.5000"]
    assert train["at-cls"][1:5] == ["classifier", "3", "7.5", "test acc. 80.0%"]
    assert "PGD-AT eps 8/255" in train["at-cls"][5]
    # default image defenses: the middle sigma of NIM (0, 35, 70) and of MIM (35, 70)
    for label in ("nim-35", "mim-70"):
        png = out / f"images-{label}.png"
        assert f"]({png.name})" in readme
        w, h = Image.open(png).size  # 5 asked, 3 stored: 3 columns x 6 rows
        px = CELL_IN * IMG_DPI
        assert (w, h) == (round(N_STORED * px), round(6 * px))
    assert not (out / "images-nim-70.png").exists()


def test_second_build_is_byte_identical(setup: dict, tmp_path: Path) -> None:
    """The script, end to end, rebuilds the library's report byte for byte."""
    again = tmp_path / "again"
    assert _load_report_script().main([*setup["args"], "-o", str(again)]) == 0
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


def test_bad_inputs_raise_clear_error(setup: dict, tmp_path: Path) -> None:
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
        _write_run(root / "nonone", nonone, setup["ckpt"])
        (root / "cls" / "empty").mkdir()
        _write_run(root / "missing-ckpt", {"nim-70": DEFENSES["nim-70"]},
                   {"nim": root / "ae" / "gone" / "nim"})
    for (run_dir, kwargs), msg in cases:
        with pytest.raises(ValueError, match=msg):
            report.write_report(run_dir, out, **kwargs)
        assert not (out / "README.md").exists()
    # the script turns the library's ValueError into a one-line exit
    with pytest.raises(SystemExit, match=r"^NIM checkpoint '.+' of the run config not found"):
        _load_report_script().main([str(root / "missing-ckpt"), "-o", str(out)])
    assert not out.exists()
    # a baseline's own De^3 checkpoints are not needed (only its 'none' rows are used)
    _write_run(root / "at-gone", {"none": DEFENSES["none"], "nim-70": DEFENSES["nim-70"]},
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
