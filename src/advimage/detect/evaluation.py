"""Detection-rate evaluation of the noise-signature detector (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" reports, per
attack, the share of *successful* adversarial images that are flagged at a fixed false-positive
rate, and ROC curves. This module computes exactly that, model-agnostically:

* thresholds come from held-out clean *calibration* images (never the evaluation images): one
  criterion alone uses :func:`~advimage.detect.calibration.threshold_at`, the combined detector
  the joint rule of :func:`~advimage.detect.calibration.joint_thresholds`;
* the detection rate at FPR f is the fraction of successful adversarial images (clean image
  correctly classified, adversarial one misclassified) flagged; the FPR actually reached on the
  clean *evaluation* images is reported beside it;
* ROC/AUC per criterion compare clean evaluation images with successful adversarial ones; the
  combined score is ``max_k F_k(s_k)``, ``F_k`` the empirical CDF of criterion k on the
  calibration set, which ranks images the way the equal-budget joint rule thresholds them.

:func:`run_detection_eval` crafts and scores every attack, writing each result to its own file
as it finishes, so a rerun resumes where it stopped. The ``noise-signature`` detector is also
registered for run configs (:mod:`advimage.eval.defenses`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from advimage.detect.calibration import check_fpr, joint_thresholds, threshold_at
from advimage.detect.config import DetectorConfig, get_preset
from advimage.detect.noise_signature import NoiseSignatureDetector
from advimage.eval.defenses import register_detector

__all__ = [
    "DEFAULT_FPRS",
    "run_from_config",
    "combined_score",
    "detection_rates",
    "roc_aucs",
    "run_detection_eval",
    "summarize",
]

log = logging.getLogger(__name__)

DEFAULT_FPRS: tuple[float, ...] = (0.05, 0.10, 0.20)  # the paper's operating points


def combined_score(calib: Mapping[str, Tensor], scores: Mapping[str, Tensor]) -> Tensor:
    """``max_k F_k(s_k)`` ``(B,)``: ``F_k`` = share of calibration scores of k strictly below."""
    out = None
    for k, ref in calib.items():
        ref_sorted = ref.detach().double().flatten().sort().values.cpu()
        s = scores[k].detach().double().flatten().cpu()
        below = torch.searchsorted(ref_sorted, s, right=False).double() / ref_sorted.numel()
        out = below if out is None else torch.maximum(out, below)
    if out is None:
        raise ValueError("combined_score needs at least one criterion")
    return out


def detection_rates(
    calib: Mapping[str, Tensor],
    clean: Mapping[str, Tensor],
    adv: Mapping[str, Tensor],
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> list[dict[str, Any]]:
    """Detection rate and clean FPR per target FPR and criterion (plus ``combined``).

    Args:
        calib: criterion -> ``(n,)`` scores of correctly classified clean calibration images.
        clean: criterion -> ``(m,)`` scores of correctly classified clean evaluation images.
        adv: criterion -> ``(a,)`` scores of the successful adversarial images.
        fprs: Target false-positive rates in (0, 1).

    Returns:
        One row per (fpr, criterion): ``fpr_target``, ``criterion``, ``threshold`` (a dict for
        combined), ``fpr_calibration``, ``fpr_test`` (clean evaluation images flagged),
        ``detection_rate`` (adversarials flagged) and ``n_adv``.
    """
    keys = list(calib)
    if not keys:
        raise ValueError("detection_rates needs at least one criterion")
    n = calib[keys[0]].numel()
    rows: list[dict[str, Any]] = []
    for fpr in fprs:
        fpr = check_fpr(fpr)
        m = math.floor(fpr * n + 1e-9)
        for k in keys:
            thr = threshold_at(calib[k], m)
            rows.append(_row(fpr, k, thr, {k: thr}, calib, clean, adv))
        thresholds, _, _ = joint_thresholds(dict(calib), fpr)
        rows.append(_row(fpr, "combined", thresholds, thresholds, calib, clean, adv))
    return rows


def _flagged(scores: Mapping[str, Tensor], thresholds: Mapping[str, float]) -> Tensor:
    first = next(iter(thresholds))
    out = torch.zeros(scores[first].numel(), dtype=torch.bool)
    for k, t in thresholds.items():
        out |= scores[k].detach().double().flatten().cpu() > t
    return out


def _rate(scores: Mapping[str, Tensor], thresholds: Mapping[str, float]) -> float:
    f = _flagged(scores, thresholds)
    return float(f.double().mean()) if f.numel() else float("nan")


def _row(fpr: float, name: str, thr: Any, thresholds: Mapping[str, float],
         calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
         adv: Mapping[str, Tensor]) -> dict[str, Any]:
    return {
        "fpr_target": fpr,
        "criterion": name,
        "threshold": thr,
        "fpr_calibration": _rate(calib, thresholds),
        "fpr_test": _rate(clean, thresholds),
        "detection_rate": _rate(adv, thresholds),
        "n_adv": int(next(iter(adv.values())).numel()),
    }


def roc_aucs(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
             adv: Mapping[str, Tensor]) -> dict[str, float]:
    """AUC per criterion and ``combined`` (clean = 0, adversarial = 1; NaN if a side is empty)."""
    out: dict[str, float] = {}
    curves = roc_curves(calib, clean, adv)
    for name, (c, a) in curves.items():
        if len(c) == 0 or len(a) == 0:
            out[name] = float("nan")
            continue
        y = np.r_[np.zeros(len(c)), np.ones(len(a))]
        out[name] = float(roc_auc_score(y, np.r_[c, a]))
    return out


def roc_curves(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
               adv: Mapping[str, Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """criterion -> (clean scores, adversarial scores) as NumPy, ``combined`` included."""
    out = {k: (clean[k].double().numpy(), adv[k].double().numpy()) for k in calib}
    out["combined"] = (combined_score(calib, clean).numpy(), combined_score(calib, adv).numpy())
    return out


# ----------------------------------------------------------------------------- runner
def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves half a file


def run_detection_eval(
    model: torch.nn.Module,
    detector: NoiseSignatureDetector,
    calibration: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    attacks: Mapping[str, Callable[[Mapping[str, Tensor]], Any]],
    out_dir: str | Path,
    fprs: Sequence[float] = DEFAULT_FPRS,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Score calibration and test images, then craft and score every attack (resumable).

    Args:
        model: The classifier (images in [0, 1] -> logits); any architecture.
        detector: An uncalibrated or calibrated detector (its criteria are evaluated).
        calibration: Clean held-out ``(x, y)`` (e.g. class-balanced train images).
        test: Clean evaluation ``(x, y)``.
        attacks: name -> factory ``factory(calibration scores) -> attack`` with
            ``attack(model, x, y) -> x_adv`` (adaptive attacks read the scores: a white-box
            attacker knows the thresholds); called only when its result is not on disk yet.
        out_dir: Folder of the per-step files (``calibration.pt``, ``clean.pt``,
            ``attack-NAME.pt``) and ``results.json``.
        fprs: Target false-positive rates.
        batch_size: Images attacked at once.

    Returns:
        The results mapping also written to ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    detector.fit(model)

    def scored(name: str, x: Tensor, y: Tensor) -> dict[str, Any]:
        path = out / f"{name}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        t0 = time.time()
        scores, pred = detector.score_with_labels(x)
        rec = {"scores": scores, "pred": pred, "y": y, "seconds": time.time() - t0}
        _save(path, rec)
        log.info("scored %s (%d images) in %.0f s", name, len(x), rec["seconds"])
        return rec

    cal = scored("calibration", *calibration)
    ok_cal = cal["pred"] == cal["y"]
    calib = {k: v[ok_cal] for k, v in cal["scores"].items()}
    clean = scored("clean", *test)
    ok = clean["pred"] == clean["y"]
    clean_s = {k: v[ok] for k, v in clean["scores"].items()}
    results: dict[str, Any] = {
        "criteria": list(detector.criteria),
        "config": detector.config.as_dict(),
        "n_calibration": int(len(calibration[0])),
        "n_calibration_correct": int(ok_cal.sum()),
        "n_test": int(len(test[0])),
        "n_test_correct": int(ok.sum()),
        "fprs": [float(f) for f in fprs],
        "attacks": {},
    }
    x_test, y_test = test
    for name, factory in attacks.items():
        path = out / f"attack-{name}.pt"
        if path.is_file():
            rec = torch.load(path, weights_only=True)
        else:
            attack = factory(calib)
            t0 = time.time()
            x_adv = torch.cat([
                attack(model, x_test[i : i + batch_size], y_test[i : i + batch_size])
                for i in range(0, len(x_test), batch_size)
            ])
            t_attack = time.time() - t0
            t0 = time.time()
            scores, pred = detector.score_with_labels(x_adv)
            rec = {"x_adv": x_adv, "scores": scores, "pred": pred,
                   "seconds_attack": t_attack, "seconds_score": time.time() - t0}
            _save(path, rec)
            log.info("attack %s: %.0f s, scoring %.0f s", name, t_attack, rec["seconds_score"])
        results["attacks"][name] = summarize(calib, clean_s, rec, ok, y_test, fprs)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def summarize(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor], rec: Mapping[str, Any],
              ok: Tensor, y: Tensor, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, Any]:
    """Rates and AUCs of one attack record (``scores``, ``pred`` of the adversarial images)."""
    success = ok & (rec["pred"] != y)  # (N,) clean correct and adversarial misclassified
    adv = {k: v[success] for k, v in rec["scores"].items()}
    return {
        "success_rate": float(success.sum()) / max(int(ok.sum()), 1),
        "n_success": int(success.sum()),
        "rates": detection_rates(calib, clean, adv, fprs),
        "auc": roc_aucs(calib, clean, adv),
        "seconds_attack": rec.get("seconds_attack"),
        "seconds_score": rec.get("seconds_score"),
    }


# ----------------------------------------------------------------------------- registration
_OPTIONS = {"preset": "cifar10", "criterion": "c1", "criteria": None, "seed": 0,
            "batch_size": 256, "thresholds": None, "n_noise": None, "c2t_cap": None}


@register_detector("noise-signature")
def _noise_signature(model: torch.nn.Module, options: Mapping[str, Any]
                     ) -> Callable[[Tensor], Tensor]:
    """Noise-signature detector (Hu, Yu et al., 2019) as a run-config scorer ``(B,)``.

    Options: ``preset`` (cifar10 | imagenet | imagenet-inception), ``criterion`` (``c1``,
    ``c2t``, ``c2u`` or ``combined``), ``criteria`` (for combined, default ``c1,c2t``),
    ``thresholds`` (mapping criterion -> threshold, needed for combined: the score is then
    ``max_k (s_k - t_k) / max(|t_k|, 1e-12)``, positive exactly when the detector flags),
    ``n_noise`` / ``c2t_cap`` overrides, ``seed``, ``batch_size``.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for detector 'noise-signature'; "
                         f"allowed: {', '.join(_OPTIONS)}")
    o = {**_OPTIONS, **options}
    config: DetectorConfig = get_preset(str(o["preset"]))
    for key in ("n_noise", "c2t_cap"):
        if o[key] is not None:
            config = config.replace(**{key: o[key]})
    criterion = str(o["criterion"]).lower()
    if criterion == "combined":
        if not isinstance(o["thresholds"], Mapping):
            raise ValueError("detector 'noise-signature': criterion combined needs options."
                             "thresholds {c1: ..., c2t: ...} (from `advimage detect calibrate`)")
        thresholds = {str(k): float(v) for k, v in o["thresholds"].items()}
        criteria = o["criteria"] or ",".join(thresholds)
    else:
        thresholds, criteria = {}, criterion
    det = NoiseSignatureDetector(model, config, criteria, seed=int(o["seed"]),
                                 batch_size=int(o["batch_size"]))
    if criterion == "combined" and set(thresholds) != set(det.criteria):
        raise ValueError(f"detector 'noise-signature': thresholds must name exactly "
                         f"{', '.join(det.criteria)}, got {', '.join(sorted(thresholds))}")

    def score(x: Tensor) -> Tensor:
        s = det.score(x)
        if criterion != "combined":
            return s[criterion].double()  # (B,)
        parts = [(s[k].double() - t) / max(abs(t), 1e-12) for k, t in thresholds.items()]
        return torch.stack(parts).amax(dim=0)  # (B,)

    return score


# ----------------------------------------------------------------------------- config
_TOP = ("name", "description", "model", "data", "calibration", "test", "detector", "fprs",
        "batch_size", "attacks")


def _attack_factory(kind: str, eps: float, options: dict[str, Any], config: DetectorConfig,
                    fpr0: float) -> Callable[[Mapping[str, Tensor]], Any]:
    """Attack builder; ``adaptive`` gets ``c1_threshold`` = the C1 threshold at FPR ``fpr0``
    (the largest target FPR, i.e. the strictest threshold) unless the options set it."""
    from advimage.attacks import create_attack
    from advimage.detect.adaptive import AdaptiveAttack, HuAttack

    def build(calib: Mapping[str, Tensor]) -> Any:
        if kind == "hu":
            return HuAttack(eps=eps, detector=config, **options)
        if kind == "adaptive":
            opts = dict(options)
            if opts.get("c1_threshold", "auto") == "auto" and "c1" in calib:
                n = calib["c1"].numel()
                opts["c1_threshold"] = threshold_at(calib["c1"], math.floor(fpr0 * n + 1e-9))
            return AdaptiveAttack(eps=eps, detector=config, **opts)
        return create_attack(kind, eps=eps, **options)

    return build


def run_from_config(path: str | Path, out_dir: str | Path,
                    only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a ``configs/detection*.yaml`` evaluation into ``out_dir`` (resumable).

    Keys: ``model`` (path, resolved from the config's folder), ``data`` ({name, root}),
    ``calibration`` / ``test`` ({split, limit, offset}: the class-balanced images
    ``offset .. offset + limit``, so a test-split calibration can skip the evaluation images),
    ``detector`` ({preset,
    criteria, seed, set: {field: value}}), ``fprs``, ``batch_size`` and ``attacks``: a list of
    {label, kind (``hu``, ``adaptive`` or a registered attack), eps: [...], options}.
    ``only`` restricts the run to attack labels starting with one of the given prefixes.
    """
    import yaml

    from advimage.data import load_dataset
    from advimage.eval.config import resolve_path
    from advimage.hub import load_model
    from advimage.validation import parse_fraction

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"detection config not found: {p}")
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"detection config {p} must be a mapping")
    unknown = sorted(set(raw) - set(_TOP))
    if unknown:
        raise ValueError(f"detection config: unknown key {unknown[0]!r}; allowed: "
                         f"{', '.join(_TOP)}")
    base = p.resolve().parent
    model, _ = load_model(resolve_path(str(raw["model"]), base, "model"))
    data = dict(raw.get("data") or {})
    root = data.get("root")
    root = resolve_path(root, base, "data root") if root else None

    def split(key: str, default: str, limit: int) -> tuple[Tensor, Tensor]:
        spec = {"split": default, "limit": limit, "offset": 0, **(raw.get(key) or {})}
        unknown = sorted(set(spec) - {"split", "limit", "offset"})
        if unknown:
            raise ValueError(f"detection config: unknown key '{key}.{unknown[0]}'; allowed: "
                             "split, limit, offset")
        ds = load_dataset(data.get("name", "cifar10"), spec["split"], data_root=root)
        skip = int(spec["offset"])  # drop the first `offset` balanced images (held out)
        x, y = ds.balanced(skip + int(spec["limit"])).tensors()
        return x[skip:], y[skip:]

    d = dict(raw.get("detector") or {})
    config = get_preset(str(d.get("preset", "cifar10")))
    if d.get("set"):
        config = config.replace(**d["set"])
    det = NoiseSignatureDetector(model, config, d.get("criteria", "c1,c2t"),
                                 seed=int(d.get("seed", 0)))
    fprs = [float(f) for f in raw.get("fprs", DEFAULT_FPRS)]
    attacks: dict[str, Callable[[Mapping[str, Tensor]], Any]] = {}
    for i, a in enumerate(raw.get("attacks") or []):
        if not isinstance(a, dict) or "kind" not in a:
            raise ValueError(f"detection config: attacks[{i}] needs a 'kind'")
        eps_list = a.get("eps", ["8/255"])
        for eps_text in eps_list if isinstance(eps_list, list) else [eps_list]:
            eps = parse_fraction(eps_text, f"attacks[{i}].eps")
            label = f"{a.get('label', a['kind'])}@{eps:.4g}"
            if only and not any(label.startswith(o) for o in only):
                continue
            if label in attacks:
                raise ValueError(f"detection config: attack {label!r} appears twice")
            attacks[label] = _attack_factory(str(a["kind"]), eps, dict(a.get("options") or {}),
                                             config, max(fprs))
    return run_detection_eval(model, det, split("calibration", "train", 500),
                              split("test", "test", 200), attacks, out_dir, fprs,
                              int(raw.get("batch_size", 100)))
