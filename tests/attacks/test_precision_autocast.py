"""Autocast of the model's forward/backward (``--precision``): bf16 on the CPU.

The model runs in bfloat16 under autocast; the images, the attack's steps and the threat
model's projection stay float32. fp32 (the default) must not wrap the model at all, so its
results stay bit-identical; fp16 off CUDA is a one-line refusal.
"""

from __future__ import annotations

import pytest
import torch

from advimage.attacks import create_attack
from advimage.cli import main
from advimage.errors import UserInputError
from advimage.precision import AutocastModel, autocast, check_precision, with_precision
from advimage.threat import ThreatModel
from cli_helpers import error_message

EPS = 0.3  # digits pixels: the fast configs' budget
N = 32


@pytest.fixture
def digits(trained_digits):
    if trained_digits.x.device.type != "cpu":
        pytest.skip("CPU autocast test")
    return trained_digits


def _conv_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """Output dtypes of every Conv2d/Linear during the model's next forward passes."""
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_bf16_autocast_attack_inside_ball_and_effective(digits) -> None:
    import copy

    inner = copy.deepcopy(digits.model)
    seen = _conv_dtypes(inner)
    model = with_precision(inner, "bf16", "cpu")
    assert isinstance(model, AutocastModel)
    x, y = digits.x[:N], digits.y[:N]
    x_adv = create_attack("pgd", eps=EPS, steps=10)(model, x, y)
    assert seen and set(seen) == {torch.bfloat16}  # the model really ran in bf16
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= EPS * (1 + 1e-6)
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        assert model(x).dtype == torch.float32  # logits back in fp32 for the attack's losses
        clean = (digits.model(x).argmax(1) == y).float().mean().item()
        robust = (digits.model(x_adv).argmax(1) == y).float().mean().item()
    assert robust < clean - 0.3, (clean, robust)


def test_projection_stays_fp32_inside_callers_autocast(digits, monkeypatch) -> None:
    calls: list[tuple[torch.dtype, bool]] = []
    real = ThreatModel.project

    def spy(self, x, x_adv):
        calls.append((x_adv.dtype, torch.is_autocast_enabled("cpu")))
        return real(self, x, x_adv)

    monkeypatch.setattr(ThreatModel, "project", spy)
    x, y = digits.x[:8], digits.y[:8]
    with autocast("bf16", "cpu"):
        x_adv = create_attack("pgd", eps=EPS, steps=2)(digits.model, x, y)
    assert len(calls) >= 3 and set(calls) == {(torch.float32, False)}  # steps and the last
    assert x_adv.dtype == torch.float32


def test_callers_autocast_still_runs_the_model_in_bf16(digits) -> None:
    import copy

    inner = copy.deepcopy(digits.model)
    seen = _conv_dtypes(inner)
    x, y = digits.x[:8], digits.y[:8]
    with autocast("bf16", "cpu"):
        create_attack("pgd", eps=EPS, steps=2)(inner, x, y)
    assert seen and set(seen) == {torch.bfloat16}


def test_fp32_is_the_model_itself_and_bit_identical(digits) -> None:
    assert with_precision(digits.model, "fp32", "cpu") is digits.model
    x, y = digits.x[:8], digits.y[:8]
    attack = create_attack("pgd", eps=EPS, steps=3)
    a = attack(digits.model, x, y)
    b = attack(with_precision(digits.model, "FP32", "cpu"), x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("precision", "device", "needle"), [
    ("fp16", "cpu", "fp16 needs a CUDA device"),
    ("fp8", "cpu", "must be one of fp32, bf16, fp16"),
])
def test_check_precision_refusals(precision, device, needle) -> None:
    with pytest.raises(UserInputError, match=needle):
        check_precision(precision, device)
    assert check_precision("bf16", "cpu") is torch.bfloat16


def test_cli_fp16_on_cpu_is_one_line(tmp_path, capsys) -> None:
    rc = main(["attack", "--model", "bundled", "--data", "digits", "--limit", "8",
               "--device", "cpu", "--precision", "fp16", "--out", str(tmp_path / "a"),
               "--no-progress"])
    assert rc == 2
    msg = error_message(capsys)
    assert msg.startswith("--precision fp16 needs a CUDA device (got cpu)"), msg
    assert not (tmp_path / "a").exists()  # refused before any work


def test_cli_models_eval_bf16_matches_fp32(capsys) -> None:
    args = ["models", "eval", "--model", "bundled", "--data", "digits", "--limit", "60",
            "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    fp32 = capsys.readouterr().out
    assert main([*args, "--precision", "bf16", "--channels-last"]) == 0
    bf16 = capsys.readouterr().out
    acc = [float(s.split("accuracy ")[1].split()[0]) for s in (fp32, bf16)]
    assert acc[0] > 0.9 and abs(acc[0] - acc[1]) <= 2 / 60, acc
