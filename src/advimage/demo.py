"""``advimage demo``: attack the bundled digits model and write an HTML report.

Runs offline in seconds: the bundled ``small-cnn`` weights, the scikit-learn digits test split,
an L-inf PGD attack, a clean-vs-robust accuracy table and an image grid of clean image,
adversarial image and amplified perturbation with both predictions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advimage.attacks import create_attack
from advimage.data import load_dataset
from advimage.eval.report import HtmlReport, image_grid_figure
from advimage.eval.robust import AttackSpec, evaluate_robustness
from advimage.hub import BUNDLED_DEFAULT, load_model
from advimage.registry import Registry
from advimage.utils import resolve_device, run_metadata, seed_everything, write_json

__all__ = ["run_demo", "register_demo_section", "DemoContext"]

log = logging.getLogger(__name__)


@dataclass
class DemoContext:
    """What a demo section gets: the model, data, device, seed and the attack results so far."""

    model: torch.nn.Module
    test: Any  # ImageDataset
    device: torch.device
    seed: int
    eps: float
    out_dir: Path
    summary: dict[str, Any]


# Capabilities (detection, cache, ...) append sections: fn(report, ctx) -> dict of summary items.
_SECTIONS: Registry[Callable[[HtmlReport, DemoContext], dict[str, Any]]] = Registry("demo section")


def register_demo_section(name: str):  # noqa: ANN201
    """Decorator: add a section to ``advimage demo`` (run in registration order)."""
    return _SECTIONS.register(name)


def run_demo(
    out_dir: str | Path = "advimage-demo",
    *,
    eps: float = 0.1,
    steps: int = 20,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    grid: int = 8,
) -> dict[str, Any]:
    """Run the demo; returns the summary written to ``out_dir/summary.json``."""
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    seed_everything(seed)
    model, meta = load_model(f"bundled:{BUNDLED_DEFAULT}")
    model.to(dev)
    test = load_dataset("digits", "test")
    specs = [
        AttackSpec("fgsm", create_attack("fgsm", eps=eps, norm="linf"), eps, "linf"),
        AttackSpec(
            f"pgd-{steps}",
            create_attack("pgd", eps=eps, norm="linf", steps=steps, seed=seed),
            eps,
            "linf",
        ),
    ]
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

    report = HtmlReport("advimage demo: adversarial digits")
    report.text(
        f"Model: bundled small-cnn trained on scikit-learn digits "
        f"(recorded test accuracy {meta.get('accuracy', float('nan')):.4f}). "
        f"Test images: {rows[0].n}. Threat model: L-inf, eps = {eps:g} on [0, 1] pixels."
    )
    report.heading("Clean vs robust accuracy")
    report.table(
        table,
        [
            "attack",
            "norm",
            "eps",
            "n",
            "clean_accuracy",
            "robust_accuracy",
            "mean_distance",
            "seconds",
        ],
    )
    if ex is not None:
        label = specs[-1].label
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
    ctx = DemoContext(model, test, dev, seed, eps, out, summary)
    for name in _SECTIONS.registration_order():
        summary.setdefault("sections", {})[name] = _SECTIONS.get(name)(report, ctx)
    summary["seconds"] = round(time.time() - t0, 2)  # attacks and every section
    report.heading("Run")
    report.table(
        [{"key": k, "value": v} for k, v in summary.items() if k not in ("results", "sections")]
    )
    report.save(out / "report.html")
    write_json(out / "summary.json", summary)
    log.info("demo written to %s", out)
    return summary


# capability sections register themselves at import (after the definitions above)
import advimage.defend.cache_demo  # noqa: E402,F401
import advimage.detect.detect_demo  # noqa: E402,F401
