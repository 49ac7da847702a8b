"""Saving and loading the noise-signature detector as JSON (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength": a calibrated
detector is saved with its criteria, hyperparameters, thresholds, achieved FPR and the
fingerprint of the model it was calibrated for; loading it for another model is an error.
:class:`DetectorFile` holds these methods of
:class:`~advimage.detect.noise_signature.NoiseSignatureDetector`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from advimage.attacks.base import Model
from advimage.detect.config import DetectorConfig
from advimage.jsonfile import read_json_object

__all__ = ["FORMAT", "DetectorFile", "model_fingerprint"]

FORMAT = "advimage-noise-signature-detector"
_VERSION = 1


def model_fingerprint(model: Model) -> str | None:
    """The model's ``fingerprint()`` (``ImageClassifier``), else ``None``."""
    fp = getattr(model, "fingerprint", None)
    return str(fp()) if callable(fp) else None


class DetectorFile:
    """JSON persistence of a calibrated noise-signature detector (a mixin)."""

    criteria: tuple[str, ...]
    config: DetectorConfig
    seed: int
    bounds: tuple[float, ...]
    thresholds: dict[str, float] | None
    calibration: dict[str, Any]
    fingerprint: str | None

    def _require_model(self) -> Model:
        raise NotImplementedError

    def fit(self, model: Model) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the detector except the model itself."""
        if self.thresholds is None:
            raise ValueError("detector is not calibrated; nothing to save")
        model = self._require_model()
        if self.fingerprint is None:
            raise ValueError("saving needs a model with fingerprint() (wrap it with wrap_model)")
        return {
            "format": FORMAT,
            "version": _VERSION,
            "paper": "Hu, Yu et al., NeurIPS 2019, Turning a Weakness into a Strength",
            "criteria": list(self.criteria),
            "config": self.config.as_dict(),
            "seed": self.seed,
            "bounds": list(self.bounds),
            "thresholds": dict(self.thresholds),
            "calibration": dict(self.calibration),
            "model": {
                "fingerprint": self.fingerprint,
                "arch": getattr(model, "arch", type(model).__name__),
                "num_classes": getattr(model, "num_classes", None),
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write the detector JSON to ``path``."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], model: Model, *, batch_size: int = 256
    ) -> Self:
        """Rebuild a detector for ``model``; ``ValueError`` if it was calibrated for another."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not an advimage noise-signature detector file (format {FORMAT!r})")
        try:
            det = cls(  # type: ignore[call-arg]
                None, DetectorConfig.from_dict(data["config"]), data["criteria"],
                seed=int(data["seed"]), batch_size=batch_size,
                bounds=tuple(data.get("bounds", (0.0, 1.0))),
            )
            thresholds = {k: float(data["thresholds"][k]) for k in det.criteria}
            want = str(data["model"]["fingerprint"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"detector file is missing or has a malformed field: {err}") from None
        got = model_fingerprint(model)
        if got != want:
            arch = data["model"].get("arch", "?")
            raise ValueError(
                f"detector was calibrated for another model ({arch}, fingerprint {want[:12]}); "
                f"this model's fingerprint is {(got or 'none')[:12]}"
            )
        det.fit(model)
        det.thresholds = thresholds
        det.calibration = dict(data.get("calibration", {}))
        return det

    @classmethod
    def load(
        cls, path: str | Path, model: Model, *, batch_size: int = 256
    ) -> Self:
        """Read a detector JSON written by :meth:`save` for ``model``."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"detector file not found: {p}")
        data = read_json_object(p, "detector file {path} is not valid JSON: {reason}")
        return cls.from_dict(data, model, batch_size=batch_size)
