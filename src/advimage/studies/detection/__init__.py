"""The detection study of Hu, Yu et al. (NeurIPS 2019), for any registered detector.

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength": thresholds
calibrated on held-out clean images, gray-box PGD/CW at several budgets tau, white-box and
adaptive attacks, detection rates at fixed false-positive rates and ROC/AUC.
:mod:`~advimage.studies.detection.config` turns a ``configs/detection-*.yaml`` file into a run
of :mod:`advimage.eval.detection` (the harness's detection run kind: SQLite store, resume,
shards, Ray workers with ``executor: ray``); :mod:`~advimage.studies.detection.report`
builds the tables and ROC figures of ``reports/detection`` from a run folder.
"""

from advimage.studies.detection.config import build_job, run_from_config
from advimage.studies.detection.report import write_report

__all__ = ["build_job", "run_from_config", "write_report"]
