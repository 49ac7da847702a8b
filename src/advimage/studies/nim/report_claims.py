"""The paper's claims beside a De^3 harness run (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense"): NIM vs MIM, the best NIM vs
adversarial training, and noise known vs unknown to the attacker; a section of the report
written by :func:`advimage.studies.nim.report.write_report`.
"""

from __future__ import annotations

from collections.abc import Mapping

from advimage.eval.plots import md_table
from advimage.studies.nim.report_run import Attack, Defense, Run, diff, pct, pick_attack, series
from advimage.studies.nim.report_worst import worst_for

__all__ = ["KNOWN", "PAPER", "claims"]

# the paper's statements the "claims" tables sit beside (abstract; ImageNet, ViT-B, not CIFAR)
PAPER = {
    "mim": "NIM is superior to MIM in adversarial robustness, thanks to its denoising.",
    "at": "De^3 with NIM performs on par with adversarial training, with a tunable "
          "accuracy/robustness trade-off (sigma_test).",
    "known": "Attacks with the noise known vs unknown to the attacker are compared in the "
             "paper's Fig. 3(a) (see configs/nim-cifar10.yaml).",
}
# what "noise known" (a noise_seed) means since commit 0a5754b: one CPU draw for every image
KNOWN = "one fixed (C, H, W) noise pattern shared by all images (a single noise realization)"



def claims(run: Run, baselines: Mapping[str, Run], spec: str | None) -> list[str]:
    """The paper's three claims beside the run: (a) NIM vs MIM, (b) best NIM vs the baselines
    (adversarial training), (c) noise known vs unknown to the attacker; each under the chosen
    attack, its EOT version (when run) and the worst case at its budget."""
    att, eot = pick_attack(run, spec)
    cols = [a for a in (att, eot, worst_for(run, att)) if a is not None]
    s = series(run)
    nim, mim = s.get("NIM", {}), s.get("MIM", {})
    known = s.get("NIM, noise known", {})

    def rob(d: Defense, a: Attack) -> float | None:
        return run.robust(d.label, a.key)

    lines = ["## Claims beside the paper", "", "Robust accuracy under "
             + ", ".join(a.title for a in cols) + ", in %; differences in percentage points.", "",
             "**(a) NIM vs MIM** (same sigma_test, noise unknown). Paper: " + PAPER["mim"], "",
             *md_table(["attack", "sigma_test", "NIM", "MIM", "NIM - MIM"],
                       [[a.title, f"{x:g}", pct(rob(nim[x], a)), pct(rob(mim[x], a)),
                         diff(rob(nim[x], a), rob(mim[x], a))]
                        for a in cols for x in sorted(set(nim) & set(mim))]),
             "", "**(b) Best NIM vs adversarial training.** Paper: " + PAPER["at"], ""]
    rows = []
    for a in cols:
        scored = [d for d in nim.values() if rob(d, a) is not None]
        if not scored:
            continue
        best = max(scored, key=lambda d: (rob(d, a), run.clean(d.label)))
        for n, b in baselines.items():
            rows.append([a.title, f"{best.label} (sigma {best.sigma:g})", pct(rob(best, a)),
                         pct(run.clean(best.label)), n, pct(b.robust("none", a.key)),
                         pct(b.clean("none")), diff(rob(best, a), b.robust("none", a.key)),
                         diff(run.clean(best.label), b.clean("none"))])
    lines += md_table(["attack", "best NIM", "robust", "clean", "baseline", "robust", "clean",
                       "robust diff", "clean diff"], rows)
    if not baselines:
        lines.append("(no --baseline given)")
    pts = [x for x in sorted(set(nim) & set(known)) if known[x] is not nim[x]]
    lines += ["", f"**(c) Noise known vs unknown to the attacker** (NIM; known: {KNOWN}). "
              "Paper: " + PAPER["known"], "",
              *md_table(["attack", "sigma_test", "unknown", "known", "known - unknown",
                         "clean unknown", "clean known"],
                        [[a.title, f"{x:g}", pct(rob(nim[x], a)), pct(rob(known[x], a)),
                          diff(rob(known[x], a), rob(nim[x], a)), pct(run.clean(nim[x].label)),
                          pct(run.clean(known[x].label))] for a in cols for x in pts]), ""]
    return lines
