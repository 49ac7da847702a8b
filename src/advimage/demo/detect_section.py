"""``advimage demo`` section: the noise-signature detector (Hu, Yu et al., NeurIPS 2019).

Calibrates the detector on clean digits *train* images with the bundled CNN at FPR 10%, then
shows its verdicts on clean test images and on their PGD versions, and a small ROC plot, so a
user sees in seconds what the detector flags and how often it is wrong on clean images.
"""

from __future__ import annotations

from typing import Any

from advimage.attacks import PGD
from advimage.data import load_dataset
from advimage.demo.context import DemoContext
from advimage.detect.config import DetectorConfig
from advimage.detect.metrics import roc_curves
from advimage.detect.noise_signature import NoiseSignatureDetector
from advimage.eval.report import HtmlReport
from advimage.eval.report_run import roc_figure

__all__ = ["DEMO_CONFIG", "detection_section"]

# 8x8 digits need larger C2t steps than the CIFAR preset; small caps keep the demo < 10 s.
DEMO_CONFIG = DetectorConfig(sigma=0.05, n_noise=4, c2t_lr=0.005, c2t_radius=0.5, c2t_cap=40)
_FPR = 0.10  # target false-positive rate of the demo detector
_N_CAL, _N_TEST = 300, 120  # calibration (train) and shown (test) images


def detection_section(report: HtmlReport, ctx: DemoContext) -> dict[str, Any]:
    """Calibrate, score clean and PGD images, add a verdict table and a ROC plot.

    Args:
        report: the demo's report; gets a heading, the verdict table and the ROC figure.
        ctx: the model, test set, device, seed and eps of the demo.

    Returns:
        The section's summary: the target FPR, the table's rows, the AUC per criterion.
    """
    model = ctx.model
    det = NoiseSignatureDetector(model, DEMO_CONFIG, "c1,c2t", seed=ctx.seed)
    xc, yc = load_dataset("digits", "train").balanced(_N_CAL).tensors()
    cal = det.calibrate(xc.to(ctx.device), _FPR, yc.to(ctx.device))
    x, y = ctx.test.balanced(_N_TEST).tensors()
    x, y = x.to(ctx.device), y.to(ctx.device)
    x_adv = PGD(eps=ctx.eps, steps=20, seed=ctx.seed)(model, x, y)
    s_clean, p_clean = det.score_with_labels(x)
    s_adv, p_adv = det.score_with_labels(x_adv)
    ok = p_clean == y.cpu()
    fooled = ok & (p_adv != y.cpu())
    f_clean, f_adv = det.flags(s_clean)["combined"], det.flags(s_adv)["combined"]
    rows = [
        {"images": "clean (correct)", "n": int(ok.sum()),
         "flagged": round(float(f_clean[ok].float().mean()), 3)},
        {"images": f"PGD eps={ctx.eps:g} (fooled)", "n": int(fooled.sum()),
         "flagged": round(float(f_adv[fooled].float().mean()), 3) if fooled.any() else None},
    ]
    report.heading("Detection: noise-signature detector (Hu, Yu et al., 2019)")
    report.text(
        f"Thresholds {', '.join(f'{k} > {v:.4g}' for k, v in cal['thresholds'].items())} "
        f"calibrated on {cal['images_used']} clean train images at FPR {_FPR:g}. "
        "'flagged' = share the detector calls adversarial."
    )
    report.table(rows, ["images", "n", "flagged"])
    calib = {k: v for k, v in det.score_with_labels(xc)[0].items()}
    curves = roc_curves(calib, {k: v[ok] for k, v in s_clean.items()},
                        {k: v[fooled] for k, v in s_adv.items()})
    fig, aucs = roc_figure(curves, "detector ROC on digits (PGD)")
    fig.set_size_inches(3.6, 3.3)
    report.figure(fig, "ROC: clean test images vs fooled PGD images")
    return {"fpr_target": _FPR, "rows": rows, "auc": {k: round(v, 3) for k, v in aucs.items()}}
