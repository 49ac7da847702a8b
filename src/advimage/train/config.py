"""Training configuration (one dataclass; the CLI and YAML configs fill it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainConfig", "PRESETS"]


@dataclass
class TrainConfig:
    """SGD + momentum, cosine schedule with linear warm-up, weight decay, augmentation."""

    model: str = "small-cnn"
    dataset: str = "digits"
    data_root: str | None = None
    epochs: int = 30
    batch_size: int = 128  # images per step
    lr: float = 0.1  # peak learning rate, reached after warm-up
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # L2 on weights (not on BN/bias)
    warmup_epochs: float = 1.0  # linear warm-up from 0, in epochs
    label_smoothing: float = 0.0
    augment: str = (
        "standard"  # "standard" (dataset default) | "none" | "jitter" (standard + color jitter)
    )
    seed: int = 0
    channels_last: bool = True  # faster convolutions on CPU
    train_limit: int | None = None  # use only the first N training images (quick runs)
    test_limit: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # PGD adversarial training (Madry et al., ICLR 2018): L-inf budget on the [0, 1] scale
    # (0 = off), PGD steps per batch, step size (None: 2.5 * adv_eps / adv_steps).
    adv_eps: float = 0.0
    adv_steps: int = 7
    adv_step_size: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.augment not in ("standard", "none", "jitter"):
            raise ValueError(f"augment must be standard, none or jitter, got {self.augment!r}")
        if not 0 <= self.adv_eps <= 1:
            raise ValueError(f"adv_eps must be in [0, 1], got {self.adv_eps}")
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps must be >= 1, got {self.adv_steps}")
        if self.adv_step_size is not None and not self.adv_step_size > 0:
            raise ValueError(f"adv_step_size must be > 0, got {self.adv_step_size}")
        for name in ("train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


# Named schedules (stated in the README with their measured accuracy and wall time).
PRESETS: dict[str, dict[str, Any]] = {
    # bundled demo weights: small CNN on scikit-learn digits, seconds on a CPU
    "digits": dict(
        model="small-cnn",
        dataset="digits",
        epochs=30,
        batch_size=64,
        lr=0.05,
        weight_decay=5e-4,
        warmup_epochs=1,
    ),
    # resnet20 on CIFAR-10 sized for a 2-core CPU (about 1-1.5 min per epoch)
    "cifar10-resnet20-cpu": dict(
        model="resnet20",
        dataset="cifar10",
        epochs=25,
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        warmup_epochs=1,
        label_smoothing=0.1,
    ),
    # He et al.'s full-length resnet20 schedule, length-matched (for a GPU)
    "cifar10-resnet20-full": dict(
        model="resnet20",
        dataset="cifar10",
        epochs=180,
        batch_size=128,
        lr=0.1,
        weight_decay=1e-4,
        warmup_epochs=1,
    ),
    # CI smoke run
    "quick": dict(
        model="small-cnn",
        dataset="digits",
        epochs=2,
        batch_size=64,
        lr=0.05,
        train_limit=512,
        test_limit=256,
    ),
}
