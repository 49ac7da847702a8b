"""advimage.studies: the papers' experiments and the report builders above the harness.

- :mod:`advimage.studies.cache`: Orhan (2018), "A Simple Cache Model for Image Recognition":
  accuracy, key depth, robustness and minimal-budget studies, and the ``reports/cache`` tables;
- :mod:`advimage.studies.nim`: You et al. (2023), "Beyond Pretrained Features: Noisy Image
  Modeling Provides Adversarial Defense": NIM pretraining, classifier fine-tuning and the
  ``reports/nim`` report.

Studies may import everything below them (defenses, detectors, the ``eval`` harness); nothing
below imports a study.
"""
