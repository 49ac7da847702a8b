"""``advimage cache build|tune``: the cache memory defense (Orhan, "A Simple Cache Model for
Image Recognition", NeurIPS 2018): embed a training set at some layers, or grid-search the
cache's inverse temperature theta and weight lambda on held-out training images first."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from advimage.cli.common import (
    CliError,
    add_common_args,
    add_model_data_args,
    check_out_arg,
    load_data,
    load_model_on_device,
)

if TYPE_CHECKING:
    from torch import nn

    from advimage.data.base import ImageDataset

__all__ = ["add_cache_parser", "cmd_cache_build", "cmd_cache_tune"]


def _cache_inputs(
    a: argparse.Namespace,
) -> tuple[nn.Module, list[str], ImageDataset, list[float], list[float]]:
    """``(model, layers, data, thetas, lambdas)`` of ``cache build|tune``'s options."""
    from advimage.studies.cache.tune import DEFAULT_LAMBDAS, DEFAULT_THETAS

    check_out_arg(a, "prefix")
    layers = [n.strip() for n in a.layers.split(",") if n.strip()]
    if not layers:
        raise CliError("--layers needs at least one layer name, e.g. layer3.2,pool")
    model, _, _ = load_model_on_device(a)
    thetas = [float(t) for t in a.thetas.split(",")] if getattr(a, "thetas", None) \
        else list(DEFAULT_THETAS)
    lambdas = [float(t) for t in a.lambdas.split(",")] if getattr(a, "lambdas", None) \
        else list(DEFAULT_LAMBDAS)
    return model, layers, load_data(a, a.split, model=model), thetas, lambdas


def cmd_cache_build(a: argparse.Namespace) -> int:
    """Build a cache at fixed theta/lambda and save it."""
    from advimage.defend.cache import CacheModel, save_cache

    model, layers, ds, _, _ = _cache_inputs(a)
    cache = CacheModel.build(model, layers, ds, flip=a.flip, batch_size=a.batch_size,
                             theta=a.theta, lam=a.lam)
    path = save_cache(cache, a.out, meta={"data": a.data, "split": a.split, "limit": a.limit})
    print(f"cache of {cache.keys.shape[0]} keys (dim {cache.keys.shape[1]}), "
          f"theta={cache.theta:g} lambda={cache.lam:g} -> {path}")
    return 0


def cmd_cache_tune(a: argparse.Namespace) -> int:
    """Pick theta/lambda by held-out accuracy, then build and save the cache."""
    from advimage.defend.cache import save_cache
    from advimage.studies.cache.tune import tune_cache

    model, layers, ds, thetas, lambdas = _cache_inputs(a)
    cache, res = tune_cache(model, layers, ds, val_fraction=a.val_fraction, thetas=thetas,
                            lambdas=lambdas, flip=a.flip, batch_size=a.batch_size, seed=a.seed)
    path = save_cache(cache, a.out, meta={"data": a.data, "split": a.split, "limit": a.limit,
                                   "tuning": res.as_dict()})
    print(f"theta={res.theta:g} lambda={res.lam:g}: validation accuracy {res.val_accuracy:.4f} "
          f"(model alone {res.base_val_accuracy:.4f}, cache only "
          f"{res.cache_only_val_accuracy:.4f}) on {res.n_val} held-out training images")
    print(f"cache of {cache.keys.shape[0]} keys -> {path}")
    return 0


def add_cache_parser(sub: Any) -> None:
    """Add ``cache build|tune`` to the ``advimage`` sub-command parsers."""
    ca = sub.add_parser("cache",
        description=("The cache memory defense of Orhan (2018), 'A Simple Cache Model for Image "
                     "Recognition': embed a training set into a cache of keys, or pick "
                     "theta/lambda by held-out accuracy first."),
        epilog=("examples:\n"
                "  advimage cache build --model bundled --layers fc1 --out cache\n"
                "  advimage cache tune --model bundled --layers fc1 --out cache"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="cache memory defense (Orhan 2018): build or tune a cache")
    csub = ca.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for name, func, text in (("build", cmd_cache_build, "embed a training set into a cache"),
                             ("tune", cmd_cache_tune, "grid-search theta/lambda, then build")):
        c = csub.add_parser(
            name, help=text, description=f"Cache model of Orhan (2018): {text}.",
            epilog=f"examples:\n  advimage cache {name} --model bundled --data digits "
                   "--layers fc1 --out cache",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_model_data_args(c)
        c.set_defaults(split="train")
        c.add_argument("--layers", required=True, help="comma-separated layer names")
        c.add_argument("--flip", action="store_true", help="also store horizontal mirrors")
        c.add_argument("--out", required=True, help="cache path (<out>.safetensors + .json)")
        if name == "build":
            c.add_argument("--theta", type=float, default=50.0, help="inverse temperature")
            c.add_argument("--lam", type=float, default=0.5, help="cache weight in [0, 1]")
        else:
            c.add_argument("--val-fraction", type=float, default=0.1)
            c.add_argument("--thetas", default=None, help="comma-separated grid (default 1..100)")
            c.add_argument("--lambdas", default=None, help="comma-separated grid (default 0..1)")
        add_common_args(c)
        c.set_defaults(func=func)
