"""The common model wrapper every advimage component attacks, defends and audits.

``ImageClassifier`` follows the RobustBench convention (Croce et al., 2021, "RobustBench: a
standardized adversarial robustness benchmark"): the model takes raw images in ``[0, 1]`` and
normalizes them itself, so attack budgets (eps) are always expressed in pixel space and no
caller has to remember which mean/std a network was trained with.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from advimage.errors import InputShapeError

__all__ = ["ImageClassifier", "wrap_model"]


def _stats_buffer(values: Sequence[float] | None, channels: int, fill: float, what: str) -> Tensor:
    """Build a (1, C, 1, 1) normalization buffer; ``None`` gives the identity value ``fill``."""
    if values is None:
        return torch.full((1, channels, 1, 1), fill)
    vals = [float(v) for v in values]
    if len(vals) != channels:
        raise ValueError(f"{what} has {len(vals)} values but the input has {channels} channels")
    if what == "std" and any(v <= 0 for v in vals):
        raise ValueError(f"std values must be positive, got {vals}")
    return torch.tensor(vals).view(1, channels, 1, 1)  # (1, C, 1, 1)


class ImageClassifier(nn.Module):
    """Takes images in [0,1] (B,C,H,W); normalization lives inside (RobustBench convention).

    Args:
        net: the raw network mapping normalized images to logits; its state-dict keys appear
            under ``net.`` so checkpoints of the bare network map one-to-one.
        mean: per-channel mean subtracted before ``net``; ``None`` means no shift.
        std: per-channel std divided before ``net``; ``None`` means no scaling.
        arch: registry name used to rebuild the network from a checkpoint ("custom" if none).
        num_classes: number of logits.
        input_shape: ``(C, H, W)`` the network expects.
        classes: optional class names, one per logit.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        *,
        arch: str = "custom",
        num_classes: int,
        input_shape: tuple[int, int, int],
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), positive, got {input_shape}")
        if classes is not None:
            classes = [str(c) for c in classes]
            if len(classes) != num_classes:
                raise ValueError(f"classes has {len(classes)} names but num_classes={num_classes}")
        self.net = net
        channels = shape[0]
        self.register_buffer("mean", _stats_buffer(mean, channels, 0.0, "mean"))  # (1, C, 1, 1)
        self.register_buffer("std", _stats_buffer(std, channels, 1.0, "std"))  # (1, C, 1, 1)
        self.arch = str(arch)
        self.arch_kwargs: dict = {}  # factory kwargs, set by create_model, recorded in checkpoints
        self.num_classes = num_classes
        self.input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.classes = classes

    def forward(self, x: Tensor) -> Tensor:
        """Map images in [0, 1] ``(B, C, H, W)`` to logits ``(B, num_classes)``.

        Raises:
            InputShapeError: in one line, when the images have another number of channels than
                the model (they would broadcast against the per-channel mean/std and give
                silently wrong logits), or another size that the network cannot take. Images
                of another size that the network accepts (global pooling) pass.
        """
        if x.dim() == 4 and x.shape[1] != self.mean.shape[1]:
            raise InputShapeError(self._misfit(x, "use another model or dataset"))
        try:
            return self.net((x - self.mean) / self.std)
        except RuntimeError as err:
            if tuple(x.shape[1:]) == self.input_shape:
                raise  # a failure of the network itself, not of the input's shape
            raise InputShapeError(self._misfit(x, "use --image-size or another model")) from err

    def _misfit(self, x: Tensor, advice: str) -> str:
        """One line: the images' shape, the model and the shape it expects, what to do."""
        got = "x".join(str(s) for s in x.shape[1:])
        want = "x".join(str(s) for s in self.input_shape)
        return f"images of shape {got} do not fit model {self.arch}, which expects {want}; {advice}"

    def layer_names(self) -> list[str]:
        """Names of ``net``'s submodules whose outputs :meth:`features` can return."""
        return [name for name, _ in self.net.named_modules() if name]

    def features(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Return the outputs of the named ``net`` submodules for images ``x`` in one forward pass.

        Used by feature-space detectors (e.g. LID, Mahalanobis) and feature attacks. Gradients
        flow through the returned tensors under the caller's grad mode. A module called more
        than once per pass reports its last output; tuple outputs report their first tensor.
        """
        return self.forward_with_features(x, layers)[1]

    def forward_with_features(
        self, x: Tensor, layers: Sequence[str]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits ``(B, K)`` and the named layers' outputs from the same single forward pass."""
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers must name at least one layer; see layer_names()")
        modules = dict(self.net.named_modules())
        unknown = [name for name in layers if not name or name not in modules]
        if unknown:
            raise ValueError(
                f"unknown layer {unknown[0]!r}; valid layers: {', '.join(self.layer_names())}"
            )
        captured: dict[str, Tensor] = {}

        def make_hook(name: str):
            def hook(_module: nn.Module, _inputs: object, output: object) -> None:
                if isinstance(output, (tuple, list)):
                    output = next((o for o in output if isinstance(o, Tensor)), None)
                if isinstance(output, Tensor):
                    captured[name] = output

            return hook

        handles = [modules[name].register_forward_hook(make_hook(name)) for name in set(layers)]
        try:
            logits = self(x)  # (B, K)
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in layers if name not in captured]
        if missing:
            raise ValueError(f"layer {missing[0]!r} produced no tensor output in forward()")
        return logits, {name: captured[name] for name in layers}

    def fingerprint(self) -> str:
        """sha256 over arch, factory kwargs and every state-dict tensor (name, dtype, shape, bytes).

        Stable across processes and devices; changes whenever any weight or buffer changes, so
        detectors and caches keyed on it are invalidated by retraining.
        """
        digest = hashlib.sha256()
        digest.update(self.arch.encode())
        digest.update(json.dumps(self.arch_kwargs, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, input_shape={self.input_shape}"


def _guess_channels(module: nn.Module, mean: Sequence[float] | None) -> int:
    if mean is not None:
        return len(mean)
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return sub.in_channels
    return 3


def wrap_model(
    module: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    classes: list[str] | None = None,
) -> ImageClassifier:
    """Wrap any user ``nn.Module`` (logits from normalized images) as an :class:`ImageClassifier`.

    ``input_shape`` defaults to ``(C, 32, 32)`` with ``C`` from ``mean`` or the first Conv2d
    (a warning says so); ``num_classes`` is inferred with one dummy forward in eval mode.
    """
    if isinstance(module, ImageClassifier):
        return module
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if input_shape is None:
        input_shape = (_guess_channels(module, mean), 32, 32)
        warnings.warn(
            f"wrap_model: input_shape not given, assuming {input_shape}", stacklevel=2
        )
    if num_classes is None:
        ref = next(iter(module.parameters()), None)
        if ref is None:
            ref = next(iter(module.buffers()), torch.zeros(()))
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        dummy = torch.zeros((1, *input_shape), dtype=dtype, device=ref.device)  # (1, C, H, W)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(dummy)
        except Exception as exc:
            raise ValueError(
                f"wrap_model: dummy forward with input_shape {tuple(input_shape)} failed "
                f"({type(exc).__name__}: {exc}); pass num_classes and input_shape"
            ) from exc
        finally:
            module.train(was_training)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError("wrap_model: module must return logits shaped (B, num_classes)")
        num_classes = int(out.shape[1])
    return ImageClassifier(
        module, mean, std, arch="custom", num_classes=num_classes,
        input_shape=tuple(input_shape), classes=classes,  # type: ignore[arg-type]
    )
