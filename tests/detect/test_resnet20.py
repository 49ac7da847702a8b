"""One check on the reference CIFAR-10 ResNet-20 with the official CIFAR-10 settings."""

from __future__ import annotations

import torch
from detect_reference import official_steps

from advimage.data import load_dataset
from advimage.detect import NoiseSignatureDetector
from advimage.models import import_reference


def test_resnet20_counts_match_official_loop(cifar10_root, shared_models):
    model = import_reference(sorted(shared_models.glob("resnet20-*.th"))[0]).eval()
    ds = load_dataset("cifar10", "test", data_root=cifar10_root)
    x, y = ds.subset(range(0, 10000, 1000)).tensors()  # one image per class
    det = NoiseSignatureDetector(model, "cifar10", "c1,c2t", seed=1)
    scores, labels = det.score_with_labels(x)
    gen = torch.Generator().manual_seed(1)
    noise, targets = det.draws(x, labels, 10, gen)
    cfg = det.config
    want = [
        official_steps(model, x[i : i + 1], int(labels[i]), cfg.c2t_lr, cfg.c2t_radius,
                       cfg.c2t_cap, int(targets[i]))
        for i in range(len(x))
    ]
    assert scores["c2t"].tolist() == want
    assert float((labels == y).float().mean()) >= 0.8  # the published model is ~92% accurate
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        c1 = torch.stack([(torch.softmax(model(x + noise[k]), 1) - p).abs().sum(1)
                          for k in range(cfg.n_noise)]).mean(0)
    assert torch.allclose(scores["c1"], c1, atol=1e-6)
