"""The De^3 defense of You et al., NeurIPS 2023, "Beyond Pretrained Features: Noisy Image
Modeling Provides Adversarial Defense": denoise with a noisy-image-modeling autoencoder, then
classify.

- :class:`NIMAutoencoder` / :class:`NIMConfig`: the NIM (or MIM) autoencoder (``model``);
- :func:`save_nim` / :func:`load_nim`: its safetensors checkpoint (``io``);
- :class:`De3Defense` and the ``nim`` registration of the run harness (``defense``).

Pretraining, fine-tuning and the report are in :mod:`advimage.studies.nim`.
"""

from advimage.defend.nim.defense import De3Defense, build_nim_defense, check_sigma_test
from advimage.defend.nim.io import load_nim, save_nim
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig

__all__ = [
    "De3Defense",
    "NIMAutoencoder",
    "NIMConfig",
    "build_nim_defense",
    "check_sigma_test",
    "load_nim",
    "save_nim",
]
