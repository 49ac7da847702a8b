"""import_reference on the third-party models in shared/models, checked against their published
test accuracies on the shared CIFAR-10 / MNIST test sets (read here with a private PNG/IDX
reader so the check is independent of advimage.data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.errors import CorruptFileError
from advimage.models import CheckpointError, import_reference, load_checkpoint, save_checkpoint
from advimage.models.reference import CIFAR10_CLASSES, infer_reference_arch

pytestmark = pytest.mark.shared


def _cifar10_test(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 10,000 test images in [0, 1], sorted by class then file name (shared README order)."""
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        for file in sorted((root / "test" / cls).glob("*.png")):
            with Image.open(file) as img:
                images.append(np.asarray(img.convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)  # (N, 3, 32, 32)
    return x, torch.tensor(labels)


def _idx(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file (big-endian dims after a 4-byte magic; uint8 payload)."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    with torch.no_grad():
        pred = torch.cat([model(x[i: i + 200]).argmax(1) for i in range(0, len(x), 200)])
    return 100.0 * (pred == y).float().mean().item()


def _reference(models_dir: Path, pattern: str) -> Path:
    files = sorted(models_dir.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} in {models_dir}")
    return files[0]


@pytest.fixture(scope="module")
def cifar_test(cifar10_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return _cifar10_test(cifar10_root)


def test_resnet20_import_matches_file(shared_models: Path, tmp_path: Path) -> None:
    path = _reference(shared_models, "resnet20-*.th")
    raw = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    model = import_reference(path)
    assert model.arch == "resnet20" and not model.training
    assert model.classes == CIFAR10_CLASSES
    state = model.state_dict()
    for key, value in raw.items():
        assert torch.equal(state["net." + key.removeprefix("module.")], value), key
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    # Converted once, it then loads through the safe checkpoint path.
    saved = save_checkpoint(model, tmp_path / "resnet20", meta={"dataset": "cifar10"})
    loaded, meta = load_checkpoint(saved)
    assert loaded.fingerprint() == model.fingerprint() and meta["dataset"] == "cifar10"
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_lenet5_import_matches_file(shared_models: Path) -> None:
    path = _reference(shared_models, "mnist_lenet5_clntrained.pt")
    raw = torch.load(path, weights_only=True, map_location="cpu")
    model = import_reference(path)
    assert model.arch == "lenet5-mnist" and model.classes == [str(d) for d in range(10)]
    for key, value in raw.items():
        assert torch.equal(model.state_dict()["net." + key], value), key
    assert torch.equal(model.mean, torch.zeros(1, 1, 1, 1))  # inputs in [0, 1], no normalization


def test_import_errors(shared_models: Path, tmp_path: Path) -> None:
    path = _reference(shared_models, "resnet20-*.th")
    with pytest.raises(CheckpointError, match="missing key 'net.layer1.3"):
        import_reference(path, arch="resnet32")
    with pytest.raises(ValueError, match="cannot infer the architecture.*pass arch="):
        infer_reference_arch(tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not found"):
        import_reference(tmp_path / "resnet20-0000.th")
    assert infer_reference_arch("x/resnet56-4bfd9763.th") == "resnet56"
    assert infer_reference_arch("mnist_lenet5_advtrained.pt") == "lenet5-mnist"


class _Exploit:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_import_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "resnet20-deadbeef.th"
    torch.save({"state_dict": {"conv1.weight": _Exploit(marker)}}, evil)
    with pytest.raises(CheckpointError, match=r"was refused: it references io\.open, and loading "
                                              r"it could run code") as err:
        import_reference(evil)
    assert "weights_only" not in str(err.value)  # never torch's advice to load it unsafely
    assert isinstance(err.value, CorruptFileError) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.slow
def test_resnet20_full_cifar10_accuracy(shared_models: Path, cifar_test) -> None:
    x, y = cifar_test
    assert x.shape == (10000, 3, 32, 32) and torch.bincount(y).tolist() == [1000] * 10
    model = import_reference(_reference(shared_models, "resnet20-*.th"))
    assert _accuracy(model, x, y) == pytest.approx(91.73, abs=0.1)  # published: 91.73%


# Accuracy on the 2,000-image subset x[::5] (200 per class), measured with this importer on
# the shared test set; the same run gave full-test-set accuracies of 92.63, 93.10 and 93.39%,
# equal to the published ones. The subset keeps the suite fast.
SUBSET_ACCURACY = {"resnet32": 93.45, "resnet44": 93.75, "resnet56": 94.10}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(SUBSET_ACCURACY))
def test_deeper_resnets_subset_accuracy(arch: str, shared_models: Path, cifar_test) -> None:
    x, y = cifar_test
    model = import_reference(_reference(shared_models, f"{arch}-*.th"))
    assert _accuracy(model, x[::5], y[::5]) == pytest.approx(SUBSET_ACCURACY[arch], abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "expected"), [("clntrained", 98.89), ("advtrained", 98.64)])
def test_lenet5_mnist_accuracy(kind: str, expected: float, shared_models: Path,
                               mnist_root: Path) -> None:
    x = torch.from_numpy(_idx(mnist_root / "t10k-images-idx3-ubyte.gz").copy())
    x = x.float().div(255).unsqueeze(1)  # (10000, 1, 28, 28) in [0, 1]
    y = torch.from_numpy(_idx(mnist_root / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    model = import_reference(_reference(shared_models, f"mnist_lenet5_{kind}.pt"))
    # Published (advertorch README / shared README): about 98.9% clean, 98.6% adv-trained.
    assert _accuracy(model, x, y) == pytest.approx(expected, abs=0.1)
