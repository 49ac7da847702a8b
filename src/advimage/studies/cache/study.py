"""Experiments of Orhan (2018), "A Simple Cache Model for Image Recognition", on CIFAR-10.

Three studies, each writing JSON (and per-image arrays) under an output folder so the report
(``reports/cache/``) can be rebuilt from them:

- ``accuracy``: baseline vs tuned cache vs cache-only test accuracy of a network, theta and
  lambda tuned on held-out TRAINING images, with a paired bootstrap of the gain.
- ``depth``: cache-only accuracy with keys from one layer at a time (the paper: late layers
  but not the output help most).
- ``robust`` (in :mod:`advimage.studies.cache.robust`): transfer and white-box attacks.

Embeddings are cached on disk (``feats_dir``), so reruns skip the network passes.
Run ``python -m advimage.studies.cache.study {accuracy,depth,robust} --help``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advimage.data import load_dataset
from advimage.defend.cache import CacheModel, save_cache
from advimage.defend.cache.features import features_and_logits
from advimage.defend.cache.ops import mix_log_probs
from advimage.models.classifier import ImageClassifier
from advimage.models.hub import load_model
from advimage.studies.cache.minimal import minimal_study
from advimage.studies.cache.robust import class_topm_attacks, robustness_study
from advimage.studies.cache.stats import paired_bootstrap
from advimage.studies.cache.tune import DEFAULT_LAMBDAS, DEFAULT_THETAS, embed_dataset, sweep_grid
from advimage.utils import run_metadata, write_json

__all__ = ["accuracy_study", "cached_embeddings", "depth_study"]

log = logging.getLogger(__name__)

DEPTH_LAYERS = ("layer1.2", "layer2.2", "layer3.0", "layer3.1", "layer3.2", "pool", "linear")


def cached_embeddings(model: ImageClassifier, layers: Sequence[str], ds: Any, path: Path,
                      batch_size: int = 256) -> dict[str, torch.Tensor]:
    """``embed_dataset`` of ``ds``, loaded from ``path`` when it exists (else computed, saved)."""
    if path.exists():
        return torch.load(path, weights_only=True)
    emb = embed_dataset(model, layers, ds.batches(batch_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val = max(1, round(n * val_fraction))
    return perm[:n_val], perm[n_val:]


def _tune(model: ImageClassifier, layers: Sequence[str], train: dict[str, torch.Tensor],
          val_fraction: float, seed: int, fixed: tuple[float, float, float] | None,
          ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """``(grid, best, cache-only best)`` on held-out training images, or the ``fixed`` values."""
    if fixed is not None:
        return [], {"theta": fixed[0], "lam": fixed[1], "accuracy": None}, \
            {"theta": fixed[2], "accuracy": None}
    val, rest = _split(train["labels"].numel(), val_fraction, seed)
    probe = CacheModel(model, layers, train["phi"][rest], train["labels"][rest], lam=1.0)
    thetas = list(DEFAULT_THETAS)
    with torch.no_grad():
        lp_val = probe.memory_log_probs(train["phi"][val].float(), thetas)  # (T, V, K)
    grid = sweep_grid(F.log_softmax(train["logits"][val], 1), lp_val, train["labels"][val],
                      thetas, DEFAULT_LAMBDAS)
    best = max(grid, key=lambda r: (r["accuracy"], -r["nll"]))
    only = max((r for r in grid if r["lam"] == 1.0), key=lambda r: (r["accuracy"], -r["nll"]))
    return grid, best, only


def accuracy_study(model: ImageClassifier, name: str, *, data_root: str | None, out: Path,
                   feats_dir: Path, layers: Sequence[str] = ("layer3.1", "layer3.2", "pool"),
                   val_fraction: float = 0.1, n_boot: int = 2000, seed: int = 0,
                   cache_out: Path | None = None,
                   fixed: tuple[float, float, float] | None = None, test_mode: str = "exact",
                   k: int = 100, data: str = "cifar10", train_limit: int | None = None,
                   test_limit: int | None = None) -> dict[str, Any]:
    """Tune on held-out train images, score the 10k test images; write ``results.json``.

    ``fixed = (theta, lam, theta_cache_only)`` skips the tuning (values chosen earlier on
    held-out training images); ``test_mode="faiss"`` scores the test set with the top-``k``
    keys per query (the cheap approximation, agreement with exact measured separately).
    ``data``, ``train_limit``, ``test_limit``: dataset and class-balanced subsets (tests).
    """
    t0 = time.perf_counter()
    tag = f"{name}_{'+'.join(layers)}"
    train_ds = load_dataset(data, "train", data_root=data_root)
    test_ds = load_dataset(data, "test", data_root=data_root)
    train_ds = train_ds if train_limit is None else train_ds.balanced(train_limit)
    test_ds = test_ds if test_limit is None else test_ds.balanced(test_limit)
    train = cached_embeddings(model, layers, train_ds,
                              feats_dir / f"{tag}_train{len(train_ds)}.pt")
    test = cached_embeddings(model, layers, test_ds, feats_dir / f"{tag}_test{len(test_ds)}.pt")
    grid, best, only = _tune(model, layers, train, val_fraction, seed, fixed)
    cache = CacheModel(model, layers, train["phi"], train["labels"], theta=best["theta"],
                       lam=best["lam"])
    scorer = cache.replace(mode="faiss", k=k, query_chunk=64) if test_mode == "faiss" else cache
    y = test["labels"]
    lp_model = F.log_softmax(test["logits"], 1)  # (N, K)
    with torch.no_grad():
        lp_mem = scorer.memory_log_probs(test["phi"].float(), [best["theta"], only["theta"]])
    pred = {
        "baseline": lp_model.argmax(1),
        "cache": mix_log_probs(lp_model, lp_mem[0], best["lam"]).argmax(1),
        "cache_only": lp_mem[1].argmax(1),
    }
    correct = {k: (v == y).numpy() for k, v in pred.items()}
    res: dict[str, Any] = {
        "model": name, "layers": list(layers), "n_keys": int(train["labels"].numel()),
        "key_dim": int(train["phi"].shape[1]), "n_test": int(y.numel()),
        "tuned_here": fixed is None, "test_mode": test_mode,
        "k": k if test_mode == "faiss" else None,
        "theta": best["theta"], "lam": best["lam"], "theta_cache_only": only["theta"],
        "val_accuracy": best["accuracy"], "val_cache_only_accuracy": only["accuracy"],
        **{f"{k}_test_accuracy": float(v.mean()) for k, v in correct.items()},
        "gain_cache": paired_bootstrap(correct["cache"], correct["baseline"], n_boot, seed),
        "gain_cache_only": paired_bootstrap(correct["cache_only"], correct["baseline"], n_boot,
                                            seed),
        "grid": grid, "seconds": round(time.perf_counter() - t0, 1), **run_metadata(None, seed),
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "correct.npz", **correct)
    write_json(out / "results.json", res)
    if cache_out is not None:
        save_cache(cache, cache_out, meta={"theta_cache_only": only["theta"], "tuning": "val 10%"})
    log.info("%s: baseline %.4f cache %.4f cache-only %.4f", name,
             res["baseline_test_accuracy"], res["cache_test_accuracy"],
             res["cache_only_test_accuracy"])
    return res


def _store(got: dict[str, torch.Tensor], name: str):  # noqa: ANN202
    def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        got[name] = output

    return hook


@torch.no_grad()
def _layer_features(model: ImageClassifier, layers: Sequence[str], ds: Any, folder: Path,
                    batch_size: int = 256) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Unit features of each layer alone (float16 memmaps in ``folder``) and the labels."""
    n = len(ds)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "labels.npy"
    x0, _ = next(iter(ds.batches(2)))
    dims = {name: features_and_logits(model, x0, [name])[1].shape[1] for name in layers}
    mode = "r" if done.exists() else "w+"
    maps = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode=mode,
                                            dtype=np.float16, shape=(n, dims[name]))
            for name in layers}
    if not done.exists():
        labels, start = [], 0
        for x, y in ds.batches(batch_size):
            modules = dict(model.net.named_modules())
            got: dict[str, torch.Tensor] = {}
            hooks = [modules[m].register_forward_hook(_store(got, m)) for m in layers]
            model(x)
            for h in hooks:
                h.remove()
            for name in layers:
                maps[name][start:start + len(y)] = F.normalize(got[name].flatten(1), dim=1
                                                               ).half().numpy()
            labels.append(y)
            start += len(y)
        for m in maps.values():
            m.flush()
        np.save(done, torch.cat(labels).numpy())
    return ({k: torch.from_numpy(np.asarray(v)) for k, v in maps.items()},
            torch.from_numpy(np.load(done)))


def depth_study(model: ImageClassifier, name: str, *, data_root: str | None, out: Path,
                feats_dir: Path, layers: Sequence[str] = DEPTH_LAYERS, n_test: int = 1000,
                n_val: int = 1000, n_keys: int | None = None, seed: int = 0,
                data: str = "cifar10") -> dict[str, Any]:
    """Cache-only test accuracy with keys from each single layer; theta chosen on train."""
    t0 = time.perf_counter()
    train_ds = load_dataset(data, "train", data_root=data_root)
    if n_keys is not None:
        train_ds = train_ds.balanced(n_keys)
    test_ds = load_dataset(data, "test", data_root=data_root).balanced(n_test)
    k_tr, y_tr = _layer_features(model, layers, train_ds,
                                 feats_dir / f"{name}_layers_train{len(train_ds)}")
    k_te, y_te = _layer_features(model, layers, test_ds,
                                 feats_dir / f"{name}_layers_test{len(test_ds)}")
    val, rest = _split(len(y_tr), n_val / len(y_tr), seed)
    thetas = list(DEFAULT_THETAS)
    with torch.no_grad():
        base = float((model(test_ds.tensors()[0]).argmax(1) == y_te).float().mean())
    rows = []
    for layer in layers:
        t1 = time.perf_counter()
        probe = CacheModel(model, [layer], k_tr[layer][rest], y_tr[rest], lam=1.0)
        with torch.no_grad():
            acc_val = (probe.memory_log_probs(k_tr[layer][val].float(), thetas).argmax(-1)
                       == y_tr[val]).float().mean(1)  # (T,)
            del probe
            full = CacheModel(model, [layer], k_tr[layer], y_tr, lam=1.0)
            acc_te = (full.memory_log_probs(k_te[layer].float(), thetas).argmax(-1)
                      == y_te).float().mean(1)  # (T,)
        t = int(acc_val.argmax())
        rows.append({"layer": layer, "dim": int(k_tr[layer].shape[1]), "theta": thetas[t],
                     "val_accuracy": float(acc_val[t]), "test_accuracy": float(acc_te[t]),
                     "test_accuracy_by_theta": dict(zip(map(str, thetas), acc_te.tolist(),
                                                        strict=True)),
                     "seconds": round(time.perf_counter() - t1, 1)})
        log.info("depth %s %s: theta %g test %.4f", name, layer, thetas[t], float(acc_te[t]))
        res = {"model": name, "n_test": n_test, "n_val": n_val, "n_keys": len(rest) + len(val),
               "baseline_test_accuracy": base, "rows": rows,
               "seconds": round(time.perf_counter() - t0, 1)}
        write_json(out / "depth.json", res)
    return res


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", choices=["accuracy", "depth", "robust", "topm", "minimal"])
    p.add_argument("--model", required=True, help="checkpoint, e.g. ../shared/models/resnet20-*.th")
    p.add_argument("--name", required=True, help="short model name for file names")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--feats", default=Path("runs/cache/feats"), type=Path)
    p.add_argument("--cache", default=None, type=Path, help="cache path (robust: input)")
    p.add_argument("--n", type=int, default=500, help="test images for attacks / depth")
    p.add_argument("--layers", default="layer3.1,layer3.2,pool", help="accuracy: key layers")
    p.add_argument("--keys", type=int, default=None, help="depth: class-balanced key subset")
    p.add_argument("--fixed", default=None, help="accuracy: THETA,LAM,THETA_ONLY (no tuning)")
    p.add_argument("--test-mode", default="exact", choices=["exact", "faiss"])
    p.add_argument("--steps", type=int, default=10, help="robust: PGD/APGD steps at eps 8/255")
    p.add_argument("--curve-steps", type=int, default=5, help="robust: PGD steps, other eps")
    p.add_argument("--curve-eps", default="2,4", help="robust: other budgets, x/255")
    p.add_argument("--eval-mode", default="faiss", choices=["exact", "faiss"])
    p.add_argument("--grid", default="0.25,0.5,0.75,1,1.25,1.5,2,2.5,3,4,6,8,16",
                   help="minimal: ascending budgets, x/255")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(a.threads)
    model = load_model(a.model)[0].eval()
    if a.study == "accuracy":
        accuracy_study(model, a.name, data_root=a.data_root, out=a.out, feats_dir=a.feats,
                       cache_out=a.cache, test_mode=a.test_mode, layers=a.layers.split(","),
                       fixed=tuple(float(v) for v in a.fixed.split(",")) if a.fixed else None)
    elif a.study == "depth":
        depth_study(model, a.name, data_root=a.data_root, out=a.out, feats_dir=a.feats,
                    n_test=a.n, n_val=a.n, n_keys=a.keys)
    elif a.study == "topm":
        class_topm_attacks(model, a.cache, data_root=a.data_root, out=a.out, n=a.n,
                           steps=a.steps)
    elif a.study == "minimal":
        minimal_study(model, a.cache, data_root=a.data_root, out=a.out, n=a.n, steps=a.steps,
                      grid_255=tuple(float(g) for g in a.grid.split(",")))
    else:
        robustness_study(model, a.cache, data_root=a.data_root, out=a.out, n=a.n,
                         steps=a.steps, curve_steps=a.curve_steps, eval_mode=a.eval_mode,
                         curve_eps=tuple(float(e) / 255 for e in a.curve_eps.split(",")))


if __name__ == "__main__":
    main()
