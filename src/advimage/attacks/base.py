"""Attack base class: validation, model freezing, seeding and the final projection.

Attacks hold no model (the Foolbox 3 design of Rauber et al., 2020): an attack is a small
config dataclass called as ``attack(model, x, y, target=None) -> x_adv``. The base class does
everything every attack must get right exactly once:

1. validate inputs (images in bounds, labels in range, targets differ from labels) and warn
   when the model returns probabilities instead of logits (as AutoAttack's checks do);
2. freeze the model (eval mode, parameters without ``requires_grad``) and restore it after;
3. seed a ``torch.Generator`` and the global RNG (in a forked scope) for reproducibility;
4. project the result into the threat model and return it in the input's dtype and device.

Half precision: float16/bfloat16 images are projected in float32 and rounded last, inside the
ball (:meth:`advimage.threat.ThreatModel.project`); a float16/bfloat16 model runs its forward in
its dtype while the attack's own arithmetic (steps, norms, losses) stays float32. Autocast
(``--precision bf16|fp16``) wraps the model, not the attack
(:func:`advimage.precision.with_precision`); an attack called inside an autocast region wraps
the model the same way and runs its own arithmetic and the projection outside it.

Subclasses implement :meth:`Attack._run` only; ``__call__`` is final. An attack that has more
to report than its images (Square's queries, AutoAttack's per-stage report) returns it from a
separate ``run`` method as an :class:`AttackResult`; attacks never keep results on themselves.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar, final

import torch
from torch import Tensor

from advimage.attacks.preparation import AtDtype, Model, frozen, model_dtype_device, seeded
from advimage.errors import UserInputError
from advimage.precision import AutocastModel, active_precision, full_precision
from advimage.threat import NORMS, ThreatModel, is_low_precision
from advimage.validation import check_images, check_labels

__all__ = [
    "Attack",
    "AttackResult",
    "Model",
    "check_positive_float",
    "check_positive_int",
    "frozen",
    "model_dtype_device",
]

# Tolerance (probability units) for "rows sum to one" when detecting softmax outputs.
_PROB_ATOL = 1e-3


@dataclass(frozen=True)
class AttackResult:
    """What one attack run returns: the adversarial images, and in subclasses whatever else
    the run has to say (Square's queries, AutoAttack's per-stage report).

    Attributes:
        x_adv: Adversarial images, same shape, dtype and device as the attacked ``x``.
    """

    x_adv: Tensor


R = TypeVar("R", bound=AttackResult)
# An attack's core on validated inputs: (model, x, y, target, generator) -> result.
Core = Callable[[Model, Tensor, Tensor, "Tensor | None", torch.Generator], R]


@dataclass
class Attack(ABC):
    """Base attack: ``attack(model, x, y, *, target=None) -> x_adv`` inside ``self.threat``.

    Args:
        eps: Perturbation budget in pixel units of ``bounds`` (``inf`` for minimal-perturbation
            attacks: then only the pixel box constrains).
        norm: ``"linf"`` or ``"l2"`` (``"l1"``, ``"l0"`` for attacks listing them in ``norms``).
        seed: Seed for random starts and the model's randomness; ``None`` = nondeterministic.
        bounds: Valid pixel range ``(low, high)`` of the model's inputs.
        channels_last: Run the attack on a channels-last copy of 4-D inputs (``None``: on CPU
            only). Same passes, same arithmetic per pixel, but oneDNN convolutions run about
            1.3-2x faster on that layout; the result comes back in the caller's layout.
    """

    name: ClassVar[str] = "attack"
    supports_targeted: ClassVar[bool] = True
    # threat-model norms this attack implements (a subset of advimage.threat.NORMS)
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    eps: float = 8 / 255
    norm: str = "linf"
    seed: int | None = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.norm in NORMS and self.norm not in self.norms:
            raise ValueError(
                f"{self.name} does not support norm {self.norm!r}; it supports: "
                f"{', '.join(self.norms)}"
            )
        try:
            self.threat  # noqa: B018 -- builds the ThreatModel, raising ValueError on bad eps/norm
        except UserInputError as err:  # a budget out of range: say which attack it was given to
            raise UserInputError(f"{self.name}: {err}") from None
        seed = self.seed
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise ValueError(f"seed must be an int or None, got {seed!r}")
            self.seed = int(seed)  # numpy ints from configs become plain ints

    @property
    def threat(self) -> ThreatModel:
        """The threat model (norm ball of radius ``eps`` inside ``bounds``) this attack obeys."""
        return ThreatModel(self.norm, self.eps, tuple(self.bounds))  # type: ignore[arg-type]

    def check_budget(self, x: Tensor) -> None:
        """Refuse a budget that cannot fit images like ``x`` (an L2 eps beyond the box
        diagonal), in one line naming the attack; callers check before writing anything."""
        try:
            self.threat.check_budget(x)
        except UserInputError as err:
            raise UserInputError(f"{self.name}: {err}") from None

    @final
    def __call__(
        self, model: Model, x: Tensor, y: Tensor, *, target: Tensor | None = None
    ) -> Tensor:
        """Attack ``model`` at ``x`` (``(B, C, H, W)`` in ``bounds``) with labels ``y`` ``(B,)``.

        Returns adversarial images of the same shape, dtype and device as ``x``, always inside
        the threat model. ``target`` ``(B,)`` asks for a targeted attack. Subclasses implement
        :meth:`_run`; attacks with more to say (queries, a per-stage report) add a ``run``
        method returning an :class:`AttackResult` built by :meth:`_execute`.
        """
        return self._execute(model, x, y, target, self._run_as_result).x_adv

    @final
    def run_prepared(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """This attack as a member of a composite one (AutoAttack), projected into the threat.

        Skips what the composite's own call already did once for the whole batch: ``x`` is the
        validated working copy, ``model`` frozen (and wrapped for its precision), ``y`` and
        ``target`` checked, ``generator`` seeded and shared with the other members.
        """
        return self.threat.project(x, self._run(model, x, y, target, generator))

    def _run_as_result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> AttackResult:
        return AttackResult(self._run(model, x, y, target, generator))

    def _execute(
        self, model: Model, x: Tensor, y: Tensor, target: Tensor | None, core: Core[R]
    ) -> R:
        """Validate, freeze, seed, run ``core`` and project its ``x_adv`` (see the module doc).

        ``core`` gets the working copy of ``x`` and the checked labels; the result comes back
        with ``x_adv`` inside the threat model in ``x``'s dtype, device and memory layout.
        """
        threat = self.threat
        check_images(x, "x", bounds=threat.bounds)
        self.check_budget(x)
        if target is not None and not self.supports_targeted:
            raise ValueError(f"attack {self.name!r} does not support targeted attacks")
        model, xw = self._working_copy(model, x)
        device = xw.device
        with frozen(model), seeded(self.seed, device) as gen, full_precision(device):
            probe = self._probe_input(xw)  # (b, C, H, W), b <= B
            with torch.no_grad():
                logits = model(probe)
            num_classes = self._check_logits(logits, len(probe))
            yw = check_labels(y, len(x), num_classes, "y").to(device)
            tw = None
            if target is not None:
                tw = check_labels(target, len(x), num_classes, "target").to(device)
                if bool((tw == yw).any()):
                    raise ValueError("target must differ from y for every sample")
            with torch.enable_grad():  # attacks need input gradients even under no_grad()
                result = core(model, xw, yw, tw, gen)
        return dataclasses.replace(result, x_adv=self._finish(x, result.x_adv))

    def _working_copy(self, model: Model, x: Tensor) -> tuple[Model, Tensor]:
        """The model wrapped for autocast/low precision, and ``x`` in its dtype, device and
        (on the CPU by default) channels-last layout."""
        dtype, device = model_dtype_device(model, x)
        amp = active_precision(device)  # in a caller's autocast: autocast the model only
        if amp != "fp32":
            model = AutocastModel(model, amp, device)
        if is_low_precision(dtype):  # attack arithmetic in float32; the model keeps its dtype
            model = AtDtype(model, dtype)
            dtype = torch.float32
        xw = x.detach().to(device=device, dtype=dtype)  # (B, C, H, W) working copy
        use_cl = self.channels_last if self.channels_last is not None else device.type == "cpu"
        if use_cl and xw.dim() == 4:
            xw = xw.contiguous(memory_format=torch.channels_last)
        return model, xw

    def _finish(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """``x_adv`` projected into the threat model around ``x``, in ``x``'s dtype, device and
        layout (low precision: projected in float32 and rounded last)."""
        low = is_low_precision(x.dtype)  # project in float32, round to x.dtype last
        x_adv = x_adv.detach().to(device=x.device, dtype=torch.float32 if low else x.dtype)
        fmt = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format
        )
        if x_adv.dim() == 4:  # back to the caller's layout
            x_adv = x_adv.contiguous(memory_format=fmt)
        with full_precision(x.device):  # fp32 even inside a caller's autocast region
            x_adv = self.threat.project(x.detach(), x_adv).detach()
        return x_adv.contiguous(memory_format=fmt) if low and x_adv.dim() == 4 else x_adv

    def _probe_input(self, x: Tensor) -> Tensor:
        """Rows the model is checked on before attacking (output shape, number of classes).

        The whole batch by default. Attacks that need no clean logits override this with one
        row, so validation does not cost a whole extra forward pass.
        """
        return x

    @staticmethod
    def _check_logits(logits: object, n: int) -> int:
        """Check the model's output is ``(B, K)`` and warn if it looks like probabilities."""
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape ({n}, num_classes), got {shape}")
        if bool((logits >= 0).all()) and bool(((logits.sum(dim=1) - 1).abs() <= _PROB_ATOL).all()):
            warnings.warn(
                "model outputs look like probabilities (non-negative rows summing to 1); "
                "attacks expect logits, remove the final softmax",
                UserWarning,
                stacklevel=3,
            )
        return int(logits.shape[1])

    @abstractmethod
    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Return adversarial examples for validated ``x`` (detached); the caller projects."""


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """``ValueError`` unless ``value`` is an int ``>= minimum`` (config checks)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_float(value: object, name: str, allow_inf: bool = False) -> float:
    """``ValueError`` unless ``value`` is a positive number (finite unless ``allow_inf``)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v
