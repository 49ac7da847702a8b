"""Every ``advimage`` subcommand's --help reads like a product: a user-facing description and
one or two examples, each of which the parser accepts as written."""

from __future__ import annotations

import argparse
import shlex

import pytest

from advimage.cli import build_parser


def _parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every subcommand, groups (``eval``, ``nim``, ...) included."""
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                yield (*path, name), child
                yield from _parsers(child, (*path, name))


PARSERS = dict(_parsers(build_parser()))


def _examples(p: argparse.ArgumentParser) -> list[str]:
    lines = (p.epilog or "").splitlines()
    return [x.strip() for x in lines[lines.index("examples:") + 1:]] if "examples:" in lines \
        else []


def test_every_subcommand_is_walked() -> None:
    assert len(PARSERS) >= 24 and ("eval", "transfer") in PARSERS and ("compare",) in PARSERS


@pytest.mark.parametrize("path", list(PARSERS), ids=" ".join)
def test_help_has_description_and_examples(path: tuple[str, ...], capsys) -> None:
    p = PARSERS[path]
    desc = p.description or ""
    assert len(desc) >= 40 and desc[0].isupper() and desc.rstrip().endswith((".", ")")), desc
    assert "thin" not in desc.lower() and "argument parsing" not in desc.lower()
    examples = _examples(p)
    assert 1 <= len(examples) <= 2, p.epilog
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    for ex in examples:
        assert ex.startswith("advimage " + " ".join(path)), ex
        assert ex in out  # the epilog's line breaks survive the help formatter


@pytest.mark.parametrize("path", list(PARSERS), ids=" ".join)
def test_examples_parse(path: tuple[str, ...]) -> None:
    for ex in _examples(PARSERS[path]):
        argv = shlex.split(ex, comments=True)[1:]
        args = build_parser().parse_args(argv)  # SystemExit 2 on a bad example
        assert callable(getattr(args, "func", None)), ex
