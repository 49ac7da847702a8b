"""``advimage models list|import|eval``: architectures, safe checkpoints, clean accuracy."""

from __future__ import annotations

import argparse
from typing import Any

from advimage.cli.attack import add_speed_args, check_speed_args, speed_model
from advimage.cli.common import (
    CliError,
    add_common_args,
    add_model_data_args,
    check_out_arg,
    load_data,
    load_model_on_device,
)

__all__ = ["add_models_parser", "cmd_models_eval", "cmd_models_import", "cmd_models_list"]


def cmd_models_list(a: argparse.Namespace) -> int:
    """Print the registered architectures and the bundled weights."""
    from advimage.models import list_models
    from advimage.models.hub import list_bundled

    print("architectures: " + ", ".join(list_models()))
    print("bundled weights: " + ", ".join(list_bundled()))
    return 0


def cmd_models_import(a: argparse.Namespace) -> int:
    """Convert a reference ``.th/.pt`` file into a ``.safetensors`` checkpoint.

    The class names are the reference's own (CIFAR-10, MNIST, ImageNet-1k) unless ``--classes``
    gives one per output; ``--dataset`` other than the reference's needs ``--classes``, so a
    checkpoint never pairs a dataset with another dataset's names. The written checkpoint is
    loaded back before the command reports success.
    """
    from advimage.models import import_reference, load_checkpoint, save_checkpoint
    from advimage.models.checkpoint import check_classes
    from advimage.models.reference import reference_dataset

    check_out_arg(a, "file", ".safetensors")
    model = import_reference(a.source, arch=a.arch)
    native = reference_dataset(model.arch)
    dataset = a.dataset or native
    if a.classes is not None:
        model.classes = check_classes(a.classes.split(","), model.num_classes, "--classes")
    elif dataset != native:
        raise CliError(
            f"--dataset {dataset}: the {model.arch} reference was trained on {native}, whose "
            f"class names are the only ones known; pass --classes with the {model.num_classes} "
            f"class names of {dataset}, comma-separated in output order")
    path = save_checkpoint(model, a.out, meta={"source": str(a.source), "dataset": dataset})
    load_checkpoint(path)  # what was written must load back
    print(f"imported {a.source} as {model.arch} ({dataset}, {model.num_classes} classes) -> "
          f"{path}")
    return 0


def cmd_models_eval(a: argparse.Namespace) -> int:
    """Print the model's clean accuracy on ``--data`` ``--split``."""
    from advimage.eval.accuracy import evaluate_accuracy
    from advimage.oom import oom_guard

    check_speed_args(a)
    model, _, dev = load_model_on_device(a)
    ds = load_data(a, a.split, model=model)
    n = len(ds)
    with oom_guard(a.batch_size):
        acc = evaluate_accuracy(
            speed_model(a, model, dev),
            ds.batches(a.batch_size),
            dev,
            progress=not a.no_progress,
            total=-(-n // a.batch_size),
        )
    print(f"{a.model}: accuracy {acc:.4f} on {n} {a.data}/{a.split} images")
    return 0


def add_models_parser(sub: Any) -> None:
    """Add ``models list|import|eval`` to the ``advimage`` sub-command parsers."""
    m = sub.add_parser("models",
        description=("List the registered architectures and bundled weights, import reference "
                     "checkpoints, measure clean accuracy."),
        epilog=("examples:\n"
                "  advimage models list\n"
                "  advimage models eval --model bundled --data digits"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list, import and evaluate models")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list",
        description=("The registered architectures and the bundled weights, which need no "
                     "download."),
        epilog=("examples:\n"
                "  advimage models list"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="registered architectures and bundled weights")
    add_common_args(ml)
    ml.set_defaults(func=cmd_models_list)
    mi = msub.add_parser("import",
        description=("Convert a reference .th/.pt model file into a safe checkpoint (safetensors "
                     "and a JSON sidecar)."),
        epilog=("examples:\n"
                "  advimage models import resnet20-12fca82f.th --out resnet20.safetensors"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="convert a reference .th/.pt model into a safe checkpoint")
    mi.add_argument("source")
    mi.add_argument("--arch", default=None, help="architecture (inferred from the file name)")
    mi.add_argument("--dataset", default=None,
                    help="dataset the model was trained on (default: the reference's own; "
                         "another one needs --classes)")
    mi.add_argument("--classes", default=None,
                    help="comma-separated class names, one per model output")
    mi.add_argument("--out", required=True, help="output .safetensors path")
    add_common_args(mi)
    mi.set_defaults(func=cmd_models_import)
    me = msub.add_parser("eval",
        description=("Clean accuracy of a model on a dataset split."),
        epilog=("examples:\n"
                "  advimage models eval --model bundled --data digits"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="clean accuracy of a model")
    add_model_data_args(me)
    add_speed_args(me)
    add_common_args(me)
    me.set_defaults(func=cmd_models_eval)
