"""``advimage eval robust|detection|transfer|minimal`` (minimal: :mod:`.eval_minimal`): robust
accuracy per attack and budget, the noise-signature detection study, and what knowledge
distillation transfers."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advimage.cli.attack import add_speed_args, check_speed_args
from advimage.cli.common import (
    CliError,
    add_common_args,
    add_model_data_args,
    attack_kwargs,
    check_out_arg,
    eps_list,
    load_data,
    load_model_on_device,
    parse_shard,
)
from advimage.cli.eval_minimal import add_minimal_parser
from advimage.cli.run import add_executor_args, executor_settings
from advimage.cli.transfer_options import add_surrogate_args, surrogate_keys

if TYPE_CHECKING:  # the CLI imports torch-heavy modules lazily, when a command runs
    import torch

    from advimage.eval.config import RunConfig

__all__ = ["add_eval_parser", "cmd_eval_detection", "cmd_eval_robust", "cmd_eval_transfer"]


def _robust_config(a: argparse.Namespace, names: list[str], budgets: list[float]) -> RunConfig:
    """The run config of ``eval robust``'s options: no checks, no examples, one defense."""
    from advimage.defend.registry import parse_defense_arg
    from advimage.eval.config import parse_config

    attacks = []
    transfer = surrogate_keys(a)
    for n in names:
        kw = attack_kwargs(a, n, budgets[0], strict=False)
        attacks.append({"name": n, "eps": budgets, "norm": a.norm, **transfer,
                        "options": {k: v for k, v in kw.items() if k not in ("eps", "norm",
                                                                              "seed")}})
    defenses = None
    if a.defense:  # attack the defended model (e.g. cache:PATH from `advimage cache tune`)
        name, options = parse_defense_arg(a.defense)
        defenses = [{"name": name, "options": options}]
    data = {"name": a.data, "split": a.split, "root": a.data_root, "limit": a.limit,
            "batch_size": a.batch_size, "image_size": a.image_size}
    return parse_config({
        "name": "eval-robust", "seed": a.seed, "device": a.device, "examples": 0,
        "model": {"path": a.model}, "data": data, "attacks": attacks, "defenses": defenses,
        "checks": {"enabled": False}, "precision": a.precision,
    })


def cmd_eval_robust(a: argparse.Namespace) -> int:
    """Clean and robust accuracy for every attack x eps; optional robust.csv / robust.json.

    Runs through the resumable :func:`advimage.eval.runner.run_evaluation`: with ``--out`` the
    folder is a run directory (``results.sqlite`` committed batch by batch) that ``--resume``
    continues; without it the run lives in a temporary folder.
    """
    import tempfile

    from advimage.attacks import create_attack
    from advimage.eval.robust import rows_from_run
    from advimage.eval.runner import run_evaluation
    from advimage.eval.store import DB_NAME, ResultStore

    check_out_arg(a, "dir")
    if a.resume and not a.out:
        raise CliError("--resume needs --out, the folder of the run to continue")
    out = Path(a.out) if a.out else None
    if out is not None and not a.resume and (out / DB_NAME).exists():
        raise CliError(f"{out} already holds results; add --resume to continue them, or choose "
                       "another --out")
    names = [n.strip() for n in a.attacks.split(",") if n.strip()]
    budgets = eps_list(a.eps)
    surrogate_keys(a)  # --surrogate-weights without --surrogate etc.: before any work
    for n in names:  # each attack's own one-line errors (name, norm, steps) before any work
        for e in budgets:
            create_attack(n, **attack_kwargs(a, n, e, strict=False))
    check_speed_args(a)
    model, _, dev = load_model_on_device(a)
    ds = load_data(a, a.split, model=model)
    cfg = _robust_config(a, names, budgets)
    with tempfile.TemporaryDirectory(prefix="advimage-eval-") as tmp:
        run_dir = out if out is not None else Path(tmp)
        run_evaluation(cfg, run_dir, resume=a.resume, device=dev,
                       progress=not a.no_progress, model=model, dataset=ds,
                       channels_last=a.channels_last)
        table = [r.as_dict() for r in rows_from_run(run_dir)]
        with ResultStore(run_dir / DB_NAME) as store:
            progress = store.progress()
    _print_robust_table(table)
    if out is not None:
        _write_robust_files(a, out, table, progress, dev)
    return 0


def _print_robust_table(table: list[dict[str, Any]]) -> None:
    """One line per attack x eps: clean and robust accuracy, seconds."""
    print(f"{'attack':<22}{'norm':>6}{'eps':>10}{'clean':>9}{'robust':>9}{'sec':>8}")
    for r in table:
        print(
            f"{r['attack']:<22}{r['norm']:>6}{r['eps']:>10.5g}{r['clean_accuracy']:>9.4f}"
            f"{r['robust_accuracy']:>9.4f}{r['seconds']:>8.1f}"
        )


def _write_robust_files(a: argparse.Namespace, out: Path, table: list[dict[str, Any]],
                        progress: dict[str, Any], dev: torch.device) -> None:
    """``out/robust.csv`` and ``out/robust.json`` (options, progress, rows, run metadata)."""
    from advimage.utils import atomic_writer, run_metadata, write_json

    with atomic_writer(out / "robust.csv", newline="") as fh:  # the old file stays till done
        w = csv.DictWriter(fh, fieldnames=[*table[0], "partial"])
        w.writeheader()
        w.writerows({**r, "partial": progress["partial"]} for r in table)
    write_json(
        out / "robust.json",
        {
            "config": {k: v for k, v in vars(a).items() if k != "func"},
            **progress,
            "results": table,
            **run_metadata(dev, a.seed),
        },
    )
    print(f"written {out / 'robust.csv'} and {out / 'robust.json'}")


def cmd_eval_detection(a: argparse.Namespace) -> int:
    """Run a detection config (resumable); print success and detection rates per attack."""
    from advimage.studies.detection.config import executor_of, run_from_config

    check_out_arg(a, "dir")
    res = run_from_config(a.config, a.out, only=a.only.split(",") if a.only else None,
                          shard=a.shard, device=a.device,
                          executor=executor_settings(a, executor_of(a.config)))
    for name, r in res["attacks"].items():
        rates = " ".join(f"{x['fpr_target']:g}:{x['detection_rate']:.3f}" for x in r["rates"]
                         if x["criterion"] == "combined")
        print(f"{name}: success {r['success_rate']:.3f} ({r['n_success']}), detected at FPR "
              f"{rates}, AUC {r['auc']['combined']:.3f}")
    if res.get("pending"):
        print(f"not on disk yet (other shards): {', '.join(res['pending'])}")
    print(f"results -> {Path(a.out) / 'results.json'}")
    return 0


def cmd_eval_transfer(a: argparse.Namespace) -> int:
    """The four transfer probes of Ojha et al. 2023 for a teacher and its KD / independent
    students; print their table, write transfer.json and gradcam.png."""
    from advimage.studies.distill.transfer import format_transfer
    from advimage.studies.distill.transfer_run import run_transfer

    check_out_arg(a, "dir")
    if a.offset < 0:
        raise CliError(f"--offset must be >= 0, got {a.offset}")
    layers = a.cam_layers.split(",") if a.cam_layers else None
    if layers is not None and len(layers) != 3:
        raise CliError("--cam-layers takes TEACHER,KD,INDEPENDENT layer names, e.g. a,b,c")
    doc = run_transfer(
        a.teacher, a.kd, a.independent, a.out, foreign=a.foreign, data=a.data,
        data_root=a.data_root, split=a.split, limit=a.limit, offset=a.offset,
        eps=eps_list(a.eps), steps=a.steps, cam_layers=layers, jitter=not a.no_jitter,
        device=a.device, seed=a.seed, batch_size=a.batch_size, tag=a.tag,
    )
    res = doc["results"]
    print(f"{res['n']} {a.data}/{a.split} images, I-FGSM k={a.steps} ({res['seconds']:.1f} s)")
    print("\n".join(format_transfer(res)))
    print(f"written {Path(a.out) / 'transfer.json'} and {Path(a.out) / 'gradcam.png'}")
    return 0


def add_eval_parser(sub: Any) -> None:
    """Add ``eval robust|detection|transfer|minimal`` to the ``advimage`` sub-command parsers."""
    ev = sub.add_parser("eval",
        description=("Measure robustness: accuracy under an attack grid, detection rates of a "
                     "detector, or what knowledge distillation transfers."),
        epilog=("examples:\n"
                "  advimage eval robust --model bundled --data digits --eps 0.05,0.1\n"
                "  advimage eval detection --config configs/detection-resnet20.yaml --out "
                "runs/det"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="robust accuracy grids, detection rates, KD transfer probes")
    esub = ev.add_subparsers(dest="eval_command", required=True, metavar="KIND")
    _add_robust_parser(esub)
    _add_detection_parser(esub)
    _add_transfer_parser(esub)
    add_minimal_parser(esub)


def _add_robust_parser(esub: Any) -> None:
    """``advimage eval robust``."""
    er = esub.add_parser("robust",
        description=("Clean and robust accuracy of a model for each attack and budget (a quick "
                     "grid; `advimage run` is the full harness)."),
        epilog=("examples:\n"
                "  advimage eval robust --model bundled --data digits --attacks fgsm,pgd --eps "
                "0.05,0.1\n"
                "  advimage eval robust --model resnet56.th --surrogate resnet20.th,resnet32.th "
                "--data cifar10 --attacks pgd --eps 8/255"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="clean and robust accuracy per attack and eps")
    add_model_data_args(er)
    er.add_argument("--attacks", default="fgsm,pgd", help="comma-separated attack names")
    er.add_argument("--norm", default="linf",
                    help="linf|l2|l1|l0, as every listed attack supports (apgd-ce: linf|l2|l1)")
    er.add_argument(
        "--eps", default="8/255", help="comma-separated budgets, e.g. 2/255,4/255,8/255"
    )
    er.add_argument("--steps", type=int, default=None)
    er.add_argument("--restarts", type=int, default=None)
    er.add_argument("--out", default=None,
                    help="run folder: results.sqlite (written batch by batch), robust.csv, "
                         "robust.json")
    er.add_argument("--resume", action="store_true",
                    help="continue the interrupted run in --out (finished batches are kept)")
    add_surrogate_args(er)
    er.add_argument("--defense", default=None, metavar="NAME[:PATH][,k=v]",
                    help="defense to attack, e.g. cache:runs/c (cache from `advimage cache "
                         "tune`), cache:runs/c,lam=1,bpda_theta=5")
    add_speed_args(er)
    add_common_args(er)
    er.set_defaults(func=cmd_eval_robust)


def _add_detection_parser(esub: Any) -> None:
    """``advimage eval detection``."""
    ed = esub.add_parser("detection",
        description=("Detection rates at fixed false-positive rates of the Hu, Yu et al. (2019) "
                     "detector for the attacks of a config; resumable."),
        epilog=("examples:\n"
                "  advimage eval detection --config configs/detection-resnet20.yaml --out "
                "runs/det\n"
                "  advimage eval detection --config C.yaml --out runs/det --executor ray"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="detection rates at FPR of a detector (resumable)")
    ed.add_argument("--config", required=True, help="e.g. configs/detection-resnet20.yaml")
    ed.add_argument("--out", required=True,
                    help="run folder: results.sqlite (one batch per scored set of images), "
                         "manifest.json and results.json")
    ed.add_argument("--only", default=None, help="comma-separated attack label prefixes")
    ed.add_argument("--shard", default=None, metavar="I/N", type=parse_shard,
                    help="craft only every N-th attack, from the I-th (1-based), so N processes "
                         "share --out (they may start together)")
    add_executor_args(ed, "the scored sets")
    ed.add_argument("--device", default="cpu", help="cpu|cuda|auto (default: cpu)")
    ed.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    ed.add_argument("-v", "--verbose", action="store_true", help="log more")
    ed.set_defaults(func=cmd_eval_detection)


def _add_transfer_parser(esub: Any) -> None:
    """``advimage eval transfer``."""
    et = esub.add_parser("transfer",
        description=("The probes of Ojha et al. (NeurIPS 2023) of what knowledge distillation "
                     "transfers: adversarial vulnerability, agreement, localization, invariance."),
        epilog=("examples:\n"
                "  advimage eval transfer --teacher t.safetensors --kd kd.safetensors "
                "--independent ind.safetensors --out runs/tr"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="what KD transfers (Ojha et al. 2023): 4 probes")
    et.add_argument("--teacher", required=True,
                    help="teacher: any --model spec (checkpoint, reference file, "
                         "bundled[:NAME], hf:ORG/NAME, torchscript:PATH)")
    et.add_argument("--kd", required=True, help="KD student checkpoint")
    et.add_argument("--independent", required=True, help="independent student checkpoint")
    et.add_argument("--foreign", default=None,
                    help="control network of the student's architecture (e.g. another seed)")
    et.add_argument("--data", default="digits", help="dataset: digits|cifar10|mnist|folder")
    et.add_argument("--data-root", default=None, help="folder holding the dataset")
    et.add_argument("--split", default="test", choices=["train", "test"])
    et.add_argument("--limit", type=int, default=None, help="N images, class-balanced")
    et.add_argument("--offset", type=int, default=0, help="skip the first N balanced images")
    et.add_argument("--eps", default="2/255,4/255,8/255", help="I-FGSM budgets, L-inf")
    et.add_argument("--steps", type=int, default=5, help="I-FGSM steps (k)")
    et.add_argument("--batch-size", type=int, default=256)
    et.add_argument("--cam-layers", default=None, help="TEACHER,KD,INDEPENDENT Grad-CAM layers")
    et.add_argument("--no-jitter", action="store_true", help="skip the jitter invariance probe")
    et.add_argument("--tag", default=None, help="label stored in transfer.json (e.g. main)")
    et.add_argument("--out", required=True, help="folder for transfer.json and gradcam.png")
    add_common_args(et)
    et.set_defaults(func=cmd_eval_transfer)
