"""A detection evaluation split over processes (``advimage eval detection --shard I/N``).

Each shard crafts every N-th attack of the config into one shared folder; attacks of other
shards are read from disk when they are there. The union must equal a serial run, an attack must
never be crafted twice, and the shard that finishes last must write the complete results.json
even when another shard's attack landed while it was busy.
"""

from __future__ import annotations

import json

import pytest

from advimage.attacks import PGD
from advimage.cli import main
from advimage.detect import NoiseSignatureDetector, SignatureDetector
from advimage.eval.detection import DetectionAttack, DetectionJob, run_detection

EPS = {"a": 0.05, "b": 0.1, "c": 0.2}  # shard 1/2 crafts a and c, shard 2/2 crafts b


def _factories(crafted: list[str], hook=None) -> dict:  # noqa: ANN001
    def make(name):  # noqa: ANN001, ANN202
        def factory(calib):  # noqa: ANN001, ANN202
            crafted.append(name)
            if hook is not None:
                hook(name)
            return PGD(eps=EPS[name], steps=5)
        return factory
    return {name: make(name) for name in EPS}


def run_detection_eval(model, det, cal, test, factories, out, batch_size=100,  # noqa: ANN001, ANN201
                       shard=None):
    """One detection run of the harness over ``factories`` (name -> factory)."""
    attacks = {n: DetectionAttack(f, "pgd", EPS[n], {"steps": 5}) for n, f in factories.items()}
    job = DetectionJob(model, SignatureDetector(det), cal, test, attacks, batch_size=batch_size)
    return run_detection(job, out, shard=shard)


def _untimed(attacks: dict) -> dict:
    return {n: {k: v for k, v in r.items() if not k.startswith("seconds")}
            for n, r in attacks.items()}


@pytest.fixture()
def args(digits_model, digits_test, fast_config):  # noqa: ANN001, ANN201
    x, y = digits_test
    det = NoiseSignatureDetector(digits_model, fast_config, "c1,c2t", seed=0)
    return digits_model, det, (x[:100], y[:100]), (x[200:230], y[200:230])


def test_shards_craft_each_attack_once_and_match_the_serial_run(tmp_path, args) -> None:
    crafted: list[str] = []
    r1 = run_detection_eval(*args, _factories(crafted), tmp_path / "s", batch_size=10,
                            shard=(0, 2))
    assert crafted == ["a", "c"]
    assert list(r1["attacks"]) == ["a", "c"] and r1["pending"] == ["b"]
    r2 = run_detection_eval(*args, _factories(crafted), tmp_path / "s", batch_size=10,
                            shard=(1, 2))
    assert crafted == ["a", "c", "b"]  # nothing crafted twice
    assert list(r2["attacks"]) == ["a", "b", "c"] and r2["pending"] == []
    assert json.loads((tmp_path / "s" / "results.json").read_text()) == r2

    serial = run_detection_eval(*args, _factories([]), tmp_path / "serial", batch_size=10)
    assert _untimed(serial["attacks"]) == _untimed(r2["attacks"])


def test_the_last_shard_picks_up_an_attack_finished_while_it_worked(tmp_path, args) -> None:
    out = tmp_path / "s"

    def other_shard_finishes_b(name: str) -> None:
        # while shard 1/2 crafts c (after passing over b, not on disk then), shard 2/2 ends
        if name == "c":
            run_detection_eval(*args, _factories([]), out, batch_size=10, shard=(1, 2))

    crafted: list[str] = []
    res = run_detection_eval(*args, _factories(crafted, other_shard_finishes_b), out,
                             batch_size=10, shard=(0, 2))
    assert crafted == ["a", "c"]
    assert list(res["attacks"]) == ["a", "b", "c"] and res["pending"] == []
    assert json.loads((out / "results.json").read_text())["pending"] == []


@pytest.mark.parametrize("shard", [(2, 2), (-1, 1), (0, 0)])
def test_bad_shard_raises(tmp_path, args, shard) -> None:
    with pytest.raises(ValueError, match="shard must be"):
        run_detection_eval(*args, _factories([]), tmp_path, shard=shard)


def test_cli_shard_runs_its_share_and_refuses_a_bad_one(tmp_path, capsys) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        "name: t\nmodel: bundled\ndata: {name: digits}\n"
        "calibration: {split: train, limit: 40}\ntest: {split: test, limit: 20}\n"
        "detector: {criteria: c1, set: {sigma: 0.05, n_noise: 2}}\nfprs: [0.1]\n"
        "attacks:\n  - {label: g, kind: pgd, eps: [0.1, 0.2], options: {steps: 3}}\n"
    )
    base = ["eval", "detection", "--config", str(cfg), "--out", str(tmp_path / "o")]
    assert main([*base, "--shard", "2/2"]) == 0
    out = capsys.readouterr().out
    assert "g@0.2: success" in out and "g@0.1" not in out.split("not on disk")[0]
    assert "not on disk yet (other shards): g@0.1" in out
    assert main([*base, "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "g@0.1: success" in out and "g@0.2: success" in out and "not on disk" not in out
    assert main([*base, "--shard", "3/2"]) == 2
    assert "--shard must be I/N" in capsys.readouterr().err
