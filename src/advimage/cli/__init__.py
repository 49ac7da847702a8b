"""The ``advimage`` command line: thin argument parsing over the library.

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
from collections.abc import Sequence

from advimage.allocator import retain_freed_memory
from advimage.cli.attack import add_attack_parser, add_demo_parser
from advimage.cli.cache import add_cache_parser
from advimage.cli.common import CliError
from advimage.cli.detect import add_detect_parser
from advimage.cli.eval import add_eval_parser
from advimage.cli.models import add_models_parser
from advimage.cli.nim import add_nim_parser
from advimage.cli.run import add_report_parser, add_run_parser
from advimage.cli.train import add_distill_parser, add_train_parser

__all__ = ["CliError", "build_parser", "main"]

# the subcommands in `advimage --help` order
_COMMANDS = (add_demo_parser, add_train_parser, add_distill_parser, add_models_parser,
             add_attack_parser, add_eval_parser, add_run_parser, add_report_parser,
             add_cache_parser, add_detect_parser, add_nim_parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``advimage`` parser with every subcommand (``args.func`` runs the command)."""
    p = argparse.ArgumentParser(prog="advimage", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return p


def _error(msg: str) -> int:
    print(f"advimage: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status.

    User errors (:class:`CliError`, ``ValueError``, missing files, unknown names) print one
    line and return 2; Ctrl-C returns 130. argparse's own usage errors exit 2 as usual.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CliError as err:  # raised by an option's type, e.g. `--eps 0`
        return _error(str(err))
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    retain_freed_memory()
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise CliError(f"--threads must be >= 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        return _error(msg.splitlines()[0] if msg else type(err).__name__)
    except KeyboardInterrupt:
        print("advimage: interrupted (checkpoints written so far are kept)", file=sys.stderr)
        return 130
