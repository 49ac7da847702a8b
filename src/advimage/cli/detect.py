"""``advimage detect calibrate|score``: the noise-signature detector of Hu, Yu et al.,
"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" (NeurIPS 2019).
Calibrate its thresholds at a target false-positive rate on clean images, then score images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from advimage.cli.common import (
    add_common_args,
    add_model_data_args,
    check_out_arg,
    load_data,
    load_model_on_device,
)

__all__ = ["add_detect_parser", "cmd_detect_calibrate", "cmd_detect_score"]


def cmd_detect_calibrate(a: argparse.Namespace) -> int:
    """Calibrate thresholds on ``--data`` ``--split`` and save the detector JSON."""
    from advimage.detect import NoiseSignatureDetector, get_preset

    check_out_arg(a, "file")
    model, _, _ = load_model_on_device(a)
    config = get_preset(a.preset).with_overrides(a.set or [])
    det = NoiseSignatureDetector(model, config, a.criteria, seed=a.seed, batch_size=a.batch_size)
    rec = det.calibrate(load_data(a, a.split, model=model), a.fpr)
    det.save(a.out)
    thr = ", ".join(f"{k} > {v:.6g}" for k, v in rec["thresholds"].items())
    print(f"thresholds: {thr}; FPR {rec['fpr_achieved']:.4f} (target {a.fpr:g}) on "
          f"{rec['images_used']} correctly classified of {rec['images_seen']} -> {a.out}")
    return 0


def cmd_detect_score(a: argparse.Namespace) -> int:
    """Print a tab-separated row of criteria scores and a verdict per image."""
    from advimage.cli.detect_inputs import load_images
    from advimage.detect import NoiseSignatureDetector

    model, _, _ = load_model_on_device(a)
    det = NoiseSignatureDetector.load(a.detector, model, batch_size=a.batch_size)
    x, names = load_images(a.images, getattr(model, "input_shape", None))
    scores, labels = det.score_with_labels(x)
    flags = det.flags(scores)
    print("\t".join(["image", "pred", *det.criteria, "verdict"]))
    for i, name in enumerate(names):
        vals = [f"{float(scores[k][i]):.6g}" for k in det.criteria]
        verdict = "adversarial" if bool(flags["combined"][i]) else "clean"
        print("\t".join([name, str(int(labels[i])), *vals, verdict]))
    print(f"flagged {int(flags['combined'].sum())} of {len(names)}", file=sys.stderr)
    return 0


def add_detect_parser(sub: Any) -> None:
    """Add ``detect calibrate|score`` to the ``advimage`` sub-command parsers."""
    de = sub.add_parser("detect",
        description=("Noise-signature detector of Hu, Yu et al. (NeurIPS 2019): calibrate "
                     "thresholds on clean images, then score images."),
        epilog=("examples:\n"
                "  advimage detect calibrate --model bundled --data digits --out det.json\n"
                "  advimage detect score --detector det.json --model bundled adv/"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="noise-signature detector (Hu, Yu et al., 2019)")
    dsub = de.add_subparsers(dest="detect_command", required=True, metavar="ACTION")
    dc = dsub.add_parser("calibrate",
        description=("Calibrate the detector's thresholds so that a target share of clean images "
                     "is flagged (the false-positive rate)."),
        epilog=("examples:\n"
                "  advimage detect calibrate --model bundled --data digits --fpr 0.05 --out "
                "det.json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="thresholds at a target FPR on clean images")
    add_model_data_args(dc)
    dc.add_argument("--fpr", type=float, default=0.05, help="target combined false-positive rate")
    dc.add_argument("--preset", default="cifar10", help="cifar10|imagenet|imagenet-inception")
    dc.add_argument("--criteria", default="c1,c2t", help="comma-separated: c1,c2t,c2u")
    dc.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a setting, e.g. c2u_cap=100 (repeatable)")
    dc.add_argument("--out", required=True, help="detector JSON path")
    add_common_args(dc)
    dc.set_defaults(func=cmd_detect_calibrate)
    ds = dsub.add_parser("score",
        description=("Score images with a calibrated detector: per image the criteria's scores and "
                     "whether it is flagged as adversarial."),
        epilog=("examples:\n"
                "  advimage detect score --detector det.json --model bundled adv/ more.png"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="per-image scores and verdicts")
    ds.add_argument("--detector", required=True, help="detector JSON from `detect calibrate`")
    ds.add_argument("--model", required=True, help="the model the detector was calibrated for")
    ds.add_argument("images", nargs="+", help="PNG files, .safetensors files or attack folders")
    ds.add_argument("--batch-size", type=int, default=256)
    add_common_args(ds)
    ds.set_defaults(func=cmd_detect_score)
