"""Contract tests over every registered defense (``advimage.defend.list_defenses()``).

Each defense is built on the bundled digits model with small options (``SMALL``; a defense
missing there is built with its defaults, so a new registration is covered as soon as it
exists) and must: declare its three flags as bools, map ``(B, C, H, W)`` to ``(B, K)`` float32
on the input's device, leave the wrapped model's parameters untouched, be reproducible when
deterministic, pass nonzero input gradients when differentiable or BPDA-backed, differ across
seeds when randomized, and refuse an unknown option through ``defense_options``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from advimage.data import load_dataset
from advimage.defend import Defense, build_defense, list_defenses
from advimage.defend.cache import CacheModel, save_cache
from advimage.defend.nim import NIMAutoencoder, NIMConfig, save_nim
from advimage.model_flags import model_flags
from advimage.models.hub import load_model

TINY_NIM = dict(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=16, enc_depth=1,
                enc_heads=2, dec_dim=16, dec_depth=1, dec_heads=2)

# defense -> option sets, given the artefact folder (cache and NIM checkpoints live there)
SMALL: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "quantize": lambda _: [{"bits": 3}, {"bits": 3, "bpda": True}],
    "gaussian-noise": lambda _: [{"sigma": 0.1}],
    "jpeg": lambda _: [{"quality": 50}, {"quality": 50, "bpda": True}],
    "cache": lambda d: [{"path": str(d / "cache")}, {"path": str(d / "cache"), "bpda_theta": 5}],
    "nim": lambda d: [{"path": str(d / "nim"), "sigma_test": 40},
                      {"path": str(d / "nim"), "sigma_test": 40, "noise_seed": 1},
                      {"path": str(d / "nim"), "sigma_test": 0}],
}
CASES = [(name, i) for name in list_defenses()
         for i in range(len(SMALL.get(name, lambda _: [{}])(Path("."))))]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200-key cache of the bundled model and a tiny NIM autoencoder, saved."""
    root = tmp_path_factory.mktemp("defense-contract")
    model, _ = load_model("bundled")
    train = load_dataset("digits", "train").balanced(200)
    save_cache(CacheModel.build(model, ["relu3"], train, theta=20.0, lam=0.5), root / "cache")
    torch.manual_seed(0)
    save_nim(NIMAutoencoder(NIMConfig(**TINY_NIM)), root / "nim")
    return root


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_dataset("digits", "test").balanced(20).tensors()
    return x[:6], y[:6]


def _options(name: str, i: int, root: Path) -> dict[str, Any]:
    return SMALL.get(name, lambda _: [{}])(root)[i]


def _build(name: str, i: int, root: Path) -> tuple[torch.nn.Module, Defense]:
    model, _ = load_model("bundled")
    return model, build_defense(name, model.eval(), _options(name, i, root)).eval()


@pytest.mark.parametrize(("name", "i"), CASES)
def test_flags_shape_and_untouched_model(name: str, i: int, artefacts: Path, batch) -> None:
    x, y = batch
    model, d = _build(name, i, artefacts)
    assert isinstance(d, Defense)
    flags = model_flags(d)
    for value in (flags.is_randomized, flags.is_differentiable, flags.uses_bpda):
        assert isinstance(value, bool)
    before = {k: (p.detach().clone(), p.requires_grad) for k, p in model.named_parameters()}
    xg = x.clone().requires_grad_(True)
    out = d(xg)
    assert out.shape == (len(x), 10) and out.dtype == torch.float32 and out.device == x.device
    F.cross_entropy(out, y).backward()
    for k, p in model.named_parameters():
        assert torch.equal(p.detach(), before[k][0]) and p.requires_grad == before[k][1], k


@pytest.mark.parametrize(("name", "i"), CASES)
def test_behaviour_matches_the_declared_flags(name: str, i: int, artefacts: Path, batch) -> None:
    x, y = batch
    _, d = _build(name, i, artefacts)
    flags = model_flags(d)
    if not flags.is_randomized:
        with torch.no_grad():
            assert torch.equal(d(x), d(x))
    else:
        with torch.no_grad():
            torch.manual_seed(0)
            a = d(x)
            torch.manual_seed(1)
            assert not torch.equal(a, d(x))
    if flags.is_differentiable or flags.uses_bpda:
        xg = x.clone().requires_grad_(True)
        F.cross_entropy(d(xg), y).backward()
        assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", list_defenses())
def test_unknown_option_is_refused(name: str, artefacts: Path) -> None:
    model, _ = load_model("bundled")
    with pytest.raises(ValueError, match=f"unknown option 'bogus' for defense '{name}'"):
        build_defense(name, model, {**_options(name, 0, artefacts), "bogus": 1})
