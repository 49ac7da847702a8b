"""One run split across processes (``advimage run --shard I/N``) equals the serial run.

Every random draw of a batch is seeded by (run seed, batch, defense, attack), so N processes that
each take every N-th batch of one run directory must store exactly the rows, detector scores and
example tensors of an uninterrupted single-process run, whether they run one after the other or
at the same time against the same SQLite file.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from harness_helpers import tiny_config
from test_resume import _cli, _dump, _rows

from advimage.cli import main
from advimage.eval.config import load_config
from advimage.eval.runner import run_evaluation
from advimage.eval.store import ResultStore

N_IMAGES = 30
BATCH = 4  # 8 batches: shard 1/3 gets 0, 3, 6; 2/3 gets 1, 4, 7; 3/3 gets 2, 5


def _config() -> dict:
    return tiny_config(
        data={"name": "digits", "split": "test", "limit": N_IMAGES, "batch_size": BATCH},
        attacks=[{"name": "fgsm", "eps": [0.1]},
                 {"name": "pgd", "eps": [0.1], "options": {"steps": 4}}],
        defenses=["none", {"name": "gaussian-noise", "options": {"sigma": 0.05}}],
        detectors=["msp"],
        examples=3,
    )


def _finished(run) -> bool:
    with ResultStore(run / "results.sqlite") as store:
        return store.get_meta("finished")


def test_sequential_shards_equal_the_serial_run(tmp_path, write_config) -> None:
    cfg = load_config(write_config(_config()))
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    run_evaluation(cfg, sharded, device="cpu", shard=(1, 3))  # creates the run: batches 1, 4, 7
    assert sorted(b for (b,) in _rows(sharded / "results.sqlite", "SELECT batch FROM batches")) \
        == [1, 4, 7]
    assert _finished(sharded) is False
    assert not (sharded / "examples").exists()  # batch 0 keeps the examples: not this shard
    run_evaluation(cfg, sharded, device="cpu", resume=True, shard=(0, 3))
    assert _finished(sharded) is False
    run_evaluation(cfg, sharded, device="cpu", resume=True, shard=(2, 3))
    assert _finished(sharded) is True
    sessions = dict(_rows(sharded / "results.sqlite", "SELECT batch, session FROM batches"))
    assert sessions == {0: 2, 3: 2, 6: 2, 1: 1, 4: 1, 7: 1, 2: 3, 5: 3}

    run_evaluation(cfg, whole, device="cpu")
    a, b = _dump(sharded), _dump(whole)
    for table in a:
        assert a[table] == b[table], table
    assert len(a["samples"]) == N_IMAGES * 2 * 3  # fgsm, pgd and the unbounded check
    for name in ("none", "gaussian-noise"):
        ex = f"examples/{name}.safetensors"
        assert (sharded / ex).read_bytes() == (whole / ex).read_bytes()


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), (1.0, 2)])
def test_bad_shard_is_refused_before_anything_runs(tmp_path, write_config, shard) -> None:
    cfg = load_config(write_config(_config()))
    with pytest.raises(ValueError, match="shard must be"):
        run_evaluation(cfg, tmp_path / "r", device="cpu", shard=shard)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/2", "1/0", "-1/2"])
def test_cli_refuses_a_bad_shard_in_one_line(tmp_path, write_config, capsys, text) -> None:
    cfg = write_config(_config())
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), f"--shard={text}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--shard" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_concurrent_cli_shards_equal_the_serial_run(tmp_path, write_config) -> None:
    cfg_path = write_config(_config())
    run, whole = tmp_path / "run", tmp_path / "whole"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(_cli("run", str(cfg_path), "--out", str(run), "--shard", "1/2"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the second process joins the run once the first has created it
    second = subprocess.run(_cli("run", "--resume", str(run), "--shard", "2/2"), env=env,
                            capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    sessions = dict(_rows(run / "results.sqlite", "SELECT batch, session FROM batches"))
    assert sorted(sessions) == list(range(8))
    assert {sessions[b] for b in (0, 2, 4, 6)} == {1} and {sessions[b] for b in (1, 3, 5, 7)} \
        == {2}
    assert _finished(run) is True
    run_evaluation(load_config(cfg_path), whole, device="cpu")
    a, b = _dump(run), _dump(whole)
    for table in a:
        assert a[table] == b[table], table


def test_a_batch_stored_twice_keeps_the_first_copy(tmp_path, write_config) -> None:
    """Two processes on the same shard: the later commit of a batch is dropped, not a crash."""
    cfg = load_config(write_config(_config()))
    run = tmp_path / "r"
    run_evaluation(cfg, run, device="cpu", shard=(0, 4))  # batches 0 and 4
    before = _dump(run)
    with ResultStore(run / "results.sqlite") as store:
        bogus = [(0, 0, "none", "fgsm@0.1", 0, 0, 0, 0, 0, 0.0)]
        assert store.write_batch(0, BATCH, 9, bogus, [], [], []) is False
        assert store.write_batch(1, 0, 9, [], [], [], []) is True  # a new batch still lands
    after = _dump(run)
    assert after == before
