"""All GPU training of issues 6 and 7 (and the CUDA test run) in one timed call.

This workplace lends a GPU for one short call per task (15 minutes, 64 MiB in, 64 MB out), so
everything that needs it runs here at once, as separate processes sharing one GPU:

* knowledge distillation (Ojha et al., NeurIPS 2023): resnet20 and vgg11 (no BN) students of
  the reference resnet56, KD and independent arms, seeds 0 and 1; the colour-jitter invariance
  pair (resnet20 teachers trained with and without jitter, a KD student of each, an independent
  student); then ``advimage eval transfer`` on every (teacher, KD, independent) triple;
* NIM and MIM pre-training (You et al., NeurIPS 2023), each followed by fine-tuning a classifier
  from its encoder on denoised images, a PGD-adversarially-trained resnet20 (the baseline), and
  ``advimage run configs/nim-cifar10.yaml`` (De^3 under attack);
* the detection paper's CIFAR-10 VGG-19 without BN (issue 4; group ``vgg19``), evaluated there
  with ``configs/detection-vgg19.yaml`` (its 80 MB of weights cannot come back);
* the attack tests with ``ADVIMAGE_TEST_DEVICE=cuda``.

Epoch counts are not guessed: every job's training step is first timed on the GPU with all jobs
running at once (:mod:`gpu_pilot`), and each schedule gets as many epochs as fit the training
window (paired arms share the slowest arm's count, so their recipes stay identical). The plan,
the pilot times and every log come back with the results.

Data: ``scripts/pack_cifar10.py`` bundles a class-balanced lossless subset (30,000 training and
2,000 test images) that is unpacked to ``../shared/data/cifar10`` here, so the committed configs'
paths hold; ``--train-limit 30000`` picks the same images (in the same order) from the full set.

Usage (repository root, on the GPU machine): ``python3 scripts/gpu_run.py --out $OUT --budget 520``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PY = sys.executable
T0 = time.time()
W = Path("runs/gpu")
LOGS = W / "logs"
DATA = "../shared/data/cifar10"
TEACHER = "../shared/models/resnet56-4bfd9763.th"
N_TRAIN, N_TEST = 30000, 2000
COMMON = ["--data", "cifar10", "--data-root", DATA, "--train-limit", str(N_TRAIN),
          "--test-limit", str(N_TEST), "--device", "cuda", "--threads", "1", "--no-progress"]
DISTILL_ARCHS = ("resnet20", "vgg11-cifar")
SEEDS = (0, 1)


def log(msg: str) -> None:
    sys.stdout.write(f"[{time.time() - T0:6.1f}s] {msg}\n")
    sys.stdout.flush()


def start(name: str, cmd: str, env: dict | None = None) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    fh = open(LOGS / f"{name.replace('/', '_')}.log", "w")  # noqa: SIM115 -- lives with the job
    log(f"start {name}: {cmd}")
    return subprocess.Popen(["bash", "-c", cmd], stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **(env or {})})


def kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_all(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, object]:
    status: dict[str, object] = {}
    while procs and time.time() < deadline:
        for name, p in list(procs.items()):
            if p.poll() is not None:
                status[name] = p.returncode
                log(f"done {name}: rc {p.returncode}")
                del procs[name]
        time.sleep(1)
    for name, p in procs.items():
        kill(p)
        status[name] = "killed at deadline"
        log(f"killed {name} at the deadline")
    return status


def q(args: list) -> str:
    return " ".join(str(a) for a in args)


def pilots(kinds: list[str], limit: float) -> dict[str, float]:
    out = W / "pilot"
    out.mkdir(parents=True, exist_ok=True)
    start_at = time.time() + limit - 15  # all time the same 8 s window, with all jobs started
    procs = {k: start(f"pilot-{k.replace(':', '-')}",
                      q([PY, "scripts/gpu_pilot.py", k, out / f"{k.replace(':', '-')}.json",
                         start_at]))
             for k in kinds}
    wait_all(procs, time.time() + limit)
    times = {}
    for k in kinds:
        f = out / f"{k.replace(':', '-')}.json"
        times[k] = json.loads(f.read_text())["step_s"] if f.exists() else float("nan")
    return times


def epochs_for(seconds: float, per_epoch: float, lo: int, hi: int) -> int:
    if not per_epoch == per_epoch:  # NaN: the pilot failed; the minimum still runs
        return lo
    return max(lo, min(hi, int(seconds / (per_epoch * 1.3))))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=520, help="seconds for the whole script")
    ap.add_argument("--eval-reserve", type=float, default=130, help="seconds kept after training")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test: tiny everything")
    ap.add_argument("--only", default="distill,invariance,nim,at",
                    help="comma-separated groups: distill, invariance, nim, at, vgg19")
    a = ap.parse_args()
    global W, LOGS
    if a.smoke:  # a scratch tree: never the real runs/gpu (a smoke run once overwrote results)
        W = Path("runs/gpu-smoke")
        LOGS = W / "logs"
        shutil.rmtree(W, ignore_errors=True)
    elif W.exists() and any(W.iterdir()):
        raise SystemExit(f"{W} is not empty; this script starts from a fresh tree (the device "
                         "machine's); move it away first")
    groups = [g for g in a.only.split(",") if g]
    unknown = set(groups) - {"distill", "invariance", "nim", "at", "vgg19"}
    if unknown:
        raise SystemExit(f"unknown groups {sorted(unknown)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = T0 + a.budget
    train_end = deadline - a.eval_reserve
    env_tf32 = {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1", "PYTHONPATH": "src"}
    os.environ.update(env_tf32)
    dev = "cpu" if a.smoke else "cuda"

    # --- data and teacher where the committed configs expect them
    if not Path(DATA, "train").exists():
        subprocess.run([PY, "scripts/pack_cifar10.py", "--unbundle", ".gpu/cifar10.npz", DATA],
                       check=True)
        Path(TEACHER).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(".gpu/resnet56-4bfd9763.th", TEACHER)
    load = "from advimage.data import load_dataset as L; " + "; ".join(
        f"L('cifar10', '{split}', data_root='{DATA}')" for split in ("train", "test"))
    subprocess.run([PY, "-c", load], check=True)  # decode once, before the jobs race for the cache
    log("data ready")

    tests = start("pytest-cuda", q([PY, "-m", "pytest", "tests/attacks", "-q", "-p",
                                    "no:cacheprovider", "-W", "ignore::DeprecationWarning"]),
                  env={"ADVIMAGE_TEST_DEVICE": dev, "ADVIMAGE_TEST_THREADS": "1"})

    # --- pilot: one per job (not per kind: contention grows with the number of processes)
    jobs_kinds = {
        "distill": [f"{k}:{x}" for x in DISTILL_ARCHS for k in ("kd", "train") for _ in SEEDS],
        "invariance": ["train:resnet20", "train:resnet20", "train:resnet20"],
        "nim": ["nim:nim", "nim:mim"],
        "at": ["adv:resnet20"],
        "vgg19": ["train:vgg19-cifar"],
    }
    replicas = [k for g in groups for k in jobs_kinds[g]]
    raw = {} if a.smoke else pilots([f"{k}#{i}" for i, k in enumerate(replicas)], 45)
    t: dict[str, float] = {}
    for name, v in raw.items():  # the slowest replica of each kind
        kind = name.split("#")[0]
        t[kind] = max(t.get(kind, 0.0), v)
    for mode in ("nim", "mim"):  # fine-tuning runs after pre-training, when the GPU is busy
        if f"nim:{mode}" in t:  # alike: a frozen reconstruction plus a ViT step, batch 128
            t[f"finetune:{mode}"] = 1.5 * t[f"nim:{mode}"]
    t.setdefault("kd:resnet20", t.get("train:resnet20", float("nan")) * 2.5)
    log(f"pilot step times: {t}")
    window = train_end - time.time() - 20  # process start-up and data loading
    steps = {128: N_TRAIN // 128, 256: N_TRAIN // 256}

    def per_epoch(kind: str, bs: int) -> float:
        return t.get(kind, float("nan")) * steps[bs] + 0.6  # + test pass and checkpoint

    plan: dict[str, int] = {}
    for arch in DISTILL_ARCHS:
        worst = max(per_epoch(f"kd:{arch}", 128), per_epoch(f"train:{arch}", 128))
        plan[f"distill-{arch}"] = epochs_for(window, worst, 2, 60)
    chain = per_epoch("train:resnet20", 128) + per_epoch("kd:resnet20", 128)
    plan["invariance"] = epochs_for(window, chain, 2, 40)
    for mode in ("nim", "mim"):
        plan[f"{mode}-pretrain"] = epochs_for(0.6 * window, per_epoch(f"nim:{mode}", 256), 2, 300)
        plan[f"{mode}-finetune"] = epochs_for(0.4 * window, per_epoch(f"finetune:{mode}", 128),
                                              2, 60)
    plan["adv-train"] = epochs_for(window, per_epoch("adv:resnet20", 256), 2, 60)
    plan["vgg19"] = epochs_for(window, per_epoch("train:vgg19-cifar", 128), 2, 100)
    if a.smoke:
        plan = {k: 1 for k in plan}
    log(f"plan (epochs): {plan}")
    (W / "plan.json").write_text(json.dumps({"epochs": plan, "pilot_step_s": t,
                                             "window_s": window}, indent=1))
    common = [c if c != "cuda" else dev for c in COMMON]
    if a.smoke:
        common[common.index("--train-limit") + 1] = "200"
        common[common.index("--test-limit") + 1] = "100"
    sgd = ["--batch-size", 128, "--lr", 0.05, "--weight-decay", 5e-4]  # a later --lr wins

    procs: dict[str, subprocess.Popen] = {}
    for arch in DISTILL_ARCHS if "distill" in groups else ():
        lr = 0.01 if arch.startswith("vgg") else 0.05  # vgg11 without BN diverged at 0.05
        for seed in SEEDS:
            for arm in ("kd", "independent"):
                name = f"distill/{arch}-{arm}-s{seed}"
                procs[name] = start(name, q([
                    PY, "-m", "advimage", "distill", "--arm", arm, "--teacher", TEACHER,
                    "--model", arch, "--epochs", plan[f"distill-{arch}"], *sgd, "--lr", lr,
                    *common, "--seed", seed, "--out", W / name]))
    e = plan["invariance"]
    for aug in ("jitter", "standard") if "invariance" in groups else ():
        tdir = W / f"inv/teacher-{aug}"
        procs[f"inv/{aug}"] = start(f"inv/{aug}", q([
            PY, "-m", "advimage", "train", "--model", "resnet20", "--augment", aug, "--epochs",
            e, *sgd, *common, "--out", tdir]) + " && " + q([
            PY, "-m", "advimage", "distill", "--arm", "kd", "--teacher", tdir / "model.safetensors",
            "--model", "resnet20", "--epochs", e, *sgd, *common, "--out", W / f"inv/kd-{aug}"]))
    if "invariance" in groups:
        procs["inv/independent"] = start("inv/independent", q([
            PY, "-m", "advimage", "distill", "--arm", "independent", "--model", "resnet20",
            "--epochs", e, *sgd, *common, "--out", W / "inv/independent"]))
    for mode in ("nim", "mim") if "nim" in groups else ():
        pre = W / f"nim/{mode}"
        limit = "200" if a.smoke else str(N_TRAIN)
        procs[f"nim/{mode}"] = start(f"nim/{mode}", q([
            PY, "-m", "advimage", "nim", "pretrain", "--data", "cifar10", "--data-root", DATA,
            "--limit", limit, "--mode", mode, "--epochs", plan[f"{mode}-pretrain"],
            "--batch-size", 256, "--lr", "1e-3", "--device", dev, "--threads", 1, "--out", pre])
            + " && " + q([
            PY, "-m", "advimage", "nim", "finetune", "--nim", pre / "nim",
            "--epochs", plan[f"{mode}-finetune"], *common, "--out", W / f"nim/{mode}-cls"]))
    if "at" in groups:
        procs["at/resnet20"] = start("at/resnet20", q([
            PY, "-m", "advimage", "train", "--model", "resnet20", "--adv-eps", "8/255",
            "--adv-steps", 7, "--epochs", plan["adv-train"], "--batch-size", 256, "--lr", 0.1,
            "--weight-decay", 5e-4, *common, "--out", W / "at/resnet20"]))
    if "vgg19" in groups:  # issue 4: the detection paper's CIFAR-10 model (VGG-19, no BN)
        procs["vgg19"] = start("vgg19", q([
            PY, "-m", "advimage", "train", "--model", "vgg19-cifar", "--epochs", plan["vgg19"],
            *sgd, "--lr", 0.01, *common, "--out", W / "vgg19"]))
    status = wait_all(procs, train_end)

    # --- evaluation on the GPU: transfer probes and De^3 under attack
    evals: dict[str, subprocess.Popen] = {}
    limit = "100" if a.smoke else str(N_TEST)
    probe = ["--data", "cifar10", "--data-root", DATA, "--limit", limit, "--device", dev]
    for arch in DISTILL_ARCHS if "distill" in groups else ():
        for seed in SEEDS:
            d = W / "distill"
            evals[f"transfer/{arch}-s{seed}"] = start(f"transfer/{arch}-s{seed}", q([
                PY, "-m", "advimage", "eval", "transfer", "--teacher", TEACHER,
                "--kd", d / f"{arch}-kd-s{seed}/model.safetensors",
                "--independent", d / f"{arch}-independent-s{seed}/model.safetensors",
                "--foreign", d / f"{arch}-independent-s{1 - seed}/model.safetensors", *probe,
                "--out", W / f"transfer/{arch}-s{seed}"]))
    for aug in ("jitter", "standard") if "invariance" in groups else ():
        i = W / "inv"
        evals[f"transfer/inv-{aug}"] = start(f"transfer/inv-{aug}", q([
            PY, "-m", "advimage", "eval", "transfer",
            "--teacher", i / f"teacher-{aug}/model.safetensors",
            "--kd", i / f"kd-{aug}/model.safetensors",
            "--independent", i / "independent/model.safetensors", *probe,
            "--out", W / f"transfer/inv-{aug}"]))
    if "vgg19" in groups:  # the committed config points at the CPU-trained model: use this one
        cfg = Path("configs/detection-vgg19-gpu.yaml")
        cfg.write_text(Path("configs/detection-vgg19.yaml").read_text()
                       .replace("../runs/cpu-vgg19/vgg19/", f"../{W}/vgg19/"))
        evals["detection-vgg19"] = start("detection-vgg19", q([
            PY, "-m", "advimage", "eval", "detection", "--config", cfg,
            "--out", W / "detection-vgg19"]))
    if "nim" in groups:
        cfg = "configs/nim-cifar10.yaml"
        if a.smoke:  # the quick config, pointed at the smoke tree's models
            cfg = W / "nim-cifar10-quick.yaml"
            cfg.write_text(Path("configs/nim-cifar10-quick.yaml").read_text()
                           .replace("runs/gpu/", f"{W}/"))
        evals["nim-eval"] = start("nim-eval", q([
            PY, "-m", "advimage", "run", cfg, "--out", W / "nim-eval", "--device", dev,
            "--no-progress"]))
    status.update(wait_all(evals, deadline - 15))
    status["pytest-cuda"] = tests.poll() if tests.poll() is not None else "still running"
    kill(tests)
    (W / "status.json").write_text(json.dumps(status, indent=1))
    log(f"status: {status}")
    pack(out)
    log("packed")
    return 0


def _add(tar: tarfile.TarFile, root: Path, skip_weights: bool = False) -> None:
    for f in sorted(root.rglob("*")) if root.exists() else []:
        if not f.is_file() or f.name.startswith("state.") or f.suffix == ".npy":
            continue
        if skip_weights and f.name == "model.safetensors":
            continue
        tar.add(f, arcname=str(f.relative_to(W)))


def pack(out: Path) -> None:
    """At most 8 files of at most 16 MiB come back: group the results by size."""
    groups = {
        "logs.tar.gz": [(W / "logs", False), (W / "pilot", False), (W / "plan.json", False),
                        (W / "status.json", False)],
        "distill.tar.gz": [(W / "distill" / f"resnet20-{arm}-s{s}", False)
                           for arm in ("kd", "independent") for s in SEEDS]
        + [(W / "distill" / f"vgg11-cifar-{arm}-s{s}", True)  # 37 MB each: metrics only
           for arm in ("kd", "independent") for s in SEEDS]
        + [(W / "inv", False), (W / "transfer", False), (W / "at", False)],
        "nim.tar.gz": [(W / "nim/nim", False)],
        "mim.tar.gz": [(W / "nim/mim", False)],
        "nim-cls.tar.gz": [(W / "nim/nim-cls", False)],
        "mim-cls.tar.gz": [(W / "nim/mim-cls", False)],
        "nim-eval.tar.gz": [(W / "nim-eval", False), (W / "vgg19", True),
                            (W / "detection-vgg19", False)],
    }
    for name, items in groups.items():
        with tarfile.open(out / name, "w:gz") as tar:
            for path, skip in items:
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(W)))
                else:
                    _add(tar, path, skip)
        size = (out / name).stat().st_size
        if size > 16 * 2**20:
            log(f"{name} is {size / 2**20:.1f} MiB > 16 MiB: dropping weights")
            with tarfile.open(out / name, "w:gz") as tar:
                for path, _ in items:
                    if path.is_dir():
                        _add(tar, path, True)


if __name__ == "__main__":
    raise SystemExit(main())
