"""Sanity checks against gradient masking, read off a run's results.

Carlini et al. (2019), "On Evaluating Adversarial Robustness", and the checks of AutoAttack
(Croce & Hein, 2020) list symptoms of an evaluation that gradient masking fooled:

* robust accuracy rises with a larger budget eps, or with more steps/restarts/EOT samples;
* an unbounded attack (eps covering the whole pixel box) does not reach (near) 0%;
* a black-box or transfer attack beats the white-box one;
* a randomized defense attacked without EOT, a non-differentiable one without BPDA;
* inputs whose loss gradient is exactly zero.

Each check returns :class:`Finding` objects naming the rows involved and the fix; the report
shows them as warnings. Inputs are plain dicts (rows of :class:`~advimage.eval.store.ResultStore`)
so the checks are unit-testable with synthetic numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from advimage.formatting import attack_label, format_eps

__all__ = [
    "Finding",
    "check_blackbox_vs_whitebox",
    "check_bpda",
    "check_eot",
    "check_eps_monotone",
    "check_strength_monotone",
    "check_unbounded",
    "check_zero_gradients",
    "run_checks",
    "run_configured_checks",
]

Row = Mapping[str, Any]
_GRADIENT_KINDS = ("white-box", "unbounded")


@dataclass(frozen=True)
class Finding:
    """One violated check: which one, for which defense, what was seen, and the fix."""

    check: str
    defense: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.defense}: {self.message} Fix: {self.fix}"


def check_eps_monotone(results: Sequence[Row], tolerance: float = 0.01) -> list[Finding]:
    """Robust accuracy of one attack must not rise with eps (by more than ``tolerance``)."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in results:
        if r["kind"] != "unbounded":
            groups[(r["defense"], r["label"], r["norm"])].append(r)
    out = []
    for (defense, label, norm), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        for lo, hi in zip(rows, rows[1:], strict=False):
            if hi["robust_accuracy"] > lo["robust_accuracy"] + tolerance:
                out.append(Finding(
                    "eps-monotone", defense,
                    f"{label} ({norm}) robust accuracy rises from {lo['robust_accuracy']:.4f} at "
                    f"eps={format_eps(lo['eps'], norm)} to {hi['robust_accuracy']:.4f} at "
                    f"eps={format_eps(hi['eps'], norm)}.",
                    "a larger budget can only help a working attack: the gradients are likely "
                    "masked; use more steps and restarts, the DLR loss (apgd-dlr), or BPDA/EOT."))
    return out


def check_strength_monotone(results: Sequence[Row], tolerance: float = 0.01) -> list[Finding]:
    """A stronger variant (more steps, restarts or EOT samples) must not do worse."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in results:
        groups[(r["defense"], r["name"], r["norm"], round(float(r["eps"]), 9))].append(r)
    out = []
    for (defense, name, norm, eps), rows in groups.items():
        for weak in rows:
            for strong in rows:
                budget_w = (weak["steps"], weak["restarts"], weak["eot"])
                budget_s = (strong["steps"], strong["restarts"], strong["eot"])
                if budget_s == budget_w or any(s < w for s, w in
                                               zip(budget_s, budget_w, strict=True)):
                    continue
                if strong["robust_accuracy"] > weak["robust_accuracy"] + tolerance:
                    out.append(Finding(
                        "strength-monotone", defense,
                        f"{name} ({norm}, eps={format_eps(eps, norm)}) with "
                        f"steps/restarts/eot {budget_s} "
                        f"leaves {strong['robust_accuracy']:.4f} robust, more than "
                        f"{weak['robust_accuracy']:.4f} with {budget_w}.",
                        "more iterations can only help a working attack: check the step size "
                        "schedule, use APGD, and attack with EOT/BPDA if the defense is "
                        "randomized or non-differentiable."))
    return out


def check_unbounded(results: Sequence[Row], max_accuracy: float = 0.02) -> list[Finding]:
    """An attack whose budget covers the whole pixel box must reach (near) 0% accuracy."""
    return [
        Finding("unbounded", r["defense"],
                f"the unbounded attack {attack_label(r)} leaves {r['robust_accuracy']:.4f} robust "
                f"accuracy (> {max_accuracy:.4g}).",
                "with an unlimited budget every image can be changed into another class, so "
                "the attack is not following useful gradients: look for masked or zero "
                "gradients, add BPDA/EOT, or increase steps.")
        for r in results
        if r["kind"] == "unbounded" and r["robust_accuracy"] > max_accuracy
    ]


def check_blackbox_vs_whitebox(results: Sequence[Row], tolerance: float = 0.01) -> list[Finding]:
    """A black-box or transfer attack must not beat the best white-box one at the same eps."""
    white: dict[tuple, Row] = {}
    other: dict[tuple, list[Row]] = defaultdict(list)
    for r in results:
        key = (r["defense"], r["norm"], round(float(r["eps"]), 9))
        if r["kind"] == "white-box":
            if key not in white or r["robust_accuracy"] < white[key]["robust_accuracy"]:
                white[key] = r
        elif r["kind"] in ("black-box", "transfer"):
            other[key].append(r)
    out = []
    for key, rows in other.items():
        wb = white.get(key)
        if wb is None:
            continue
        for r in rows:
            if r["robust_accuracy"] < wb["robust_accuracy"] - tolerance:
                out.append(Finding(
                    "blackbox-beats-whitebox", key[0],
                    f"{r['kind']} attack {attack_label(r)} leaves "
                    f"{r['robust_accuracy']:.4f} robust, "
                    f"below the best white-box attack {attack_label(wb)} "
                    f"({wb['robust_accuracy']:.4f}).",
                    "a white-box attack knows strictly more: its gradients are masked; use "
                    "BPDA for non-differentiable parts, EOT for randomness, or a "
                    "margin/DLR loss."))
    return out


def _gradient_attacks(results: Sequence[Row], defense: str) -> list[Row]:
    return [r for r in results if r["defense"] == defense and r["kind"] in _GRADIENT_KINDS]


def check_eot(results: Sequence[Row], defenses: Sequence[Row]) -> list[Finding]:
    """A randomized defense must be attacked with EOT (``eot > 1``) by gradient attacks."""
    out = []
    for d in defenses:
        if not d["is_randomized"]:
            continue
        plain = [attack_label(r) for r in _gradient_attacks(results, d["defense"]) if r["eot"] <= 1]
        if plain:
            out.append(Finding(
                "eot", d["defense"],
                f"randomized defense attacked without EOT by {', '.join(plain)}.",
                "average gradients over the randomness: set options: {eot: 10} (or more) on "
                "every gradient attack (Athalye et al., 2018)."))
    return out


def check_bpda(results: Sequence[Row], defenses: Sequence[Row]) -> list[Finding]:
    """A non-differentiable defense must be attacked through BPDA by gradient attacks."""
    out = []
    for d in defenses:
        if d["is_differentiable"] or d["uses_bpda"]:
            continue
        attacks = [attack_label(r) for r in _gradient_attacks(results, d["defense"])]
        if attacks:
            out.append(Finding(
                "bpda", d["defense"],
                f"non-differentiable defense attacked by gradients without BPDA "
                f"({', '.join(attacks)}).",
                "wrap the non-differentiable transform in advimage.attacks.BPDA (for the "
                "built-in quantize defense: options: {bpda: true})."))
    return out


def check_zero_gradients(gradients: Sequence[Row]) -> list[Finding]:
    """Inputs whose loss gradient is exactly zero (AutoAttack's ``check_zero_gradients``)."""
    return [
        Finding("zero-gradients", g["defense"],
                f"{g['n_zero']} of {g['n']} inputs ({g['n_zero'] / g['n']:.1%}) have an "
                f"all-zero loss gradient.",
                "gradient attacks cannot move these inputs: the model masks gradients "
                "(quantization, saturated softmax, hard thresholds); attack through BPDA, use a "
                "margin loss on logits (apgd-dlr, cw-l2) or a black-box attack (square).")
        for g in gradients
        if g["n"] and g["n_zero"] > 0
    ]


def run_checks(
    results: Sequence[Row],
    defenses: Sequence[Row] = (),
    gradients: Sequence[Row] = (),
    *,
    tolerance: float = 0.01,
    max_unbounded_accuracy: float = 0.02,
) -> list[Finding]:
    """All checks; an empty list means no symptom of gradient masking was seen."""
    return [
        *check_zero_gradients(gradients),
        *check_bpda(results, defenses),
        *check_eot(results, defenses),
        *check_unbounded(results, max_unbounded_accuracy),
        *check_eps_monotone(results, tolerance),
        *check_strength_monotone(results, tolerance),
        *check_blackbox_vs_whitebox(results, tolerance),
    ]


def run_configured_checks(checks: Mapping[str, Any], results: Sequence[Row],
                          defenses: Sequence[Row], gradients: Callable[[], Sequence[Row]]
                          ) -> list[Finding]:
    """:func:`run_checks` under a run config's ``checks`` settings (``enabled``,
    ``zero_gradients``, ``tolerance``, ``max_unbounded_accuracy``); ``gradients`` is called
    only when the zero-gradient check is on (the report and ``compare`` read a run so)."""
    if not checks.get("enabled", True):
        return []
    return run_checks(results, defenses,
                      gradients() if checks.get("zero_gradients", True) else [],
                      tolerance=float(checks.get("tolerance", 0.01)),
                      max_unbounded_accuracy=float(checks.get("max_unbounded_accuracy", 0.02)))
