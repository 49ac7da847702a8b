"""The detection run kind on Ray actors (``advimage eval detection --executor ray``).

One local Ray session with 2 CPUs for the module. A detection run's units are its scored sets
(the calibration images, the test images, one per attack); the actors receive the job once
through Ray's object store and compute whole sets, so the stored labels, predictions and
criterion scores must equal the serial run's exactly, including the ``adaptive`` attack that
reads the calibration scores the driver sends it. A unit that fails every attempt is named
(index and attack), the others are stored, and a rerun computes only the missing unit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness_helpers import local_ray
from torch import Tensor, nn

from advimage.cli import main
from advimage.eval.config_schema import ExecutorConfig
from advimage.eval.detection import run_detection
from advimage.eval.executor import BatchesFailedError
from advimage.studies.detection import build_job

ray = pytest.importorskip("ray")

CONFIG = """\
name: t
model: bundled
data: {name: digits}
calibration: {split: train, limit: 30}
test: {split: test, limit: 12}
detector: {criteria: "c1,c2t", set: {sigma: 0.05, n_noise: 2, c2t_lr: 0.005, c2t_cap: 10}}
fprs: [0.1]
batch_size: 5
attacks:
  - {label: g, kind: pgd, eps: [0.1, 0.2], options: {steps: 3}}
  - {label: ad, kind: adaptive, eps: [0.2], options: {steps: 5, eot: 1, step_size: 0.05, kappa: 0}}
"""
NAMES = ["g@0.1", "g@0.2", "ad@0.2"]  # units 2, 3, 4
ONE = ExecutorConfig(name="ray", workers=1)  # one actor to start: the failure tests stay cheap


@pytest.fixture(scope="module", autouse=True)
def ray_session():  # noqa: ANN201
    """One local Ray instance with 2 CPUs; workers import advimage from this checkout."""
    with local_ray(__name__) as info:
        yield info


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("cfg") / "det.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def serial(config, tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("serial") / "run"
    assert main(["eval", "detection", "--config", str(config), "--out", str(out)]) == 0
    return out


def _rows(run: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(run / "results.sqlite") as conn:
        return conn.execute(sql).fetchall()


def _stored(run: Path) -> dict[str, list[tuple]]:
    """Everything a detection run stores but its timings and sessions."""
    return {
        "units": _rows(run, "SELECT batch, split, attack FROM detection_units ORDER BY batch"),
        "samples": _rows(run, "SELECT * FROM detection_samples ORDER BY batch, sample"),
        "scores": _rows(run, "SELECT * FROM detection_scores "
                             "ORDER BY batch, criterion, sample"),
    }


def _untimed(run: Path) -> dict[str, Any]:
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))
    res["attacks"] = {n: {k: v for k, v in r.items() if not k.startswith("seconds")}
                      for n, r in res["attacks"].items()}
    return res


def test_ray_stores_exactly_the_serial_scores(config, serial, tmp_path, capsys) -> None:
    out = tmp_path / "ray"
    capsys.readouterr()
    rc = main(["eval", "detection", "--config", str(config), "--out", str(out),
               "--executor", "ray", "--workers", "2"])
    assert rc == 0 and "ad@0.2: success 0.833" in capsys.readouterr().out
    ray_rows, serial_rows = _stored(out), _stored(serial)
    assert [u[0] for u in ray_rows["units"]] == [0, 1, 2, 3, 4]
    assert len(ray_rows["scores"]) == (30 + 12 * 4) * 2  # every image, both criteria
    assert ray_rows == serial_rows
    assert _untimed(out) == _untimed(serial)


def test_a_unit_failing_every_attempt_is_named_and_exits_non_zero(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"  # steps 0: the attack refuses to build, on every worker
    cfg.write_text(CONFIG.replace("steps: 5", "steps: 0")
                   + "executor: {name: ray, workers: 1}\n", encoding="utf-8")
    out = tmp_path / "run"
    rc = main(["eval", "detection", "--config", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert "batch 4 (ad@0.2) failed on all 3 attempts: ValueError" in err
    assert "rerun the same command" in err
    assert sorted(b for (b,) in _rows(out, "SELECT batch FROM batches")) == [0, 1, 2, 3]
    assert json.loads((out / "results.json").read_text())["pending"] == ["ad@0.2"]
    assert _rows(out, "SELECT value FROM meta WHERE key = 'finished'") == []


class Flaky:
    """An attack factory that raises inside a Ray worker while ``flag`` exists."""

    def __init__(self, factory: Any, flag: Path) -> None:
        self.factory, self.flag, self.driver = factory, flag, os.getpid()

    def __call__(self, calib: dict[str, Tensor]) -> Any:
        if os.getpid() != self.driver and self.flag.exists():
            raise RuntimeError("flaky: this attack fails while the flag is set")
        return self.factory(calib)


def _job(config: Path, flag: Path, model: nn.Module | None = None) -> Any:
    job = build_job(config, model=model)
    flaky = dataclasses.replace(job.attacks["g@0.2"],
                                factory=Flaky(job.attacks["g@0.2"].factory, flag))
    return dataclasses.replace(job, attacks={**job.attacks, "g@0.2": flaky})


def test_a_rerun_after_failures_computes_only_the_missing_unit(config, serial,
                                                                tmp_path) -> None:
    flag, out = tmp_path / "flag", tmp_path / "run"
    flag.touch()
    with pytest.raises(BatchesFailedError) as info:
        run_detection(_job(config, flag), out, executor=ONE)
    assert str(info.value).startswith("batch 3 (g@0.2) failed on all 3 attempts: "
                                      "RuntimeError: flaky")
    assert info.value.failed.keys() == {3}
    flag.unlink()
    res = run_detection(_job(config, flag), out, executor=ONE)
    sessions = dict(_rows(out, "SELECT batch, session FROM batches"))
    assert [b for b, s in sessions.items() if s == max(sessions.values())] == [3]
    assert res["pending"] == [] and list(res["attacks"]) == NAMES
    assert _stored(out) == _stored(serial)


def test_an_unreachable_address_is_one_line_and_writes_nothing(config, tmp_path,
                                                               capsys) -> None:
    out = tmp_path / "run"
    rc = main(["eval", "detection", "--config", str(config), "--out", str(out),
               "--executor", "ray", "--address", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err
    assert not out.exists()
