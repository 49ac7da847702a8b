"""Robustness report of a De^3 harness run (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense").

:func:`write_report` turns a folder written by ``advimage run`` into README.md (accuracy per
defense and attack with the per-image worst case over the attacks of each budget, the defenses'
setup, the accuracy/robustness trade-off against sigma_test, the paper's claims beside the
measured numbers, example images, training wall-clock, the harness findings), tradeoff.png and
images-<defense>.png. Baselines are the ``none`` rows of other runs (e.g. a PGD-adversarially-
trained classifier) on the same images under the same attacks. Every input is checked before
anything is written, and the files are built in a staging folder, so a failure leaves no mixed
report. The run's records live in :mod:`advimage.studies.nim.report_run`, the worst case in
:mod:`advimage.studies.nim.report_worst`, the figures in
:mod:`advimage.studies.nim.report_images`, the training table in
:mod:`advimage.studies.nim.report_train`; ``reports/nim/make_report.py`` is the command line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from advimage.eval.plots import eps_label, md_row, md_table
from advimage.studies.nim.report_claims import KNOWN, PAPER, claims
from advimage.studies.nim.report_images import (
    Curve,
    image_defaults,
    image_rows,
    run_n,
    tradeoff_plot,
)
from advimage.studies.nim.report_run import (
    DASH,
    EPS_TOL,
    Attack,
    Defense,
    Run,
    check_baseline,
    load_run,
    pct,
    pick_attack,
    series,
)
from advimage.studies.nim.report_train import check_train, training
from advimage.studies.nim.report_worst import with_worst, worst_for

__all__ = ["PAPER", "build", "claims", "findings", "main_table", "setup_table", "tradeoff",
           "write_report"]

def main_table(run: Run, baselines: Mapping[str, Run]) -> list[str]:
    """Accuracy (%) per defense (baselines' ``none`` rows last) and attack, a worst-case column
    per budget, then the attacks."""
    cols = [*run.attacks, *run.worst]
    lines = ["## Accuracy per defense and attack (%)", "",
             f"n = number of test images; {DASH} = not run.", "",
             *md_table(["defense", "n", "clean", *(a.title for a in cols)])]

    def cells(r: Run, label: str) -> list[str]:
        n = next(x["n"] for x in r.rows if x["defense"] == label)
        return [str(n), pct(r.clean(label)), *(pct(r.robust(label, a.key)) for a in cols)]

    for d in run.defenses:
        lines.append(md_row([d.label, *cells(run, d.label)]))
    for name, b in baselines.items():
        lines.append(md_row([f"{name} (baseline)", *cells(b, "none")]))
    lines += ["", *md_table(["attack", "name", "norm", "eps", "steps", "restarts", "EOT", "kind"],
                            [[a.label, a.name, a.norm, eps_label(a.eps), a.steps, a.restarts,
                              a.eot, a.kind] for a in run.attacks]), ""]
    titles = {a.key: a.title for a in run.attacks}
    lines += [f"- **{w.title}**: an image counts as robust only if it is robust under every "
              f"attack above at that budget ({', '.join(titles[k] for k in w.parts)}); the "
              "unbounded check is left out." for w in run.worst]
    if any(a.eot > 1 for a in run.attacks):
        lines.append("- EOT on a deterministic defense (sigma_test 0, noise known): one pass per "
                     "step, i.e. the attack without EOT (the same result).")
    return [*lines, ""]


def _shown(path: str) -> str:
    """A config path as the report shows it: relative to the working directory when it lies
    below it (the harness stores resolved absolute paths; a report should not name a machine's
    folders)."""
    p = Path(path)
    try:
        return p.relative_to(Path.cwd()).as_posix() if p.is_absolute() else path
    except ValueError:
        return path


def setup_table(run: Run, baselines: Mapping[str, Run]) -> list[str]:
    """Pipeline, sigma_test, noise (known/unknown), autoencoder and classifier per defense."""
    rows = []
    for d in run.defenses:
        if d.mode is None:
            rows.append([d.label, "undefended" if d.label == "none" else d.label, DASH, DASH,
                         DASH, DASH])
            continue
        noise = ("no noise" if d.sigma == 0 else "unknown (fresh draw)" if d.seed is None
                 else f"known (noise_seed {d.seed}): {KNOWN}")
        rows.append([d.label, f"De^3, {d.mode.upper()} autoencoder", f"{d.sigma:g}", noise,
                     f"`{d.path}`", f"`{d.classifier}`" if d.classifier else "run's model"])
    rows += [[f"{n} (baseline)", "undefended model of another run", DASH, DASH, DASH,
              f"`{_shown(b.config.get('model', {}).get('path', '?'))}`"]
             for n, b in baselines.items()]
    model = _shown(run.config.get("model", {}).get("path", "?"))
    return ["## Defenses", "", f"Run's model: `{model}`.", "",
            *md_table(["defense", "pipeline", "sigma_test (0-255)", "noise", "autoencoder",
                       "classifier"], rows), ""]


def tradeoff(run: Run, baselines: Mapping[str, Run], out: Path, spec: str | None) -> list[str]:
    """Accuracy vs sigma_test per De^3 group (table and ``out``/tradeoff.png).

    ``spec`` is the robust column's attack (``LABEL@EPS``, None: :func:`pick_attack`'s
    default); the EOT variant of it, if run, adds a column per noise-unknown group, the
    worst case at its budget one per group.
    """
    att, eot = pick_attack(run, spec)
    worst = worst_for(run, att)
    groups = series(run)
    lines = ["## Trade-off: accuracy vs sigma_test", ""]
    if not groups:
        return [*lines, "No De^3 defense in this run.", ""]
    lines += [f"Robust accuracy under **{att.title}** ({att.steps} steps, EOT {att.eot})"
              + (f"; EOT rows under **{eot.title}** (EOT {eot.eot})" if eot else "")
              + (f"; **{worst.title}**: per image, the worst of every attack at that budget"
                 if worst else "")
              + ". Columns without \"noise known\": the attacker does not know the draw. "
              f"\"Noise known\": the attacker knows the defense's draw, {KNOWN}; EOT on it is "
              "the attack without EOT, so it has no EOT column. A known-noise line without its "
              "own sigma 0 starts at the noise-free row (no noise to know).", ""]
    curves: list[Curve] = []
    header, cols = ["sigma_test"], []
    for i, (g, pts) in enumerate(groups.items()):
        known = g.endswith("known")
        name = g if known else f"{g}, noise unknown"
        curves.append(("clean", name, i, {s: run.clean(d.label) for s, d in pts.items()}))
        curves.append(("robust", name, i,
                       {s: run.robust(d.label, att.key) for s, d in pts.items()}))
        header += [f"{g} clean", f"{g} {att.title}"]
        cols += [curves[-2][3], curves[-1][3]]
        if eot is not None and not known:
            curves.append(("robust", f"{name}, EOT-{eot.eot}", i,
                           {s: run.robust(d.label, eot.key) for s, d in pts.items()}))
            header.append(f"{g} {eot.title}")
            cols.append(curves[-1][3])
        if worst is not None:
            curves.append(("robust", f"{name}, worst case", i,
                           {s: run.robust(d.label, worst.key) for s, d in pts.items()}))
            header.append(f"{g} {worst.title}")
            cols.append(curves[-1][3])
    sigmas = sorted({s for pts in groups.values() for s in pts})
    lines += md_table(header, [[f"{s:g}", *(pct(c.get(s)) for c in cols)] for s in sigmas])
    refs = [("undefended", run)] if any(d.label == "none" for d in run.defenses) else []
    refs += [(f"{n} (baseline)", b) for n, b in baselines.items()]
    lines += [""] + [f"- {n}: clean {pct(r.clean('none'))}, {att.title} "
                     f"{pct(r.robust('none', att.key))}"
                     + (f", {worst.title} {pct(r.robust('none', worst.key))}" if worst else "")
                     for n, r in refs]
    tradeoff_plot(curves, refs, att, worst, out / "tradeoff.png", run_n(run))
    return [*lines, "", "![trade-off](tradeoff.png)", ""]


def findings(run: Run) -> list[str]:
    """The harness's findings (e.g. a randomized defense attacked without EOT), verbatim."""
    items = [f"- [{f.get('check', '?')}] {f.get('defense', '?')}: {f.get('message', '')} "
             f"Fix: {f.get('fix', '')}" for f in run.findings]
    return ["## Harness findings (verbatim)", "", *(items or ["None."]), ""]


def build(run: Run, baselines: Mapping[str, Run], trains: Mapping[str, Path],
          preface: str | None, attack: str | None, picks: Sequence[Defense], img_att: Attack,
          n_images: int, out: Path) -> list[str]:
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


def write_report(run_dir: Path, out: Path, *, baselines: Mapping[str, Path] | None = None,
                 trains: Mapping[str, Path] | None = None, preface: str | None = None,
                 attack: str | None = None, image_defenses: Sequence[str] | None = None,
                 n_images: int = 4) -> None:
    """Check every input, then write README.md, tradeoff.png and images-<defense>.png.

    Args:
        run_dir: the harness run (``advimage run --out``).
        out: report folder (created; files of the same names are replaced).
        baselines: ``{name: run folder}`` whose ``none`` (undefended) rows are baselines;
            each must have the run's data section and attack settings (:func:`check_baseline`).
        trains: ``{name: folder}`` of NIM/MIM pretraining or classifier training runs.
        preface: markdown put first.
        attack: trade-off/claims attack ``LABEL@EPS`` (None: strongest PGD at 8/255).
        image_defenses: De^3 defense labels for image grids (None: NIM and MIM at the middle
            sigma_test).
        n_images: example images per image grid (>= 1).

    Raises:
        ValueError: one line, on any bad input (also: samples.csv missing, two defenses at one
            trade-off point, a baseline on other images or attacks), before anything is written.
    """
    if n_images < 1:
        raise ValueError(f"--images must be >= 1, got {n_images}")
    run = with_worst(load_run(run_dir))
    series(run)  # two defenses at one trade-off point raise here
    att, _ = pick_attack(run, attack)
    base = {}
    for n, d in (baselines or {}).items():
        b = load_run(d, checkpoints=False)
        if b.clean("none") is None:
            raise ValueError(f"--baseline {n}={b.path}: the run has no 'none' (undefended) rows")
        check_baseline(run, b, n, [att])
        base[n] = with_worst(b, run.worst)  # the worst over the run's attacks
    train_dirs = dict(trains or {})
    for n, d in train_dirs.items():
        check_train(n, d)
    by_label = {d.label: d for d in run.defenses}
    if image_defenses:
        bad = [x for x in image_defenses if by_label.get(x, Defense(x)).mode is None]
        if bad:
            raise ValueError(f"--image-defense {bad[0]!r} is not a De^3 defense of the run")
        picks = [by_label[x] for x in image_defenses]
    else:
        picks = image_defaults(run)
    img_att = next((x for x in run.attacks if x.name == "pgd" and x.eot == 1
                    and abs(x.eps - 8 / 255) < EPS_TOL), att)
    out.mkdir(parents=True, exist_ok=True)
    # build in a staging folder, then move the files in: a failure leaves no mixed report
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        lines = build(run, base, train_dirs, preface, attack, picks, img_att, n_images, stage)
        (stage / "README.md").write_text("\n".join(lines), encoding="utf-8")
        for f in sorted(stage.iterdir(), key=lambda f: f.name == "README.md"):  # README last
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
