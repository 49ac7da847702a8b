"""What every section of ``advimage demo`` receives, and the shape of a section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advimage.data import ImageDataset
from advimage.eval.report import HtmlReport
from advimage.models import ImageClassifier

__all__ = ["DemoContext", "Section"]


@dataclass
class DemoContext:
    """What a demo section gets: the model, data, device, seed and the attack results so far."""

    model: ImageClassifier
    test: ImageDataset
    device: torch.device
    seed: int
    eps: float
    out_dir: Path
    summary: dict[str, Any]


# A section adds its part to the report and returns its summary items (JSON-able).
Section = Callable[[HtmlReport, DemoContext], dict[str, Any]]
