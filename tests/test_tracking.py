"""``--track``: per-epoch training metrics to TensorBoard (read back from the event files), to
MLflow (a fake ``mlflow`` module records the calls), nothing by default, and a one-line error
for an unknown backend."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from advimage.cli import main
from advimage.errors import UserInputError
from advimage.tracking import activate, log_scalars, make_tracker

TRAIN = ["train", "--quick", "--train-limit", "128", "--test-limit", "64", "--no-progress"]


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_tensorboard_event_files_hold_each_epoch(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--track", "tensorboard"]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    history = _history(out)
    assert len(history) == 2  # --quick: 2 epochs
    for key in ("train_loss", "train_acc", "test_acc", "lr"):
        events = acc.Scalars(f"train/{key}")
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert "train/epoch" not in acc.Tags()["scalars"]  # the epoch is the step
    assert "params" in str(acc.Tags())


def test_tracking_is_off_by_default_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert not (out / "tensorboard").exists() and not (out / "mlruns").exists()
    log_scalars(1, {"loss": 1.0})  # nothing active: a no-op, no error


class _FakeMlflow(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple] = []

    def set_tracking_uri(self, uri: str) -> None:
        self.calls.append(("uri", uri))

    def start_run(self, run_name: str | None = None) -> None:
        self.calls.append(("start", run_name))

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append(("metrics", step, dict(metrics)))

    def log_params(self, params: dict) -> None:
        self.calls.append(("params", dict(params)))

    def end_run(self) -> None:
        self.calls.append(("end",))


def test_mlflow_backend_logs_params_metrics_and_ends_the_run(tmp_path, monkeypatch) -> None:
    fake = _FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = make_tracker("mlflow", tmp_path / "run")
    tracker.log_params({"lr": 0.1, "model": {"name": "small-cnn"}})
    with activate(tracker):
        log_scalars(3, {"epoch": 3, "loss": 0.5, "ok": True, "note": "x"}, "train")
    assert fake.calls == [
        ("uri", (tmp_path / "run" / "mlruns").resolve().as_uri()),
        ("start", "run"),
        ("params", {"lr": 0.1, "model": '{"name": "small-cnn"}'}),
        ("metrics", 3, {"train/loss": 0.5}),  # numbers only; the epoch is the step
        ("end",),
    ]


def test_mlflow_missing_is_one_line_install_hint(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(UserInputError, match=r"^--track mlflow needs .*pip install mlflow$"):
        make_tracker("mlflow", tmp_path)


def test_unknown_tracker_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--track", "wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["advimage: error: --track must be one of none, tensorboard, mlflow, "
                   "got 'wandb'"]
    assert not out.exists()


def test_run_logs_clean_and_robust_accuracy_per_budget(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = {"name": "tiny", "seed": 0, "device": "cpu", "model": {"path": "bundled"},
           "data": {"name": "digits", "split": "test", "limit": 20, "batch_size": 10},
           "attacks": [{"name": "fgsm", "eps": [0.1, 0.2]}], "examples": 0,
           "checks": {"unbounded_steps": 2}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--no-progress",
                 "--track", "tensorboard"]) == 0
    rows = json.loads((run / "results.json").read_text())["results"]
    fgsm = sorted((r for r in rows if r["label"] == "fgsm"), key=lambda r: r["eps"])
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("robust/none/fgsm")
    assert [e.step for e in events] == [0, 1]  # budget index, smallest first
    assert [e.value for e in events] == pytest.approx([r["robust_accuracy"] for r in fgsm])
    assert acc.Scalars("clean/none")[0].value == pytest.approx(fgsm[0]["clean_accuracy"])


def test_nim_pretrain_logs_loss_and_lr_per_epoch_to_mlflow(tmp_path, monkeypatch) -> None:
    fake = _FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///elsewhere")  # the user's server wins
    out = tmp_path / "nim"
    tiny = ["--data", "digits", "--limit", "32", "--patch-size", "2", "--enc-dim", "16",
            "--enc-depth", "1", "--enc-heads", "2", "--dec-dim", "16", "--dec-depth", "1",
            "--dec-heads", "2", "--batch-size", "16", "--device", "cpu"]
    assert main(["nim", "pretrain", *tiny, "--epochs", "2", "--out", str(out),
                 "--track", "mlflow"]) == 0
    history = json.loads((out / "nim.json").read_text())["history"]
    metrics = [c for c in fake.calls if c[0] == "metrics"]
    assert [c[1] for c in metrics] == [1, 2]
    for (_, _, logged), h in zip(metrics, history, strict=True):
        assert logged["pretrain/loss"] == pytest.approx(h["loss"])
        assert logged["pretrain/lr"] == pytest.approx(h["lr"])
    assert fake.calls[0] == ("start", "nim") and fake.calls[-1] == ("end",)
