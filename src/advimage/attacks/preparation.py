"""Preparing a model for an attack: freezing it, its dtype and device, seeding the run.

The steps :class:`advimage.attacks.base.Attack` takes around every attack (Foolbox 3's design of
Rauber et al., 2020: attacks hold no model, so the call prepares it each time): the model in
eval mode with frozen parameters and everything restored after; the dtype and device it computes
in, with float16/bfloat16 models run through a float32 adapter so the attack's own arithmetic
stays float32; and a seeded ``torch.Generator`` plus a forked, seeded global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from advimage.model_flags import Wrapper

__all__ = ["AtDtype", "Model", "frozen", "model_dtype_device", "seeded"]

Model = Callable[[Tensor], Tensor]


@contextmanager
def frozen(model: Model) -> Iterator[Model]:
    """Put ``model`` in eval mode with frozen parameters; restore every flag on exit.

    Restores each submodule's ``training`` flag and each parameter's ``requires_grad``, so a
    model that was half in train mode comes back exactly as it was. Freezing parameters means
    backward passes never write ``.grad`` into the model and skip weight gradients.
    Non-``nn.Module`` callables pass through untouched.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def model_dtype_device(model: Model, x: Tensor) -> tuple[torch.dtype, torch.device]:
    """The dtype/device the model computes in: its first floating parameter's, else ``x``'s."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
    return x.dtype, x.device


class AtDtype(nn.Module, Wrapper):
    """``model`` called with inputs cast to its low-precision ``dtype``, logits in float32.

    Attacks on float16/bfloat16 models compute steps, norms and losses in float32 (constants
    like 1e-12 underflow to zero in float16); only the model's own forward runs in its dtype.
    A :class:`~advimage.model_flags.Wrapper`: EOT and the fast forward read ``model``'s flags.
    """

    def __init__(self, model: Model, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = model
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(self.dtype)).float()


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[torch.Generator]:
    """A generator on ``device`` seeded with ``seed``; also seeds the global RNG in a fork.

    Seeding the (forked) global RNG makes randomized models (dropout-style defenses, noise
    layers) reproducible too, without disturbing the caller's random state.
    """
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
        yield gen
        return
    gen.manual_seed(int(seed))
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        yield gen
