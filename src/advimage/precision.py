"""Mixed precision and memory layout for the model's forward/backward passes.

At 224 pixels the model's convolutions are nearly all of an attack's cost. ``torch.autocast``
runs them in bfloat16 (CPU and CUDA) or float16 (CUDA) while everything else stays float32:
the images, the attack's steps, norms and losses, and the threat model's projection. This
module does that in one place, around the model: :func:`with_precision` returns the model
itself for ``"fp32"`` (results stay bit-identical) and otherwise an :class:`AutocastModel`
whose forward runs under autocast and returns float32 logits. Attacks, clean predictions and
accuracy loops take the wrapped model like any other, so none of them needs a precision option;
the evaluation runner and the ``attack`` / ``eval robust`` / ``models eval`` commands wrap.

Channels-last: convolutions on NHWC tensors are faster on oneDNN (CPU) and on CUDA tensor cores
(float16/bfloat16). :func:`with_precision` converts the weights and, per call, the inputs when
asked, and by default on CUDA in reduced precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from advimage.errors import UserInputError
from advimage.model_flags import Wrapper

__all__ = [
    "PRECISIONS",
    "AutocastModel",
    "active_precision",
    "autocast",
    "check_precision",
    "full_precision",
    "with_precision",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str,
                    option: str = "--precision") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None`` for ``fp32``).

    ``option`` names the setting in errors (``--precision``, ``config: 'precision'``).

    Raises:
        UserInputError: an unknown precision, ``fp16`` off CUDA (CPU autocast in float16 is
            slow and partial; use ``bf16``), or a device type autocast does not know.
    """
    p = str(precision).lower()
    if p not in PRECISIONS:
        raise UserInputError(f"{option} must be one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
    kind = torch.device(device).type
    if p == "fp32":
        return None
    if p == "fp16" and kind != "cuda":
        raise UserInputError(f"{option} fp16 needs a CUDA device (got {kind}); use bf16 "
                             "on the CPU")
    if kind not in ("cpu", "cuda"):
        raise UserInputError(f"{option} {p} is supported on cpu and cuda, not {kind}")
    return _DTYPES[p]


def autocast(precision: str, device: torch.device | str) -> Any:
    """Context manager: autocast to ``precision`` on ``device``; does nothing for ``fp32``."""
    dtype = check_precision(precision, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def active_precision(device: torch.device | str) -> str:
    """The precision of the autocast region the caller is in on ``device`` (``fp32``: none)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        return "fp32"
    names = {v: k for k, v in _DTYPES.items()}
    dtype = torch.get_autocast_dtype(kind)
    if dtype not in names:
        raise UserInputError(f"autocast to {dtype} is not supported; use bf16 or fp16")
    return names[dtype]


@contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Autocast switched off on ``device`` (code that must stay float32 inside a region)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        yield
        return
    with torch.autocast(kind, enabled=False):
        yield


class AutocastModel(nn.Module, Wrapper):
    """``model`` (a module or any callable) run under autocast; logits come back in float32.

    Attribute reads the wrapper does not answer (``classes``, ``fingerprint``, ``arch``,
    ``is_randomized``, ...) pass through to the wrapped model; as a
    :class:`~advimage.model_flags.Wrapper`, its flags are the wrapped model's.
    """

    def __init__(self, model: Any, precision: str, device: torch.device | str,
                 channels_last: bool = False) -> None:
        super().__init__()
        check_precision(precision, device)
        self.inner = model
        self.precision = str(precision).lower()
        self.device_type = torch.device(device).type
        self.channels_last = channels_last

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner", self.__dict__.get("inner"))
            if inner is None:  # half-built (unpickling): nothing to pass through to
                raise
            return getattr(inner, name)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device_type):
            out = self.inner(x)
        return out.float() if out.is_floating_point() else out


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def with_precision(
    model: nn.Module,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    channels_last: bool | None = None,
    option: str = "--precision",
) -> nn.Module:
    """``model`` prepared to run in ``precision`` on ``device``.

    Args:
        model: the classifier (moved to ``device`` already).
        precision: ``fp32`` (unchanged), ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA).
        device: where the model runs.
        channels_last: convert the weights (in place) and every 4-D input to channels-last.
            ``None``: on CUDA in ``bf16``/``fp16`` for a model with 2-D convolutions, where
            tensor cores want NHWC. Attacks already run CPU inputs in channels-last.
        option: the setting's name in errors.

    Returns:
        ``model`` itself for ``fp32`` without channels-last, else an :class:`AutocastModel`.
    """
    dtype = check_precision(precision, device, option)
    if channels_last is None:
        channels_last = (dtype is not None and torch.device(device).type == "cuda"
                         and _has_conv2d(model))
    if dtype is None and not channels_last:
        return model
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    return AutocastModel(model, precision, device, channels_last=channels_last)
