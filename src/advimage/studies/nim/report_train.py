"""Training wall-clock table of the De^3 robustness report (You et al., NeurIPS 2023, "Beyond
Pretrained Features: Noisy Image Modeling Provides Adversarial Defense").

The paper pretrains a NIM (or the MIM baseline) autoencoder, then fine-tunes a classifier on
its encoder; the report compares De^3 with PGD adversarial training, so the cost of each step
matters. A training folder is either a NIM/MIM pretraining (``nim.json``: per-epoch history and
settings) or a classifier run (``metrics.jsonl`` and ``config.json``); :func:`training` sums the
per-epoch seconds, states the recipe and, for a classifier, the test images its final accuracy
was measured on (the recorded ``train.test_limit``; the HTML page puts a Wilson 95% interval over
them beside the accuracy). Used by :mod:`advimage.studies.nim.report`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from advimage.eval.plots import eps_label, md_table
from advimage.studies.nim.report_run import DASH, pct, read_json

__all__ = ["check_train", "training"]


def check_train(name: str, folder: Path) -> None:
    """ValueError unless ``folder`` is a NIM/MIM pretraining or a classifier training folder."""
    if not (folder / "nim.json").exists() and not (folder / "metrics.jsonl").exists():
        raise ValueError(f"--train {name}={folder}: neither nim.json nor metrics.jsonl there")


def _recipe_pretrain(side: dict[str, Any]) -> str:
    st = side.get("settings", {})
    c = st.get("config", side.get("config", {}))
    return (f"{c.get('mode', '?').upper()} pretrain, {st.get('n_images', '?')} images, batch "
            f"{st.get('batch_size', '?')}, lr {st.get('lr', '?')}, "
            f"wd {st.get('weight_decay', '?')}, warm-up {st.get('warmup_epochs', '?')} ep, "
            f"enc {c.get('enc_dim')}x"
            f"{c.get('enc_depth')}, dec {c.get('dec_dim')}x{c.get('dec_depth')}, patch "
            f"{c.get('patch_size')}, sigma ~ Gamma({c.get('gamma_shape')}, {c.get('gamma_scale')})")


def _config(folder: Path) -> dict[str, Any]:
    return read_json(folder / "config.json") if (folder / "config.json").exists() else {}


def _test_images(folder: Path) -> str:
    """The classifier's test images from its recorded config: ``test_limit``, ``all`` when the
    whole split was used, DASH when the folder has no config."""
    cfg = _config(folder)
    if "train" not in cfg:
        return DASH
    return str(cfg["train"].get("test_limit") or "all")


def _recipe_classifier(folder: Path) -> str:
    cfg = _config(folder)
    t = cfg.get("train", {})
    parts = [f"{t.get('model', '?')} on {t.get('dataset', '?')}",
             f"{t.get('train_limit') or 'all'} images", f"batch {t.get('batch_size', '?')}",
             f"lr {t.get('lr', '?')}", f"wd {t.get('weight_decay', '?')}",
             f"augment {t.get('augment', '?')}"]
    if t.get("adv_eps"):
        parts.append(f"PGD-AT eps {eps_label(float(t['adv_eps']))} x{t.get('adv_steps')} steps")
    info = cfg.get("run_info", {})
    if info.get("nim_path"):
        parts.append(f"fine-tuned from `{info['nim_path']}` ({info.get('nim_mode', '?')}, "
                     f"sigma_max {info.get('nim_sigma_max', '?')})")
    return ", ".join(parts)


def training(dirs: Mapping[str, Path]) -> list[str]:
    """Wall-clock table of NIM/MIM pretraining (``nim.json``) and classifier
    (``metrics.jsonl``) folders: epochs, seconds summed over epochs, final value, recipe."""
    rows = []
    for name, folder in dirs.items():
        if (folder / "nim.json").exists():
            side = read_json(folder / "nim.json")
            hist = side.get("history") or []
            last = f"loss {hist[-1]['loss']:.4f}" if hist else DASH
            rows.append([name, "autoencoder", len(hist),
                         f"{sum(float(h.get('seconds', 0)) for h in hist):.1f}", last, DASH,
                         _recipe_pretrain(side)])
        else:
            text = (folder / "metrics.jsonl").read_text(encoding="utf-8")
            hist = [json.loads(x) for x in text.splitlines() if x.strip()]
            acc = hist[-1].get("test_acc") if hist else None
            rows.append([name, "classifier", len(hist),
                         f"{sum(float(h.get('seconds', 0)) for h in hist):.1f}",
                         DASH if acc is None else f"test acc. {pct(acc)}%",
                         _test_images(folder), _recipe_classifier(folder)])
    return ["## Training runs (wall-clock)", "",
            "test images = the clean test images a classifier's final accuracy was measured on, "
            "from its recorded config.json (train.test_limit; all = the whole test split).", "",
            *md_table(["run", "kind", "epochs", "seconds", "final", "test images", "recipe"],
                      rows), ""]
