"""The per-epoch training state (``state.safetensors`` + ``state.json``) and the divergence guard.

``state.safetensors`` holds the model's weights, any extra trained modules and the optimizer's
buffers; ``state.json`` the finished epoch and the history. Both are only ever replaced by a
finished, finite epoch: a loss or weights that turn NaN/inf stop training with
:class:`~advimage.errors.TrainingDivergedError` before anything is written, so the last good
checkpoint stays on disk. A damaged state file is a one-line
:class:`~advimage.errors.CorruptFileError` naming it; nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from advimage.errors import CorruptFileError, TrainingDivergedError
from advimage.jsonfile import read_json_object
from advimage.models.checkpoint import check_state_dict
from advimage.models.safe_files import CheckpointError, read_safetensors
from advimage.utils import write_json

__all__ = [
    "check_finite_loss",
    "check_finite_state",
    "load_train_state",
    "read_train_meta",
    "save_train_state",
]

RESUME_HINT = ": remove it or use --no-resume"


def save_train_state(
    out: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    meta: dict[str, Any],
    extra: nn.Module | None = None,
) -> None:
    """Write ``out/state.safetensors`` (through a temporary file) then ``out/state.json``."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if extra is not None:
        for k, v in extra.state_dict().items():
            tensors[f"extra.{k}"] = v.detach().contiguous().cpu()
    for i, p in enumerate(_params(opt)):
        for k, v in opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{i}.{k}"] = v.detach().contiguous().cpu()
    tmp = out / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(out / "state.safetensors")
    write_json(out / "state.json", meta)


def _params(opt: torch.optim.Optimizer) -> list[Tensor]:
    """The optimizer's parameters in group order (the index of the saved buffers)."""
    return [p for g in opt.param_groups for p in g["params"]]


def read_train_meta(out: Path) -> dict[str, Any] | None:
    """``out/state.json`` (epoch, history, ...), None if absent; damaged: ``CorruptFileError``."""
    path = out / "state.json"
    if not path.exists():
        return None
    meta = read_json_object(path, "{path} is damaged ({reason})" + RESUME_HINT)
    epoch, history = meta.get("epoch"), meta.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not isinstance(history, list) \
            or epoch != len(history):
        raise CorruptFileError(
            f"{path} is damaged (epoch {epoch!r} does not match its history){RESUME_HINT}")
    return meta


def load_train_state(
    out: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    extra: nn.Module | None = None,
) -> dict[str, Any]:
    """Load ``out``'s state into ``model``, ``extra`` and ``opt``; returns ``state.json``.

    Raises:
        CorruptFileError: (one line naming the file) a damaged, pickled, non-finite or
            mis-shaped state, or a ``state.json`` without its ``state.safetensors``.
    """
    meta = read_train_meta(out)
    weights = out / "state.safetensors"
    if meta is None or not weights.is_file():
        missing = out / "state.json" if meta is None else weights
        raise CorruptFileError(f"{missing} is missing, so {out} cannot resume{RESUME_HINT}")
    tensors = read_safetensors(weights, device=str(device), hint=RESUME_HINT)
    bad = next((k for k, v in tensors.items()
                if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CorruptFileError(f"{weights} holds non-finite values ({bad}){RESUME_HINT}")
    parts = {"model.": model, "extra.": extra}
    for prefix, module in parts.items():
        if module is None:
            continue
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            check_state_dict(module, state, str(weights))
        except CheckpointError as exc:
            raise CorruptFileError(f"{exc}{RESUME_HINT}") from None
        module.load_state_dict(state)
    _load_optimizer(opt, tensors, weights)
    return meta


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], source: Path) -> None:
    params = _params(opt)
    for key, v in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = (key.split(".", 2) + ["", ""])[:3]
        param = params[int(idx)] if idx.isdigit() and int(idx) < len(params) else None
        if param is None or not name or (v.dim() > 0 and v.shape != param.shape):
            raise CorruptFileError(f"{source}: optimizer entry {key!r} does not fit the model "
                                   f"({len(params)} parameters){RESUME_HINT}")
        opt.state[param][name] = v


def _diverged(epoch: int, reason: str, out: Path, last_good: int) -> TrainingDivergedError:
    if last_good > 0:
        kept = f"the last good checkpoint (epoch {last_good}) is kept in {out}"
    else:
        kept = f"no epoch of this run had finished, so {out} holds no checkpoint of it"
    return TrainingDivergedError(f"training diverged at epoch {epoch} ({reason}); {kept}; "
                                 "lower --lr")


def check_finite_loss(loss: Tensor, epoch: int, out: Path, last_good: int) -> None:
    """Raise :class:`TrainingDivergedError` if ``loss`` is NaN or infinite (before the step).

    Args:
        loss: the batch loss (scalar).
        epoch: the epoch being trained, 1-based.
        out: the run folder.
        last_good: the last epoch whose state is on disk (0: none).
    """
    if not torch.isfinite(loss):
        raise _diverged(epoch, f"loss {loss.item()}", out, last_good)


def check_finite_state(
    modules: list[nn.Module | None], opt: torch.optim.Optimizer, epoch: int, out: Path,
    last_good: int,
) -> None:
    """Raise :class:`TrainingDivergedError` if any weight, buffer or optimizer buffer of the
    finished epoch is NaN/inf, so that such a state is never saved over the last good one."""
    tensors = [t for m in modules if m is not None for t in m.state_dict().values()]
    tensors += [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _diverged(epoch, "non-finite weights", out, last_good)
