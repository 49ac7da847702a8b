"""A detection run's job and how each of its units is computed (the eval harness's detection
run kind, :mod:`advimage.eval.detection`).

The evaluation of Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images:
Turning a Weakness into a Strength", for any registered detector: a :class:`DetectionJob`
holds the classifier, the detector, the clean calibration and test images and the attacks;
:class:`DetectionWork` is the job as an executor workload
(:class:`advimage.eval.executor.Workload`), the same code whether a unit is computed in the
driver or on a Ray actor that received the job once through Ray's object store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advimage.attacks.base import model_dtype_device
from advimage.detect.base import Detector
from advimage.detect.metrics import DEFAULT_FPRS
from advimage.eval.detection_store import CALIBRATION, TEST, ScoredSet, unit_of

__all__ = ["AttackFn", "DetectionAttack", "DetectionJob", "DetectionWork"]

log = logging.getLogger(__name__)

_PREDICT_BATCH = 256  # images per prediction forward

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DetectionAttack:
    """One attack of a detection run: ``factory(calibration scores) -> attack(model, x, y)``
    (a white-box attacker may read the calibrated thresholds) and what describes it."""

    factory: Callable[[Mapping[str, Tensor]], AttackFn]
    kind: str
    eps: float
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionJob:
    """Everything one detection run needs (built by :mod:`advimage.studies.detection`).

    Args:
        model: The classifier (images in [0, 1] -> logits).
        detector: The detector; every criterion of ``criterion_scores`` is evaluated.
        calibration: Clean held-out ``(x, y)``; thresholds come from these only.
        test: Clean evaluation ``(x, y)``; the attacks start from these.
        attacks: name -> attack, in run order.
        fprs: Target false-positive rates.
        batch_size: Images attacked at once.
        source: What the arguments cannot tell (paths, the detector's name and options).
    """

    model: nn.Module
    detector: Detector
    calibration: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    attacks: Mapping[str, DetectionAttack]
    fprs: Sequence[float] = DEFAULT_FPRS
    batch_size: int = 100
    source: Mapping[str, Any] = field(default_factory=dict)


def _on_device(job: DetectionJob, x: Tensor) -> Tensor:
    return x.to(model_dtype_device(job.model, x)[1])


def score_set(job: DetectionJob, x: Tensor, y: Tensor,
              seconds_attack: float | None = None) -> ScoredSet:
    """Criterion scores (the whole set in one call) and predictions of images ``x``."""
    t0 = time.time()
    xd = _on_device(job, x)
    scores = {k: v.detach().cpu() for k, v in job.detector.criterion_scores(xd).items()}
    with torch.no_grad():
        pred = torch.cat([job.model(xd[i : i + _PREDICT_BATCH]).argmax(1).cpu()
                          for i in range(0, len(xd), _PREDICT_BATCH)])
    return ScoredSet(y.cpu(), pred, scores, seconds_attack, time.time() - t0)


def attack_set(job: DetectionJob, name: str, calib: Mapping[str, Tensor]) -> ScoredSet:
    """Craft attack ``name`` on the test images in batches and score its output."""
    x_test, y_test = job.test
    attack = job.attacks[name].factory(calib)
    bs = job.batch_size
    t0 = time.time()
    dev = model_dtype_device(job.model, x_test)[1]  # attacks compute where the model lives
    x_adv = torch.cat([attack(job.model, x_test[i : i + bs].to(dev), y_test[i : i + bs].to(dev))
                       .cpu() for i in range(0, len(x_test), bs)])
    t_attack = time.time() - t0
    out = score_set(job, x_adv, y_test, t_attack)
    log.info("attack %s: %.0f s, scoring %.0f s", name, t_attack, out.seconds_score)
    return out


@dataclass
class DetectionWork:
    """A detection run as an executor :class:`~advimage.eval.executor.Workload`: unit 0 scores
    the calibration images, unit 1 the test images, unit ``2 + k`` crafts attack ``k`` on the
    test images and scores its output (its payload: the calibration scores)."""

    job: DetectionJob

    def build(self, device: torch.device) -> DetectionWork:
        """The job with its model (and so its detector's) on ``device``."""
        self.job.model.to(device)
        return self

    def compute(self, b: int, payload: Mapping[str, Tensor] | None,
                keep_examples: bool = False) -> tuple[int, ScoredSet]:
        """``(b, scored set)`` of unit ``b``."""
        if b in (CALIBRATION, TEST):
            return b, score_set(self.job, *(self.job.test if b == TEST else
                                            self.job.calibration))
        if payload is None:
            raise ValueError(f"detection unit {b} (an attack) needs the calibration scores")
        return b, attack_set(self.job, list(self.job.attacks)[b - unit_of(0)], payload)
