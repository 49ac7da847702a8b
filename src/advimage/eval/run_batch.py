"""One batch of an evaluation run under every defense and attack (the runner's inner loop).

:func:`run_batch` counts a batch with :mod:`advimage.eval.batch` (clean predictions, every
attack, the input-gradient statistics of the gradient-masking checks of Carlini et al., 2019,
"On Evaluating Adversarial Robustness", and every detector's clean and adversarial scores) and
returns the store's rows and, for the batch that keeps them, the report's example images (the
caller writes both, so a Ray worker computes a batch without touching the run directory);
:class:`RunParts` is what every batch of a run shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor, nn

from advimage.attacks.base import Attack, frozen
from advimage.attacks.registry import create_attack
from advimage.attacks.transfer import SurrogateEnsemble
from advimage.defend.registry import build_defense
from advimage.detect.base import Detector
from advimage.detect.registry import build_detector
from advimage.eval.batch import attack_batch, batch_seed, predict, seeded
from advimage.eval.config import AttackConfig, RunConfig
from advimage.precision import with_precision
from advimage.utils import atomic_write_bytes

__all__ = ["EXAMPLES_DIR", "UNBOUNDED_LABEL", "BatchResult", "RunParts", "RunSpec", "build_parts",
           "build_surrogates", "grad_stats", "run_batch", "save_examples"]

EXAMPLES_DIR = "examples"
UNBOUNDED_LABEL = "unbounded-pgd"


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
    the defended models, their detectors, the transfer surrogates (keyed by
    :attr:`AttackConfig.surrogate_key`: one model, or a :class:`SurrogateEnsemble` of several)
    and the device."""

    cfg: RunConfig
    specs: list[AttackConfig]
    attacks: list[Attack]
    defended: list[tuple[str, nn.Module]]
    detectors: dict[str, list[tuple[str, Detector]]]
    surrogates: dict[str, nn.Module]
    dev: torch.device


@dataclass
class BatchResult:
    """One computed batch: its index, size, the store's row lists (samples, timings, gradients,
    detector scores) and the example tensors per defense label (empty unless kept)."""

    b: int
    n: int
    rows: tuple[list[tuple], list[tuple], list[tuple], list[tuple]]
    examples: dict[str, dict[str, Tensor]]


@dataclass(frozen=True)
class RunSpec:
    """What builds a run's :class:`RunParts` anywhere, without files: the config, the loaded
    model and transfer surrogates (keyed by path, each loaded once however many attacks and
    ensembles use it; on the CPU, before precision), one image of the data (for the budget and
    class-count checks) and the channels-last choice. A Ray worker receives it through the object
    store (:mod:`advimage.eval.executor_ray`), so neither the model nor the data need to exist
    on the worker's disk."""

    cfg: RunConfig
    model: nn.Module
    surrogates: Mapping[str, nn.Module]
    first: Tensor  # (1, C, H, W)
    channels_last: bool | None = None


def unbounded_attack(cfg: RunConfig) -> AttackConfig:
    """The gradient-masking sanity attack every run adds: PGD that may move any pixel anywhere."""
    # eps = 1.0 (the whole [0, 1] pixel box in L-inf): every image is reachable
    return AttackConfig("pgd", 1.0, "linf", {"steps": cfg.checks.unbounded_steps},
                        UNBOUNDED_LABEL, "unbounded")


def build_parts(spec: RunSpec, dev: torch.device) -> RunParts:
    """Build the attacks (budgets checked before anything is written), the defended models,
    their detectors and the transfer surrogates of a run on ``dev``."""
    config = spec.cfg
    model = with_precision(spec.model.to(dev).eval(), config.precision, dev, spec.channels_last,
                           "precision")
    specs = list(config.attacks)
    if config.checks.enabled and config.checks.unbounded:
        specs.append(unbounded_attack(config))
    attacks = [create_attack(s.name, eps=s.eps, norm=s.norm, seed=0, **s.options)
               for s in specs]
    for attack in attacks:  # an L2 eps beyond its diagonal: refused before writing
        attack.check_budget(spec.first)
    defended: list[tuple[str, nn.Module]] = [
        (d.label, build_defense(d.name, model, d.options).to(dev).eval())
        for d in config.defenses]
    surrogates = build_surrogates(spec, model, dev)
    detectors = {label: [(d.label, build_detector(d.name, m, d.options))
                         for d in config.detectors] for label, m in defended}
    return RunParts(config, specs, attacks, defended, detectors, surrogates, dev)


def build_surrogates(spec: RunSpec, model: nn.Module, dev: torch.device) -> dict[str, nn.Module]:
    """Each transfer attack's surrogate on ``dev`` by :attr:`AttackConfig.surrogate_key`: one
    model as it is, a list as the :class:`SurrogateEnsemble` of its logits (Dong et al., 2018),
    sharing the members (each put in the run's precision once).

    Raises:
        ValueError: a surrogate is missing from ``spec`` or does not give as many classes as
            ``model`` (checked on one image of the data).
    """
    cfg = spec.cfg
    members = {path: with_precision(m.to(dev).eval(), cfg.precision, dev, spec.channels_last,
                                    "precision") for path, m in spec.surrogates.items()}
    if not members:
        return {}
    with torch.no_grad():
        first = spec.first.to(dev)
        classes = model(first).shape[-1]
        for path, m in members.items():
            if m(first).shape[-1] != classes:
                raise ValueError(f"surrogate {path} gives {m(first).shape[-1]} classes, the "
                                 f"model {classes}; a transfer attack needs the same classes")
    out: dict[str, nn.Module] = {}
    for a in cfg.attacks:
        key = a.surrogate_key
        if key is None or key in out:
            continue
        missing = [p for p in a.surrogates if p not in members]
        if missing:
            raise ValueError(f"attack {a.key}: surrogate {missing[0]} was not loaded")
        out[key] = members[key] if key in members else SurrogateEnsemble(
            [members[p] for p in a.surrogates], a.surrogate_weights)
    return out


def run_batch(
    parts: RunParts, b: int, start: int, x: Tensor, y: Tensor, keep_examples: bool,
) -> BatchResult:
    """Attack one batch under every defense; returns the store's rows and kept examples."""
    cfg, specs, attacks, defended = parts.cfg, parts.specs, parts.attacks, parts.defended
    detectors, surrogates, dev = parts.detectors, parts.surrogates, parts.dev
    samples: list[tuple] = []
    timings: list[tuple] = []
    grads: list[tuple] = []
    scores: list[tuple] = []
    examples: dict[str, dict[str, Tensor]] = {}
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
        if keep_examples:
            keep = {"x": x[:k], "y": y[:k], "pred_clean": pred[:k]}
        for spec, attack in zip(specs, attacks, strict=True):
            seed = batch_seed(cfg.seed, b, dname, spec.key)
            # transfer attacks are crafted on their surrogate, then evaluated on the defense
            source = surrogates[spec.surrogate_key] if spec.surrogate_key else None
            out = attack_batch(dmodel, attack, x, y, pred, norm=spec.norm, seed=seed,
                               source=source)
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
            if keep_examples:
                keep[f"adv/{spec.key}"] = x_adv[:k]
                keep[f"pred/{spec.key}"] = out.pred_adv[:k]
        if keep_examples and k:
            examples[dname] = {n: t.detach().cpu().contiguous() for n, t in keep.items()}
    return BatchResult(b, len(y), (samples, timings, grads, scores), examples)


def save_examples(path: Path, tensors: dict[str, Tensor]) -> None:
    """Write the example images atomically (a resumed batch 0 rewrites identical bytes)."""
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                  metadata={"format": "advimage-examples-v1"}))
