"""``advimage demo``: attack the bundled digits model and write an HTML report.

Runs offline in seconds: the bundled ``small-cnn`` weights, the scikit-learn digits test split,
FGSM (Goodfellow et al., ICLR 2015) and L-inf PGD (Madry et al., ICLR 2018), a clean-vs-robust
accuracy table and an image grid of clean image, adversarial image and amplified perturbation
with both predictions; then every section of :data:`SECTIONS` (cache model, detection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from advimage.attacks import create_attack
from advimage.data import ImageDataset, load_dataset
from advimage.demo.cache_section import cache_section
from advimage.demo.context import DemoContext, Section
from advimage.demo.detect_section import detection_section
from advimage.eval.report import HtmlReport, image_grid_figure
from advimage.eval.robust import AttackSpec, Examples, RobustRow, evaluate_robustness
from advimage.models.hub import BUNDLED_DEFAULT, load_model
from advimage.utils import resolve_device, run_metadata, seed_everything, write_json

__all__ = ["SECTIONS", "run_demo"]

log = logging.getLogger(__name__)

# The capability sections, run in this order after the attack table (one line per section).
SECTIONS: dict[str, Section] = {
    "cache": cache_section,
    "detection": detection_section,
}
_TABLE_COLUMNS = ["attack", "norm", "eps", "n", "clean_accuracy", "robust_accuracy",
                  "mean_distance", "seconds"]


def run_demo(
    out_dir: str | Path = "advimage-demo",
    *,
    eps: float = 0.1,
    steps: int = 20,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    grid: int = 8,
    sections: Mapping[str, Section] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the summary written to ``out_dir/summary.json``.

    Args:
        out_dir: folder for ``report.html`` and ``summary.json``.
        eps: the L-inf budget on [0, 1] pixels.
        steps: PGD steps.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seeds everything (the attacks' random starts, the sections).
        progress: show progress bars.
        grid: example images drawn.
        sections: the sections to run, in order (default: :data:`SECTIONS`).
    """
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    seed_everything(seed)
    model, meta = load_model(f"bundled:{BUNDLED_DEFAULT}")
    model.to(dev)
    test = load_dataset("digits", "test")
    specs = _attack_specs(eps, steps, seed)
    rows, ex = evaluate_robustness(
        model, test.batches(512), specs, device=dev, progress=progress, keep_examples=64
    )
    table = [r.as_dict() for r in rows]
    summary = {
        "model": f"bundled:{BUNDLED_DEFAULT}",
        "model_accuracy_recorded": meta.get("accuracy"),
        "dataset": "digits/test",
        "n": rows[0].n,
        "clean_accuracy": rows[0].clean_accuracy,
        "results": table,
        "seconds": round(time.time() - t0, 2),
        **run_metadata(dev, seed),
    }
    report = _attack_report(meta, rows, table, eps, ex, specs[-1].label, test, grid)
    ctx = DemoContext(model, test, dev, seed, eps, out, summary)
    for name, section in (SECTIONS if sections is None else sections).items():
        summary.setdefault("sections", {})[name] = section(report, ctx)
    summary["seconds"] = round(time.time() - t0, 2)  # attacks and every section
    report.heading("Run")
    report.table(
        [{"key": k, "value": v} for k, v in summary.items() if k not in ("results", "sections")]
    )
    report.save(out / "report.html")
    write_json(out / "summary.json", summary)
    log.info("demo written to %s", out)
    return summary


def _attack_specs(eps: float, steps: int, seed: int) -> list[AttackSpec]:
    """FGSM and PGD-``steps`` at L-inf ``eps`` (PGD last: its examples are shown)."""
    return [
        AttackSpec("fgsm", create_attack("fgsm", eps=eps, norm="linf"), eps, "linf"),
        AttackSpec(
            f"pgd-{steps}",
            create_attack("pgd", eps=eps, norm="linf", steps=steps, seed=seed),
            eps,
            "linf",
        ),
    ]


def _attack_report(
    meta: dict[str, Any], rows: list[RobustRow], table: list[dict[str, Any]], eps: float,
    ex: Examples | None, label: str, test: ImageDataset, grid: int,
) -> HtmlReport:
    """The report's opening: the setup, the accuracy table and the examples of ``label``."""
    report = HtmlReport("advimage demo: adversarial digits")
    report.text(
        f"Model: bundled small-cnn trained on scikit-learn digits "
        f"(recorded test accuracy {meta.get('accuracy', float('nan')):.4f}). "
        f"Test images: {rows[0].n}. Threat model: L-inf, eps = {eps:g} on [0, 1] pixels."
    )
    report.heading("Clean vs robust accuracy")
    report.table(table, _TABLE_COLUMNS)
    if ex is not None:
        pred_adv = ex.pred_adv[label]
        # show fooled examples first: they are the interesting ones
        order = torch.argsort((pred_adv == ex.pred_clean).int(), stable=True)[:grid]
        fig = image_grid_figure(
            ex.x[order],
            ex.x_adv[label][order],
            ex.pred_clean[order].tolist(),
            pred_adv[order].tolist(),
            test.classes,
            ex.y[order].tolist(),
        )
        report.heading(f"Examples ({label})")
        report.figure(
            fig,
            "clean image, adversarial image, amplified perturbation; red title = "
            "prediction changed",
        )
    return report
