"""The pieces the transfer.py split made public: batched Grad-CAM probe, overlay grid, pooling."""

from __future__ import annotations

import copy
import struct
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from distill_helpers import perturbed_copy

from advimage.data import load_dataset
from advimage.studies.distill import (
    fooling_rate,
    gradcam,
    gradcam_probe,
    last_conv_layer,
    pooled_fooling_rate,
    save_gradcam_grid,
)
from advimage.studies.distill.gradcam import resolve_cam_layers
from advimage.studies.distill.probes import iter_batches


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("digits", "test").balanced(40).tensors()


_perturbed = partial(perturbed_copy, scale=0.5)  # (model, seed[, scale])


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_gradcam_probe_against_per_image_cosines(teacher, digits) -> None:
    x, y = digits
    kd, ind = _perturbed(teacher, 1), _perturbed(teacher, 2)
    chunks = [(x[i : i + 15], y[i : i + 15]) for i in range(0, len(x), 15)]
    out = gradcam_probe(teacher, kd, ind, chunks)
    # independent: true-class maps of each model at input size, cosine per image by hand
    maps = [gradcam(m, x, "relu2", y, (8, 8)).flatten(1) for m in (teacher, kd, ind)]
    norm = [F.normalize(m, dim=1, eps=1e-12) for m in maps]
    ck, ci = (norm[0] * norm[1]).sum(1), (norm[0] * norm[2]).sum(1)  # (N,), (N,)
    assert out["n"] == len(x) == 40 and out["class"] == "true"
    assert out["layers"] == {"teacher": "relu2", "kd": "relu2", "independent": "relu2"}
    assert out["mean_cosine"]["kd"] == pytest.approx(ck.mean().item(), abs=1e-5)
    assert out["mean_cosine"]["independent"] == pytest.approx(ci.mean().item(), abs=1e-5)
    # strict "closer" share; the bounds allow float noise in near-ties of the two computations
    lo, hi = ((ck > ci + 1e-5).float().mean().item(), (ck > ci - 1e-5).float().mean().item())
    assert lo - 1e-9 <= out["share_closer_to_kd"] <= hi + 1e-9
    assert 0 < out["share_closer_to_kd"] < 1
    # a KD student equal to the teacher: every map identical, cosine 1, always closer
    same = gradcam_probe(teacher, copy.deepcopy(teacher), ind, chunks)
    assert same["mean_cosine"]["kd"] == pytest.approx(1.0, abs=1e-5)
    assert same["share_closer_to_kd"] == 1.0 and same["ties"] == 0
    with pytest.raises(ValueError, match="at least one batch"):
        gradcam_probe(teacher, kd, ind, [])


def test_resolve_cam_layers(teacher) -> None:
    models = (teacher, teacher, teacher)
    assert resolve_cam_layers(models, None) == [last_conv_layer(teacher)] * 3 == ["relu2"] * 3
    assert resolve_cam_layers(models, ("a", "b", "c")) == ["a", "b", "c"]
    assert resolve_cam_layers((teacher,), "relu1") == ["relu1"]
    with pytest.raises(ValueError, match="cam_layers takes 3 names"):
        resolve_cam_layers(models, "relu2")
    with pytest.raises(ValueError, match="ImageClassifier"):
        last_conv_layer(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_save_gradcam_grid(teacher, digits, tmp_path) -> None:
    x, y = digits
    path = tmp_path / "deep" / "grid.png"  # parent folders created
    out = save_gradcam_grid(teacher, teacher, _perturbed(teacher, 2), x, y, path, n=3,
                            classes=[f"digit {k}" for k in range(10)])
    assert out == path and path.exists()
    # 4 columns x 3 rows at figsize (8, 2 * rows) inches and 100 dpi, no bbox cropping
    assert _png_size(path) == (800, 600)
    with pytest.raises(ValueError, match="shape"):
        save_gradcam_grid(teacher, teacher, teacher, x, y[:2], tmp_path / "bad.png")


def test_pooled_fooling_rate_equals_one_call(teacher, digits) -> None:
    x, y = digits
    students = {"kd": _perturbed(teacher, 1), "independent": _perturbed(teacher, 2)}
    direct = fooling_rate(teacher, students, x, y, eps=0.2, steps=3)
    for size in (7, 40, 100):  # uneven chunks, one chunk, a chunk larger than the set
        pooled = pooled_fooling_rate(teacher, students, x, y, 0.2, steps=3, batch_size=size)
        assert pooled["eps"] == 0.2 and pooled["total"] == 40
        assert pooled["kept"] == direct["kept"] > 0
        for k in students:
            assert pooled["rates"][k] == pytest.approx(direct["rates"][k])
    # a budget too small to fool the teacher keeps nothing: rates are None (JSON null), not NaN
    none = pooled_fooling_rate(teacher, students, x, y, 1e-6, steps=1, batch_size=16)
    assert none["kept"] == 0 and none["rates"] == {"kd": None, "independent": None}


def test_iter_batches(digits) -> None:
    x, y = digits
    chunks = list(iter_batches(x, y, 16))
    assert [len(b) for b, _ in chunks] == [16, 16, 8]
    assert torch.equal(torch.cat([b for b, _ in chunks]), x)
    assert torch.equal(torch.cat([t for _, t in chunks]), y)
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(x, y, 0)  # raised at the call, before any iteration
