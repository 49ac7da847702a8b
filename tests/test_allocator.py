"""advimage.allocator: glibc settings applied only where they can be, off by environment, and
used by the CLI (the speed-up itself is measured by bench/cpu_allocator.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import advimage.cli as cli
from advimage import allocator

_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc, reason="glibc only")
def test_applied_in_a_fresh_process_and_idempotent() -> None:
    code = (
        "from advimage.allocator import retain_freed_memory as r; import torch;"
        "print(r(), r()); x = torch.ones(300, 32, 28, 28); print(float((x * 2).sum()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, allocator.ENV_VAR: "1"},
    ).stdout.split()
    assert out[:2] == ["True", "True"]
    assert float(out[2]) == 2 * 300 * 32 * 28 * 28  # computations unchanged


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_environment_turns_it_off(monkeypatch, value: str) -> None:
    monkeypatch.setenv(allocator.ENV_VAR, value)
    assert allocator.retain_freed_memory() is False


def test_off_where_there_is_no_glibc(monkeypatch) -> None:
    monkeypatch.setenv(allocator.ENV_VAR, "1")
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.retain_freed_memory() is False


def test_cli_applies_it(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["models", "list"]) == 0
    assert calls == [1]
