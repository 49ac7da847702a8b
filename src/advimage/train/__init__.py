"""Training: SGD + cosine schedule with per-epoch checkpoints and exact resume."""

from advimage.train.config import PRESETS, TrainConfig
from advimage.train.trainer import train

__all__ = ["TrainConfig", "PRESETS", "train"]
