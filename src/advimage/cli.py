"""The ``advimage`` command line: thin argument parsing over the library.

Every subcommand accepts ``--device auto|cpu|cuda`` and ``--seed``. Bad input exits with
status 2 and one line on stderr (``advimage: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

log = logging.getLogger("advimage")


class CliError(Exception):
    """A user error reported as one line with exit status 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _eps_list(text: str) -> list[float]:
    from advimage.validation import parse_fraction

    values = [parse_fraction(t, "eps") for t in text.split(",") if t.strip()]
    if not values:
        raise CliError("--eps needs at least one value, e.g. 8/255 or 2/255,4/255,8/255")
    for v in values:
        if not v > 0:
            raise CliError(f"eps must be > 0, got {v:g}")
    return values


# ----------------------------------------------------------------------------- commands
def cmd_demo(a: argparse.Namespace) -> int:
    from advimage.demo import run_demo

    s = run_demo(
        a.out, eps=a.eps, steps=a.steps, device=a.device, seed=a.seed, progress=not a.no_progress
    )
    print(f"digits test set, {s['n']} images, L-inf eps = {a.eps:g}")
    print(f"{'attack':<12}{'clean acc':>10}{'robust acc':>12}")
    for r in s["results"]:
        print(f"{r['attack']:<12}{r['clean_accuracy']:>10.4f}{r['robust_accuracy']:>12.4f}")
    print(f"report: {Path(a.out) / 'report.html'}  ({s['seconds']:.1f} s)")
    return 0


def _train_config(a: argparse.Namespace):  # noqa: ANN202  (TrainConfig, imported lazily)
    from advimage.train import PRESETS, TrainConfig

    preset = "quick" if a.quick else a.preset
    base: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    for key in (
        "model",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "momentum",
        "augment",
        "label_smoothing",
        "warmup_epochs",
        "train_limit",
        "test_limit",
    ):
        v = getattr(a, key)
        if v is not None:
            base[key] = v
    if getattr(a, "adv_eps", None) is not None:
        base["adv_eps"] = a.adv_eps
    if getattr(a, "adv_steps", None) is not None:
        base["adv_steps"] = a.adv_steps
    if a.data is not None:
        base["dataset"] = a.data
    if a.data_root is not None:
        base["data_root"] = a.data_root
    base["seed"] = a.seed
    return TrainConfig.from_dict(base)


def cmd_train(a: argparse.Namespace) -> int:
    from advimage.train import train

    cfg = _train_config(a)
    _, metrics = train(
        cfg, a.out, device=a.device, resume=not a.no_resume, progress=not a.no_progress
    )
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} images; "
        f"checkpoint {Path(a.out) / 'model.safetensors'}"
    )
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from advimage.distill import DistillConfig, distill
    from advimage.hub import load_model

    cfg = _train_config(a)
    teacher, teacher_meta = (None, None) if a.arm == "independent" else load_model(a.teacher)
    layers = a.hint_layers.split(",") if a.hint_layers else [None, None]
    if len(layers) != 2:
        raise CliError("--hint-layers takes TEACHER_LAYER,STUDENT_LAYER, e.g. conv2,conv2")
    dcfg = DistillConfig(
        arm=a.arm, tau=a.tau, alpha=a.alpha, beta=a.beta, gamma=a.gamma,
        teacher_layer=layers[0], student_layer=layers[1],
    )
    _, metrics = distill(
        cfg, dcfg, a.out, teacher=teacher, teacher_meta=teacher_meta, device=a.device,
        resume=not a.no_resume, progress=not a.no_progress,
    )
    print(
        f"{a.arm} student: test accuracy {metrics['test_accuracy']:.4f} on "
        f"{metrics['test_images']} images; checkpoint {Path(a.out) / 'model.safetensors'}"
    )
    return 0


def cmd_models_list(a: argparse.Namespace) -> int:
    from advimage.hub import list_bundled
    from advimage.models import list_models

    print("architectures: " + ", ".join(list_models()))
    print("bundled weights: " + ", ".join(list_bundled()))
    return 0


def cmd_models_import(a: argparse.Namespace) -> int:
    from advimage.models import import_reference, save_checkpoint

    model = import_reference(a.source, arch=a.arch)
    meta = {"source": str(a.source), "dataset": a.dataset}
    if a.classes:
        model.classes = a.classes.split(",")
    path = save_checkpoint(model, a.out, meta=meta)
    print(f"imported {a.source} as {model.arch} -> {path}")
    return 0


def _load(a: argparse.Namespace):  # noqa: ANN202
    from advimage.hub import load_model
    from advimage.utils import resolve_device

    dev = resolve_device(a.device)
    model, meta = load_model(a.model)
    return model.to(dev), meta, dev


def _dataset(a: argparse.Namespace, split: str = "test"):  # noqa: ANN202
    from advimage.data import load_dataset

    kw: dict[str, Any] = {}
    if getattr(a, "image_size", None):
        kw["image_size"] = a.image_size
    ds = load_dataset(a.data, split, data_root=a.data_root, **kw)
    limit = getattr(a, "limit", None)
    if limit is not None:
        if limit < 1:
            raise CliError(f"--limit must be >= 1, got {limit}")
        ds = ds.balanced(limit)  # class-balanced: CIFAR-10's order is sorted by class
    return ds


def cmd_models_eval(a: argparse.Namespace) -> int:
    from advimage.eval.accuracy import evaluate_accuracy

    model, _, dev = _load(a)
    ds = _dataset(a, a.split)
    n = len(ds)
    acc = evaluate_accuracy(
        model,
        ds.batches(a.batch_size),
        dev,
        progress=not a.no_progress,
        total=-(-n // a.batch_size),
    )
    print(f"{a.model}: accuracy {acc:.4f} on {n} {a.data}/{a.split} images")
    return 0


def _attack_kwargs(
    a: argparse.Namespace, name: str, eps: float, strict: bool = True
) -> dict[str, Any]:
    """Options for attack ``name``.

    --steps/--restarts go only to attacks that have them: an error for a single attack
    (``strict``), skipped for the attacks of a grid that lack them (e.g. fgsm).
    """
    from dataclasses import fields

    from advimage.attacks import attack_class

    allowed = {f.name for f in fields(attack_class(name)) if f.init}
    kw: dict[str, Any] = {"eps": eps, "norm": a.norm, "seed": a.seed}
    for key in ("steps", "restarts"):
        value = getattr(a, key, None)
        if value is None:
            continue
        if key not in allowed:
            if not strict:
                continue
            raise CliError(f"attack {name!r} has no --{key} option")
        kw[key] = value
    return kw


def cmd_attack(a: argparse.Namespace) -> int:
    from advimage.attacks import create_attack
    from advimage.eval.export import save_adversarials

    model, meta, dev = _load(a)
    ds = _dataset(a, a.split)
    eps = _eps_list(a.eps)
    if len(eps) != 1:
        raise CliError("advimage attack takes one --eps; use `advimage eval robust` for a grid")
    attack = create_attack(a.attack, **_attack_kwargs(a, a.attack, eps[0]))
    summary = save_adversarials(
        model,
        ds,
        attack,
        a.out,
        batch_size=a.batch_size,
        device=dev,
        progress=not a.no_progress,
        config={
            "model": str(a.model),
            "attack": a.attack,
            "norm": a.norm,
            "eps": eps[0],
            "steps": a.steps,
            "data": a.data,
            "split": a.split,
            "seed": a.seed,
        },
    )
    print(
        f"{a.attack} eps={eps[0]:.5g}: clean accuracy {summary['clean_accuracy']:.4f}, "
        f"robust accuracy {summary['robust_accuracy']:.4f} on {summary['n']} images -> {a.out}"
    )
    return 0


def cmd_eval_robust(a: argparse.Namespace) -> int:
    from advimage.attacks import create_attack
    from advimage.eval.robust import AttackSpec, evaluate_robustness
    from advimage.utils import run_metadata, write_json

    model, meta, dev = _load(a)
    if a.defense:  # attack the defended model (e.g. cache:PATH from `advimage cache tune`)
        from advimage.defend.cache_eval import parse_defense_arg
        from advimage.eval.defenses import build_defense

        name, options = parse_defense_arg(a.defense)
        model = build_defense(name, model, options).to(dev).eval()
    ds = _dataset(a, a.split)
    names = [n.strip() for n in a.attacks.split(",") if n.strip()]
    eps_list = _eps_list(a.eps)
    specs = [
        AttackSpec(
            f"{n}@{e:.5g}", create_attack(n, **_attack_kwargs(a, n, e, strict=False)), e, a.norm
        )
        for n in names
        for e in eps_list
    ]
    n = len(ds)
    rows, _ = evaluate_robustness(
        model,
        ds.batches(a.batch_size),
        specs,
        device=dev,
        progress=not a.no_progress,
        total_batches=-(-n // a.batch_size),
    )
    table = [r.as_dict() for r in rows]
    print(f"{'attack':<22}{'norm':>6}{'eps':>10}{'clean':>9}{'robust':>9}{'sec':>8}")
    for r in table:
        print(
            f"{r['attack']:<22}{r['norm']:>6}{r['eps']:>10.5g}{r['clean_accuracy']:>9.4f}"
            f"{r['robust_accuracy']:>9.4f}{r['seconds']:>8.1f}"
        )
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "robust.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
        write_json(
            out / "robust.json",
            {
                "config": {k: v for k, v in vars(a).items() if k != "func"},
                "results": table,
                **run_metadata(dev, a.seed),
            },
        )
        print(f"written {out / 'robust.csv'} and {out / 'robust.json'}")
    return 0


def cmd_eval_detection(a: argparse.Namespace) -> int:
    from advimage.detect.evaluation import run_from_config

    res = run_from_config(a.config, a.out, only=a.only.split(",") if a.only else None)
    for name, r in res["attacks"].items():
        rates = " ".join(f"{x['fpr_target']:g}:{x['detection_rate']:.3f}" for x in r["rates"]
                         if x["criterion"] == "combined")
        print(f"{name}: success {r['success_rate']:.3f} ({r['n_success']}), detected at FPR "
              f"{rates}, AUC {r['auc']['combined']:.3f}")
    print(f"results -> {Path(a.out) / 'results.json'}")
    return 0


def cmd_eval_transfer(a: argparse.Namespace) -> int:
    from advimage.distill.transfer import format_transfer, run_transfer

    if a.offset < 0:
        raise CliError(f"--offset must be >= 0, got {a.offset}")
    layers = a.cam_layers.split(",") if a.cam_layers else None
    if layers is not None and len(layers) != 3:
        raise CliError("--cam-layers takes TEACHER,KD,INDEPENDENT layer names, e.g. a,b,c")
    doc = run_transfer(
        a.teacher, a.kd, a.independent, a.out, foreign=a.foreign, data=a.data,
        data_root=a.data_root, split=a.split, limit=a.limit, offset=a.offset,
        eps=_eps_list(a.eps), steps=a.steps, cam_layers=layers, jitter=not a.no_jitter,
        device=a.device, seed=a.seed, batch_size=a.batch_size, tag=a.tag,
    )
    res = doc["results"]
    print(f"{res['n']} {a.data}/{a.split} images, I-FGSM k={a.steps} ({res['seconds']:.1f} s)")
    print("\n".join(format_transfer(res)))
    print(f"written {Path(a.out) / 'transfer.json'} and {Path(a.out) / 'gradcam.png'}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from advimage.eval.config import load_config
    from advimage.eval.report_run import write_report
    from advimage.eval.runner import default_run_dir, load_run_config, run_evaluation

    if a.resume:
        cfg = load_run_config(a.resume)
        if a.config and load_config(a.config).to_dict() != cfg.to_dict():
            raise CliError(f"{a.config} differs from the config stored in {a.resume}")
        run_dir = Path(a.resume)
    elif a.config:
        cfg = load_config(a.config)
        run_dir = Path(a.out) if a.out else default_run_dir(cfg.name)
    else:
        raise CliError("give a CONFIG file, or --resume RUN to continue a run")
    cfg.seed = a.seed if a.seed is not None else cfg.seed
    run_evaluation(cfg, run_dir, resume=bool(a.resume),
                   device=None if a.device == "auto" else a.device, progress=not a.no_progress)
    report = write_report(run_dir)
    print(f"run {run_dir}: results {run_dir / 'results.sqlite'}, report {report}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from advimage.eval.report_run import write_report

    path = write_report(a.run, a.out)
    print(f"report: {path}")
    return 0


def _cache_common(a: argparse.Namespace):  # noqa: ANN202
    from advimage.defend.cache_tune import DEFAULT_LAMBDAS, DEFAULT_THETAS

    layers = [n.strip() for n in a.layers.split(",") if n.strip()]
    if not layers:
        raise CliError("--layers needs at least one layer name, e.g. layer3.2,pool")
    model, _, _ = _load(a)
    thetas = [float(t) for t in a.thetas.split(",")] if getattr(a, "thetas", None) \
        else list(DEFAULT_THETAS)
    lambdas = [float(t) for t in a.lambdas.split(",")] if getattr(a, "lambdas", None) \
        else list(DEFAULT_LAMBDAS)
    return model, layers, _dataset(a, a.split), thetas, lambdas


def cmd_cache_build(a: argparse.Namespace) -> int:
    from advimage.defend import CacheModel

    model, layers, ds, _, _ = _cache_common(a)
    cache = CacheModel.build(model, layers, ds, flip=a.flip, batch_size=a.batch_size,
                             theta=a.theta, lam=a.lam)
    path = cache.save(a.out, meta={"data": a.data, "split": a.split, "limit": a.limit})
    print(f"cache of {cache.keys.shape[0]} keys (dim {cache.keys.shape[1]}), "
          f"theta={cache.theta:g} lambda={cache.lam:g} -> {path}")
    return 0


def cmd_cache_tune(a: argparse.Namespace) -> int:
    from advimage.defend import tune_cache

    model, layers, ds, thetas, lambdas = _cache_common(a)
    cache, res = tune_cache(model, layers, ds, val_fraction=a.val_fraction, thetas=thetas,
                            lambdas=lambdas, flip=a.flip, batch_size=a.batch_size, seed=a.seed)
    path = cache.save(a.out, meta={"data": a.data, "split": a.split, "limit": a.limit,
                                   "tuning": res.as_dict()})
    print(f"theta={res.theta:g} lambda={res.lam:g}: validation accuracy {res.val_accuracy:.4f} "
          f"(model alone {res.base_val_accuracy:.4f}, cache only "
          f"{res.cache_only_val_accuracy:.4f}) on {res.n_val} held-out training images")
    print(f"cache of {cache.keys.shape[0]} keys -> {path}")
    return 0


def cmd_detect_calibrate(a: argparse.Namespace) -> int:
    from advimage.detect import NoiseSignatureDetector, get_preset

    model, _, _ = _load(a)
    config = get_preset(a.preset).with_overrides(a.set or [])
    det = NoiseSignatureDetector(model, config, a.criteria, seed=a.seed, batch_size=a.batch_size)
    rec = det.calibrate(_dataset(a, a.split), a.fpr)
    det.save(a.out)
    thr = ", ".join(f"{k} > {v:.6g}" for k, v in rec["thresholds"].items())
    print(f"thresholds: {thr}; FPR {rec['fpr_achieved']:.4f} (target {a.fpr:g}) on "
          f"{rec['images_used']} correctly classified of {rec['images_seen']} -> {a.out}")
    return 0


def cmd_detect_score(a: argparse.Namespace) -> int:
    from advimage.detect import NoiseSignatureDetector, load_images

    model, _, _ = _load(a)
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


# ----------------------------------------------------------------------------- parser
def _model_data_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument(
        "--model",
        required=model_required,
        help="checkpoint (.safetensors), reference file (.th/.pt) or bundled[:NAME]",
    )
    p.add_argument("--data", default="digits", help="dataset: digits|cifar10|mnist|folder")
    p.add_argument("--data-root", default=None, help="folder holding the dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--image-size", type=int, default=None, help="resize/crop size (folder data)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use N images, class-balanced (the first N/K of each class)",
    )
    p.add_argument("--batch-size", type=int, default=256)


def _train_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `distill` (the training recipe)."""
    p.add_argument("--preset", default=None, help="named schedule (see advimage.train.PRESETS)")
    p.add_argument("--quick", action="store_true", help="tiny CI-sized run")
    p.add_argument("--model", default=None, help="architecture name (see `advimage models list`)")
    p.add_argument("--data", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--augment", default=None, choices=["standard", "none", "jitter"])
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="advimage", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="attack the bundled digits model and write an HTML report")
    d.add_argument("--out", default="advimage-demo", help="output folder (default: advimage-demo)")
    d.add_argument("--eps", type=lambda s: _eps_list(s)[0], default=0.1, help="L-inf budget")
    d.add_argument("--steps", type=int, default=20, help="PGD steps")
    _common(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model (checkpoint per epoch, resumable)")
    _train_args(t)
    t.add_argument("--adv-eps", type=lambda s: _eps_list(s)[0], default=None,
                   help="PGD adversarial training budget, L-inf, e.g. 8/255 (default: off)")
    t.add_argument("--adv-steps", type=int, default=None, help="PGD steps per batch (default 7)")
    _common(t)
    t.set_defaults(func=cmd_train)

    di = sub.add_parser("distill", help="train a student: Hinton KD, FitNets or independent")
    di.add_argument("--arm", default="kd", choices=["kd", "fitnets", "independent"])
    di.add_argument("--teacher", default="bundled", help="teacher: bundled[:NAME] or a checkpoint")
    di.add_argument("--tau", type=float, default=4.0, help="KD temperature")
    di.add_argument("--alpha", type=float, default=None, help="KD weight (default 0.9)")
    di.add_argument("--beta", type=float, default=None, help="hint weight (default 100)")
    di.add_argument("--gamma", type=float, default=None, help="CE weight (kd 0.1, else 1)")
    di.add_argument("--hint-layers", default=None, help="TEACHER_LAYER,STUDENT_LAYER (fitnets)")
    _train_args(di)
    _common(di)
    di.set_defaults(func=cmd_distill)

    m = sub.add_parser("models", help="list, import and evaluate models")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="registered architectures and bundled weights")
    _common(ml)
    ml.set_defaults(func=cmd_models_list)
    mi = msub.add_parser("import", help="convert a reference .th/.pt model into a safe checkpoint")
    mi.add_argument("source")
    mi.add_argument("--arch", default=None, help="architecture (inferred from the file name)")
    mi.add_argument("--dataset", default=None, help="dataset the model was trained on")
    mi.add_argument("--classes", default=None, help="comma-separated class names")
    mi.add_argument("--out", required=True, help="output .safetensors path")
    _common(mi)
    mi.set_defaults(func=cmd_models_import)
    me = msub.add_parser("eval", help="clean accuracy of a model")
    _model_data_args(me)
    _common(me)
    me.set_defaults(func=cmd_models_eval)

    at = sub.add_parser("attack", help="craft adversarial images and save them losslessly")
    _model_data_args(at)
    at.add_argument("--attack", default="pgd", help="attack name (advimage.attacks.list_attacks)")
    at.add_argument("--norm", default="linf", help="linf|l2")
    at.add_argument("--eps", default="8/255", help="budget, e.g. 8/255")
    at.add_argument("--steps", type=int, default=None)
    at.add_argument("--restarts", type=int, default=None)
    at.add_argument("--out", required=True)
    _common(at)
    at.set_defaults(func=cmd_attack)

    ev = sub.add_parser("eval", help="evaluations")
    esub = ev.add_subparsers(dest="eval_command", required=True, metavar="KIND")
    er = esub.add_parser("robust", help="clean and robust accuracy per attack and eps")
    _model_data_args(er)
    er.add_argument("--attacks", default="fgsm,pgd", help="comma-separated attack names")
    er.add_argument("--norm", default="linf")
    er.add_argument(
        "--eps", default="8/255", help="comma-separated budgets, e.g. 2/255,4/255,8/255"
    )
    er.add_argument("--steps", type=int, default=None)
    er.add_argument("--restarts", type=int, default=None)
    er.add_argument("--out", default=None, help="folder for robust.csv / robust.json")
    er.add_argument("--defense", default=None, metavar="NAME[:PATH][,k=v]",
                    help="defense to attack, e.g. cache:runs/c (cache from `advimage cache "
                         "tune`), cache:runs/c,lam=1,bpda_theta=5")
    _common(er)
    er.set_defaults(func=cmd_eval_robust)
    ed = esub.add_parser("detection", help="noise-signature detection rates at FPR (resumable)")
    ed.add_argument("--config", required=True, help="e.g. configs/detection-resnet20.yaml")
    ed.add_argument("--out", required=True, help="folder of per-attack files and results.json")
    ed.add_argument("--only", default=None, help="comma-separated attack label prefixes")
    ed.set_defaults(func=cmd_eval_detection)
    et = esub.add_parser("transfer", help="what KD transfers (Ojha et al. 2023): 4 probes")
    et.add_argument("--teacher", required=True, help="teacher: bundled[:NAME] or a checkpoint")
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
    _common(et)
    et.set_defaults(func=cmd_eval_transfer)

    ru = sub.add_parser("run", help="run a declarative evaluation config (resumable)")
    ru.add_argument("config", nargs="?", default=None, help="YAML run config (configs/*.yaml)")
    ru.add_argument("--resume", default=None, metavar="RUN", help="continue this run directory")
    ru.add_argument("--out", default=None, help="run directory (default: runs/NAME-TIMESTAMP)")
    _common(ru)
    ru.set_defaults(func=cmd_run, seed=None)
    rp = sub.add_parser("report", help="HTML report and CSV/JSON exports of a run directory")
    rp.add_argument("run", help="run directory written by `advimage run`")
    rp.add_argument("--out", default=None, help="HTML path (default: RUN/report.html)")
    rp.set_defaults(func=cmd_report)

    ca = sub.add_parser("cache", help="cache memory defense (Orhan 2018): build or tune a cache")
    csub = ca.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for name, func, text in (("build", cmd_cache_build, "embed a training set into a cache"),
                             ("tune", cmd_cache_tune, "grid-search theta/lambda, then build")):
        c = csub.add_parser(name, help=text)
        _model_data_args(c)
        c.set_defaults(split="train")
        c.add_argument("--layers", required=True, help="comma-separated layer names")
        c.add_argument("--flip", action="store_true", help="also store horizontal mirrors")
        c.add_argument("--out", required=True, help="cache path (<out>.safetensors + .json)")
        if name == "build":
            c.add_argument("--theta", type=float, default=50.0, help="inverse temperature")
            c.add_argument("--lam", type=float, default=0.5, help="cache weight in [0, 1]")
        else:
            c.add_argument("--val-fraction", type=float, default=0.1)
            c.add_argument("--thetas", default=None, help="comma-separated grid (default 1..100)")
            c.add_argument("--lambdas", default=None, help="comma-separated grid (default 0..1)")
        _common(c)
        c.set_defaults(func=func)

    de = sub.add_parser("detect", help="noise-signature detector (Hu, Yu et al., 2019)")
    dsub = de.add_subparsers(dest="detect_command", required=True, metavar="ACTION")
    dc = dsub.add_parser("calibrate", help="thresholds at a target FPR on clean images")
    _model_data_args(dc)
    dc.add_argument("--fpr", type=float, default=0.05, help="target combined false-positive rate")
    dc.add_argument("--preset", default="cifar10", help="cifar10|imagenet|imagenet-inception")
    dc.add_argument("--criteria", default="c1,c2t", help="comma-separated: c1,c2t,c2u")
    dc.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a setting, e.g. c2u_cap=100 (repeatable)")
    dc.add_argument("--out", required=True, help="detector JSON path")
    _common(dc)
    dc.set_defaults(func=cmd_detect_calibrate)
    ds_ = dsub.add_parser("score", help="per-image scores and verdicts")
    ds_.add_argument("--detector", required=True, help="detector JSON from `detect calibrate`")
    ds_.add_argument("--model", required=True, help="the model the detector was calibrated for")
    ds_.add_argument("images", nargs="+", help="PNG files, .safetensors files or attack folders")
    ds_.add_argument("--batch-size", type=int, default=256)
    _common(ds_)
    ds_.set_defaults(func=cmd_detect_score)
    from advimage.defend.nim_cli import add_nim_parser  # `advimage nim pretrain`

    add_nim_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise CliError(f"--threads must be >= 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(
            f"advimage: error: {msg.splitlines()[0] if msg else type(err).__name__}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("advimage: interrupted (checkpoints written so far are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
