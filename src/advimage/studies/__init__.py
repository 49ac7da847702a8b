"""advimage.studies: the papers' experiments and the report builders above the harness.

- :mod:`advimage.studies.cache`: Orhan (2018), "A Simple Cache Model for Image Recognition":
  accuracy, key depth, robustness and minimal-budget studies, and the ``reports/cache`` tables;
- :mod:`advimage.studies.nim`: You et al. (2023), "Beyond Pretrained Features: Noisy Image
  Modeling Provides Adversarial Defense": NIM pretraining, classifier fine-tuning and the
  ``reports/nim`` report;
- :mod:`advimage.studies.detection`: Hu, Yu et al. (2019), "A New Defense Against Adversarial
  Images: Turning a Weakness into a Strength": the detection study's configs (gray-box,
  white-box and adaptive attacks) and the ``reports/detection`` tables and ROC figures;
- :mod:`advimage.studies.distill`: Ojha et al. (2023), "What Knowledge Gets Distilled in Knowledge
  Distillation?": KD and independent students, transfer probes, Grad-CAM, ``reports/distill``.

Studies may import everything below them (defenses, detectors, the ``eval`` harness); nothing
below imports a study.
"""
