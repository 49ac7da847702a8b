"""``configs/detection-*.yaml`` -> a detection run of the eval harness (Hu, Yu et al., 2019).

Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images: Turning a Weakness
into a Strength". Keys: ``model`` (path, resolved from the config's folder), ``data`` ({name,
root}), ``calibration`` / ``test`` ({split, limit, offset}: the class-balanced images
``offset .. offset + limit``, so a test-split calibration can skip the evaluation images),
``detector`` ({name, options} of any registered detector; without ``name`` the noise-signature
detector with {preset, criteria, seed, set: {field: value}}), ``fprs``, ``batch_size`` and
``attacks``: a list of {label, kind (``hu``, ``adaptive`` or a registered attack), eps: [...],
options}. ``hu`` and ``adaptive`` attack the noise-signature detector
(:mod:`advimage.detect.adaptive`); ``adaptive`` gets ``c1_threshold``, the C1 threshold at the
largest target FPR, unless its options set it. ``executor`` (as in run configs:
``serial``, ``ray`` or {name, address, workers, ...},
:func:`advimage.eval.config_schema.parse_executor`) says where the sets are computed; it is
no part of the run's configuration, so a run may resume on another executor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from advimage.attacks import create_attack
from advimage.data import load_dataset
from advimage.detect.adaptive import AdaptiveAttack, HuAttack
from advimage.detect.base import Detector
from advimage.detect.calibration import threshold_at
from advimage.detect.metrics import DEFAULT_FPRS
from advimage.detect.registry import build_detector
from advimage.detect.signature_detector import SignatureDetector
from advimage.eval.config_schema import ExecutorConfig, parse_executor, resolve_path
from advimage.eval.detection import AttackFn, DetectionAttack, DetectionJob, run_detection
from advimage.models.hub import load_model
from advimage.utils import resolve_device
from advimage.validation import parse_fraction

__all__ = ["attack_specs", "build_job", "detector_spec", "executor_of", "read_config",
           "run_from_config"]

_TOP = ("name", "description", "model", "data", "calibration", "test", "detector", "fprs",
        "batch_size", "attacks", "executor")
_SIGNATURE_KEYS = ("preset", "criteria", "seed", "set")


def read_config(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The config mapping of ``path`` (top-level keys checked) and its folder."""
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
    return raw, p.resolve().parent


def detector_spec(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{name, options}`` of a config's ``detector`` section (see the module docstring)."""
    d = dict(section or {})
    if "name" in d:
        unknown = sorted(set(d) - {"name", "options"})
        if unknown:
            raise ValueError(f"detection config: unknown key 'detector.{unknown[0]}'; "
                             "allowed: name, options")
        return {"name": str(d["name"]), "options": dict(d.get("options") or {})}
    unknown = sorted(set(d) - set(_SIGNATURE_KEYS))
    if unknown:
        raise ValueError(f"detection config: unknown key 'detector.{unknown[0]}'; allowed: "
                         f"name, options, {', '.join(_SIGNATURE_KEYS)}")
    criteria = str(d.get("criteria", "c1,c2t"))
    options = {"preset": str(d.get("preset", "cifar10")), "criteria": criteria,
               "criterion": criteria.split(",")[0].strip().lower(), "seed": int(d.get("seed", 0)),
               "set": dict(d["set"]) if d.get("set") else None}
    return {"name": "noise-signature", "options": options}


def attack_specs(entries: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """label@eps -> {kind, eps, options} of a config's ``attacks`` list, every budget."""
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


def _attack(spec: Mapping[str, Any], detector: Detector, fpr0: float) -> DetectionAttack:
    """The attack of ``spec``; ``hu``/``adaptive`` read the noise-signature settings."""
    kind, eps, options = spec["kind"], spec["eps"], dict(spec["options"])
    config = detector.engine.config if isinstance(detector, SignatureDetector) else None
    if kind in ("hu", "adaptive") and config is None:
        raise ValueError(f"detection config: attack kind {kind!r} attacks the noise-signature "
                         "detector; use a registered attack with another detector")

    def build(calib: Mapping[str, Tensor]) -> AttackFn:
        if kind == "hu":
            return HuAttack(eps=eps, detector=config, **options)
        if kind == "adaptive":
            opts = dict(options)
            if opts.get("c1_threshold", "auto") == "auto" and "c1" in calib:
                n = calib["c1"].numel()
                opts["c1_threshold"] = threshold_at(calib["c1"], math.floor(fpr0 * n + 1e-9))
            return AdaptiveAttack(eps=eps, detector=config, **opts)
        return create_attack(kind, eps=eps, **options)

    return DetectionAttack(build, kind, eps, options)


def _images(raw: Mapping[str, Any], key: str, default: str, limit: int
            ) -> dict[str, Any]:
    out = {"split": default, "limit": limit, "offset": 0, **(raw.get(key) or {})}
    unknown = sorted(set(out) - {"split", "limit", "offset"})
    if unknown:
        raise ValueError(f"detection config: unknown key '{key}.{unknown[0]}'; allowed: "
                         "split, limit, offset")
    return out


def _split(name: str, root: str | None, sp: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    ds = load_dataset(name, sp["split"], data_root=root)
    skip = int(sp["offset"])  # drop the first `offset` balanced images (held out)
    x, y = ds.balanced(skip + int(sp["limit"])).tensors()
    return x[skip:], y[skip:]


def build_job(path: str | Path, only: Sequence[str] | None = None,
              device: str = "cpu", model: nn.Module | None = None) -> DetectionJob:
    """The detection run of config ``path`` (``only``: attack label prefixes to keep;
    ``device``: where model, attacks and detector compute; images stay on the CPU)."""
    raw, base = read_config(path)
    model_path = resolve_path(str(raw["model"]), base, "model")
    if model is None:
        model = load_model(model_path)[0]
    model = model.to(resolve_device(device))
    data = dict(raw.get("data") or {})
    data_name = str(data.get("name", "cifar10"))
    root = str(resolve_path(data["root"], base, "data root")) if data.get("root") else None
    spec = detector_spec(raw.get("detector"))
    detector = build_detector(spec["name"], model, spec["options"])
    fprs = [float(f) for f in raw.get("fprs", DEFAULT_FPRS)]
    specs = attack_specs(raw.get("attacks") or [])
    attacks = {label: _attack(sp, detector, max(fprs)) for label, sp in specs.items()
               if not only or any(label.startswith(o) for o in only)}
    cal, test = _images(raw, "calibration", "train", 500), _images(raw, "test", "test", 200)
    source = {"model": str(model_path), "data": {"name": data_name, "root": root},
              "calibration_images": cal, "test_images": test, "attacks": specs,
              "detector": spec}
    return DetectionJob(model, detector, _split(data_name, root, cal),
                        _split(data_name, root, test), attacks, fprs,
                        int(raw.get("batch_size", 100)), source)


def executor_of(path: str | Path) -> ExecutorConfig:
    """The ``executor`` section of config ``path`` (serial when absent)."""
    return parse_executor(read_config(path)[0].get("executor"))


def run_from_config(path: str | Path, out_dir: str | Path, only: Sequence[str] | None = None,
                    shard: tuple[int, int] | None = None, device: str = "cpu",
                    executor: str | ExecutorConfig | None = None) -> dict[str, Any]:
    """Run config ``path`` into ``out_dir`` (resumable; ``shard`` splits the attacks over
    processes; ``executor`` overrides the config's, e.g. ``ray``, see
    :func:`advimage.eval.detection.run_detection`); returns the summary."""
    settings = parse_executor(executor) if isinstance(executor, str) else (
        executor or executor_of(path))
    on_ray = settings.name == "ray"  # then the driver only fingerprints the model
    job = build_job(path, only, "cpu" if on_ray else device)
    return run_detection(job, out_dir, shard=shard, executor=settings, device=device)
