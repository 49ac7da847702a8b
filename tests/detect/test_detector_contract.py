"""Contract of every registered detector (``list_detectors()``), as the attacks' contract tests.

Each detector, built with default options over the bundled digits model: scores ``(B,)`` of a
float dtype, finite; ``is_randomized`` declared; calibrated at a target FPR on clean images, its
false-positive rate on *held-out* clean images lies within a Wilson interval around the target;
``detect`` agrees with ``score > threshold``.
"""

from __future__ import annotations

import math

import pytest
import torch

from advimage.detect import Detector, build_detector, list_detectors

FPR = 0.1
Z = 3.29  # two-sided 99.9% normal quantile: one flaky failure in a thousand runs at most


def _wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture(scope="module", params=list_detectors())
def detector(request, digits_model) -> Detector:  # noqa: ANN001
    return build_detector(request.param, digits_model, {})


def test_registry_lists_the_paper_detectors() -> None:
    assert {"msp", "noise-signature"} <= set(list_detectors())


def test_is_randomized_is_declared(detector: Detector) -> None:
    assert isinstance(type(detector).is_randomized, bool)


def test_score_shape_dtype_finite(detector: Detector, digits_test) -> None:  # noqa: ANN001
    x = digits_test[0][:17]
    s = detector.score(x)
    assert s.shape == (17,) and s.dtype.is_floating_point
    assert bool(torch.isfinite(s).all())


def test_calibration_meets_target_fpr_on_held_out_images(detector: Detector,
                                                        digits_test) -> None:  # noqa: ANN001
    x = digits_test[0]
    cal, held_out = x[:180], x[180:]  # disjoint clean sets
    detector.calibrate(cal, FPR)
    flagged = detector.detect(held_out)
    assert flagged.shape == (len(held_out),) and flagged.dtype == torch.bool
    lo, hi = _wilson(int(flagged.sum()), len(held_out))
    assert lo <= FPR + 1.0 / len(cal), (int(flagged.sum()), len(held_out))
    assert hi >= FPR - 1.0 / len(cal) or int(flagged.sum()) == 0, (int(flagged.sum()),)


def test_detect_agrees_with_score_above_threshold(detector: Detector,
                                                  digits_test) -> None:  # noqa: ANN001
    x = digits_test[0][:40]
    detector.calibrate(digits_test[0][100:200], FPR)
    assert torch.equal(detector.detect(x), detector.score(x).double() > detector.threshold)


def test_uncalibrated_detect_and_bad_fpr_raise(digits_model) -> None:  # noqa: ANN001
    for name in list_detectors():
        det = build_detector(name, digits_model, {})
        with pytest.raises(ValueError, match="not calibrated"):
            det.detect(torch.zeros(2, 1, 8, 8))
        with pytest.raises(ValueError, match="fpr"):
            det.calibrate(torch.zeros(5, 1, 8, 8), 1.5)


def test_a_detector_without_is_randomized_is_refused() -> None:
    with pytest.raises(TypeError, match="is_randomized"):
        class _Bad(Detector):  # noqa: F841
            def score(self, x):  # noqa: ANN001, ANN202
                return x.flatten(1).mean(1)
