"""The ``advimage`` command line: argument parsing over the library, one line per error.

Every subcommand accepts ``--device auto|cpu|cuda`` and ``--seed``. Bad input exits with
status 2 and one line on stderr (``advimage: error: ...``), never a traceback. The CLI owns its
process, so it keeps freed CPU memory for reuse (:mod:`advimage.allocator`; eager CPU passes up to
2x faster; ``ADVIMAGE_RETAIN_MEMORY=0`` turns it off).

One module per command group (``attack``, ``train``, ``models``, ``eval``, ``run``, ``cache``,
``detect``, ``nim``), each adding its parsers; the options they share live in
:mod:`advimage.cli.common`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TextIO

from advimage.allocator import retain_freed_memory
from advimage.cli.attack import add_attack_parser, add_demo_parser
from advimage.cli.cache import add_cache_parser
from advimage.cli.common import CliError
from advimage.cli.compare import add_compare_parser
from advimage.cli.detect import add_detect_parser
from advimage.cli.eval import add_eval_parser
from advimage.cli.models import add_models_parser
from advimage.cli.nim import add_nim_parser
from advimage.cli.run import add_report_parser, add_run_parser
from advimage.cli.train import add_distill_parser, add_train_parser
from advimage.errors import ENVIRONMENT_ERROR, USER_ERROR, AdvimageError, classify

__all__ = ["CliError", "build_parser", "main"]

# the subcommands in `advimage --help` order
_COMMANDS = (add_demo_parser, add_train_parser, add_distill_parser, add_models_parser,
             add_attack_parser, add_eval_parser, add_run_parser, add_report_parser,
             add_compare_parser, add_cache_parser, add_detect_parser, add_nim_parser)


_DESCRIPTION = """Attack, detect, defend and audit PyTorch image classifiers against
adversarial images. Models take images in [0, 1]; budgets are in pixel units (8/255)."""

_EXAMPLES = """examples:
  advimage demo                                   attack the bundled digits model, HTML report
  advimage models eval --model hf:ORG/NAME --data imagenette --data-root DATA
  advimage attack --model ckpt.safetensors --data cifar10 --download --eps 8/255 --out adv/
  advimage run configs/robust-resnet20-quick.yaml --out runs/quick && advimage report runs/quick
  advimage eval detection --config configs/detection-resnet20-quick.yaml --out det/

every command: --device auto|cpu|cuda, --threads N, -v (log more; tracebacks on errors).
exit status: 0 done, 1 environment failure (disk, permissions) or internal error, 2 user error.
docs: README.md of the project."""


def build_parser() -> argparse.ArgumentParser:
    """The ``advimage`` parser with every subcommand (``args.func`` runs the command)."""
    from advimage import __version__

    p = argparse.ArgumentParser(prog="advimage", description=_DESCRIPTION, epilog=_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"advimage {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return p


def _error(msg: str, code: int = USER_ERROR) -> int:
    print(f"advimage: error: {msg}", file=sys.stderr)
    return code


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Python warnings as ``advimage: warning: ...`` lines, without source lines."""
    text = str(message).strip().splitlines()
    print(f"advimage: warning: {text[0] if text else category.__name__}", file=sys.stderr)


def _clear_progress_bars() -> None:
    """Close live tqdm bars (all ``leave=False``), so an error line starts on a clean line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _report(err: BaseException, verbose: bool) -> int:
    """One line (and with ``-v`` the traceback) for an error that ends a command."""
    _clear_progress_bars()
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    known = classify(err)
    if known is not None:
        return _error(*known)
    first = (str(err).strip().splitlines() or [""])[0]
    hint = "" if verbose else " (rerun with -v for the traceback)"
    return _error(f"internal error: {type(err).__name__}: {first}{hint}", ENVIRONMENT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status.

    Every error ends as one line on stderr (``advimage: error: ...``; ``-v`` adds the
    traceback) and the exit status of :mod:`advimage.errors`: 2 for user errors (bad options or
    input files, damaged files, an output folder of another configuration), 1 for environment
    failures (read-only or full disk) and unexpected errors; Ctrl-C returns 130. argparse's own
    usage errors exit 2 as usual.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except (CliError, AdvimageError, ValueError) as err:  # raised by an option's type
        return _report(err, False)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    retain_freed_memory()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            if getattr(args, "threads", None) is not None:
                if args.threads < 1:
                    raise CliError(f"--threads must be >= 1, got {args.threads}")
                import torch

                torch.set_num_threads(args.threads)
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("advimage: interrupted (checkpoints written so far are kept)", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - every error ends as one line (-v: traceback)
            return _report(err, verbose)
