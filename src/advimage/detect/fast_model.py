"""A faster copy of a classifier for the noise-signature detector's many passes on a CPU.

Hu, Yu et al. (NeurIPS 2019) score each image with up to hundreds of forward-backward passes
(C2t / C2u) and a few noisy forwards (C1). On a CPU about a third of such a pass of a ResNet is
elementwise work between the convolutions (``bench/README.md``, "Noise-signature detector").
:func:`scoring_copy` returns a private copy with two standard inference rewrites:

* every eval-mode BatchNorm that directly follows a convolution is folded into that
  convolution's weights and bias (``torch.fx.experimental.optimization.fuse``, on the largest
  submodules ``torch.fx`` can trace), which removes the BatchNorm's forward and backward;
* on the CPU, weights and inputs in channels-last (NHWC) layout, oneDNN's fast path.

The function is mathematically the same, but floating-point results differ in the last bits
(C1 by up to about 1e-5 on ResNet-20); the detector's step counts were checked to be identical
on the benchmark's and the tests' images. Models without convolutions or BatchNorm, callables
that are not modules, and submodules that cannot be traced are used as they are.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import Tensor, nn

from advimage.attacks.base import Model
from advimage.model_flags import model_flags

with warnings.catch_warnings():  # torch 2.13's module defines its helpers with jit.script_method
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                            category=DeprecationWarning)
    from torch.fx.experimental.optimization import fuse

__all__ = ["scoring_copy"]

log = logging.getLogger(__name__)


class _ChannelsLast(nn.Module):
    """Runs ``net`` (already converted) on channels-last copies of 4-D inputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


def _fold(module: nn.Module) -> nn.Module:
    """``module`` with its conv+BN pairs folded: traced whole if possible, else per child."""
    try:
        return fuse(module, inplace=True)  # traces first: nothing changes if tracing fails
    except Exception:  # noqa: BLE001  (data-dependent control flow etc.: fold the children)
        for name, child in module.named_children():
            setattr(module, name, _fold(child))
        return module


def _draws_noise(model: nn.Module) -> bool:
    """Whether ``model`` or a submodule declares itself randomized (or declares malformed
    flags, which are read as "may be")"""
    try:
        return any(bool(model_flags(m).is_randomized) for m in model.modules())
    except ValueError:
        return True


def scoring_copy(model: Model) -> Model:
    """A copy of ``model`` (in eval mode, frozen) with the rewrites of the module docstring.

    Returns ``model`` itself when it is not an ``nn.Module``, is in training mode, declares
    itself randomized (a copy would draw from its own copy of the generators and leave the
    model's untouched), or has no convolution.
    """
    if not isinstance(model, nn.Module) or model.training:
        return model
    if _draws_noise(model):
        return model
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model
    fast = copy.deepcopy(model)
    if any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()):
        fast = _fold(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    if all(p.device.type == "cpu" for p in fast.parameters()):
        fast = _ChannelsLast(fast.to(memory_format=torch.channels_last))  # type: ignore[call-overload]
    return fast.eval()
