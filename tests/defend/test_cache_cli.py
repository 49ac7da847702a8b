"""`advimage cache build|tune` on the bundled digits model: files written, settings recorded,
the saved cache loads and reproduces the CLI's settings, bad input exits 2 with one line."""

from __future__ import annotations

import json

import pytest

from advimage.cli import main
from advimage.defend import load_cache
from advimage.models.hub import load_model


def test_cache_build_writes_a_loadable_cache(tmp_path, capsys):
    rc = main(["cache", "build", "--model", "bundled", "--data", "digits", "--layers",
               "fc1,relu3", "--limit", "200", "--theta", "12", "--lam", "0.25", "--flip",
               "--out", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    assert "cache of 400 keys" in capsys.readouterr().out  # 200 images + their mirrors
    info = json.loads((tmp_path / "c.json").read_text())
    assert info["layers"] == ["fc1", "relu3"] and info["flip"] is True
    assert (info["theta"], info["lam"], info["num_keys"]) == (12.0, 0.25, 400)
    model, _ = load_model("bundled")
    cache = load_cache(tmp_path / "c", model)
    assert cache.theta == 12.0 and cache.lam == 0.25 and cache.keys.shape[0] == 400


def test_cache_tune_records_the_grid(tmp_path, capsys):
    rc = main(["cache", "tune", "--model", "bundled", "--data", "digits", "--layers", "fc1",
               "--limit", "200", "--thetas", "5,50", "--lambdas", "0,0.5,1", "--out",
               str(tmp_path / "t")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "cache of 200 keys" in out
    info = json.loads((tmp_path / "t.json").read_text())
    tuning = info["meta"]["tuning"]
    assert len(tuning["grid"]) == 6 and tuning["n_val"] == 20
    assert (info["theta"], info["lam"]) == (tuning["theta"], tuning["lam"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "nope"], "unknown layer 'nope'; valid layers: conv1"),
        (["--layers", "fc1", "--theta", "0"], "theta must be a positive"),
        (["--layers", "fc1", "--lam", "2"], "lambda must lie in [0, 1]"),
    ],
)
def test_cache_build_bad_input_is_one_line(tmp_path, capsys, args, message):
    rc = main(["cache", "build", "--model", "bundled", "--data", "digits", "--limit", "20",
               "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
