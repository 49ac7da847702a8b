"""``advimage run`` and ``advimage report``: declarative, resumable evaluation runs and their
HTML/CSV/JSON reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from advimage.cli.common import CliError, add_common_args, check_out_arg, parse_shard
from advimage.cli.track_options import add_track_arg, tracking_for

__all__ = ["add_executor_args", "add_report_parser", "add_run_parser", "cmd_report", "cmd_run",
           "executor_settings"]


def cmd_run(a: argparse.Namespace) -> int:
    """Run (or resume) a config into a run directory, then write its report."""
    from advimage.eval.config import load_config, same_run
    from advimage.eval.report_run import write_report
    from advimage.eval.runner import default_run_dir, load_run_config, run_evaluation

    check_out_arg(a, "dir")
    if len(a.config) > 1:
        return _cmd_sweep(a)
    a.config = a.config[0] if a.config else None
    if a.resume:
        cfg = load_run_config(a.resume)
        if a.config and not same_run(load_config(a.config).to_dict(), cfg.to_dict()):
            raise CliError(f"{a.config} differs from the config stored in {a.resume}")
        run_dir = Path(a.resume)
    elif a.config:
        cfg = load_config(a.config)
        run_dir = Path(a.out) if a.out else default_run_dir(cfg.name)
    else:
        raise CliError("give a CONFIG file, or --resume RUN to continue a run")
    cfg.seed = a.seed if a.seed is not None else cfg.seed
    with tracking_for(a, run_dir, {"name": cfg.name, "seed": cfg.seed}) as tracker:
        run_evaluation(cfg, run_dir, resume=bool(a.resume),
                       device=None if a.device == "auto" else a.device,
                       progress=not a.no_progress, shard=a.shard,
                       executor=executor_settings(a, cfg.executor))
        report = write_report(run_dir)
        _track_results(tracker, run_dir)
    print(f"run {run_dir}: results {run_dir / 'results.sqlite'}, report {report}"
          + _partial_note(run_dir))
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    """Several configs as one job: ``--out DIR`` holds one run directory per config (by
    name), resumed when it exists; with ``--executor ray`` the configs share the workers."""
    from advimage.eval.config import load_config
    from advimage.eval.report_run import write_report
    from advimage.eval.sweep import run_sweep

    if a.resume or a.shard or a.seed is not None:
        raise CliError("several configs: --resume, --shard and --seed work on one run; rerun "
                       "the same command to resume the sweep")
    cfgs = [load_config(c) for c in a.config]
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise CliError(f"configs of one sweep need distinct names, got {', '.join(names)}")
    out = Path(a.out) if a.out else Path("runs")
    dirs = run_sweep(cfgs, [out / n for n in names],
                     executor=executor_settings(a, cfgs[0].executor),
                     device=None if a.device == "auto" else a.device)
    for d in dirs:
        print(f"run {d}: results {d / 'results.sqlite'}, report {write_report(d)}")
    return 0


def executor_settings(a: argparse.Namespace, configured: Any) -> Any:
    """The config's ``executor:`` section with ``--executor``/``--address``/``--workers``
    applied (an address or a worker count alone implies ``ray``)."""
    from dataclasses import replace

    name = a.executor or ("ray" if a.address or a.workers else configured.name)
    if name != "ray" and (a.address or a.workers):
        raise CliError("--address and --workers need --executor ray")
    return replace(configured, name=name, address=a.address or configured.address,
                   workers=a.workers or configured.workers)


def _track_results(tracker: Any, run_dir: Path) -> None:
    """``--track``: clean accuracy per defense (``clean/DEFENSE``, step 0) and robust accuracy
    per defense and attack (``robust/DEFENSE/ATTACK``) at step = the budget's index, smallest
    first, from the ``results.json`` just written."""
    import json

    rows = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["results"]
    clean = {r["defense"]: r["clean_accuracy"] for r in rows if r.get("clean_accuracy") is not None}
    tracker.log_scalars(0, clean, "clean")
    for row in rows:
        if row.get("robust_accuracy") is None:
            continue
        budgets = sorted({r["eps"] for r in rows
                          if (r["defense"], r["label"]) == (row["defense"], row["label"])})
        tracker.log_scalars(budgets.index(row["eps"]), {row["label"]: row["robust_accuracy"]},
                            f"robust/{row['defense']}")


def _partial_note(run_dir: Path) -> str:
    """``; partial: K of N batches done; ...`` when the exports just written are partial (a
    shard that did its share exits 0 all the same), else an empty string."""
    import json

    p = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    if not p.get("partial"):
        return ""
    of = "" if p.get("batches_total") is None else f" of {p['batches_total']}"
    return (f"; partial: {p['batches_done']}{of} batches done; run the other shards or "
            f"--resume {run_dir}")


def cmd_report(a: argparse.Namespace) -> int:
    """Write the HTML report (and exports) of a finished or partial run."""
    from advimage.eval.report_run import write_report

    check_out_arg(a, "file")
    path = write_report(a.run, a.out)
    print(f"report: {path}" + _partial_note(Path(a.run)))
    return 0


def add_run_parser(sub: Any) -> None:
    """Add ``run`` to the ``advimage`` sub-command parsers."""
    ru = sub.add_parser("run",
        description=("Run a declarative evaluation config (model, data, defenses, attacks, "
                     "budgets, checks) into a run directory; resumable, shardable, and on Ray "
                     "workers with --executor ray."),
        epilog=("examples:\n"
                "  advimage run configs/robust-resnet20-quick.yaml --out runs/quick\n"
                "  advimage run A.yaml B.yaml --executor ray --out runs/sweep"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a declarative evaluation config (resumable)")
    ru.add_argument("config", nargs="*", default=[],
                    help="YAML run config (configs/*.yaml); several: a sweep, one run directory "
                         "each under --out (default runs/), sharing the Ray workers")
    ru.add_argument("--resume", default=None, metavar="RUN", help="continue this run directory")
    ru.add_argument("--out", default=None, help="run directory (default: runs/NAME-TIMESTAMP)")
    ru.add_argument("--shard", default=None, metavar="I/N", type=parse_shard,
                    help="do only every N-th batch, from batch I (1-based), so N processes share "
                         "one run: start one with CONFIG --out RUN, the others with --resume RUN")
    add_executor_args(ru, "batches")
    add_track_arg(ru)
    add_common_args(ru)
    ru.set_defaults(func=cmd_run, seed=None)  # None: the config's seed


def add_executor_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--executor``, ``--address`` and ``--workers`` (see :func:`executor_settings`)."""
    p.add_argument("--executor", default=None, choices=("serial", "ray"),
                   help=f"where {what} are computed (default: the config's executor, serial): "
                        "ray runs them on Ray actors, this process alone writes the run")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster HOST:PORT or ray://HOST:PORT (default: a local Ray "
                        "instance on this machine's CPUs and GPUs)")
    p.add_argument("--workers", default=None, type=_positive, metavar="N",
                   help="Ray actors (default: one per CPU of the cluster)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return n


def add_report_parser(sub: Any) -> None:
    """Add ``report`` to the ``advimage`` sub-command parsers."""
    rp = sub.add_parser("report",
        description=("Write the HTML report (masking checks, accuracy with Wilson intervals, "
                     "curves, example grids) and the CSV/JSON exports of a run directory."),
        epilog=("examples:\n"
                "  advimage report runs/quick\n"
                "  advimage report runs/quick --out quick.html"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="HTML report and CSV/JSON exports of a run directory")
    rp.add_argument("run", help="run directory written by `advimage run`")
    rp.add_argument("--out", default=None, help="HTML path (default: RUN/report.html)")
    rp.set_defaults(func=cmd_report)
