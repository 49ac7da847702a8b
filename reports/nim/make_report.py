"""Tables, trade-off plot and image rows of a De^3 harness run (You et al., NeurIPS 2023,
"Beyond Pretrained Features: Noisy Image Modeling Provides Adversarial Defense").

Usage: python reports/nim/make_report.py RUN_DIR -o reports/nim [--baseline LABEL=RUN_DIR ...]
       [--train NAME=DIR ...] [--preface preface.md] [--images N] [--attack LABEL@EPS]
       [--image-defense LABEL ...]

RUN_DIR is a folder written by ``advimage run`` (results.json, config.json, examples/). Each
``nim`` defense is described by its resolved options (sigma_test, noise_seed: "noise known to the
attacker", the autoencoder path) and the autoencoder's sidecar ``<stem>.json`` (``config.mode``:
NIM or the MIM baseline); labels are never parsed. ``--baseline`` adds the ``none`` rows of other
runs (e.g. a PGD-adversarially-trained classifier); ``--train`` adds wall-clock rows of NIM/MIM
pretraining (``nim.json``) or classifier (``metrics.jsonl``) folders. Writes README.md,
tradeoff.png and images-<defense>.png. Inputs are all checked before anything is written.
"""

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from advimage.defend.nim_defense import De3Defense
from advimage.defend.nim_io import load_nim
from advimage.eval.plots import eps_label, label_axes, md_row, md_table, save_png, subplots
from advimage.validation import parse_fraction

# the paper's statements the "claims" tables sit beside (abstract; ImageNet, ViT-B, not CIFAR)
PAPER = {
    "mim": "NIM is superior to MIM in adversarial robustness, thanks to its denoising.",
    "at": "De^3 with NIM performs on par with adversarial training, with a tunable "
          "accuracy/robustness trade-off (sigma_test).",
    "known": "Attacks with the noise known vs unknown to the attacker are compared in the "
             "paper's Fig. 3(a) (see configs/nim-cifar10.yaml).",
}
REPORT_NOISE_SEED = 0  # generator seed of the image rows' draw when the defense has no noise_seed
CELL_IN = 1.25  # inches per image cell of images-<defense>.png
IMG_DPI = 100  # dots per inch of images-<defense>.png: CELL_IN * IMG_DPI = 125 px per cell
EPS_TOL = 1e-6  # eps values closer than this are the same budget
# no ``from __future__ import annotations``: the dataclasses below must also build when the
# script is loaded by file path without a sys.modules entry (as the tests load it)
DASH = "–"


@dataclass(frozen=True)
class Defense:
    """One defense of the run, from the resolved config (and the autoencoder's sidecar)."""

    label: str
    mode: str | None = None  # "nim" / "mim" for the De^3 defense, None otherwise
    sigma: float | None = None  # sigma_test, 0-255 scale
    seed: int | None = None  # noise_seed: the attacker knows the draw
    path: Path | None = None  # autoencoder checkpoint stem
    classifier: str | None = None


@dataclass(frozen=True)
class Attack:
    key: str  # results' "attack" (label@eps), the examples' key
    label: str
    name: str
    eps: float
    steps: int
    eot: int
    restarts: int
    kind: str
    norm: str

    @property
    def title(self) -> str:
        if self.kind == "unbounded":
            return f"{self.label} (check)"
        return f"{self.label} {eps_label(self.eps)}"


@dataclass
class Run:
    path: Path
    rows: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    config: dict[str, Any]
    defenses: list[Defense]
    attacks: list[Attack]

    def row(self, defense: str, key: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["defense"] == defense and r["attack"] == key), None)

    def clean(self, defense: str) -> float | None:
        return next((r["clean_accuracy"] for r in self.rows if r["defense"] == defense), None)

    def robust(self, defense: str, key: str | None) -> float | None:
        r = self.row(defense, key) if key else None
        return None if r is None else r["robust_accuracy"]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"missing {path}") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is not valid JSON: {e}") from None


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _checkpoint(text: str, run_dir: Path) -> Path:
    """The autoencoder stem: as given (cwd, as the defense resolves it), else below RUN_DIR's
    ancestors (a run built from the repository root and reported from elsewhere)."""
    p = _stem(Path(text).expanduser())
    cands = [p] if p.is_absolute() else [p, *(a / p for a in run_dir.resolve().parents)]
    for c in cands:
        if c.with_name(c.name + ".json").exists() and c.with_name(c.name + ".safetensors").exists():
            return c
    raise SystemExit(f"NIM checkpoint {text!r} of the run config not found "
                     f"(need {p.name}.safetensors and {p.name}.json)")


def load_run(run_dir: Path, checkpoints: bool = True) -> Run:
    """Read a harness run folder; SystemExit with one line on missing or broken inputs.

    ``checkpoints=False`` (a baseline run: only its ``none`` rows are used) skips resolving the
    run's autoencoder checkpoints; its De^3 defenses then carry no mode.
    """
    res = _json(run_dir / "results.json")
    cfg = _json(run_dir / "config.json")
    rows = [r for r in res.get("results", []) if r.get("clean_accuracy") is not None]
    if not rows:
        raise SystemExit(f"{run_dir / 'results.json'} holds no result rows")
    labels = list(dict.fromkeys(r["defense"] for r in rows))
    opts = {d["label"]: d for d in cfg.get("defenses", [])}
    defenses = []
    for label in labels:
        d = opts.get(label, {"name": label, "options": {}})
        o = d.get("options") or {}
        if d.get("name") != "nim" or not checkpoints:
            defenses.append(Defense(label))
            continue
        if not o.get("path"):
            raise SystemExit(f"defense {label!r} of {run_dir} has no checkpoint path "
                             "in config.json")
        stem = _checkpoint(str(o["path"]), run_dir)
        mode = _json(stem.with_name(stem.name + ".json")).get("config", {}).get("mode", "nim")
        sigma = o.get("sigma_test", _default_sigma())
        defenses.append(Defense(label, mode, float(sigma), o.get("noise_seed"), stem,
                                o.get("classifier")))
    attacks = {}
    for r in rows:
        attacks.setdefault(r["attack"], Attack(
            r["attack"], r["label"], r["name"], float(r["eps"]), int(r["steps"]), int(r["eot"]),
            int(r.get("restarts", 1)), r.get("kind", ""), r.get("norm", "")))
    return Run(run_dir, rows, res.get("findings", []), cfg, defenses, list(attacks.values()))


def _default_sigma() -> float:
    import inspect

    return float(inspect.signature(De3Defense).parameters["sigma_test"].default)


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{100 * v:.1f}"


def _diff(a: float | None, b: float | None) -> str:
    return DASH if a is None or b is None else f"{100 * (a - b):+.1f}"


def pick_attack(run: Run, spec: str | None) -> tuple[Attack, Attack | None]:
    """The trade-off's attack (``LABEL@EPS``, else the strongest EOT-free PGD at 8/255) and the
    EOT variant of it (same attack name and eps, most EOT samples), if the run has one."""
    if spec:
        label, _, eps_text = spec.rpartition("@")
        try:
            eps = parse_fraction(eps_text, "--attack eps")
        except ValueError as e:
            raise SystemExit(str(e)) from None
        hits = [a for a in run.attacks if a.label == label and abs(a.eps - eps) < EPS_TOL]
        if not hits:
            have = ", ".join(f"{a.label}@{eps_label(a.eps)}" for a in run.attacks)
            raise SystemExit(f"--attack {spec} is not in the run (have {have})")
        chosen = hits[0]
    else:
        pgd = [a for a in run.attacks if a.name == "pgd" and a.eot == 1 and a.kind != "unbounded"]
        at8 = [a for a in pgd if abs(a.eps - 8 / 255) < EPS_TOL]
        pool = at8 or sorted(pgd, key=lambda a: -a.eps)[:1] or \
            [a for a in run.attacks if a.kind != "unbounded"] or run.attacks
        chosen = max(pool, key=lambda a: (a.steps, a.restarts))
    eot = [a for a in run.attacks if a.name == chosen.name and abs(a.eps - chosen.eps) < EPS_TOL
           and a.eot > chosen.eot]
    return chosen, max(eot, key=lambda a: (a.eot, a.steps)) if eot else None


def _series(run: Run) -> dict[str, dict[float, Defense]]:
    """De^3 defenses grouped as "NIM, noise unknown" etc.: {group: {sigma: defense}}, sorted."""
    groups: dict[tuple[bool, bool], dict[float, Defense]] = {}
    for d in sorted(run.defenses, key=lambda d: d.sigma or 0.0):
        if d.mode is not None:
            groups.setdefault((d.mode != "nim", d.seed is not None), {}).setdefault(d.sigma, d)
    for (mim, known), pts in groups.items():  # no noise at sigma 0: nothing to know
        zero = groups.get((mim, False), {}).get(0.0)
        if known and 0.0 not in pts and zero is not None:
            pts[0.0] = zero
    return {("MIM" if mim else "NIM") + (", noise known" if known else ""): dict(sorted(v.items()))
            for (mim, known), v in sorted(groups.items())}


def main_table(run: Run, baselines: dict[str, Run]) -> list[str]:
    cols = run.attacks
    lines = ["## Accuracy per defense and attack (%)", "",
             f"n = number of test images; {DASH} = not run.", "",
             *md_table(["defense", "n", "clean", *(a.title for a in cols)])]
    def cells(r: Run, label: str) -> list[str]:
        n = next(x["n"] for x in r.rows if x["defense"] == label)
        return [str(n), _pct(r.clean(label)), *(_pct(r.robust(label, a.key)) for a in cols)]
    for d in run.defenses:
        lines.append(md_row([d.label, *cells(run, d.label)]))
    for name, b in baselines.items():
        lines.append(md_row([f"{name} (baseline)", *cells(b, "none")]))
    lines += ["", *md_table(["attack", "name", "norm", "eps", "steps", "restarts", "EOT", "kind"],
                            [[a.label, a.name, a.norm, eps_label(a.eps), a.steps, a.restarts,
                              a.eot, a.kind] for a in cols]), ""]
    return lines


def setup_table(run: Run, baselines: dict[str, Run]) -> list[str]:
    rows = []
    for d in run.defenses:
        if d.mode is None:
            rows.append([d.label, "undefended" if d.label == "none" else d.label, DASH, DASH,
                         DASH, DASH])
            continue
        noise = "unknown (fresh draw)" if d.seed is None else f"known (seed {d.seed})"
        rows.append([d.label, f"De^3, {d.mode.upper()} autoencoder", f"{d.sigma:g}", noise,
                     f"`{d.path}`", f"`{d.classifier}`" if d.classifier else "run's model"])
    rows += [[f"{n} (baseline)", "undefended model of another run", DASH, DASH, DASH,
              f"`{b.config.get('model', {}).get('path', '?')}`"] for n, b in baselines.items()]
    model = run.config.get("model", {}).get("path", "?")
    return ["## Defenses", "", f"Run's model: `{model}`.", "",
            *md_table(["defense", "pipeline", "sigma_test (0-255)", "noise", "autoencoder",
                       "classifier"], rows), ""]


def tradeoff(run: Run, baselines: dict[str, Run], out: Path, spec: str | None) -> list[str]:
    att, eot = pick_attack(run, spec)
    series = _series(run)
    lines = ["## Trade-off: accuracy vs sigma_test", ""]
    if not series:
        return [*lines, "No De^3 defense in this run.", ""]
    lines += [f"Robust accuracy under **{att.title}** ({att.steps} steps, EOT {att.eot})"
              + (f"; EOT rows under **{eot.title}** (EOT {eot.eot})" if eot else "")
              + ". Columns without \"noise known\": the attacker does not know the draw. A "
              "known-noise line without its own sigma 0 starts at the noise-free row (no noise "
              "to know).", ""]
    plots: list[tuple[str, str, int, dict[float, float | None]]] = []  # panel, name, colour, acc
    header, cols = ["sigma_test"], []
    for i, (g, pts) in enumerate(series.items()):
        known = g.endswith("known")
        name = g if known else f"{g}, noise unknown"
        plots.append(("clean", name, i, {s: run.clean(d.label) for s, d in pts.items()}))
        plots.append(("robust", name, i, {s: run.robust(d.label, att.key) for s, d in pts.items()}))
        header += [f"{g} clean", f"{g} {att.title}"]
        cols += [plots[-2][3], plots[-1][3]]
        if eot is not None and not known:
            plots.append(("robust", f"{name}, EOT-{eot.eot}", i,
                          {s: run.robust(d.label, eot.key) for s, d in pts.items()}))
            header.append(f"{g} {eot.title}")
            cols.append(plots[-1][3])
    sigmas = sorted({s for pts in series.values() for s in pts})
    lines += md_table(header, [[f"{s:g}", *(_pct(c.get(s)) for c in cols)] for s in sigmas])
    refs = [("undefended", run)] if any(d.label == "none" for d in run.defenses) else []
    refs += [(f"{n} (baseline)", b) for n, b in baselines.items()]
    lines += [""] + [f"- {n}: clean {_pct(r.clean('none'))}, {att.title} "
                     f"{_pct(r.robust('none', att.key))}" for n, r in refs]
    fig, axes = subplots(1, 2, figsize=(10.0, 3.8), sharey=True)
    for ax, panel in zip(axes, ("clean", "robust"), strict=True):
        for p, name, colour, pts in plots:
            xy = [(s, 100 * v) for s, v in pts.items() if v is not None and p == panel]
            if xy:
                eot_line = "EOT" in name
                ax.plot(*zip(*xy, strict=True), marker="s" if eot_line else "o", color=f"C{colour}",
                        linestyle=":" if eot_line else "-", label=name)
        ax.set_ylim(-2, 102)
        for i, (n, r) in enumerate(refs):
            v = r.clean("none") if panel == "clean" else r.robust("none", att.key)
            if v is not None:
                ax.axhline(100 * v, linestyle="--", linewidth=1, color=f"C{7 + i % 3}", label=n)
        title = "clean accuracy" if panel == "clean" else f"robust accuracy, {att.title}"
        label_axes(ax, xlabel="sigma_test (0-255 scale)", ylabel="accuracy (%)", title=title,
                   title_size=9, legend_size=7, grid=True)
    save_png(fig, out / "tradeoff.png", dpi=90)
    return [*lines, "", "![trade-off](tradeoff.png)", ""]


def claims(run: Run, baselines: dict[str, Run], spec: str | None) -> list[str]:
    att, eot = pick_attack(run, spec)
    s = _series(run)
    nim, mim = s.get("NIM", {}), s.get("MIM", {})
    known = s.get("NIM, noise known", {})
    rob = lambda d, a=att: run.robust(d.label, a.key)  # noqa: E731
    lines = ["## Claims beside the paper", "", f"Robust accuracy under {att.title}, in %; "
             "differences in percentage points.", "",
             "**(a) NIM vs MIM** (same sigma_test, noise unknown). Paper: " + PAPER["mim"], "",
             *md_table(["sigma_test", "NIM", "MIM", "NIM - MIM"],
                       [[f"{x:g}", _pct(rob(nim[x])), _pct(rob(mim[x])),
                         _diff(rob(nim[x]), rob(mim[x]))] for x in sorted(set(nim) & set(mim))]),
             "", "**(b) Best NIM vs adversarial training.** Paper: " + PAPER["at"], ""]
    rows = []
    for a in [att, *([eot] if eot else [])]:
        scored = [d for d in nim.values() if rob(d, a) is not None]
        if not scored:
            continue
        best = max(scored, key=lambda d: (rob(d, a), run.clean(d.label)))
        for n, b in baselines.items():
            rows.append([a.title, f"{best.label} (sigma {best.sigma:g})", _pct(rob(best, a)),
                         _pct(run.clean(best.label)), n, _pct(b.robust("none", a.key)),
                         _pct(b.clean("none")), _diff(rob(best, a), b.robust("none", a.key)),
                         _diff(run.clean(best.label), b.clean("none"))])
    lines += md_table(["attack", "best NIM", "robust", "clean", "baseline", "robust", "clean",
                       "robust diff", "clean diff"], rows)
    if not baselines:
        lines.append("(no --baseline given)")
    lines += ["", "**(c) Noise known vs unknown to the attacker** (NIM). Paper: "
              + PAPER["known"], "",
              *md_table(["sigma_test", "unknown", "known", "known - unknown", "clean unknown",
                         "clean known"],
                        [[f"{x:g}", _pct(rob(nim[x])), _pct(rob(known[x])),
                          _diff(rob(known[x]), rob(nim[x])), _pct(run.clean(nim[x].label)),
                          _pct(run.clean(known[x].label))]
                         for x in sorted(set(nim) & set(known)) if known[x] is not nim[x]]), ""]
    return lines


def _classes(run: Run) -> list[str] | None:
    model = Path(str(run.config.get("model", {}).get("path", "")))
    side = model.with_suffix(".json")
    if model.name and side.exists():
        return json.loads(side.read_text(encoding="utf-8")).get("classes")
    return None


def image_defaults(run: Run) -> list[Defense]:
    """One NIM and one MIM defense (noise unknown), each at the middle sigma_test present."""
    picks = []
    for g in ("NIM", "MIM"):
        pts = list(_series(run).get(g, {}).values())
        if pts:
            picks.append(pts[len(pts) // 2])
    return picks


def image_stack(run: Run, d: Defense, x: torch.Tensor, x_adv: torch.Tensor) -> list[torch.Tensor]:
    """Input, noised input (clamped for display), reconstruction, for ``x`` then ``x_adv``.

    The noise is the defense's own draw for the run's first batch (the stored examples are its
    first images): ``noise_seed`` when the defense has one (the exact draw of a CPU run), else a
    generator seeded with REPORT_NOISE_SEED; the same draw for both images. Reconstruction
    through :meth:`De3Defense.purify` (noise, ``reconstruct(noised, reference)``, clamp).
    """
    n = x.shape[0]
    nim = load_nim(d.path)
    seed = REPORT_NOISE_SEED if d.seed is None else d.seed
    defense = De3Defense(nim, nn.Identity(), sigma_test=d.sigma, noise_seed=seed)
    data = run.config.get("data") or {}
    sizes = [int(v) for v in (data.get("batch_size"), data.get("limit")) if v]
    b0 = max(min(sizes), n) if sizes else n  # images in the run's first batch
    noise = defense.draw_noise(torch.zeros(b0, *x.shape[1:]))[:n]  # (N, C, H, W)
    defense.set_noise(noise)
    rows = []
    with torch.no_grad():
        for img in (x, x_adv):
            rows += [img, nim.add_noise(img, d.sigma, noise).clamp(0, 1), defense.purify(img)]
    return rows


def image_rows(run: Run, d: Defense, att: Attack, n_max: int, out: Path) -> list[str]:
    """images-<label>.png: 6 rows (input, noised, reconstruction; clean and adversarial) x N."""
    ex_path = run.path / "examples" / f"{d.label}.safetensors"
    if not ex_path.exists():
        return [f"No example images stored for {d.label} ({ex_path.name} missing).", ""]
    ex = load_file(str(ex_path))
    adv_key = f"adv/{att.key}"
    if adv_key not in ex:
        return [f"No {att.title} examples stored for {d.label}.", ""]
    n = min(n_max, ex["x"].shape[0])
    x, x_adv = ex["x"][:n].float(), ex[adv_key][:n].float()  # (N, C, H, W) each
    rows = image_stack(run, d, x, x_adv)
    names = ["input", f"noised (sigma {d.sigma:g})", "reconstruction",
             f"adversarial ({att.title})", "adv. noised", "adv. reconstruction"]
    classes = _classes(run)
    cls = (lambda i: classes[i] if classes and 0 <= i < len(classes) else str(i))  # noqa: E731
    fig, axes = subplots(6, n, figsize=(CELL_IN * n, CELL_IN * 6), squeeze=False)
    for j in range(n):
        for i, img in enumerate(rows):
            ax = axes[i][j]
            ax.imshow(img[j].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(names[i], fontsize=6)
        axes[0][j].set_title(f"{cls(int(ex['y'][j]))}\npred {cls(int(ex['pred_clean'][j]))}",
                             fontsize=6)
        axes[3][j].set_title(f"pred {cls(int(ex[f'pred/{att.key}'][j]))}", fontsize=6)
    fig.suptitle(f"{d.label}: {d.mode.upper()} autoencoder, sigma_test {d.sigma:g}", fontsize=7)
    name = f"images-{d.label}.png"
    save_png(fig, out / name, dpi=IMG_DPI)
    device = _json(run.path / "run.json").get("device") if (run.path / "run.json").exists() \
        else None
    src = (f"the defense's own seeded draw (noise_seed {d.seed})" if d.seed is not None else
           f"a fixed CPU generator (seed {REPORT_NOISE_SEED}) standing in for the evaluation's "
           "fresh draws")
    exact = "" if d.seed is None or device == "cpu" else \
        f" (the run used device {device!r}: its generator's draw differs from this CPU one)"
    return [f"![{d.label}]({name})", "",
            f"{d.label}: the first {n} stored example image(s); noise from {src}{exact}, the "
            "same draw for the clean and the adversarial image; reconstructions through the "
            "library's De3Defense.purify (clamped to [0, 1]), noised inputs clamped for display. "
            "Predictions are the evaluation's.", ""]


def _recipe_pretrain(side: dict[str, Any]) -> str:
    st = side.get("settings", {})
    c = st.get("config", side.get("config", {}))
    return (f"{c.get('mode', '?').upper()} pretrain, {st.get('n_images', '?')} images, batch "
            f"{st.get('batch_size', '?')}, lr {st.get('lr', '?')}, "
            f"wd {st.get('weight_decay', '?')}, warm-up {st.get('warmup_epochs', '?')} ep, "
            f"enc {c.get('enc_dim')}x"
            f"{c.get('enc_depth')}, dec {c.get('dec_dim')}x{c.get('dec_depth')}, patch "
            f"{c.get('patch_size')}, sigma ~ Gamma({c.get('gamma_shape')}, {c.get('gamma_scale')})")


def _recipe_classifier(folder: Path) -> str:
    cfg = _json(folder / "config.json") if (folder / "config.json").exists() else {}
    t = cfg.get("train", {})
    parts = [f"{t.get('model', '?')} on {t.get('dataset', '?')}",
             f"{t.get('train_limit') or 'all'} images", f"batch {t.get('batch_size', '?')}",
             f"lr {t.get('lr', '?')}", f"wd {t.get('weight_decay', '?')}",
             f"augment {t.get('augment', '?')}"]
    if t.get("adv_eps"):
        parts.append(f"PGD-AT eps {eps_label(float(t['adv_eps']))} x{t.get('adv_steps')} steps")
    info = cfg.get("run_info", {})
    if info.get("nim_path"):
        parts.append(f"fine-tuned from `{info['nim_path']}` ({info.get('nim_mode', '?')}, "
                     f"sigma_max {info.get('nim_sigma_max', '?')})")
    return ", ".join(parts)


def check_train(name: str, folder: Path) -> None:
    if not (folder / "nim.json").exists() and not (folder / "metrics.jsonl").exists():
        raise SystemExit(f"--train {name}={folder}: neither nim.json nor metrics.jsonl there")


def training(dirs: dict[str, Path]) -> list[str]:
    rows = []
    for name, folder in dirs.items():
        if (folder / "nim.json").exists():
            side = _json(folder / "nim.json")
            hist = side.get("history") or []
            last = f"loss {hist[-1]['loss']:.4f}" if hist else DASH
            rows.append([name, "autoencoder", len(hist),
                         f"{sum(float(h.get('seconds', 0)) for h in hist):.1f}", last,
                         _recipe_pretrain(side)])
        else:
            text = (folder / "metrics.jsonl").read_text(encoding="utf-8")
            hist = [json.loads(x) for x in text.splitlines() if x.strip()]
            acc = hist[-1].get("test_acc") if hist else None
            rows.append([name, "classifier", len(hist),
                         f"{sum(float(h.get('seconds', 0)) for h in hist):.1f}",
                         DASH if acc is None else f"test acc. {_pct(acc)}%",
                         _recipe_classifier(folder)])
    return ["## Training runs (wall-clock)", "",
            *md_table(["run", "kind", "epochs", "seconds", "final", "recipe"], rows), ""]


def findings(run: Run) -> list[str]:
    items = [f"- [{f.get('check', '?')}] {f.get('defense', '?')}: {f.get('message', '')} "
             f"Fix: {f.get('fix', '')}" for f in run.findings]
    return ["## Harness findings (verbatim)", "", *(items or ["None."]), ""]


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} expects NAME=DIR, got {item!r}")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="harness run folder (results.json, config.json)")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--baseline", action="append", metavar="LABEL=RUN_DIR",
                   help="another run whose 'none' rows are a baseline (repeatable)")
    p.add_argument("--train", action="append", metavar="NAME=DIR",
                   help="training folder (nim.json or metrics.jsonl) for the wall-clock table")
    p.add_argument("--preface", type=Path, default=None, help="markdown put first")
    p.add_argument("--images", type=int, default=4, help="example images per image grid")
    p.add_argument("--attack", default=None, metavar="LABEL@EPS",
                   help="trade-off/claims attack, e.g. pgd@8/255 (default: strongest PGD 8/255)")
    p.add_argument("--image-defense", action="append", metavar="LABEL",
                   help="defense(s) for image grids (default: NIM and MIM at the middle sigma)")
    a = p.parse_args(argv)
    if a.images < 1:
        raise SystemExit(f"--images must be >= 1, got {a.images}")
    # every input is checked before anything is written
    run = load_run(a.run)
    baselines = {n: load_run(d, checkpoints=False)
                 for n, d in _pairs(a.baseline, "--baseline").items()}
    for n, b in baselines.items():
        if b.clean("none") is None:
            raise SystemExit(f"--baseline {n}={b.path}: the run has no 'none' (undefended) rows")
    trains = _pairs(a.train, "--train")
    for n, d in trains.items():
        check_train(n, d)
    preface = a.preface.read_text(encoding="utf-8").strip() if a.preface else None
    att, _ = pick_attack(run, a.attack)
    by_label = {d.label: d for d in run.defenses}
    if a.image_defense:
        bad = [x for x in a.image_defense if by_label.get(x, Defense(x)).mode is None]
        if bad:
            raise SystemExit(f"--image-defense {bad[0]!r} is not a De^3 defense of the run")
        picks = [by_label[x] for x in a.image_defense]
    else:
        picks = image_defaults(run)
    img_att = next((x for x in run.attacks if x.name == "pgd" and x.eot == 1
                    and abs(x.eps - 8 / 255) < EPS_TOL), att)
    a.out.mkdir(parents=True, exist_ok=True)
    # build in a staging folder, then move the files in: a failure leaves no mixed report
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=a.out))
    try:
        lines = build(run, baselines, trains, preface, a.attack, picks, img_att, a.images, stage)
        (stage / "README.md").write_text("\n".join(lines), encoding="utf-8")
        for f in sorted(stage.iterdir(), key=lambda f: f.name == "README.md"):  # README last
            os.replace(f, a.out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return 0


def build(run: Run, baselines: dict[str, Run], trains: dict[str, Path], preface: str | None,
          attack: str | None, picks: list[Defense], img_att: Attack, n_images: int,
          out: Path) -> list[str]:
    """The README's lines; writes the PNGs into ``out``."""
    n = max(r["n"] for r in run.rows)
    lines = ["# De^3 / noisy image modeling: robustness report", ""]
    if preface:
        lines += [preface, ""]
    lines += [f"You et al. (NeurIPS 2023), through `advimage run` (`{run.config.get('name', '?')}`"
              f", {n} test images). Values in %.", ""]
    lines += main_table(run, baselines)
    lines += setup_table(run, baselines)
    lines += tradeoff(run, baselines, out, attack)
    lines += claims(run, baselines, attack)
    lines += ["## Example images", ""]
    for d in picks:
        lines += image_rows(run, d, img_att, n_images, out)
    if trains:
        lines += training(trains)
    return lines + findings(run)

if __name__ == "__main__":
    raise SystemExit(main())
