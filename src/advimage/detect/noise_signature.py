"""The noise-signature detector of Hu, Yu et al. (NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength": an image is
flagged as adversarial when any enabled criterion -- C1 (softmax change under Gaussian
noise), C2t / C2u (gradient steps a targeted / untargeted attack needs to change the label)
-- exceeds its threshold. Thresholds come from held-out, correctly classified clean images
so that the combined false-positive rate on them is at most the target
(:mod:`advimage.detect.calibration`). A detector is saved as JSON with its criteria,
hyperparameters, thresholds, achieved FPR and the fingerprint of the model it was calibrated
for; loading it for another model is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.attacks.base import Model, frozen, model_dtype_device
from advimage.detect.calibration import check_fpr, joint_thresholds
from advimage.detect.config import DetectorConfig, check_criteria, get_preset
from advimage.detect.criteria import draw_noise, random_targets, softmax_l1_change
from advimage.detect.detector_file import FORMAT, DetectorFile, model_fingerprint
from advimage.detect.fast_model import scoring_copy
from advimage.detect.row_chunks import RowChunks
from advimage.detect.step_search import StepSearch, joint_steps_to_flip
from advimage.validation import check_images, check_labels

__all__ = ["DEFAULT_CRITERIA", "FORMAT", "NoiseSignatureDetector", "model_fingerprint"]

log = logging.getLogger(__name__)

# The official evaluate.py sets C2u's threshold (10000) above its cap (1000), so C2u never
# fires there, and calls it the most time-consuming criterion: off unless asked for.
DEFAULT_CRITERIA: tuple[str, ...] = ("c1", "c2t")


class NoiseSignatureDetector(DetectorFile):
    """Flag images whose noise signature is unlike that of natural images.

    Args:
        model: Classifier returning logits for images in ``bounds`` (may be given later to
            :meth:`fit`).
        config: A :class:`DetectorConfig` or a preset name (``"cifar10"``, ``"imagenet"``,
            ``"imagenet-inception"``); default the CIFAR-10 settings of the official code.
        criteria: Enabled criteria among ``c1``, ``c2t``, ``c2u`` (default ``c1,c2t``).
        seed: Seed of the noise draws and random targets; each :meth:`score` call restarts
            from it, so scoring is reproducible.
        batch_size: Images scored at once (memory bound; speed grows with it).
        pass_rows: Largest number of rows one model pass gets: a batch's passes run in
            near-equal chunks of at most this many rows (cheaper per image on a CPU, see
            :mod:`advimage.detect.row_chunks`); ``None`` runs each pass on all its rows.
        fast_copy: Score with :func:`~advimage.detect.fast_model.scoring_copy` of the model
            (BatchNorm folded, channels-last on CPU): about 30% less CPU time on ResNet-20,
            same function but not bit-identical; ``False`` uses the model itself.
        bounds: Valid pixel range of the model's inputs.
    """

    def __init__(
        self,
        model: Model | None = None,
        config: DetectorConfig | str = "cifar10",
        criteria: Iterable[str] | str = DEFAULT_CRITERIA,
        *,
        seed: int = 0,
        batch_size: int = 256,
        pass_rows: int | None = 64,
        fast_copy: bool = True,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.config = get_preset(config) if isinstance(config, str) else config
        if not isinstance(self.config, DetectorConfig):
            raise ValueError(f"config must be a DetectorConfig or preset name, got {config!r}")
        self.criteria = check_criteria(criteria)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if pass_rows is not None and (
            isinstance(pass_rows, bool) or not isinstance(pass_rows, int) or pass_rows < 1
        ):
            raise ValueError(f"pass_rows must be an integer >= 1 or None, got {pass_rows!r}")
        self.seed, self.batch_size, self.pass_rows = seed, batch_size, pass_rows
        self.fast_copy = bool(fast_copy)
        self.bounds: tuple[float, float] = (bounds[0], bounds[1])
        self.model: Model | None = None
        self.fingerprint: str | None = None
        self.thresholds: dict[str, float] | None = None
        self.calibration: dict[str, Any] = {}
        if model is not None:
            self.fit(model)

    # ------------------------------------------------------------------ model
    def fit(self, model: Model) -> NoiseSignatureDetector:
        """Attach ``model`` (no training: the criteria need only the classifier)."""
        if not callable(model):
            raise ValueError(f"model must be callable, got {type(model).__name__}")
        fp = model_fingerprint(model)
        if self.thresholds is not None and self.fingerprint and fp != self.fingerprint:
            raise ValueError(
                f"detector was calibrated for model {self.fingerprint[:12]}, got "
                f"{(fp or 'an unfingerprinted model')[:12]}; recalibrate for this model"
            )
        self.model, self.fingerprint = model, fp
        return self

    def _require_model(self) -> Model:
        if self.model is None:
            raise ValueError("detector has no model; call fit(model) first")
        return self.model

    # ------------------------------------------------------------------ scoring
    def draws(
        self, x: Tensor, labels: Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor | None, Tensor | None]:
        """The random inputs of one batch, in the order :meth:`score` draws them.

        Returns ``(noise (n, B, C, H, W) or None, C2t targets (B,) or None)``.
        """
        noise = targets = None
        if "c1" in self.criteria:
            noise = draw_noise(x, self.config.sigma, self.config.n_noise, generator)
        if "c2t" in self.criteria:
            targets = random_targets(labels, num_classes, generator)
        return noise, targets

    def _score_batch(
        self, model: Model, x: Tensor, generator: torch.Generator
    ) -> tuple[dict[str, Tensor], Tensor]:
        cfg, chunked = self.config, RowChunks(model, self.pass_rows)
        with torch.no_grad():
            logits = chunked(x)  # (B, K)
        labels = logits.argmax(dim=1)  # (B,) the model's own prediction, as in the paper
        noise, targets = self.draws(x, labels, logits.shape[1], generator)
        out: dict[str, Tensor] = {}
        if noise is not None:
            with torch.no_grad():
                out["c1"] = softmax_l1_change(chunked, x, noise, F.softmax(logits, dim=1))
        searches = {}  # C2t and C2u share every gradient pass
        if targets is not None:
            searches["c2t"] = StepSearch(cfg.c2t_lr, cfg.c2t_radius, cfg.c2t_cap, targets)
        if "c2u" in self.criteria:
            searches["c2u"] = StepSearch(cfg.c2u_lr, cfg.c2u_radius, cfg.c2u_cap)
        if searches:
            counts = joint_steps_to_flip(model, x, labels, list(searches.values()),
                                         bounds=self.bounds, max_rows=self.pass_rows)
            out.update(zip(searches, counts, strict=True))
        return out, labels

    def score_with_labels(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Scores of every enabled criterion and the predicted labels, all ``(B,)`` on CPU."""
        model = self._require_model()
        check_images(x, "x", bounds=self.bounds)
        dtype, device = model_dtype_device(model, x)
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        parts: list[dict[str, Tensor]] = []
        labels: list[Tensor] = []
        with frozen(model):
            scorer = scoring_copy(model) if self.fast_copy else model
            for start in range(0, len(x), self.batch_size):
                chunk = x[start : start + self.batch_size].detach().to(device=device, dtype=dtype)
                scores, lab = self._score_batch(scorer, chunk, generator)
                parts.append({k: v.cpu() for k, v in scores.items()})
                labels.append(lab.cpu())
        merged = {k: torch.cat([p[k] for p in parts]) for k in self.criteria}
        return merged, torch.cat(labels)

    def score(self, x: Tensor) -> dict[str, Tensor]:
        """Criterion -> ``(B,)`` scores (C1 float, C2 step counts); larger = more suspicious."""
        return self.score_with_labels(x)[0]

    def flags(self, scores: dict[str, Tensor]) -> dict[str, Tensor]:
        """Criterion -> ``(B,)`` bool ``score > threshold``, plus ``"combined"`` (any of them)."""
        if self.thresholds is None:
            raise ValueError("detector is not calibrated; call calibrate() or load a detector file")
        out = {k: scores[k].double() > self.thresholds[k] for k in self.criteria}
        combined = torch.zeros_like(out[self.criteria[0]])
        for v in out.values():
            combined |= v
        out["combined"] = combined
        return out

    def predict(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: flagged as adversarial by any enabled criterion."""
        return self.flags(self.score(x))["combined"]

    # ------------------------------------------------------------------ calibration
    def calibrate(
        self, data: Any, fpr: float = 0.05, y: Tensor | None = None
    ) -> dict[str, Any]:
        """Set thresholds so the combined FPR on correctly classified clean images is ``<= fpr``.

        Args:
            data: Clean held-out images with labels: a tensor ``(N, C, H, W)`` with ``y``, an
                :class:`~advimage.data.ImageDataset`, or an iterable of ``(x, y)`` batches.
            fpr: Target combined false-positive rate in (0, 1).
            y: Labels ``(N,)`` when ``data`` is a tensor.

        Returns:
            The calibration record (also kept in :attr:`calibration`): thresholds, target and
            achieved combined FPR, FPR per criterion, images seen and used.
        """
        fpr = check_fpr(fpr)
        cols, seen = self._calibration_scores(data, y)
        n_ok = int(cols[self.criteria[0]].numel())
        if n_ok == 0:
            raise ValueError(f"none of the {seen} calibration images is classified correctly")
        try:
            thresholds, achieved, per = joint_thresholds(cols, fpr)
        except ValueError as err:
            raise ValueError(f"{err} correctly classified (of {seen} seen)") from None
        self.thresholds = thresholds
        for k in ("c2t", "c2u"):
            cap = getattr(self.config, f"{k}_cap")
            if k in thresholds and thresholds[k] >= cap:
                log.warning("%s threshold reached its cap %d: it can never fire", k, cap)
        self.calibration = {
            "fpr_target": fpr,
            "fpr_achieved": achieved,
            "fpr_per_criterion": per,
            "images_seen": seen,
            "images_used": n_ok,
            "rule": "joint: equal per-criterion budget, largest one whose union FPR <= target",
        }
        return {"thresholds": dict(thresholds), **self.calibration}

    def _calibration_scores(self, data: Any, y: Tensor | None) -> tuple[dict[str, Tensor], int]:
        """Criterion scores of the correctly classified calibration images, and images seen."""
        model = self._require_model()
        if isinstance(data, Tensor):
            if y is None:
                raise ValueError("calibrate(x, fpr, y): labels y are required with a tensor")
            batches: Iterable[Any] = [(data, y)]
        elif hasattr(data, "batches"):
            batches = data.batches(self.batch_size)
        else:
            batches = data
        generator = None
        kept: list[dict[str, Tensor]] = []
        seen = 0
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("calibration data must yield (images, labels) batches")
            xb, yb = batch
            check_images(xb, "calibration images", bounds=self.bounds)
            check_labels(yb, len(xb), None, "calibration labels")
            if generator is None:
                generator = torch.Generator(
                    device=model_dtype_device(model, xb)[1]
                ).manual_seed(self.seed)
            scores, pred = self.score_with_labels(xb, generator)
            ok = pred == yb.cpu()
            seen += len(xb)
            kept.append({k: v[ok] for k, v in scores.items()})
        if not kept:
            raise ValueError("calibration data is empty")
        return {k: torch.cat([p[k] for p in kept]) for k in self.criteria}, seen
