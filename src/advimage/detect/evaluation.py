"""Resumable detection evaluation of the noise-signature detector (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" evaluates the
detector against gray-box, white-box and adaptive attacks by the detection rate of successful
adversarial images at fixed false-positive rates, and by ROC/AUC. :func:`run_detection_eval`
scores clean calibration and test images, then crafts and scores every attack, writing each
result to its own file as it finishes so a rerun resumes where it stopped;
:func:`run_from_config` builds such a run from a ``configs/detection*.yaml`` file.

The metrics themselves (:func:`detection_rates`, :func:`roc_aucs`, :func:`combined_score`, ...)
live in :mod:`advimage.detect.metrics` and are re-exported here; importing this module also
registers the ``noise-signature`` run-config detector (:mod:`advimage.detect.scorer`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import advimage.detect.scorer  # noqa: F401  (registers the "noise-signature" detector)
from advimage.attacks.base import model_dtype_device
from advimage.detect.calibration import threshold_at
from advimage.detect.config import DetectorConfig, get_preset
from advimage.detect.metrics import (
    DEFAULT_FPRS,
    combined_score,
    detection_rates,
    roc_aucs,
    roc_curves,
    summarize,
)
from advimage.detect.noise_signature import NoiseSignatureDetector
from advimage.detect.records import open_detection_dir, publish_record, stored_record
from advimage.rundir import RunDir
from advimage.utils import write_json
from advimage.validation import check_shard

__all__ = [
    "DEFAULT_FPRS",
    "run_from_config",
    "combined_score",
    "detection_rates",
    "roc_aucs",
    "roc_curves",
    "run_detection_eval",
    "summarize",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- runner
def _scored(run: RunDir, detector: NoiseSignatureDetector, name: str, x: Tensor,
            y: Tensor) -> dict[str, Any]:
    """The detector's scores of clean images ``name`` (stored, or computed and published)."""
    rec = stored_record(run, f"{name}.pt")
    if rec is not None:
        return rec
    t0 = time.time()
    scores, pred = detector.score_with_labels(x)
    rec = {"scores": scores, "pred": pred, "y": y, "seconds": time.time() - t0}
    log.info("scored %s (%d images) in %.0f s", name, len(x), rec["seconds"])
    return publish_record(run, f"{name}.pt", rec)


def _attacked(run: RunDir, model: torch.nn.Module, detector: NoiseSignatureDetector,
              attack: Any, name: str, test: tuple[Tensor, Tensor],
              batch_size: int) -> dict[str, Any]:
    """Craft attack ``name`` on the test images, score it, publish ``attack-NAME.pt``."""
    x_test, y_test = test
    t0 = time.time()
    dev = model_dtype_device(model, x_test)[1]  # attacks compute where the model lives
    x_adv = torch.cat([attack(model, x_test[i : i + batch_size].to(dev),
                              y_test[i : i + batch_size].to(dev)).cpu()
                       for i in range(0, len(x_test), batch_size)])
    t_attack = time.time() - t0
    t0 = time.time()
    scores, pred = detector.score_with_labels(x_adv)
    rec = {"x_adv": x_adv, "scores": scores, "pred": pred,
           "seconds_attack": t_attack, "seconds_score": time.time() - t0}
    log.info("attack %s: %.0f s, scoring %.0f s", name, t_attack, rec["seconds_score"])
    return publish_record(run, f"attack-{name}.pt", rec)


def run_detection_eval(
    model: torch.nn.Module,
    detector: NoiseSignatureDetector,
    calibration: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    attacks: Mapping[str, Callable[[Mapping[str, Tensor]], Any]],
    out_dir: str | Path,
    fprs: Sequence[float] = DEFAULT_FPRS,
    batch_size: int = 100,
    shard: tuple[int, int] | None = None,
    config: Mapping[str, Any] | None = None,
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
        out_dir: Run folder (:mod:`advimage.detect.records`) of the per-step files
            (``calibration.pt``, ``clean.pt``, ``attack-NAME.pt``) and ``results.json``.
        fprs: Target false-positive rates.
        batch_size: Images attacked at once.
        shard: ``(i, n)``, 0 <= i < n: craft only every n-th attack from the i-th, so n
            processes share one ``out_dir`` (each scores the clean images unless one has
            stored them; the first stored copy is used). Finished attacks of other shards are
            read from disk; the shard that ends last writes the complete ``results.json``.
        config: What the folder's configuration cannot read off the arguments: the attacks'
            kinds and options (factories are opaque) and where model and data came from.
            Default: the attack names only, so pass it whenever options may change.

    Returns:
        The results mapping also written to ``results.json``: per attack its summary, and
        ``pending``, the attacks not on disk yet (other shards').

    Raises:
        ValueError: a bad ``shard``.
        ConfigMismatchError: ``out_dir`` holds results of another configuration.
        CorruptFileError: a damaged stored file.
    """
    check_shard(shard)
    detector.fit(model)
    run = open_detection_dir(out_dir, model, detector, calibration, test, fprs, batch_size,
                             config if config is not None else {"attacks": list(attacks)})
    cal = _scored(run, detector, "calibration", *calibration)
    ok_cal = cal["pred"] == cal["y"]
    calib = {k: v[ok_cal] for k, v in cal["scores"].items()}
    clean = _scored(run, detector, "clean", *test)
    ok = clean["pred"] == clean["y"]
    clean_s = {k: v[ok] for k, v in clean["scores"].items()}
    results: dict[str, Any] = {
        "criteria": list(detector.criteria), "config": detector.config.as_dict(),
        "n_calibration": int(len(calibration[0])), "n_calibration_correct": int(ok_cal.sum()),
        "n_test": int(len(test[0])), "n_test_correct": int(ok.sum()),
        "fprs": [float(f) for f in fprs], "fingerprint": run.fingerprint, "attacks": {},
    }
    names = list(attacks)
    mine = set(names if shard is None else names[shard[0]::shard[1]])

    def publish() -> None:  # config order; atomic, since other shards rewrite it too
        results["attacks"] = {n: results["attacks"][n] for n in names if n in results["attacks"]}
        results["pending"] = [n for n in names if n not in results["attacks"]]
        write_json(run.path / "results.json", results)

    for name, factory in attacks.items():
        rec = stored_record(run, f"attack-{name}.pt")
        if rec is None and name not in mine:
            continue  # another shard's, not finished yet: picked up below if it is by then
        if rec is None:
            rec = _attacked(run, model, detector, factory(calib), name, test, batch_size)
        results["attacks"][name] = summarize(calib, clean_s, rec, ok, test[1], fprs)
        publish()
    # other shards' attacks that finished meanwhile: the shard that ends last sees them all
    for name in names:
        rec = None if name in results["attacks"] else stored_record(run, f"attack-{name}.pt")
        if rec is not None:
            results["attacks"][name] = summarize(calib, clean_s, rec, ok, test[1], fprs)
    publish()
    if results["pending"]:
        log.warning("results.json lacks %d attack(s) of other shards: %s", len(results["pending"]),
                    ", ".join(results["pending"]))
    return results


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


def _attack_specs(entries: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """label@eps -> {kind, eps, options} of a config's ``attacks`` list, every budget."""
    from advimage.validation import parse_fraction

    specs: dict[str, dict[str, Any]] = {}
    for i, a in enumerate(entries):
        if not isinstance(a, dict) or "kind" not in a:
            raise ValueError(f"detection config: attacks[{i}] needs a 'kind'")
        eps_list = a.get("eps", ["8/255"])
        for eps_text in eps_list if isinstance(eps_list, list) else [eps_list]:
            eps = parse_fraction(eps_text, f"attacks[{i}].eps")
            label = f"{a.get('label', a['kind'])}@{eps:.4g}"
            if label in specs:
                raise ValueError(f"detection config: attack {label!r} appears twice")
            specs[label] = {"kind": str(a["kind"]), "eps": eps,
                            "options": dict(a.get("options") or {})}
    return specs


def run_from_config(path: str | Path, out_dir: str | Path,
                    only: Sequence[str] | None = None,
                    shard: tuple[int, int] | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Run a ``configs/detection*.yaml`` evaluation into ``out_dir`` (resumable).

    Keys: ``model`` (path, resolved from the config's folder), ``data`` ({name, root}),
    ``calibration`` / ``test`` ({split, limit, offset}: the class-balanced images
    ``offset .. offset + limit``, so a test-split calibration can skip the evaluation images),
    ``detector`` ({preset,
    criteria, seed, set: {field: value}}), ``fprs``, ``batch_size`` and ``attacks``: a list of
    {label, kind (``hu``, ``adaptive`` or a registered attack), eps: [...], options}.
    ``only`` restricts the run to attack labels starting with one of the given prefixes;
    ``shard`` splits the (remaining) attacks over processes (:func:`run_detection_eval`).
    ``device`` (``cpu``, ``cuda``, ``auto``) is where the model, attacks and detector compute;
    images and records stay on the CPU, so a run resumes on any device with the same results
    up to floating-point reduction order.
    """
    import yaml

    from advimage.data import load_dataset
    from advimage.eval.config import resolve_path
    from advimage.hub import load_model
    from advimage.utils import resolve_device

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
    model_path = resolve_path(str(raw["model"]), base, "model")
    model, _ = load_model(model_path)
    model = model.to(resolve_device(device))
    data = dict(raw.get("data") or {})
    data_name = str(data.get("name", "cifar10"))
    root = data.get("root")
    root = str(resolve_path(root, base, "data root")) if root else None

    def spec(key: str, default: str, limit: int) -> dict[str, Any]:
        out = {"split": default, "limit": limit, "offset": 0, **(raw.get(key) or {})}
        unknown = sorted(set(out) - {"split", "limit", "offset"})
        if unknown:
            raise ValueError(f"detection config: unknown key '{key}.{unknown[0]}'; allowed: "
                             "split, limit, offset")
        return out

    def split(sp: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        ds = load_dataset(data_name, sp["split"], data_root=root)
        skip = int(sp["offset"])  # drop the first `offset` balanced images (held out)
        x, y = ds.balanced(skip + int(sp["limit"])).tensors()
        return x[skip:], y[skip:]

    d = dict(raw.get("detector") or {})
    config = get_preset(str(d.get("preset", "cifar10")))
    if d.get("set"):
        config = config.replace(**d["set"])
    det = NoiseSignatureDetector(model, config, d.get("criteria", "c1,c2t"),
                                 seed=int(d.get("seed", 0)))
    fprs = [float(f) for f in raw.get("fprs", DEFAULT_FPRS)]
    specs = _attack_specs(raw.get("attacks") or [])
    attacks = {label: _attack_factory(sp["kind"], sp["eps"], sp["options"], config, max(fprs))
               for label, sp in specs.items()
               if not only or any(label.startswith(o) for o in only)}
    cal_spec, test_spec = spec("calibration", "train", 500), spec("test", "test", 200)
    source = {"model": str(model_path), "data": {"name": data_name, "root": root},
              "calibration_images": cal_spec, "test_images": test_spec, "attacks": specs}
    return run_detection_eval(model, det, split(cal_spec), split(test_spec), attacks, out_dir,
                              fprs, int(raw.get("batch_size", 100)), shard=shard,
                              config=source)
