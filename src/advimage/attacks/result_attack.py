"""Attacks whose run has more to say than its images: the bookkeeping written once.

Square counts queries, FAB, FMN, DDN and DeepFool return per-sample minimal norms, HopSkipJump
its queries and distances. Such an attack writes one hook, :meth:`ResultAttack._result`,
returning an :class:`~advimage.attacks.base.AttackResult` subclass; the images of a plain call
(``attack(model, x, y)``) and the whole result (``attack.run(model, x, y)``) both come from it,
through the ``@final`` validation, freezing, seeding and projection of
:class:`~advimage.attacks.base.Attack`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from advimage.attacks.base import Attack, AttackResult, Model

__all__ = ["ResultAttack"]

R = TypeVar("R", bound=AttackResult)


@dataclass
class ResultAttack(Attack, Generic[R]):
    """An attack whose core returns a result object ``R`` (images plus what the run measured)."""

    @abstractmethod
    def _result(
        self, model: Model, x: Tensor, y: Tensor, target: Tensor | None,
        generator: torch.Generator,
    ) -> R:
        """The run on validated ``x`` (detached images inside; the caller projects them)."""

    def _run(
        self, model: Model, x: Tensor, y: Tensor, target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        return self._result(model, x, y, target, generator).x_adv

    def run(self, model: Model, x: Tensor, y: Tensor, *, target: Tensor | None = None) -> R:
        """Attack as ``__call__`` does and return the whole result (its ``x_adv`` projected)."""
        return self._execute(model, x, y, target, self._result)
