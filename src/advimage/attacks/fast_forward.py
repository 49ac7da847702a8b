"""Inference-optimised forward passes for the gradient-free queries of score-based attacks.

The Square attack (Andriushchenko et al., ECCV 2020) spends nearly all of its time in thousands
of no-grad forward passes: 5,000 per robust sample in AutoAttack (Croce & Hein, ICML 2020). On a
CPU, eager PyTorch allocates every activation afresh (fresh pages, hence page faults: two thirds
of an MNIST LeNet5 forward at batch 270) and runs convolution, ReLU and pooling as separate passes
over memory. A frozen TorchScript trace optimised for inference (oneDNN convolutions with
pre-packed weights, fused in-place ReLU, oneDNN pooling) computes the same logits 1.7x (CIFAR
ResNet-20) to 3x (LeNet5) faster.

The trace replaces the model only where that is safe, else the eager model is used:

- CPU tensors and an ``nn.Module`` in eval mode (attacks run models frozen; freezing needs it);
- no submodule declares ``is_randomized`` True (:func:`advimage.model_flags.model_flags`, read
  through wrappers, as EOT reads it; defenses that draw noise must be re-drawn per query), and
  two eager passes on the probe batch agree exactly (catches undeclared randomness);
- no module has forward hooks (their Python side effects would run once, at trace time);
- tracing, freezing and optimising succeed, and the trace's logits match the eager model's on the
  probe batch and on half of it in reverse order (attacks shrink batches as samples succeed;
  the new order catches some data-dependent branches a trace would freeze): same top-1
  class, max abs difference at most ``1e-4 * (1 + max |z|)``.

Other Python side effects of ``forward`` (a counter, logging) also run only while tracing: pass
``fast_queries=False`` to the attack to keep them. TorchScript is deprecated in recent PyTorch;
its deprecation warnings are silenced here and any failure falls back to eager, so the
optimisation can only change speed, never availability.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import Tensor, nn

from advimage.attacks.base import Model
from advimage.model_flags import model_flags

__all__ = ["inference_forward"]

_log = logging.getLogger(__name__)

# Relative tolerance on logits between the trace and the eager model (fp32 reassociation in
# oneDNN kernels differs by ~1e-6 relative; anything far above means a wrong trace).
_RTOL = 1e-4


def _unsafe(model: nn.Module) -> bool:
    """A submodule declares randomness (or a flag that is not a bool) or carries hooks a trace
    would not re-run."""
    try:
        randomized = any(model_flags(m).is_randomized for m in model.modules())
    except ValueError:  # a malformed declaration: stay eager rather than fail
        return True
    return randomized or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def inference_forward(model: Model, example: Tensor) -> tuple[Model, str]:
    """Return ``(forward, kind)``: a no-grad forward for ``model`` and which one it is.

    ``kind`` is ``"torchscript"`` when the optimised trace is used, else ``"eager"`` (see the
    module docstring for when). ``example`` ``(B, C, H, W)`` is a batch of typical inputs; it is
    used to trace and to check the trace. Call under ``torch.no_grad()``; the trace holds a copy
    of the weights at call time, so build a new one whenever the weights may have changed.
    """
    if (
        example.device.type != "cpu"
        or not isinstance(model, nn.Module)
        or model.training
        or _unsafe(model)
        or example.dim() != 4
        or len(example) < 2
    ):
        return model, "eager"
    with torch.no_grad():
        ref = model(example)  # (B, K)
        if not isinstance(ref, Tensor) or not torch.equal(ref, model(example)):
            return model, "eager"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(copy.deepcopy(model), example, check_trace=False)
                fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            half = example.flip(0)[: max(1, len(example) // 2)]  # other size, other order
            for inp, want in ((example, ref), (half, model(half))):
                got = fast(inp)
                tol = _RTOL * (1.0 + float(want.abs().max()))
                if (
                    got.shape != want.shape
                    or not bool(torch.isfinite(got).all())
                    or float((got - want).abs().max()) > tol
                    or not torch.equal(got.argmax(1), want.argmax(1))
                ):
                    _log.debug("optimised trace disagrees with the eager model; using eager")
                    return model, "eager"
        except Exception as err:  # noqa: BLE001 -- any tracing failure means: stay eager
            _log.debug("optimised trace unavailable (%s: %s); using eager", type(err).__name__, err)
            return model, "eager"
    return fast, "torchscript"
