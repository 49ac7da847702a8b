"""digits dataset and the ImageDataset batching contract (sizes, order, shuffle, limit, subset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from advimage.data import ImageDataset, list_datasets, load_dataset, register_dataset


@pytest.fixture(scope="module")
def train() -> ImageDataset:
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def test() -> ImageDataset:
    return load_dataset("digits", "test")


def test_registry_lists_builtin_datasets() -> None:
    assert {"digits", "cifar10", "mnist", "folder"} <= set(list_datasets())


def test_digits_sizes_types_range(train: ImageDataset, test: ImageDataset) -> None:
    assert (len(train), len(test)) == (1438, 359)
    assert train.classes == [str(d) for d in range(10)] and train.num_classes == 10
    assert train.image_shape == (1, 8, 8) and train.name == "digits" and test.split == "test"
    x, y = train.tensors()
    assert x.shape == (1438, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    x0, y0 = train[0]
    assert x0.shape == (1, 8, 8) and isinstance(y0, int)
    assert torch.equal(train.labels, y)


def test_digits_split_is_stratified_disjoint_and_matches_sklearn(
    train: ImageDataset, test: ImageDataset
) -> None:
    raw = load_digits()
    x_tr, y_tr = train.tensors()
    x_te, y_te = test.tensors()
    # every image of the split is an sklearn image scaled by 1/16; together they are all of them
    both = torch.cat([x_tr, x_te]).reshape(-1, 64).numpy() * 16
    ref = raw.images.reshape(-1, 64)
    keys = {r.tobytes(): int(t) for r, t in zip(ref.astype(np.float32), raw.target, strict=True)}
    assert all(keys[r.astype(np.float32).tobytes()] == t for r, t in
               zip(both, torch.cat([y_tr, y_te]).tolist(), strict=True))
    assert np.array_equal(np.sort(np.bincount(torch.cat([y_tr, y_te]).numpy())),
                          np.sort(np.bincount(raw.target)))
    frac = np.bincount(y_te.numpy(), minlength=10) / np.bincount(raw.target, minlength=10)
    assert np.all(np.abs(frac - 0.2) < 0.01)
    # deterministic: a second load gives the same tensors
    x2, y2 = load_dataset("digits", "test").tensors()
    assert torch.equal(x2, x_te) and torch.equal(y2, y_te)


def test_batches_cover_all_once(train: ImageDataset) -> None:
    xs, ys = zip(*train.batches(100), strict=True)
    assert [len(y) for y in ys] == [100] * 14 + [38]
    x_all, y_all = train.tensors()
    assert torch.equal(torch.cat(xs), x_all) and torch.equal(torch.cat(ys), y_all)
    assert sum(1 for _ in train.batches(100, drop_last=True)) == 14


def _order(ds: ImageDataset, **kw: object) -> torch.Tensor:
    """Recover the sample order of shuffled batches by matching against the unshuffled set."""
    x_all, _ = ds.tensors()
    flat = x_all.reshape(len(ds), -1)
    xs = torch.cat([x for x, _ in ds.batches(64, **kw)]).reshape(-1, flat.shape[1])
    d = torch.cdist(xs, flat)
    return d.argmin(1)


def test_shuffle_reproducible_and_seed_dependent(test: ImageDataset) -> None:
    a = [y for _, y in test.batches(50, shuffle=True, seed=3)]
    b = [y for _, y in test.batches(50, shuffle=True, seed=3)]
    c = [y for _, y in test.batches(50, shuffle=True, seed=4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(torch.cat(a), torch.cat(c))
    # a shuffled epoch is a permutation: labels multiset preserved, images paired with labels
    assert torch.equal(torch.sort(torch.cat(a)).values, torch.sort(test.labels).values)
    for x, y in test.batches(50, shuffle=True, seed=3):
        ref = torch.stack([test[int(i)][0] for i in _match(test, x)])
        assert torch.equal(ref, x)
        assert torch.equal(test.labels[_match(test, x)], y)
        break


def _match(ds: ImageDataset, x: torch.Tensor) -> torch.Tensor:
    flat = ds.tensors()[0].reshape(len(ds), -1)
    return torch.cdist(x.reshape(len(x), -1), flat).argmin(1)


def test_limit_takes_first_samples_before_shuffling(train: ImageDataset) -> None:
    ys = torch.cat([y for _, y in train.batches(32, shuffle=True, seed=1, limit=100)])
    assert len(ys) == 100
    assert torch.equal(torch.sort(ys).values, torch.sort(train.labels[:100]).values)
    x, y = train.tensors(limit=10)
    assert x.shape[0] == 10 and torch.equal(y, train.labels[:10])
    assert sum(len(y) for _, y in train.batches(32, limit=0)) == 0


def test_transform_gets_generator_and_is_reproducible(test: ImageDataset) -> None:
    def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (x + 0.01 * torch.rand(x.shape, generator=g)).clamp(0, 1)

    a = torch.cat([x for x, _ in test.batches(64, shuffle=True, seed=5, transform=noise)])
    b = torch.cat([x for x, _ in test.batches(64, shuffle=True, seed=5, transform=noise)])
    plain = torch.cat([x for x, _ in test.batches(64, shuffle=True, seed=5)])
    assert torch.equal(a, b) and not torch.equal(a, plain)
    assert float((a - plain).abs().max()) <= 0.01 + 1e-6


def test_subset_is_a_view(test: ImageDataset) -> None:
    sub = test.subset([5, 0, 7])
    assert len(sub) == 3 and sub.classes == test.classes and sub.image_shape == test.image_shape
    assert torch.equal(sub.labels, test.labels[[5, 0, 7]])
    assert torch.equal(sub[0][0], test[5][0])
    sub2 = sub.subset([2])
    assert torch.equal(sub2[0][0], test[7][0])
    mask = test.labels == 3
    assert len(test.subset(mask)) == int(mask.sum())
    with pytest.raises(ValueError, match="subset indices"):
        test.subset([len(test)])
    with pytest.raises(IndexError):
        test[len(test)]
    assert torch.equal(test[torch.tensor(3)][0], test[3][0])
    assert torch.equal(test[np.int64(-1)][0], test[len(test) - 1][0])


def test_image_size_resizes(test: ImageDataset) -> None:
    big = load_dataset("digits", "test", image_size=16)
    x, _ = next(big.batches(8))
    assert x.shape == (8, 1, 16, 16) and big.image_shape == (1, 16, 16)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # antialiased bilinear upsampling by 2 preserves the mean intensity closely
    small = next(test.batches(8))[0]
    assert torch.allclose(x.mean(dim=(1, 2, 3)), small.mean(dim=(1, 2, 3)), atol=0.02)


def test_bad_arguments_raise_one_line_value_errors(test: ImageDataset) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet-nope")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="batch_size"):
        next(test.batches(0))
    with pytest.raises(ValueError, match="limit"):
        next(test.batches(8, limit=-1))
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", lambda split, **kw: None)


def test_from_tensors_round_trip() -> None:
    x = torch.rand(7, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    ds = ImageDataset.from_tensors(x, y, ["a", "b", "c"])
    xb, yb = ds.tensors()
    assert torch.equal(xb, x) and torch.equal(yb, y) and ds.num_classes == 3
