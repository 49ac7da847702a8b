"""Run-config schema: shipped configs parse; bad input names the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.eval.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_parses_and_expands_eps_grid() -> None:
    cfg = load_config(REPO / "configs" / "demo-digits.yaml")
    assert cfg.model == "bundled"
    keys = [a.key for a in cfg.attacks]
    assert keys == ["fgsm@0.05", "fgsm@0.1", "fgsm@0.2", "pgd@0.05", "pgd@0.1", "pgd@0.2"]
    assert [d.label for d in cfg.defenses] == ["none", "quantize-bpda"]
    assert cfg.defenses[1].options == {"bits": 3, "bpda": True}
    # the resolved config round-trips through the schema unchanged
    assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", ["robust-resnet20", "robust-resnet20-quick"])
def test_resnet_configs_resolve_shared_paths(name, shared_models, cifar10_root, monkeypatch):
    monkeypatch.chdir(REPO)  # ../shared is relative to the repository root
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert Path(cfg.model) == (shared_models / "resnet20-12fca82f.th").resolve()
    assert Path(cfg.data.root) == cifar10_root.resolve()
    eps = sorted({round(a.eps * 255, 6) for a in cfg.attacks})
    assert eps == [2.0, 4.0, 8.0]
    assert {a.name for a in cfg.attacks} == {"fgsm", "pgd", "apgd-ce"}


def test_eps_fraction_strings() -> None:
    cfg = parse_config(tiny_config(attacks=[{"name": "pgd", "eps": ["8/255", 0.5]}]))
    assert [a.eps for a in cfg.attacks] == [8 / 255, 0.5]


@pytest.mark.parametrize(
    ("patch", "needles"),
    [
        ({"atacks": []}, ["unknown key 'atacks'", "allowed:", "attacks", "defenses"]),
        ({"data": {"batchsize": 3}}, ["'data.batchsize'", "batch_size", "limit"]),
        ({"data": {"limit": "ten"}}, ["'data.limit'", "must be int", "'ten'"]),
        ({"data": {"batch_size": 0}}, ["'data.batch_size'", ">= 1"]),
        ({"data": {"name": "imagenet21k"}}, ["'data.name'", "cifar10", "digits"]),
        ({"seed": 1.5}, ["'seed'", "must be int"]),
        ({"seed": True}, ["'seed'", "must be int"]),
        ({"attacks": [{"name": "pgdd"}]}, ["'attacks[0].name'", "apgd-ce", "pgd"]),
        ({"attacks": [{"name": "pgd", "norm": "l1"}]},
         ["'attacks[0].norm'", "'pgd' has no l1", "linf, l2", "attacks with l1: apgd-ce"]),
        ({"attacks": [{"name": "pgd", "norm": "l3"}]}, ["'attacks[0].norm'", "l1, l0"]),
        ({"attacks": [{"name": "fmn", "norm": "l0", "eps": [2.5]}]},
         ["'attacks[0].eps'", "whole number"]),
        ({"attacks": [{"name": "pgd", "options": {"stepz": 3}}]},
         ["'attacks[0].options.stepz'", "steps", "restarts"]),
        ({"attacks": [{"name": "pgd", "eps": "big"}]}, ["attacks[0].eps", "8/255"]),
        ({"attacks": [{"name": "pgd", "eps": -0.1}]}, ["attacks[0].eps", "> 0"]),
        ({"attacks": [{"name": "pgd"}, {"name": "pgd"}]}, ["appears twice", "label"]),
        ({"defenses": [{"name": "magic"}]}, ["'defenses[0].name'", "none", "quantize"]),
        ({"detectors": [{"name": "msp", "opts": {}}]}, ["'detectors[0].opts'", "options"]),
        ({"checks": {"tolerence": 0.1}}, ["'checks.tolerence'", "tolerance"]),
        ({"metrics": ["accuracy"]}, ["'metrics'", "robust_accuracy"]),
        ({"model": {"path": "no/such/model.th"}}, ["model checkpoint", "no/such/model.th"]),
        ({"data": {"name": "cifar10", "root": "no/such/root"}}, ["data root", "no/such/root"]),
    ],
)
def test_bad_config_names_key_and_allowed(patch, needles) -> None:
    with pytest.raises(ValueError) as err:
        parse_config(tiny_config(**patch))
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_relative_model_path_resolves_against_config_folder(tmp_path, write_config) -> None:
    from advimage.models.hub import bundled_path

    (tmp_path / "m").mkdir()
    target = tmp_path / "m" / "model.safetensors"
    target.write_bytes(bundled_path().read_bytes())
    cfg = load_config(write_config(tiny_config(model={"path": "m/model.safetensors"})))
    assert Path(cfg.model) == target.resolve()


def _one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("advimage: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_bad_config_exit_2_one_line(capsys, write_config, tmp_path) -> None:
    err = _one_line_error(capsys, "run", str(write_config(tiny_config(data={"bogus": 1}))))
    assert "data.bogus" in err and "batch_size" in err
    err = _one_line_error(capsys, "run", str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in err
    err = _one_line_error(capsys, "run", str(write_config(
        tiny_config(model={"path": "gone.th"}))))
    assert "gone.th" in err
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    err = _one_line_error(capsys, "run", str(tmp_path / "broken.yaml"))
    assert "not valid YAML" in err
    err = _one_line_error(capsys, "run", "--resume", str(tmp_path))
    assert "not a run directory" in err
    err = _one_line_error(capsys, "report", str(tmp_path))
    assert "not a run directory" in err
    err = _one_line_error(capsys, "run")
    assert "CONFIG" in err
