"""The ``advimage`` parser tree: every subcommand's --help works, the shared options are the
same everywhere, and ``train`` / ``nim finetune`` build their TrainConfig the same way."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from advimage.cli import CliError, build_parser, main
from advimage.cli.common import train_config
from advimage.train import PRESETS, TrainConfig

COMMON = {"device", "seed", "no_progress", "threads", "verbose"}


def _leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every runnable subcommand."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
    for a in subs:
        for name, child in a.choices.items():
            yield from _leaves(child, (*path, name))


LEAVES = dict(_leaves(build_parser()))


def test_parser_tree_has_every_command() -> None:
    assert {" ".join(k) for k in LEAVES} == {
        "demo", "train", "distill", "models list", "models import", "models eval", "attack",
        "eval robust", "eval detection", "eval transfer", "eval minimal", "run", "report",
        "compare", "cache build",
        "cache tune", "detect calibrate", "detect score", "nim pretrain", "nim finetune",
    }


@pytest.mark.parametrize("path", [(), ("models",), ("eval",), ("cache",), ("detect",), ("nim",),
                                  *LEAVES], ids=lambda p: " ".join(p) or "advimage")
def test_help_exits_0(path: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: advimage") and " ".join(path) in out


def test_shared_options_everywhere_but_report_and_detection_seed() -> None:
    for path, p in LEAVES.items():
        dests = {a.dest for a in p._actions}
        if path in (("report",), ("compare",)):  # they read finished runs, compute nothing
            assert dests & COMMON == ({"verbose"} if path == ("compare",) else set()), path
            continue
        if path == ("eval", "detection"):  # the detector's seed is the config's
            assert dests & COMMON == {"device", "threads", "verbose"}, path
            continue
        assert COMMON <= dests, path
        seed = next(a for a in p._actions if a.dest == "seed")
        assert seed.default == (None if path == ("run",) else 0), path  # run: the config's


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_nim_finetune_config_matches_its_documented_recipe() -> None:
    a = _parse("nim", "finetune", "--nim", "r/nim", "--out", "o", "--seed", "3")
    want = TrainConfig(model="nim-vit", dataset="digits", epochs=30, batch_size=128, lr=0.02,
                       weight_decay=5e-4, warmup_epochs=1.0, label_smoothing=0.0,
                       augment="standard", seed=3)
    assert train_config(a, model="nim-vit") == want
    a = _parse("nim", "finetune", "--nim", "r/nim", "--out", "o", "--data", "cifar10",
               "--data-root", "d", "--train-limit", "64", "--test-limit", "32", "--lr", "0.1",
               "--augment", "jitter", "--epochs", "2")
    cfg = train_config(a, model="nim-vit")
    assert (cfg.dataset, cfg.data_root, cfg.train_limit, cfg.test_limit, cfg.lr, cfg.augment,
            cfg.epochs, cfg.momentum) == ("cifar10", "d", 64, 32, 0.1, "jitter", 2, 0.9)
    for flag in ("--preset", "--quick", "--model", "--momentum", "--adv-eps"):
        with pytest.raises(SystemExit):
            _parse("nim", "finetune", "--nim", "r/nim", "--out", "o", flag, "1")


def test_train_config_preset_then_options_then_seed() -> None:
    a = _parse("train", "--quick", "--epochs", "5", "--adv-eps", "8/255", "--seed", "7",
               "--out", "o")
    want = dict(PRESETS["quick"], epochs=5, adv_eps=8 / 255, seed=7)
    assert train_config(a) == TrainConfig(**want)
    a = _parse("distill", "--preset", "digits", "--data", "mnist", "--momentum", "0.5",
               "--out", "o")
    assert train_config(a) == TrainConfig(**dict(PRESETS["digits"], dataset="mnist",
                                                 momentum=0.5))
    assert train_config(_parse("train", "--out", "o")) == TrainConfig()


def test_nim_pretrain_takes_the_shared_options() -> None:
    a = _parse("nim", "pretrain", "--out", "o", "--no-progress", "--threads", "2", "-v",
               "--device", "cpu", "--seed", "4")
    assert (a.no_progress, a.threads, a.verbose, a.device, a.seed) == (True, 2, True, "cpu", 4)


@pytest.mark.parametrize(("argv", "got"), [(["demo", "--eps", "0"], 0.0),
                                           (["train", "--adv-eps=-1/255", "--out", "o"],
                                            -1 / 255)])
def test_bad_eps_in_an_option_type_is_one_line(argv: list[str], got: float, capsys) -> None:
    """An option's type raising CliError exits 2 with one line, not a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"advimage: error: eps must be > 0, got {got:g}\n"
    with pytest.raises(CliError):
        build_parser().parse_args(argv)  # main() is what turns it into the line


@pytest.mark.parametrize("module", ["advimage", "advimage.cli"])
def test_python_dash_m(module: str) -> None:
    r = subprocess.run([sys.executable, "-m", module, "models", "list"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("architectures: ") and "bundled weights: " in r.stdout


def test_version_and_user_facing_help(capsys) -> None:
    """`advimage --version` prints the package version; --help opens with what advimage does
    and ends with examples and the exit statuses (issue 21 item 4)."""
    from advimage import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"advimage {__version__}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Attack, detect, defend and audit PyTorch image classifiers" in out
    assert "examples:\n  advimage demo" in out and "thin argument parsing" not in out
    assert "exit status: 0 done, 1 environment failure" in out
