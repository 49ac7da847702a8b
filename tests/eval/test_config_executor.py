"""The ``executor:`` config key and ``advimage run --executor/--address/--workers``."""

from __future__ import annotations

import pytest
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.errors import EnvironmentFailureError
from advimage.eval.config import ExecutorConfig, parse_config, same_run
from advimage.eval.executor import BatchesFailedError


def test_default_is_serial_and_keeps_old_config_json() -> None:
    cfg = parse_config(tiny_config())
    assert cfg.executor == ExecutorConfig(name="serial")
    assert "executor" not in cfg.to_dict()  # run folders of older versions still resume


@pytest.mark.parametrize("raw,want", [
    ("ray", ExecutorConfig(name="ray")),
    ({"name": "RAY", "address": "head:6379", "workers": 3, "gpus_per_worker": 0.5},
     ExecutorConfig(name="ray", address="head:6379", workers=3, gpus_per_worker=0.5)),
])
def test_executor_key_parses_and_round_trips(raw, want) -> None:
    cfg = parse_config(tiny_config(executor=raw))
    assert cfg.executor == want
    assert parse_config(cfg.to_dict()).executor == want


@pytest.mark.parametrize("raw,msg", [
    ("dask", "'executor.name' must be one of serial, ray"),
    ({"name": "ray", "nodes": 2}, "unknown key 'executor.nodes'"),
    ({"name": "ray", "workers": 0}, "'executor.workers' must be >= 1"),
    ({"name": "ray", "max_retries": -1}, "'executor.max_retries' must be >= 0"),
    ({"name": "ray", "gpus_per_worker": -0.5}, "'executor.gpus_per_worker' must be >= 0"),
])
def test_bad_executor_key_is_one_line(raw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_config(tiny_config(executor=raw))


def test_same_run_ignores_only_the_executor() -> None:
    a = parse_config(tiny_config()).to_dict()
    b = parse_config(tiny_config(executor="ray")).to_dict()
    c = parse_config(tiny_config(seed=1)).to_dict()
    assert a != b and same_run(a, b) and not same_run(a, c)


def test_failed_batches_message_and_exit_code() -> None:
    err = BatchesFailedError({7: "RuntimeError: x", 2: "RuntimeError: y"}, 3)
    assert str(err) == ("batch 2 failed on all 3 attempts (also batches 7): RuntimeError: y; "
                        "the other batches are stored, continue with --resume RUN")
    assert isinstance(err, EnvironmentFailureError) and err.exit_code == 1


def test_cli_address_needs_ray(tmp_path, write_config, capsys) -> None:
    cfg = write_config(tiny_config())
    rc = main(["run", str(cfg), "--out", str(tmp_path / "r"), "--executor", "serial",
               "--address", "h:1"])
    assert rc == 2 and "--address and --workers need --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_ray_errors_read_as_one_line() -> None:
    ray_exc = pytest.importorskip("ray.exceptions")
    from advimage.eval.executor_ray import _why

    died = ray_exc.ActorDiedError()
    assert _why(died) == "the Ray worker died (killed, crashed or its node was lost)"
    died.error_msg = "Task was killed due to the node running low on memory (OOM)."
    assert _why(died).startswith("the Ray worker ran out of memory")
