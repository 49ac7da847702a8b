"""How large a perturbation the cache model (Orhan, 2018) needs: per-image minimal budgets.

Robust accuracy at {2, 4, 8}/255 only bounds where images fall. This study ascends a fine L-inf
grid with :func:`advimage.eval.minimal.minimal_eps` and reports, per classifier (baseline, cache,
cache-only), the smallest budget at which each test image is fooled under three threat models:

- ``white-box``: PGD through the classifier itself (for the cache: its FAISS top-k copy, the
  gradients of the k most similar keys);
- ``surrogate``: PGD through the same cache at a low theta (the adaptive attack: exp(theta cos)
  saturates at the tuned theta and understates the attacker), judged on the real cache;
- ``transfer``: PGD crafted on the baseline network alone, judged on each classifier;
- ``topm``: PGD through :class:`~advimage.defend.cache.topm.ClassTopMCache` (every class's
  m most similar keys: no class is truncated to ``log p = -inf``, which masks the FAISS copy's
  gradients for confident cache-only predictions).

An image's budget under the worst case is the smallest over the threat models.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advimage.attacks.pgd import PGD
from advimage.data import load_dataset
from advimage.defend.cache.io import load_cache, read_cache_info
from advimage.defend.cache.model import CacheModel
from advimage.defend.cache.topm import ClassTopMCache
from advimage.eval.minimal import minimal_eps, summarize_minimal
from advimage.models.classifier import ImageClassifier
from advimage.utils import run_metadata, write_json

__all__ = ["minimal_study"]

log = logging.getLogger(__name__)


def _settings(model: ImageClassifier, cache: CacheModel, view: CacheModel, theta_only: float,
              surrogate_theta: float, m: int) -> dict[str, dict[str, tuple[nn.Module, nn.Module]]]:
    """Per judged classifier: threat model -> (attacked copy, judging copy)."""
    judges: dict[str, nn.Module] = {"baseline": model, "cache": view,
                                    "cache_only": view.replace(lam=1.0, theta=theta_only)}
    surrogates: dict[str, nn.Module] = {"cache": view.replace(theta=surrogate_theta),
                                        "cache_only": view.replace(lam=1.0,
                                                                   theta=surrogate_theta)}
    topm: dict[str, nn.Module] = {"cache": ClassTopMCache(cache, m),
                                  "cache_only": ClassTopMCache(cache, m, theta=theta_only,
                                                               lam=1.0)}
    plans = {}
    for name, judge in judges.items():
        settings = {"white-box": (judge, judge), "transfer": (model, judge)}
        if name in surrogates:
            settings["surrogate"] = (surrogates[name], judge)
            settings["topm"] = (topm[name], judge)
        plans[name] = settings
    return plans


def minimal_study(
    model: ImageClassifier, cache_path: Path, *, data_root: str | None, out: Path,
    data: str = "cifar10", n: int = 100, grid_255: tuple[float, ...] = tuple(range(1, 17)),
    steps: int = 10, surrogate_theta: float = 5.0, k: int = 100, m: int = 20, seed: int = 0,
) -> dict[str, Any]:
    """Minimal fooling L-inf budgets on ``n`` class-balanced test images; writes ``minimal.json``.

    Args:
        model: the baseline network the cache was built for.
        cache_path: saved cache (its sidecar's ``meta.theta_cache_only`` sets cache-only theta).
        grid_255: budgets in 1/255 units, ascending (default 1..16).
        steps: PGD iterations per budget (random start, seeded).
        surrogate_theta: inverse temperature of the adaptive surrogate.
        k: top-k keys per query of the attacked and judging copies (FAISS).
        m: keys per class of the ``topm`` attack copy.
    """
    t0 = time.perf_counter()
    info = read_cache_info(cache_path)
    theta_only = float(info.get("meta", {}).get("theta_cache_only", info["theta"]))
    cache = load_cache(cache_path, model)
    view = cache.replace(mode="faiss", k=k, query_chunk=50)
    plans = _settings(model, cache, view, theta_only, surrogate_theta, m)
    x, y = load_dataset(data, "test", data_root=data_root).balanced(n).tensors()
    grid = [g / 255 for g in grid_255]

    def pgd(e: float) -> PGD:
        return PGD(eps=e, steps=steps, seed=seed)

    out.mkdir(parents=True, exist_ok=True)
    per_image: dict[str, list[float]] = {}
    summary: dict[str, Any] = {}
    for name, settings in plans.items():
        needs = []
        for setting, (attacked, judged) in settings.items():
            if name == "baseline" and setting == "transfer":
                continue  # the same as white-box
            t1 = time.perf_counter()
            need = minimal_eps(attacked, x, y, pgd, grid, judge=judged)
            needs.append(need)
            key = f"{name}/{setting}"
            per_image[key] = (need * 255).tolist()
            summary[key] = {**summarize_minimal(need), "seconds": round(time.perf_counter() - t1)}
            log.info("%s: %s", key, summary[key])
            write_json(out / "minimal.json", {"summary": summary, "per_image_255": per_image})
        worst = torch.stack(needs).amin(0)
        per_image[f"{name}/worst"] = (worst * 255).tolist()
        summary[f"{name}/worst"] = summarize_minimal(worst)
    result = {"summary": summary, "per_image_255": per_image, "n": n, "grid_255": list(grid_255),
              "steps": steps, "surrogate_theta": surrogate_theta, "k": k, "m": m,
              "theta": view.theta, "lam": view.lam, "theta_cache_only": theta_only,
              "layers": view.layers, "seconds": round(time.perf_counter() - t0, 1),
              **run_metadata(None, seed)}
    write_json(out / "minimal.json", result)
    return result
