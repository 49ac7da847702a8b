"""Options and helpers that several ``advimage`` subcommands share.

One place declares ``--device/--seed/--no-progress/--threads/-v``, the model/data options, the
training recipe options and how they become a :class:`~advimage.train.TrainConfig`, so every
command spells them, and fills them in, the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from advimage.cli.cli_error import CliError
from advimage.cli.track_options import add_track_arg

if TYPE_CHECKING:  # the CLI imports torch-heavy modules lazily, when a command runs
    import torch
    from torch import nn

    from advimage.data.base import ImageDataset
    from advimage.train import TrainConfig

__all__ = [
    "CliError",
    "add_common_args",
    "add_model_data_args",
    "add_train_args",
    "attack_kwargs",
    "check_out_arg",
    "eps_list",
    "load_data",
    "load_model_on_device",
    "parse_shard",
    "train_config",
]


def add_common_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--seed``, ``--no-progress``, ``--threads``, ``-v`` (``main`` applies
    ``--threads`` and ``-v`` before the command runs)."""
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` (1-based, as jest and playwright count) as the runner's ``(I - 1, N)``."""
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit() and 1 <= int(i) <= int(n)):
        raise CliError(f"--shard must be I/N with 1 <= I <= N (e.g. 1/2), got {text!r}")
    return int(i) - 1, int(n)


def eps_list(text: str) -> list[float]:
    """Comma-separated budgets (``8/255`` or ``0.03``), each > 0."""
    from advimage.validation import parse_fraction

    values = [parse_fraction(t, "eps") for t in text.split(",") if t.strip()]
    if not values:
        raise CliError("--eps needs at least one value, e.g. 8/255 or 2/255,4/255,8/255")
    for v in values:
        if not v > 0:
            raise CliError(f"eps must be > 0, got {v:g}")
    return values


# ----------------------------------------------------------------------------- models and data
def add_model_data_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    """``--model`` and the evaluation data: ``--data/--data-root/--split/--image-size/--limit``,
    ``--class-map`` and ``--batch-size`` (sizes and counts must be positive: checked at parse
    time, one line)."""
    from advimage.cli.data_options import class_map_option, positive_int

    p.add_argument(
        "--model",
        required=model_required,
        help="checkpoint (.safetensors), reference file (.th/.pt/.pth), bundled[:NAME], "
             "hf:ORG/NAME[@REV] or a transformers model folder (needs advimage[hf]), or "
             "torchscript:PATH with its PATH.json sidecar (input_shape, mean, std, classes; "
             "runs the file's code)",
    )
    p.add_argument("--data", default="digits", help="dataset: digits|cifar10|mnist|folder|...")
    p.add_argument("--data-root", default=None, help="folder holding the dataset")
    p.add_argument("--download", action="store_true",
                   help="fetch the dataset's official files (cifar10, cifar100, mnist, "
                        "fashion-mnist, svhn; SHA-256 checked, resumable) into --data-root, or "
                        "$ADVIMAGE_CACHE/<name> / ~/.cache/advimage/<name> without it")
    p.add_argument("--split", default="test", choices=["train", "test", "all"],
                   help="train|test (default: test); 'all' = every image of a folder tree "
                        "without train/ and test/ folders (it is refused otherwise)")
    p.add_argument("--image-size", type=positive_int("--image-size"), default=None,
                   help="resize/crop size (folder data)")
    p.add_argument("--class-map", type=class_map_option, default=None, metavar="FOLDER=CLASS,...",
                   help="folder data: label of each class folder, CLASS being the model's class "
                        "index or name, e.g. kitty=cat,puppy=5 (default: folders match the "
                        "model's class names, case-insensitive; by sorted position for models "
                        "without names)")
    p.add_argument(
        "--limit",
        type=positive_int("--limit"),
        default=None,
        help="use N images, class-balanced (the first N/K of each class)",
    )
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=256)


def load_model_on_device(a: argparse.Namespace) -> tuple[nn.Module, dict, torch.device]:
    """``(model, meta, device)`` for ``--model`` on ``--device`` (pass the model on to
    :func:`load_data`, which labels the data for it)."""
    from advimage.models.hub import load_model
    from advimage.utils import resolve_device

    dev = resolve_device(a.device)
    model, meta = load_model(a.model)
    return model.to(dev), meta, dev


def load_data(
    a: argparse.Namespace, split: str = "test", classes: list[str] | None = None,
    model: nn.Module | None = None,
) -> ImageDataset:
    """``--data`` ``split``, resized by ``--image-size`` and cut to ``--limit`` (balanced).

    Labels follow ``classes`` (default: ``model``'s class names; a greyscale model gets
    1-channel images where the dataset can give them): folder trees map their folders to them by
    name (``--class-map`` overrides); the dataset records the mapping it used
    (``ds.describe()``). Labels beyond the model's outputs are refused.
    """
    from advimage.cli.data_options import check_labels_fit, data_kwargs
    from advimage.data import load_dataset

    kw = data_kwargs(a, classes, model)
    ds = load_dataset(a.data, split, data_root=a.data_root, **kw,
                      download=getattr(a, "download", False),
                      download_progress=not getattr(a, "no_progress", False))
    check_labels_fit(a, ds, model)
    limit = getattr(a, "limit", None)
    if limit is not None:
        if limit < 1:
            raise CliError(f"--limit must be >= 1, got {limit}")
        ds = ds.balanced(limit)  # class-balanced: CIFAR-10's order is sorted by class
    return ds


def attack_kwargs(
    a: argparse.Namespace, name: str, eps: float, strict: bool = True
) -> dict[str, Any]:
    """Options for attack ``name``.

    --steps/--restarts go only to attacks that have them: an error for a single attack
    (``strict``), skipped for the attacks of a grid that lack them (e.g. fgsm).
    """
    from dataclasses import fields

    from advimage.attacks import attack_class

    allowed = {f.name for f in fields(attack_class(name)) if f.init}
    kw: dict[str, Any] = {"eps": eps, "norm": a.norm, "seed": a.seed}
    for key in ("steps", "restarts"):
        value = getattr(a, key, None)
        if value is None:
            continue
        if key not in allowed:
            if not strict:
                continue
            raise CliError(f"attack {name!r} has no --{key} option")
        kw[key] = value
    return kw


# ----------------------------------------------------------------------------- training recipe
# (dest, flag, type, help); None help = no help line. Their defaults are None, i.e. "the
# preset's value, else TrainConfig's", unless a command passes its own ``defaults``.
_RECIPE: tuple[tuple[str, str, Any, str | None], ...] = (
    ("data", "--data", None, None),
    ("data_root", "--data-root", None, None),
    ("epochs", "--epochs", int, None),
    ("batch_size", "--batch-size", int, None),
    ("lr", "--lr", float, None),
    ("momentum", "--momentum", float, None),
    ("weight_decay", "--weight-decay", float, None),
    ("warmup_epochs", "--warmup-epochs", float, None),
    ("label_smoothing", "--label-smoothing", float, None),
    ("augment", "--augment", None, None),
    ("train_limit", "--train-limit", int, None),
    ("test_limit", "--test-limit", int, None),
)
# TrainConfig fields that the options above (and --model / --adv-*) fill under the same name
_CONFIG_KEYS = ("model", "epochs", "batch_size", "lr", "weight_decay", "momentum", "augment",
                "label_smoothing", "warmup_epochs", "train_limit", "test_limit", "adv_eps",
                "adv_steps")


def add_train_args(
    p: argparse.ArgumentParser,
    *,
    presets: bool = True,
    skip: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """The training recipe options that :func:`train_config` reads, and ``--out/--no-resume``.

    Args:
        p: the subcommand's parser.
        presets: also ``--preset``, ``--quick`` and ``--model`` (an architecture name).
        skip: recipe dests left out (e.g. ``("momentum",)``).
        defaults: per-dest defaults replacing None (a command with a fixed recipe).
        helps: per-dest help texts replacing the generic ones.
    """
    defaults = dict(defaults or {})
    helps = {
        "out": "run folder (resumed if it holds a checkpoint)",
        "no_resume": "start over even if a checkpoint exists",
        **(helps or {}),
    }
    unknown = set(defaults) | set(helps) | set(skip)
    unknown -= {dest for dest, *_ in _RECIPE} | {"out", "no_resume"}
    if unknown:  # a programming error in a parser definition, not user input
        raise TypeError(f"unknown training option(s) {sorted(unknown)}")
    if presets:
        p.add_argument(
            "--preset", default=None, help="named schedule (see advimage.train.PRESETS)"
        )
        p.add_argument("--quick", action="store_true", help="tiny CI-sized run")
        p.add_argument(
            "--model", default=None, help="architecture name (see `advimage models list`)"
        )
    for dest, flag, kind, text in _RECIPE:
        if dest in skip:
            continue
        kw: dict[str, Any] = {"default": defaults.get(dest), "help": helps.get(dest, text)}
        if kind is not None:
            kw["type"] = kind
        if dest == "augment":
            kw["choices"] = ["standard", "none", "jitter"]
        p.add_argument(flag, **kw)
    p.add_argument("--out", required=True, help=helps["out"])
    p.add_argument("--no-resume", action="store_true", help=helps["no_resume"])
    add_track_arg(p)  # --track, as `run` and `nim pretrain` have it


def train_config(a: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The :class:`TrainConfig` of parsed :func:`add_train_args` options.

    The preset (``--quick`` or ``--preset``) first, then every option that is not None, then
    ``--seed``, then ``fixed`` (values a command does not let the user choose).
    """
    from advimage.train import PRESETS, TrainConfig

    preset = "quick" if getattr(a, "quick", False) else getattr(a, "preset", None)
    base: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    for key in _CONFIG_KEYS:
        v = getattr(a, key, None)
        if v is not None:
            base[key] = v
    if a.data is not None:
        base["dataset"] = a.data
    if a.data_root is not None:
        base["data_root"] = a.data_root
    base["seed"] = a.seed
    base.update(fixed)
    return TrainConfig.from_dict(base)


# ----------------------------------------------------------------------------- --out
def check_out_arg(a: argparse.Namespace, kind: str = "dir", *suffixes: str) -> None:
    """Check ``a.out`` before any work (:func:`advimage.outpath.check_out`): ``kind`` "dir"
    (an existing file is refused), "file" (a folder, or a path without one of ``suffixes``, is
    refused) or "prefix" (a folder is refused); an unset ``--out`` passes."""
    from advimage.outpath import check_out

    check_out(getattr(a, "out", None), kind, suffixes=suffixes)
