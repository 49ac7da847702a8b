"""The Ray executor (``advimage run --executor ray``) stores exactly the serial run's results.

One local Ray session with 2 CPUs for the module. Every batch is seeded from (run seed, batch,
defense, attack), so the rows computed on Ray actors, in any order, after a killed worker or a
killed driver, must equal the serial run's, and example tensors byte for byte. The failure
tests use :class:`Tripwire`, a model wrapper that misbehaves only inside a Ray worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from harness_helpers import SRC, local_ray, tiny_config
from test_resume import _dump, _rows
from torch import Tensor, nn

from advimage.data.registry import load_dataset
from advimage.eval.config import parse_config
from advimage.eval.executor import BatchesFailedError, ExecutorError
from advimage.eval.runner import run_evaluation
from advimage.eval.store import ResultStore
from advimage.models.hub import load_model

ray = pytest.importorskip("ray")

N_IMAGES = 30
BATCH = 4  # 8 batches, the last of 2 images


@pytest.fixture(scope="module", autouse=True)
def ray_session():  # noqa: ANN201
    """One local Ray instance with 2 CPUs; workers import advimage from this checkout."""
    with local_ray(__name__) as info:
        yield info


def _config(**over: object) -> dict:
    cfg = tiny_config(
        data={"name": "digits", "split": "test", "limit": N_IMAGES, "batch_size": BATCH},
        attacks=[{"name": "fgsm", "eps": [0.1]},
                 {"name": "pgd", "eps": [0.1], "options": {"steps": 3}}],
        defenses=["none", {"name": "gaussian-noise", "options": {"sigma": 0.05}}],
        detectors=["msp"], examples=3, checks={"unbounded_steps": 3})
    return {**cfg, **over}


class Tripwire(nn.Module):
    """The bundled digits model that, in a Ray worker only, kills its process once after
    ``flags/arm`` appears (``kill``), raises on the clean pass of one batch (``fail``), or
    raises CUDA's out-of-memory error there (``oom``)."""

    def __init__(self, mode: str, flags: Path, target: Tensor | None = None) -> None:
        super().__init__()
        self.inner = load_model("bundled")[0]
        self.mode, self.flags, self.target = mode, flags, target
        self.driver = os.getpid()

    def forward(self, x: Tensor) -> Tensor:
        if os.getpid() != self.driver:
            if self.mode == "kill" and (self.flags / "arm").exists() \
                    and not (self.flags / "fired").exists():
                (self.flags / "fired").touch()
                os.kill(os.getpid(), signal.SIGKILL)
            hit = self.target is not None and x.shape == self.target.shape \
                and torch.equal(x, self.target)
            if self.mode == "fail" and hit:
                raise RuntimeError("tripwire: this batch always fails")
            if self.mode == "oom" and hit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.inner(x)


def _same(a: Path, b: Path) -> None:
    da, db = _dump(a), _dump(b)
    for table in da:
        assert da[table] == db[table], table
    for name in ("none", "gaussian-noise"):
        ex = f"examples/{name}.safetensors"
        assert (a / ex).read_bytes() == (b / ex).read_bytes()


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("serial") / "run"
    run_evaluation(parse_config(_config()), out, device="cpu")
    return out


def test_ray_equals_serial_with_data_only_on_the_driver(tmp_path, serial) -> None:
    root = tmp_path / "driver-only"
    root.mkdir()
    cfg = parse_config(_config(data={"name": "folder", "split": "all", "root": str(root),
                                     "limit": N_IMAGES, "batch_size": BATCH}))
    shutil.rmtree(root)  # the workers could not load it: batches reach them via the store
    ds = load_dataset("digits", "test").balanced(N_IMAGES)  # what the driver read
    done: list[int] = []
    run_evaluation(cfg, tmp_path / "ray", device="cpu", dataset=ds, executor="ray",
                   on_batch=done.append)
    assert sorted(done) == list(range(8))
    _same(tmp_path / "ray", serial)


def test_worker_killed_mid_batch_is_retried_elsewhere(tmp_path, serial) -> None:
    model = Tripwire("kill", tmp_path)
    arm = lambda b: (tmp_path / "arm").touch()  # noqa: E731  after the first commit
    run_evaluation(parse_config(_config()), tmp_path / "ray", device="cpu", model=model,
                   executor="ray", on_batch=arm)
    assert (tmp_path / "fired").exists()  # a worker did die mid-batch
    _same(tmp_path / "ray", serial)


def _target(batch: int) -> Tensor:
    ds = load_dataset("digits", "test").balanced(N_IMAGES)
    return ds.subset(range(batch * BATCH, min((batch + 1) * BATCH, N_IMAGES))).tensors()[0]


@pytest.mark.parametrize("mode,why", [("fail", "RuntimeError: tripwire"),
                                      ("oom", "out of memory at batch size 4")])
def test_a_batch_failing_every_attempt_is_named_and_the_rest_stored(tmp_path, mode,
                                                                    why) -> None:
    model = Tripwire(mode, tmp_path, _target(5))
    with pytest.raises(BatchesFailedError) as info:
        run_evaluation(parse_config(_config()), tmp_path / "ray", device="cpu", model=model,
                       executor="ray")
    msg = str(info.value)
    assert msg.startswith("batch 5 failed on all 3 attempts") and why in msg
    assert "\n" not in msg and info.value.failed.keys() == {5}
    stored = sorted(b for (b,) in _rows(tmp_path / "ray" / "results.sqlite",
                                        "SELECT batch FROM batches"))
    assert stored == [0, 1, 2, 3, 4, 6, 7]  # never silently short: the rest is committed
    with ResultStore(tmp_path / "ray" / "results.sqlite") as store:
        assert not store.get_meta("finished")


_DRIVER = """
import sys, time
from advimage.eval.config import parse_config
from advimage.eval.config_schema import ExecutorConfig
from advimage.eval.runner import run_evaluation
cfg = parse_config({cfg!r})
run_evaluation(cfg, sys.argv[1], device="cpu", on_batch=lambda b: time.sleep(1.0),
               executor=ExecutorConfig(name="ray", address=sys.argv[2], workers=2))
"""


def test_driver_sigkilled_then_resume_computes_only_the_rest(tmp_path, serial,
                                                              ray_session) -> None:
    run = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    address = ray_session.address_info["address"]
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER.format(cfg=_config()), str(run),
                             address], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "config.json").exists() and len(_rows(run / "results.sqlite",
                                                         "SELECT batch FROM batches")) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    before = {b for (b,) in _rows(run / "results.sqlite", "SELECT batch FROM batches")}
    assert 2 <= len(before) < 8
    done: list[int] = []
    run_evaluation(parse_config(_config()), run, device="cpu", resume=True, executor="ray",
                   on_batch=done.append)
    assert sorted(done) == sorted(set(range(8)) - before)  # only the unfinished batches
    _same(run, serial)


class OnlyOnDriver(nn.Module):
    """The bundled model, re-read from ``path`` wherever it is unpickled: a worker without the
    file cannot build it (a cluster without the data)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.inner = torch.load(path, weights_only=False)

    def __reduce__(self):  # noqa: ANN204
        return (OnlyOnDriver, (self.path,))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)


def test_a_worker_without_the_files_is_one_line_and_nothing_is_written(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(load_model("bundled")[0], path)
    model = OnlyOnDriver(path)
    path.unlink()  # only the driver's memory holds it now
    with pytest.raises(ExecutorError) as info:
        run_evaluation(parse_config(_config()), tmp_path / "ray", device="cpu", model=model,
                       executor="ray")
    msg = str(info.value)
    assert msg.startswith("a Ray worker could not build the run: FileNotFoundError")
    assert "\n" not in msg and str(path) in msg
    assert not (tmp_path / "ray").exists()  # no run directory to corrupt


def test_unreachable_address_is_one_line_from_the_cli(tmp_path, write_config, capsys) -> None:
    from advimage.cli import main

    cfg = write_config(_config())
    rc = main(["run", str(cfg), "--out", str(tmp_path / "r"), "--executor", "ray",
               "--address", "127.0.0.1:1", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err
    assert not (tmp_path / "r").exists()


def test_a_sweep_shares_the_workers_and_equals_each_serial_run(tmp_path, write_config,
                                                               serial) -> None:
    from advimage.cli import main

    other = {**_config(), "name": "other", "attacks": [{"name": "fgsm", "eps": [0.2]}]}
    first = write_config({**_config(), "name": "tiny"}, "a.yaml")
    second = write_config(other, "b.yaml")
    run_evaluation(parse_config(other), tmp_path / "other-serial", device="cpu")
    rc = main(["run", str(first), str(second), "--out", str(tmp_path / "sweep"), "--executor",
               "ray", "--workers", "2", "--device", "cpu", "--no-progress"])
    assert rc == 0
    _same(tmp_path / "sweep" / "tiny", serial)
    da, db = _dump(tmp_path / "sweep" / "other"), _dump(tmp_path / "other-serial")
    assert da == db
    assert (tmp_path / "sweep" / "other" / "report.html").exists()
