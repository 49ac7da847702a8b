"""Issue 16 on one short GPU lease: a real ImageNet classifier attacked and Hu et al.'s detector.

Runs, as separate processes sharing one GPU, within ``--budget`` seconds:

* ``advimage models import`` of EfficientNet-Lite0 (the shared ImageNet-1k weights) and
  ``advimage models eval`` on the 500 ImageNet-val images (clean top-1, 1000-way);
* ``advimage eval detection --config configs/detection-imagenet-effnet.yaml`` as two shards
  (Hu, Yu et al., NeurIPS 2019, in the paper's ImageNet setting);
* ``advimage run configs/robust-imagenet-effnet.yaml`` (FGSM, PGD, APGD-CE, AutoAttack at 1, 2,
  4/255 and L2), then ``advimage report``;
* the attack tests on CUDA (``ADVIMAGE_TEST_DEVICE=cuda pytest tests/attacks``).

Data travel in ``.gpu/`` (ignored by git, carried by the device call): the model file,
``imagenette/classes.tsv``, all of ``imagenette/imagenet-val`` and the first 60 images per class
of the held-out pool (``val/`` minus ``imagenet-val``, sorted), which is every image the
configs' class-balanced calibration set (500 = 50 per class) takes; ``--stage`` builds it here.
They are unpacked to ``../shared`` so the committed configs' paths hold.

Usage: ``python3 scripts/gpu_imagenet.py --stage`` (here), then on the GPU machine
``python3 scripts/gpu_imagenet.py --out $OUT --budget 480``; ``--smoke`` runs every job tiny on
the CPU against the real ``../shared`` in a scratch ``runs/imagenet-smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import gpu_run as g  # start / kill / wait_all / log, sharing its LOGS folder setting

PY = sys.executable
SHARED = Path("../shared")
STAGE = Path(".gpu")
MODEL_FILE = "models/efficientnet-lite0-57934424.pth"
PER_CLASS = 60  # held-out images per class carried: covers a balanced calibration of 500


def stage(per_class: int = PER_CLASS) -> None:
    """Copy what the GPU machine needs into ``.gpu/`` (about 30 MB at 60 images per class)."""
    src = SHARED / "data/imagenette"
    dst = STAGE / "shared/data/imagenette"
    shutil.rmtree(STAGE / "shared", ignore_errors=True)
    shutil.copytree(src / "imagenet-val", dst / "imagenet-val")
    shutil.copy(src / "classes.tsv", dst / "classes.tsv")
    taken = {p.name for p in (src / "imagenet-val").rglob("*") if p.is_file()}
    for wnid in sorted(p.name for p in (src / "val").iterdir() if p.is_dir()):
        keep = sorted(p for p in (src / "val" / wnid).iterdir() if p.name not in taken)
        (dst / "val" / wnid).mkdir(parents=True)
        for p in keep[:per_class]:
            shutil.copy(p, dst / "val" / wnid / p.name)
    (STAGE / "shared/models").mkdir(parents=True)
    shutil.copy(SHARED / MODEL_FILE, STAGE / "shared" / MODEL_FILE)


def unstage() -> None:
    if not (SHARED / "data/imagenette/imagenet-val").exists():
        shutil.copytree(STAGE / "shared", SHARED, dirs_exist_ok=True)


def work_dirs(work: str, smoke: bool, out: str | None) -> tuple[Path, Path]:
    """The script's work tree (emptied for a smoke test; a real run refuses a non-empty one, so
    results of two runs never mix) with its logs folder, and the folder results go to."""
    w = Path(work)
    if smoke:
        shutil.rmtree(w, ignore_errors=True)
    elif w.exists() and any(w.iterdir()):
        raise SystemExit(f"{w} is not empty; this script starts from a fresh tree")
    w.mkdir(parents=True, exist_ok=True)
    g.LOGS = w / "logs"
    dst = Path(out or w / "out")
    dst.mkdir(parents=True, exist_ok=True)
    return w, dst


def smoke_config(path: str, w: Path, replace: dict[str, str]) -> str:
    """A copy of config ``path`` in the scratch tree, its model path and sizes made tiny."""
    text = Path(path).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    out = w / Path(path).name
    out.write_text(text)
    return str(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole script")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test: tiny everything")
    ap.add_argument("--stage", action="store_true", help="build .gpu/ here and exit")
    ap.add_argument("--per-class", type=int, default=PER_CLASS,
                    help="held-out Imagenette images per class that --stage carries")
    a = ap.parse_args()
    if a.stage:
        stage(a.per_class)
        return 0
    w, out = work_dirs("runs/imagenet-smoke" if a.smoke else "runs/imagenet", a.smoke, a.out)
    deadline = g.T0 + a.budget
    dev = "cpu" if a.smoke else "cuda"
    if not a.smoke:
        unstage()
    env = {"PYTHONPATH": "src", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "0"}
    adv = [PY, "-m", "advimage"]
    ckpt = w / "efficientnet-lite0.safetensors"
    rc = subprocess.run(adv + ["models", "import", str(SHARED / MODEL_FILE), "--arch",
                               "efficientnet-lite0", "--out", str(ckpt)],
                        env={**os.environ, **env})
    g.log(f"import rc {rc.returncode}")
    det_cfg = "configs/detection-imagenet-effnet.yaml"
    rob_cfg = "configs/robust-imagenet-effnet.yaml"
    if a.smoke:
        paths = {"../runs/imagenet/": f"{w.resolve()}/",
                 "../../shared/": f"{SHARED.resolve()}/"}
        det_cfg = smoke_config("configs/detection-imagenet-effnet-cpu.yaml", w, {
            **paths, "limit: 200}": "limit: 40}", "limit: 50}": "limit: 4}",
            "seed: 0}": "seed: 0, set: {c2t_cap: 3, n_noise: 2}}",
            "setting: gray}": "setting: gray, steps: 2}",
            "setting: white}": "setting: white, steps: 2}", "steps: 100": "steps: 2"})
        rob_cfg = smoke_config(rob_cfg, w, {**paths, "batch_size: 125": "batch_size: 4, limit: 8",
                                            "steps: 100": "steps: 2", "steps: 20": "steps: 2"})
    limit = ["--limit", "20"] if a.smoke else []
    procs = {
        "clean": g.start("clean", g.q(adv + ["models", "eval", "--model", ckpt, "--data",
                                             "imagenette", "--data-root",
                                             SHARED / "data/imagenette", "--device", dev,
                                             "--batch-size", 100, "--no-progress", *limit]),
                         env),
        "robust": g.start("robust", g.q(adv + ["run", rob_cfg, "--out", w / "robust", "--device",
                                               dev, "--no-progress"]) + " && " + g.q(
            adv + ["report", w / "robust"]), env),
    }
    for i in (1, 2):
        procs[f"detection-{i}"] = g.start(f"detection-{i}", g.q(adv + [
            "eval", "detection", "--config", det_cfg, "--out", w / "detection", "--device", dev,
            "--shard", f"{i}/2"]), env)
    tests = None
    if not a.smoke:
        tests = g.start("pytest-cuda", g.q([PY, "-m", "pytest", "tests/attacks", "-q", "-p",
                                            "no:cacheprovider", "-W",
                                            "ignore::DeprecationWarning"]),
                        {**env, "ADVIMAGE_TEST_DEVICE": dev, "ADVIMAGE_TEST_THREADS": "1"})
    status = g.wait_all(procs, deadline - 25)
    if tests is not None:
        status["pytest-cuda"] = tests.poll() if tests.poll() is not None else "killed"
        g.kill(tests)
    (w / "status.json").write_text(json.dumps(status, indent=1))
    g.log(f"status: {status}")
    pack(w, out)
    g.log("packed")
    return 0


def strip_detection(run: Path, dst: Path) -> None:
    """The detection run's records without adversarial images (they are ~600 KB each)."""
    import torch

    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(run.glob("*")):
        if f.suffix == ".pt":
            rec = torch.load(f, weights_only=True)
            rec.pop("x_adv", None)
            torch.save(rec, dst / f.name)
        elif f.is_file() and f.suffix in (".json", ".log", ".txt"):
            shutil.copy(f, dst / f.name)


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out what is large and rebuilt from the store: example tensors, the HTML, WAL files."""
    name = info.name
    if "/examples" in name or name.endswith(("report.html", "-wal", "-shm")):
        return None
    return info


def pack(w: Path, out: Path) -> None:
    """The results as one small archive, the HTML report as its own file (16 MiB each at most)."""
    try:
        strip_detection(w / "detection", w / "detection-data")
    except Exception as err:  # noqa: BLE001 -- the logs must come back even then
        g.log(f"strip failed: {err!r}")
    with tarfile.open(out / "imagenet-results.tar.gz", "w:gz") as tar:
        for sub in ("detection-data", "robust", "logs", "status.json"):
            if (w / sub).exists():
                tar.add(w / sub, arcname=sub, filter=_skip)
        for f in w.glob("*.json"):
            tar.add(f, arcname=f.name)
    html = w / "robust" / "report.html"
    if html.exists() and html.stat().st_size < 15 * 2**20:
        shutil.copy(html, out / "robust-report.html")


if __name__ == "__main__":
    raise SystemExit(main())
