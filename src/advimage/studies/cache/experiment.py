"""Clean-accuracy experiment of Orhan (2018), "A Simple Cache Model for Image Recognition".

Tunes theta/lambda on held-out training images, builds the cache over the whole training set
and reports test accuracy of the baseline network, the tuned cache model and the cache-only
model (lambda = 1, its own best theta), plus FAISS top-k agreement with the exact cache on a
test subset. The paper's direction: the cache adds roughly 0.5-1 point over the baseline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from advimage.data import load_dataset
from advimage.defend.cache.index import import_faiss
from advimage.defend.cache.io import save_cache
from advimage.defend.cache.model import CacheModel
from advimage.defend.cache.ops import mix_log_probs
from advimage.models.classifier import ImageClassifier
from advimage.studies.cache.tune import DEFAULT_LAMBDAS, DEFAULT_THETAS, embed_dataset, tune_cache
from advimage.utils import run_metadata, write_json

__all__ = ["run_cache_experiment"]

log = logging.getLogger(__name__)


def _faiss_check(cache: CacheModel, q: torch.Tensor, exact: torch.Tensor,
                 k: int) -> dict[str, Any]:
    """FAISS top-``k`` cache-only scores of queries ``q`` against the exact ones."""
    try:
        import_faiss()
    except ImportError as exc:
        return {"skipped": str(exc)}
    t1 = time.perf_counter()
    approx = cache.approximate(k=k)
    build = time.perf_counter() - t1
    with torch.no_grad():
        a = approx.memory_log_probs(q)
        b = exact[: q.shape[0]]
    return {
        "n": int(q.shape[0]), "k": k, "nprobe": approx.nprobe,
        "nlist": approx.index.nlist, "build_seconds": round(build, 1),
        "agreement_cache_only": float((a.argmax(1) == b.argmax(1)).float().mean()),
        "max_abs_prob_diff_cache_only": float((a.exp() - b.exp()).abs().max()),
    }


def _subsets(data: str, data_root: str | Path | None, train_limit: int | None,
             test_limit: int | None) -> tuple[Any, Any]:
    """The (class-balanced, when limited) train and test splits."""
    train = load_dataset(data, "train", data_root=data_root)
    test = load_dataset(data, "test", data_root=data_root)
    if train_limit is not None:
        train = train.balanced(train_limit)
    if test_limit is not None:
        test = test.balanced(test_limit)
    return train, test


def _accuracies(cache: CacheModel, y: torch.Tensor, log_p_model: torch.Tensor,
                log_p_mem: torch.Tensor, theta_only: float) -> dict[str, Any]:
    """Cache settings and the test accuracy of baseline, cache and cache-only."""

    def accuracy(logp: torch.Tensor) -> float:
        return float((logp.argmax(1) == y).float().mean())

    return {
        "n_keys": int(cache.keys.shape[0]), "key_dim": int(cache.keys.shape[1]),
        "n_test": int(y.numel()), "theta": cache.theta, "lam": cache.lam,
        "theta_cache_only": theta_only,
        "baseline_test_accuracy": accuracy(log_p_model),
        "cache_test_accuracy": accuracy(mix_log_probs(log_p_model, log_p_mem[0], cache.lam)),
        "cache_only_test_accuracy": accuracy(log_p_mem[1]),
    }


def run_cache_experiment(
    model: ImageClassifier, *, data: str = "cifar10", data_root: str | Path | None = None,
    layers: Sequence[str] = ("layer3.1", "layer3.2", "pool"), flip: bool = False,
    val_fraction: float = 0.1, thetas: Sequence[float] = DEFAULT_THETAS,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS, train_limit: int | None = None,
    test_limit: int | None = None, faiss_check: int = 1000, faiss_k: int = 100,
    batch_size: int = 256, seed: int = 0, out: str | Path | None = None,
    cache_out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the experiment; return (and with ``out`` write ``results.json``) the numbers.

    Args:
        model: the trained classifier.
        data, data_root: dataset name and folder (train split for keys, test for scores).
        layers: layers forming the keys.
        flip: also store horizontal mirrors of the training images.
        val_fraction, thetas, lambdas: the tuning grid (see ``tune_cache``).
        train_limit, test_limit: class-balanced subsets (``None`` = everything).
        faiss_check: test images on which FAISS mode is compared with exact (0 = skip).
        faiss_k: candidates per query in that comparison.
        batch_size: images per forward pass.
        seed: validation split seed.
        out: folder for ``results.json``.
        cache_out: where to save the tuned cache (optional).
    """
    t0 = time.perf_counter()
    train, test = _subsets(data, data_root, train_limit, test_limit)
    cache, tuned = tune_cache(model, layers, train, val_fraction=val_fraction, thetas=thetas,
                              lambdas=lambdas, flip=flip, batch_size=batch_size, seed=seed)
    t_tune = time.perf_counter() - t0
    only = max((r for r in tuned.grid if r["lam"] == 1.0), key=lambda r: r["accuracy"],
               default=None)
    theta_only = only["theta"] if only else cache.theta
    emb = embed_dataset(model, cache.layers, test.batches(batch_size))
    y = emb["labels"]
    log_p_model = F.log_softmax(emb["logits"], dim=1)  # (N, K)
    with torch.no_grad():
        log_p_mem = cache.memory_log_probs(emb["phi"].float(), [cache.theta, theta_only])

    results = _accuracies(cache, y, log_p_model, log_p_mem, theta_only)
    results = {"data": data, "layers": list(cache.layers), "flip": flip, **results,
               "tuning": {k: v for k, v in tuned.as_dict().items() if k != "grid"},
               "grid": tuned.grid, "seconds_tune_and_build": round(t_tune, 1)}
    if faiss_check > 0:
        results["faiss"] = _faiss_check(cache, emb["phi"][:faiss_check].float(), log_p_mem[0],
                                        faiss_k)
    results["seconds_total"] = round(time.perf_counter() - t0, 1)
    results.update(run_metadata(None, seed))
    if cache_out is not None:
        save_cache(cache, cache_out, meta={"tuning": results["tuning"]})
    if out is not None:
        write_json(Path(out) / "results.json", results)
    log.info("cache experiment: baseline %.4f, cache %.4f, cache-only %.4f",
             results["baseline_test_accuracy"], results["cache_test_accuracy"],
             results["cache_only_test_accuracy"])
    return results
