"""Choose the cache's theta and lambda on held-out training images (Orhan, 2018).

The paper tunes the inverse temperature ``theta`` and the mixing weight ``lambda`` on a
validation set. Here a random ``val_fraction`` of the training set is held out, the rest
forms a temporary cache, and every (theta, lambda) pair is scored from ONE pass over the
keys: all thetas share each similarity block (``class_log_sum_exp`` takes several), and
lambda only mixes two stored distributions. The final cache then uses the whole training set
(the network's embeddings are computed once and reused).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.defend.cache.features import features_and_logits
from advimage.defend.cache.model import CacheModel, check_lambda, check_layers, check_theta
from advimage.defend.cache.ops import mix_log_probs
from advimage.models.classifier import ImageClassifier
from advimage.validation import check_images, check_labels

__all__ = ["DEFAULT_LAMBDAS", "DEFAULT_THETAS", "TuneResult", "embed_dataset", "sweep_grid",
           "tune_cache"]

log = logging.getLogger(__name__)

DEFAULT_THETAS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 70.0, 100.0)  # inverse temperatures
DEFAULT_LAMBDAS = tuple(i / 20 for i in range(21))  # cache weight 0, 0.05, ..., 1


@dataclass
class TuneResult:
    """Chosen ``theta``/``lam`` with their validation scores and the whole grid."""

    theta: float
    lam: float
    val_accuracy: float
    val_nll: float
    base_val_accuracy: float
    cache_only_val_accuracy: float
    n_keys: int
    n_val: int
    grid: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def embed_dataset(
    model: ImageClassifier, layers: Sequence[str], batches: Iterable[tuple[Tensor, Tensor]],
    *, flip: bool = False,
) -> dict[str, Tensor]:
    """Logits ``(N, K)``, unit keys ``phi`` ``(N, D)`` float16, labels ``(N,)`` of a dataset.

    With ``flip`` also ``phi_flip`` (the horizontal mirrors' keys, same order).
    """
    device = next(iter(model.parameters())).device
    model.eval()
    out: dict[str, list[Tensor]] = {"logits": [], "phi": [], "labels": [], "phi_flip": []}
    for x, y in batches:
        check_images(x)
        check_labels(y, x.shape[0], model.num_classes)
        x = x.to(device)
        logits, phi = features_and_logits(model, x, layers)
        out["logits"].append(logits.float())
        out["phi"].append(phi.to(torch.float16))
        out["labels"].append(y.to(device))
        if flip:
            out["phi_flip"].append(features_and_logits(model, x.flip(-1), layers)[1].half())
    if not out["labels"]:
        raise ValueError("the training data for the cache is empty")
    return {key: torch.cat(val) for key, val in out.items() if val}


def sweep_grid(
    log_p_model: Tensor, log_p_mem: Tensor, y: Tensor, thetas: Sequence[float],
    lambdas: Sequence[float],
) -> list[dict[str, float]]:
    """Accuracy and NLL (nats) for each (theta, lambda): ``log_p_mem`` is ``(T, N, K)``."""
    rows = []
    for t, theta in enumerate(thetas):
        for lam in lambdas:
            logp = mix_log_probs(log_p_model, log_p_mem[t], lam)  # (N, K)
            acc = float((logp.argmax(1) == y).float().mean())
            nll = float(-logp.gather(1, y[:, None]).clamp_min(-1e4).mean())
            rows.append({"theta": float(theta), "lam": float(lam), "accuracy": acc, "nll": nll})
    return rows


def _search(model: ImageClassifier, layers: list[str], emb: dict[str, Tensor],
            val_fraction: float, thetas: list[float], lambdas: list[float], flip: bool,
            seed: int, chunks: dict[str, Any]) -> TuneResult:
    """The grid search of :func:`tune_cache` on a seeded validation split of ``emb``."""
    n = emb["labels"].numel()
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training image for the cache")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(emb["phi"].device)
    val, rest = perm[:n_val], perm[n_val:]
    keys = [emb["phi"][rest]] + ([emb["phi_flip"][rest]] if flip else [])
    labels = [emb["labels"][rest]] * len(keys)
    probe = CacheModel(model, layers, torch.cat(keys), torch.cat(labels), theta=thetas[0],
                       lam=1.0, **chunks)
    y_val = emb["labels"][val]
    log_p_model = F.log_softmax(emb["logits"][val], dim=1)  # (V, K)
    with torch.no_grad():
        log_p_mem = probe.memory_log_probs(emb["phi"][val].float(), thetas)  # (T, V, K)
    grid = sweep_grid(log_p_model, log_p_mem, y_val, thetas, lambdas)
    best = max(grid, key=lambda r: (r["accuracy"], -r["nll"]))
    cache_only = max((r for r in grid if r["lam"] == 1.0), key=lambda r: r["accuracy"],
                     default={"accuracy": math.nan})
    return TuneResult(
        theta=best["theta"], lam=best["lam"], val_accuracy=best["accuracy"],
        val_nll=best["nll"],
        base_val_accuracy=float((log_p_model.argmax(1) == y_val).float().mean()),
        cache_only_val_accuracy=cache_only["accuracy"], n_keys=int(probe.keys.shape[0]),
        n_val=n_val, grid=grid,
    )


def tune_cache(
    model: ImageClassifier, layers: Sequence[str] | str, train: Any, *,
    val_fraction: float = 0.1, thetas: Sequence[float] = DEFAULT_THETAS,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS, flip: bool = False, batch_size: int = 256,
    seed: int = 0, **options: Any,
) -> tuple[CacheModel, TuneResult]:
    """Grid-search theta and lambda on held-out training images; return the full cache.

    Args:
        model: the classifier.
        layers: layer names forming the keys.
        train: an ``ImageDataset`` (or ``(x, y)`` batches) of training images.
        val_fraction: share of the training images held out for validation, in (0, 1).
        thetas: inverse temperatures to try (> 0).
        lambdas: cache weights to try, in [0, 1].
        flip: also store horizontal mirrors as keys (never a validation image's mirror).
        batch_size: images per forward pass.
        seed: seed of the validation split.
        options: further ``CacheModel`` options for the returned cache (``mode``, ``k``...).

    Returns:
        ``(cache, result)``: the cache over the WHOLE training set with the best
        ``theta``/``lam`` (highest validation accuracy, then lowest NLL), and the scores.
    """
    layers = check_layers(model, layers)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    thetas = [check_theta(t) for t in thetas]
    lambdas = [check_lambda(lam) for lam in lambdas]
    if not thetas or not lambdas:
        raise ValueError("thetas and lambdas must each hold at least one value")
    batches = train.batches(batch_size) if hasattr(train, "batches") else train
    emb = embed_dataset(model, layers, batches, flip=flip)
    result = _search(model, layers, emb, float(val_fraction), thetas, lambdas, flip, seed,
                     {k: v for k, v in options.items() if "chunk" in k})
    log.info("cache tuning: theta=%g lam=%g val acc %.4f (base %.4f)", result.theta,
             result.lam, result.val_accuracy, result.base_val_accuracy)
    all_keys = torch.cat([emb["phi"]] + ([emb["phi_flip"]] if flip else []))
    all_labels = torch.cat([emb["labels"]] * (2 if flip else 1))
    cache = CacheModel(model, layers, all_keys, all_labels, theta=result.theta,
                       lam=result.lam, flip=flip, **options)
    return cache, result
