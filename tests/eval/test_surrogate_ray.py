"""A surrogate ensemble on Ray actors: the driver ships the loaded members (``RunSpec``), each
actor builds the same logit ensemble, and the stored rows equal the serial run's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness_helpers import local_ray, tiny_config
from test_resume import _dump

from advimage.eval.config import parse_config
from advimage.eval.runner import run_evaluation
from advimage.models import create_model, save_checkpoint

ray = pytest.importorskip("ray")



def test_ray_crafts_on_the_same_ensemble_as_the_serial_run(tmp_path: Path) -> None:
    torch.manual_seed(1)
    other = save_checkpoint(create_model("small-cnn", num_classes=10), tmp_path / "other")
    cfg = parse_config(tiny_config(
        data={"name": "digits", "split": "test", "limit": 12, "batch_size": 4},
        attacks=[{"name": "pgd", "eps": [0.2], "options": {"steps": 3},
                  "surrogate": ["bundled", str(other)], "surrogate_weights": [2, 1]},
                 {"name": "fgsm", "eps": [0.2], "surrogate": "bundled"}],
        examples=0, checks={"enabled": False}))
    run_evaluation(cfg, tmp_path / "serial", device="cpu")
    with local_ray(__name__):
        run_evaluation(cfg, tmp_path / "ray", device="cpu", executor="ray")
    serial, on_ray = _dump(tmp_path / "serial"), _dump(tmp_path / "ray")
    assert len(serial["samples"]) == 24 and on_ray == serial
