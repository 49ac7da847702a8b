"""Studies of the De^3 defense of You et al., NeurIPS 2023, "Beyond Pretrained Features: Noisy
Image Modeling Provides Adversarial Defense".

- ``train``: NIM / MIM autoencoder pretraining (``pretrain``);
- ``finetune``: a ``nim-vit`` classifier initialised from the encoder (``finetune``);
- ``report`` (with ``report_run``, ``report_images``, ``report_train``, ``report_worst``):
  the tables, trade-off plot and image rows of ``reports/nim``.
"""

from advimage.studies.nim.finetune import finetune
from advimage.studies.nim.train import pretrain

__all__ = ["finetune", "pretrain"]
