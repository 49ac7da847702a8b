"""The shipped CI variants of each capability's reproduction config run end to end.

Each test copies ``configs/NAME-quick.yaml`` into a scratch checkout (``tmp/repo/configs``) with
``tmp/shared`` linked to the real shared folder, so the config's relative paths resolve exactly as
in a clone, and builds the small artefacts a config needs (a 1,000-key cache, tiny NIM/MIM
autoencoders and classifiers) where the config expects them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from advimage.cli import main
from advimage.eval.store import ResultStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.shared]


@pytest.fixture
def checkout(tmp_path, shared_models, cifar10_root, monkeypatch) -> Path:
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (tmp_path / "shared").symlink_to(shared_models.parent, target_is_directory=True)
    monkeypatch.chdir(repo)
    return repo


def _use(repo: Path, name: str) -> str:
    shutil.copy(REPO / "configs" / name, repo / "configs" / name)
    return f"configs/{name}"


def _rows(run: Path) -> dict[str, dict]:
    with ResultStore(run / "results.sqlite") as store:
        return {(r["attack"], r["defense"]): r for r in store.results()}


def test_distill_quick(checkout) -> None:
    cfg = _use(checkout, "distill-resnet20-quick.yaml")
    assert main(["run", cfg, "--out", "run", "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(checkout / "run")
    eps = f"{8 / 255:.6g}"
    white = rows[(f"ifgsm@{eps}", "none")]["robust_accuracy"]
    teacher = rows[(f"ifgsm-teacher@{eps}", "none")]["robust_accuracy"]
    assert white <= 0.1 < teacher  # transferred images flip fewer predictions than white-box


def test_cache_quick(checkout) -> None:
    models, data = "../shared/models/resnet20-12fca82f.th", "../shared/data/cifar10"
    assert main(["cache", "build", "--model", models, "--data", "cifar10", "--data-root", data,
                 "--split", "train", "--limit", "1000", "--layers", "layer3.2,pool",
                 "--out", "runs/cache/caches/resnet20-quick", "--device", "cpu",
                 "--no-progress"]) == 0
    cfg = _use(checkout, "cache-resnet20-quick.yaml")
    assert main(["run", cfg, "--out", "run", "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(checkout / "run")
    assert {d for _, d in rows} == {"none", "cache", "cache-bpda"}
    eps = f"{8 / 255:.6g}"
    assert rows[(f"pgd@{eps}", "none")]["robust_accuracy"] <= 0.1


def test_cache_imagenet_quick(checkout) -> None:
    """Issue 16 item 6: the cache defense end to end at 224 px on the real ImageNet model."""
    weights = Path("../shared/models/efficientnet-lite0-57934424.pth")
    if not weights.exists() or not Path("../shared/data/imagenette/imagenet-val").exists():
        pytest.skip("needs ../shared's EfficientNet-Lite0 and Imagenette")
    model = "runs/imagenet/efficientnet-lite0.safetensors"
    assert main(["models", "import", str(weights), "--out", model]) == 0
    assert main(["cache", "build", "--model", model, "--data", "imagenette", "--data-root",
                 "../shared/data/imagenette", "--split", "train", "--limit", "100", "--layers",
                 "_avg_pooling", "--out", "runs/cache/caches/effnet-imagenette-quick",
                 "--device", "cpu", "--no-progress"]) == 0
    cfg = _use(checkout, "cache-imagenet-effnet-quick.yaml")
    assert main(["run", cfg, "--out", "run", "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(checkout / "run")
    assert {d for _, d in rows} == {"none", "cache", "cache-bpda"}
    eps = f"{2 / 255:.6g}"
    assert rows[(f"pgd@{eps}", "none")]["robust_accuracy"] <= 0.1  # undefended: broken
    assert rows[(f"pgd@{eps}", "none")]["clean_accuracy"] == 0.7  # 7 of the first 10


def test_nim_imagenet_quick(checkout) -> None:
    """Issue 16 item 6: De^3 (a tiny NIM) end to end at 224 px before EfficientNet-Lite0."""
    weights = Path("../shared/models/efficientnet-lite0-57934424.pth")
    if not weights.exists() or not Path("../shared/data/imagenette/imagenet-val").exists():
        pytest.skip("needs ../shared's EfficientNet-Lite0 and Imagenette")
    assert main(["models", "import", str(weights), "--out",
                 "runs/imagenet/efficientnet-lite0.safetensors"]) == 0
    tiny = ["--patch-size", "16", "--enc-dim", "32", "--enc-depth", "1", "--enc-heads", "2",
            "--dec-dim", "32", "--dec-depth", "1", "--dec-heads", "2"]
    assert main(["nim", "pretrain", "--data", "imagenette", "--data-root",
                 "../shared/data/imagenette", "--limit", "32", *tiny, "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "--no-progress",
                 "--out", "runs/imagenet/nim"]) == 0
    cfg = _use(checkout, "nim-imagenet-effnet-quick.yaml")
    assert main(["run", cfg, "--out", "run", "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(checkout / "run")
    assert {d for _, d in rows} == {"none", "nim-0", "nim-70"}
    assert rows[(f"fgsm@{2 / 255:.6g}", "none")]["clean_accuracy"] == 0.5  # 3 of the first 6


def test_detection_quick(checkout) -> None:
    cfg = _use(checkout, "detection-resnet20-quick.yaml")
    assert main(["eval", "detection", "--config", cfg, "--out", "det"]) == 0
    res = json.loads((checkout / "det" / "results.json").read_text())
    assert set(res["attacks"]) == {"gray-pgd@0.03", "pgd-untargeted@0.03137",
                                   "adaptive@0.03137", "white-pgd@0.03"}
    for r in res["attacks"].values():
        assert 0.0 <= r["auc"]["combined"] <= 1.0


def test_nim_quick(checkout) -> None:
    import torch

    from advimage.data import load_dataset
    from advimage.defend.nim.model import NIMConfig
    from advimage.studies.nim.finetune import finetune
    from advimage.studies.nim.train import pretrain
    from advimage.train import TrainConfig

    images = load_dataset("cifar10", "train", data_root="../shared/data/cifar10").balanced(
        64).tensors()[0]
    for mode in ("nim", "mim"):
        tiny = NIMConfig(enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1,
                         dec_heads=2, mode=mode)
        pretrain(tiny, images, f"runs/gpu/nim/{mode}", epochs=1, batch_size=32, device="cpu")
        cfg = TrainConfig(dataset="cifar10", data_root="../shared/data/cifar10", epochs=1,
                          batch_size=32, train_limit=64, test_limit=20, model="nim-vit")
        finetune(f"runs/gpu/nim/{mode}/nim", cfg, f"runs/gpu/nim/{mode}-cls", sigma_test=None,
                 device="cpu", progress=False)
    torch.manual_seed(0)
    cfg_path = _use(checkout, "nim-cifar10-quick.yaml")
    assert main(["run", cfg_path, "--out", "run", "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(checkout / "run")
    assert {d for _, d in rows} == {"none", "nim-0", "nim-70", "nim-70-known", "mim-70"}
    assert {a.split("@")[0] for a, _ in rows} >= {"fgsm", "pgd", "pgd-eot2"}
