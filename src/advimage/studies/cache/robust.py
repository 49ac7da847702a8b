"""Robustness of the cache model (Orhan, 2018), evaluated adaptively on CIFAR-10.

Orhan reports that a cache over late-layer features makes a network more robust to
adversarial images. This study checks that claim under three threat models, on a
class-balanced test subset, always scoring the final images on the EXACT cache (all keys):

- transfer: FGSM / PGD / APGD-CE crafted on the baseline network alone;
- white-box: PGD / APGD-CE through the cache itself. Attacks run on a FAISS top-k copy
  (gradients flow through the k most similar keys, which carry all but a negligible share of
  ``p_mem`` at the tuned theta) because exact gradients over 50k keys cost minutes per step;
- adaptive surrogate: the same cache at a LOWER theta (``exp(theta cos)`` with theta ~ 70
  saturates, so its gradients understate the attacker; Athalye et al., 2018).

An image counts as robust only if it survives every attack at that budget (worst case), and
the smallest budget of a grid that fools it estimates the perturbation size needed.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.attacks.registry import create_attack
from advimage.data import load_dataset
from advimage.defend.cache import CacheModel
from advimage.defend.cache.io import load_cache, read_cache_info
from advimage.defend.cache.ops import mix_log_probs
from advimage.defend.cache.topm import ClassTopMCache
from advimage.models.classifier import ImageClassifier
from advimage.utils import run_metadata, write_json

__all__ = ["cache_predictions", "class_topm_attacks", "min_eps", "robustness_study"]

log = logging.getLogger(__name__)

CLASSIFIERS = ("baseline", "cache", "cache_only")


@torch.no_grad()
def cache_predictions(cache: CacheModel, theta_only: float, x: Tensor,
                      batch: int = 250) -> dict[str, Tensor]:
    """Predictions ``(N,)`` of baseline, cache and cache-only on ``x`` (in ``cache``'s mode).

    One pass over the keys scores both thetas (the cache's and the cache-only one).
    """
    out: dict[str, list[Tensor]] = {k: [] for k in CLASSIFIERS}
    for start in range(0, x.shape[0], batch):
        logits, phi = cache.embed(x[start:start + batch])  # (b, K), (b, D)
        lp_mem = cache.memory_log_probs(phi, [cache.theta, theta_only])  # (2, b, K)
        lp_model = F.log_softmax(logits, dim=1)
        out["baseline"].append(lp_model.argmax(1))
        out["cache"].append(mix_log_probs(lp_model, lp_mem[0], cache.lam).argmax(1))
        out["cache_only"].append(lp_mem[1].argmax(1))
    return {k: torch.cat(v) for k, v in out.items()}


def _attack(name: str, eps: float, steps: int, seed: int) -> Any:
    if name == "fgsm":
        return create_attack("fgsm", eps=eps, norm="linf")
    return create_attack(name, eps=eps, norm="linf", steps=steps, seed=seed)


def robustness_study(
    model: ImageClassifier, cache_path: Path, *, data_root: str | None, out: Path,
    data: str = "cifar10",
    n: int = 200, eps: float = 8 / 255, curve_eps: tuple[float, ...] = (2 / 255, 4 / 255),
    steps: int = 10, curve_steps: int = 5, surrogate_theta: float = 5.0, k: int = 100,
    eval_mode: str = "faiss", seed: int = 0,
) -> dict[str, Any]:
    """Run the attacks (main budget ``eps`` first, then ``curve_eps``); write ``robust.json``.

    Args:
        model: the baseline network the cache was built for.
        cache_path: saved cache (its sidecar's ``meta.theta_cache_only`` sets cache-only theta).
        data_root: dataset folder.
        data: dataset name (its test split is attacked).
        out: output folder (``robust.json``, ``robust_correct.npz``), rewritten after each attack.
        n: class-balanced test images.
        eps: main L-inf budget (pixel units on [0, 1]).
        curve_eps: further budgets (PGD with ``curve_steps`` steps) for the accuracy curve.
        steps: iterations of PGD / APGD at the main budget.
        curve_steps: PGD iterations at the other budgets.
        surrogate_theta: inverse temperature of the adaptive surrogate.
        k: top-k keys per query in the attack copies (FAISS).
        eval_mode: ``"exact"`` scores every image against all keys; ``"faiss"`` against the
            top-``k`` (the attack copy's forward pass; far cheaper on a CPU).
        seed: attack seed.
    """
    t0 = time.perf_counter()
    info = read_cache_info(cache_path)
    theta_only = float(info.get("meta", {}).get("theta_cache_only", info["theta"]))
    cache = load_cache(cache_path, model)
    views = _views(model, cache, k, surrogate_theta, theta_only)
    scorer = cache if eval_mode == "exact" else views["cache"]
    x, y = load_dataset(data, "test", data_root=data_root).balanced(n).tensors()
    clean = cache_predictions(scorer, theta_only, x)
    correct: dict[str, np.ndarray] = {f"clean/{c}": (clean[c] == y).numpy() for c in CLASSIFIERS}
    rows: list[dict[str, Any]] = []

    def summary() -> dict[str, Any]:
        return {"n": n, "eps": eps, "steps": steps, "curve_steps": curve_steps,
                "surrogate_theta": surrogate_theta, "k": k, "theta": cache.theta,
                "lam": cache.lam, "theta_cache_only": theta_only, "eval_mode": eval_mode,
                "n_keys": len(cache.keys),
                "layers": cache.layers,
                "clean": {c: float(correct[f"clean/{c}"].mean()) for c in CLASSIFIERS},
                "attacks": rows, "worst_case": _worst_case(rows, correct),
                "min_eps": min_eps(rows, correct),
                "seconds": round(time.perf_counter() - t0, 1), **run_metadata(None, seed)}

    out.mkdir(parents=True, exist_ok=True)
    for name, source, e, n_steps in _plan(eps, steps, curve_eps, curve_steps):
        t1 = time.perf_counter()
        x_adv = _attack(name, e, n_steps, seed)(views[source], x, y)
        t_attack = time.perf_counter() - t1
        rows.append(_score(cache_predictions(scorer, theta_only, x_adv), x_adv, x, y, correct,
                           {"attack": name, "steps": n_steps, "crafted_on": source, "eps": e,
                            "seconds": round(t_attack, 1)}))
        write_json(out / "robust.json", summary())
        np.savez_compressed(out / "robust_correct.npz", **correct)
    return summary()


def _score(pred: dict[str, Tensor], x_adv: Tensor, x: Tensor, y: Tensor,
           correct: dict[str, np.ndarray], spec: dict[str, Any]) -> dict[str, Any]:
    """One attack's result row; records each classifier's per-image outcome in ``correct``."""
    name, n_steps, e = spec["attack"], spec["steps"], spec["eps"]
    label = f"{name}{'' if name == 'fgsm' else n_steps}:{spec['crafted_on']}@{e * 255:.3g}/255"
    row = {"label": label, **spec, "linf": float((x_adv - x).abs().amax())}
    for c in CLASSIFIERS:
        correct[f"{label}/{c}"] = (pred[c] == y).numpy()
        row[c] = float(correct[f"{label}/{c}"].mean())
    log.info("%s: %s (%.0fs)", label, {c: row[c] for c in CLASSIFIERS}, spec["seconds"])
    return row


def _views(model: ImageClassifier, cache: CacheModel, k: int, surrogate_theta: float,
           theta_only: float) -> dict[str, nn.Module]:
    """The attacked models: baseline, FAISS top-``k`` cache copies and their surrogates."""
    view = cache.replace(mode="faiss", k=k, query_chunk=50)  # attack copies, top-k gradients
    return {
        "baseline": model,
        "cache": view,
        "cache@surrogate": view.replace(theta=surrogate_theta),
        "cache_only": view.replace(lam=1.0, theta=theta_only),
        "cache_only@surrogate": view.replace(lam=1.0, theta=surrogate_theta),
    }


def _plan(eps: float, steps: int, curve_eps: tuple[float, ...],
          curve_steps: int) -> list[tuple[str, str, float, int]]:
    """``(attack, crafted on, eps, steps)`` in run order: main budget first, then the curve."""
    plan = [("fgsm", "baseline", eps, 1), ("pgd", "baseline", eps, steps),
            ("apgd-ce", "baseline", eps, steps)]
    for target in ("cache", "cache_only"):
        plan += [("pgd", target, eps, steps), ("pgd", f"{target}@surrogate", eps, steps),
                 ("apgd-ce", target, eps, steps)]
    for e in curve_eps:
        plan += [("pgd", v, e, curve_steps) for v in ("baseline", "cache", "cache_only")]
    return plan


def _worst_case(rows: list[dict[str, Any]],
                correct: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per budget and classifier: the share of images surviving every attack at that budget."""
    worst = {}
    for e in sorted({r["eps"] for r in rows}):
        keys = [f"{r['label']}/{c}" for r in rows if r["eps"] == e for c in CLASSIFIERS]
        worst[f"{e:.6g}"] = {
            c: float(np.logical_and.reduce(
                [correct[key] for key in keys if key.endswith("/" + c)]
                + [correct[f"clean/{c}"]]).mean()) for c in CLASSIFIERS}
    return worst


def min_eps(rows: list[dict[str, Any]], correct: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per classifier: the median over images of the smallest budget fooling them (any attack)."""
    budgets = sorted({r["eps"] for r in rows})
    res = {}
    for c in CLASSIFIERS:
        need = np.where(correct[f"clean/{c}"], np.inf, 0.0)  # misclassified clean: 0
        for e in reversed(budgets):
            fooled = np.zeros_like(need, dtype=bool)
            for r in rows:
                if r["eps"] == e:
                    fooled |= ~correct[f"{r['label']}/{c}"]
            need = np.where(fooled & (need > 0), e, need)
        finite = need[np.isfinite(need)]
        res[c] = {"median_eps_255": float(np.median(need) * 255),
                  "survive_all": int((~np.isfinite(need)).sum()),
                  "mean_finite_eps_255": float(finite.mean() * 255) if finite.size else math.nan,
                  "per_image_eps_255": (need * 255).tolist()}
    return res


def class_topm_attacks(
    model: ImageClassifier, cache_path: Path, *, data_root: str | None, out: Path,
    data: str = "cifar10", n: int = 200, eps: tuple[float, ...] = (8 / 255, 2 / 255),
    steps: int = 10, m: int = 20, seed: int = 0, tag: str = "",
) -> dict[str, Any]:
    """PGD through :class:`ClassTopMCache` copies of cache and cache-only, scored exactly.

    Writes ``classtopm{tag}.json`` and ``classtopm{tag}_correct.npz`` (same images and keys
    as ``robustness_study`` with the same ``n``, so worst cases can be combined).
    """
    t0 = time.perf_counter()
    info = read_cache_info(cache_path)
    theta_only = float(info.get("meta", {}).get("theta_cache_only", info["theta"]))
    cache = load_cache(cache_path, model)
    views = {"cache[topm]": ClassTopMCache(cache, m),
             "cache_only[topm]": ClassTopMCache(cache, m, theta=theta_only, lam=1.0)}
    x, y = load_dataset(data, "test", data_root=data_root).balanced(n).tensors()
    correct: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    for e in eps:
        for source, view in views.items():
            t1 = time.perf_counter()
            x_adv = _attack("pgd", e, steps, seed)(view, x, y)
            t_attack = time.perf_counter() - t1
            pred = cache_predictions(cache, theta_only, x_adv)
            label = f"pgd{steps}:{source}@{e * 255:.3g}/255"
            row = {"label": label, "attack": "pgd", "steps": steps, "crafted_on": source,
                   "eps": e, "seconds": round(t_attack, 1), "m": m}
            for c in CLASSIFIERS:
                correct[f"{label}/{c}"] = (pred[c] == y).numpy()
                row[c] = float(correct[f"{label}/{c}"].mean())
            rows.append(row)
            log.info("%s: %s (%.0fs)", label, {c: row[c] for c in CLASSIFIERS}, t_attack)
            write_json(out / f"classtopm{tag}.json", {
                "n": n, "m": m, "steps": steps, "eval_mode": "exact", "attacks": rows,
                "seconds": round(time.perf_counter() - t0, 1), **run_metadata(None, seed)})
            np.savez_compressed(out / f"classtopm{tag}_correct.npz", **correct)
    return {"attacks": rows}
