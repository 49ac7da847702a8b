"""One batch of an evaluation run under every defense and attack (the runner's inner loop).

:func:`run_batch` counts a batch with :mod:`advimage.eval.batch` (clean predictions, every
attack, the input-gradient statistics of the gradient-masking checks of Carlini et al., 2019,
"On Evaluating Adversarial Robustness", and every detector's clean and adversarial scores) and
returns the store's rows; :class:`RunParts` is what every batch of a run shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor, nn

from advimage.attacks.base import Attack, frozen
from advimage.detect.base import Detector
from advimage.eval.batch import attack_batch, batch_seed, predict, seeded
from advimage.eval.config import AttackConfig, RunConfig
from advimage.utils import atomic_write_bytes

__all__ = ["EXAMPLES_DIR", "RunParts", "grad_stats", "run_batch", "save_examples"]

EXAMPLES_DIR = "examples"


def grad_stats(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, float]:
    """Samples whose cross-entropy input gradient is exactly zero, and the sum of L1 norms."""
    xg = x.detach().clone().requires_grad_(True)
    with frozen(model), torch.enable_grad():
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg, allow_unused=True)
    if g is None:  # the output does not depend on the input at all
        return len(x), 0.0
    norms = g.flatten(1).abs().sum(dim=1)  # (B,) L1 norm per sample
    return int((norms == 0).sum()), float(norms.sum())


@dataclass(frozen=True)
class RunParts:
    """What every batch of a run uses: the config, the attack grid (specs and built attacks),
    the defended models, their detectors, the transfer surrogates and the device."""

    cfg: RunConfig
    specs: list[AttackConfig]
    attacks: list[Attack]
    defended: list[tuple[str, nn.Module]]
    detectors: dict[str, list[tuple[str, Detector]]]
    surrogates: dict[str, nn.Module]
    dev: torch.device


def run_batch(
    parts: RunParts, b: int, start: int, x: Tensor, y: Tensor, examples_dir: Path | None,
) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple]]:
    """Attack one batch under every defense; returns the store's row lists for it."""
    cfg, specs, attacks, defended = parts.cfg, parts.specs, parts.attacks, parts.defended
    detectors, surrogates, dev = parts.detectors, parts.surrogates, parts.dev
    samples: list[tuple] = []
    timings: list[tuple] = []
    grads: list[tuple] = []
    scores: list[tuple] = []
    idx = list(range(start, start + len(y)))
    labels = y.tolist()
    for dname, dmodel in defended:
        pred = predict(dmodel, x, seed=batch_seed(cfg.seed, b, dname, "clean"))  # (B,)
        if cfg.checks.enabled and cfg.checks.zero_gradients:
            with seeded(batch_seed(cfg.seed, b, dname, "grad"), dev):
                n_zero, norm_sum = grad_stats(dmodel, x, y)
            grads.append((b, dname, len(y), n_zero, norm_sum))
        clean_scores = {}
        for tname, det in detectors[dname]:
            with seeded(batch_seed(cfg.seed, b, dname, tname), dev):
                clean_scores[tname] = det.score(x).float().cpu().tolist()
        keep: dict[str, Tensor] = {}
        k = min(cfg.examples, len(y))
        if examples_dir is not None:
            keep = {"x": x[:k], "y": y[:k], "pred_clean": pred[:k]}
        for spec, attack in zip(specs, attacks, strict=True):
            seed = batch_seed(cfg.seed, b, dname, spec.key)
            # transfer attacks are crafted on their surrogate, then evaluated on the defense
            out = attack_batch(dmodel, attack, x, y, pred, norm=spec.norm, seed=seed,
                               source=surrogates[spec.surrogate] if spec.surrogate else None)
            x_adv = out.x_adv  # (B, C, H, W)
            timings.append((b, dname, spec.key, out.seconds))
            columns = (pred, out.pred_adv, out.clean_correct.int(), out.robust.int(),
                       out.distance)
            for i, (p, pa, c, r, d) in enumerate(zip(*(t.tolist() for t in columns),
                                                     strict=True)):
                samples.append((idx[i], b, dname, spec.key, labels[i], p, pa, c, r, d))
            for tname, det in detectors[dname]:
                with seeded(batch_seed(cfg.seed, b, dname, spec.key, tname), dev):
                    adv = det.score(x_adv).float().cpu().tolist()
                scores.extend((idx[i], dname, spec.key, tname, clean_scores[tname][i], adv[i])
                              for i in range(len(adv)))
            if examples_dir is not None:
                keep[f"adv/{spec.key}"] = x_adv[:k]
                keep[f"pred/{spec.key}"] = out.pred_adv[:k]
        if examples_dir is not None and k:
            save_examples(examples_dir / EXAMPLES_DIR / f"{dname}.safetensors", keep)
    return samples, timings, grads, scores


def save_examples(path: Path, tensors: dict[str, Tensor]) -> None:
    """Write the example images atomically (a resumed batch 0 rewrites identical bytes)."""
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                  metadata={"format": "advimage-examples-v1"}))
