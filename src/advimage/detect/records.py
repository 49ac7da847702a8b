"""The per-step files of a detection evaluation, kept in a run folder bound to its config.

:func:`run_detection_eval <advimage.detect.evaluation.run_detection_eval>` writes
``calibration.pt``, ``clean.pt`` and ``attack-NAME.pt`` into an :mod:`advimage.rundir` folder
whose manifest holds the resolved configuration: model weights, detector settings, the digests
of the calibration and test images, attack batch size, target FPRs and the attacks' specs. A
rerun resumes only files listed for the same configuration; any other configuration is
refused in one line, so results.json never pairs one detector's settings with another's
thresholds. A damaged, truncated or pickled record is a one-line
:class:`~advimage.errors.CorruptFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advimage.errors import CorruptFileError
from advimage.rundir import RunDir, open_run_dir

__all__ = ["KIND", "load_record", "open_detection_dir", "publish_record", "stored_record",
           "tensor_digest"]

KIND = "detection"  # the run kind recorded in the manifest
# what an advimage without manifests wrote: such a folder is refused, never resumed
_LEGACY = ("calibration.pt", "clean.pt", "attack-*.pt", "results.json")


def tensor_digest(*tensors: Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors`` (CPU copies)."""
    h = hashlib.sha256()
    for t in tensors:
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{flat.dtype}|{tuple(t.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _weights_digest(model: Any) -> str | None:
    fp = getattr(model, "fingerprint", None)
    if callable(fp):
        return str(fp())
    if isinstance(model, torch.nn.Module):
        state = sorted(model.state_dict().items())
        return tensor_digest(*(t for _, t in state)) if state else None
    return None


def open_detection_dir(out_dir: str | Path, model: Any, detector: Any,
                       calibration: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                       fprs: Sequence[float], batch_size: int, source: Mapping[str, Any],
                       ) -> RunDir:
    """Open (create or resume) a detection run folder for this resolved configuration.

    ``source`` describes what the arguments cannot (paths, the attacks' kinds and options).

    Raises:
        ConfigMismatchError: the folder holds another configuration's outputs.
    """
    resolved = {
        "model": {"arch": str(getattr(model, "arch", type(model).__name__)),
                  "fingerprint": _weights_digest(model)},
        "detector": {"config": detector.config.as_dict(), "criteria": list(detector.criteria),
                     "seed": detector.seed, "batch_size": detector.batch_size,
                     "bounds": list(detector.bounds)},
        "calibration": {"n": len(calibration[0]), "sha256": tensor_digest(*calibration)},
        "test": {"n": len(test[0]), "sha256": tensor_digest(*test)},
        "fprs": [float(f) for f in fprs], "batch_size": int(batch_size),
        "source": dict(source),
    }
    return open_run_dir(out_dir, KIND, resolved, legacy=_LEGACY)


def load_record(path: str | os.PathLike[str], keys: Iterable[str] = ("scores", "pred"),
                ) -> dict[str, Any]:
    """A record written by :func:`publish_record` (tensors only; nothing else is unpickled).

    Raises:
        CorruptFileError: damaged, truncated, a pickle with code or objects, or lacking
            ``keys``.
    """
    p = Path(path)
    hint = "remove it to recompute it"
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: our message says it
            warnings.simplefilter("ignore", UserWarning)
            rec = torch.load(p, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError:
        raise CorruptFileError(f"{p} is not a tensor record (damaged, or a pickle holding code "
                               f"or objects, which is never loaded); {hint}") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CorruptFileError(f"{p} is damaged or truncated ({first[:120]}); {hint}") from None
    missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
    if missing:
        raise CorruptFileError(f"{p} is not a detection record (no {missing[0]!r}); {hint}")
    return rec


def publish_record(run: RunDir, name: str, rec: Mapping[str, Any]) -> dict[str, Any]:
    """Save ``rec`` as ``name`` in ``run`` atomically and list it; if another process
    (another ``--shard``) listed ``name`` first, return that record instead."""
    fd, tmp = tempfile.mkstemp(dir=run.path, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(dict(rec), tmp)
    except BaseException:  # a full disk: no half-written temporary file is left behind
        Path(tmp).unlink(missing_ok=True)
        raise
    if run.publish(tmp, name):
        return dict(rec)
    return load_record(run.verified(name))


def stored_record(run: RunDir, name: str) -> dict[str, Any] | None:
    """Record ``name`` if ``run`` lists it (checked against its sha256), else None."""
    run.refresh()  # other shards may have published it meanwhile
    if not run.has(name):
        return None
    return load_record(run.verified(name))
