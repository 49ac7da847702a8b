"""Training configuration (one dataclass; the CLI and YAML configs fill it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

from advimage.errors import UserInputError

__all__ = ["PRESETS", "TrainConfig", "UnknownPresetError", "check_int", "check_range"]


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
        for name in ("epochs", "batch_size", "adv_steps"):
            check_int(name, getattr(self, name), 1)
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        check_range("lr", self.lr, 0, None, low_open=True)
        check_range("momentum", self.momentum, 0, 1, high_open=True)
        check_range("weight_decay", self.weight_decay, 0, None)
        check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs,
                     why=f"longer than the {self.epochs} training epoch(s)")
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("adv_eps", self.adv_eps, 0, 1)
        if self.adv_step_size is not None:
            check_range("adv_step_size", self.adv_step_size, 0, None, low_open=True)
        if self.augment not in ("standard", "none", "jitter"):
            raise UserInputError(
                f"augment (--augment) must be standard, none or jitter, got {self.augment!r}")

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-able dict (stored in checkpoints, checked on resume)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from a dict (YAML); unknown keys are refused in one line naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(
                f"unknown training option(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


def _flag(name: str) -> str:
    """``name (--name)``: an option as both the library and the CLI spell it."""
    return f"{name} (--{name.replace('_', '-')})"


def check_int(name: str, value: object, low: int) -> None:
    """Refuse a non-integer (or a bool) or an integer below ``low``: one line naming the flag."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserInputError(f"{_flag(name)} must be an integer >= {low}, got {value!r}")


def check_range(name: str, value: object, low: float, high: float | None, *,
                 low_open: bool = False, high_open: bool = False, why: str = "") -> None:
    """Refuse a non-number, NaN/inf, or a value outside ``[low, high]`` (open ends as given);
    ``why`` explains a value above ``high``."""
    number = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value)
    num = cast(float, value)  # compared only when it is a finite int or float
    above = number and high is not None and (num >= high if high_open else num > high)
    if number and not above and (num > low if low_open else num >= low):
        return
    if high is None:
        span = f"{'>' if low_open else '>='} {low:g}"
    else:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    reason = f", not {why}" if above and why else ""
    shown = f"{value:g}" if isinstance(value, float) else repr(value)
    raise UserInputError(f"{_flag(name)} must be a finite number {span}{reason}; got {shown}")


class UnknownPresetError(UserInputError, KeyError):
    """``PRESETS[name]`` for a name that is not a preset: one line listing the presets."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _Presets(dict[str, dict[str, Any]]):
    """The preset table; looking up an unknown name lists the known ones."""

    def __missing__(self, name: str) -> dict[str, Any]:
        raise UnknownPresetError(
            f"unknown preset {name!r} (--preset); choose one of: {', '.join(sorted(self))}")


# Named schedules (stated in the README with their measured accuracy and wall time).
PRESETS: dict[str, dict[str, Any]] = _Presets({
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
})
