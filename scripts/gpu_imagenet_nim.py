"""Issue 16 item 6 on a GPU: NIM pre-training at 224 px, then De^3 before EfficientNet-Lite0.

One timed call (the lease is 15 minutes, 64 MiB in, 64 MB out), run from the repository root:

1. ``advimage nim pretrain``: a ViT-S-sized NIM (You et al., NeurIPS 2023; 16 px patches, encoder
   384 x 12, decoder 256 x 4) on the held-out Imagenette images carried in ``.gpu/`` (250 per
   class: none of them is one of the 500 ImageNet-val images), ``--epochs`` epochs of batch 128;
   sized by the 903 images/s measured in reports/gpu/README.md (about 3 s per epoch).
2. Beside it, ``bench/imagenet_speed.py`` on CUDA with fp16 and with bf16 autocast (advimage's
   ``--precision`` path, channels-last on CUDA) against the bare loop and torchattacks.
3. Then ``advimage run configs/nim-imagenet-effnet.yaml`` (De^3 at sigma 0/35/70, noise unknown and
   known, FGSM / PGD-10 / PGD-10 with EOT-4 at 2/255 on the 500 ImageNet-val images) and its report.

The NIM weights (about 100 MB) cannot come back; its per-epoch history (``state.json``), the run's
store and report, the bench output and every log do.

``python scripts/gpu_imagenet.py --stage --per-class 250`` builds ``.gpu/`` here (about 50 MB);
``python scripts/gpu_imagenet_nim.py --smoke`` runs every step tiny on the CPU first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_imagenet as gi  # noqa: E402  (stage / unstage / smoke_config)
import gpu_run as g  # noqa: E402  (start / wait_all / log)

PY = sys.executable
VITS = ["--patch-size", 16, "--enc-dim", 384, "--enc-depth", 12, "--enc-heads", 6,
        "--dec-dim", 256, "--dec-depth", 4, "--dec-heads", 8]
TINY = ["--patch-size", 16, "--enc-dim", 32, "--enc-depth", 1, "--enc-heads", 2,
        "--dec-dim", 32, "--dec-depth", 1, "--dec-heads", 2]
CFG = "configs/nim-imagenet-effnet.yaml"


def plan(a: argparse.Namespace, w: Path) -> tuple[list, list[str], str]:
    """The pre-training command, the bench commands and the run config for this mode."""
    adv = [PY, "-m", "advimage"]
    dev = "cpu" if a.smoke else "cuda"
    pre = adv + ["nim", "pretrain", "--data", "imagenette", "--data-root",
                 gi.SHARED / "data/imagenette", *(TINY if a.smoke else VITS), "--epochs",
                 1 if a.smoke else a.epochs, "--batch-size", 4 if a.smoke else 128,
                 "--device", dev, "--no-progress", "--out", w / "nim-vits"]
    if a.smoke:
        pre += ["--limit", 8]
    bench = [g.q([PY, "bench/imagenet_speed.py", "--device", dev, "--amp", amp, "--repeats",
                  1 if a.smoke else 3, "--batch-size", 2 if a.smoke else 32])
             for amp in (("bf16",) if a.smoke else ("fp16", "bf16"))]
    cfg = CFG
    if a.smoke:
        cfg = gi.smoke_config(CFG, w, {
            "../runs/imagenet/": f"{w.resolve()}/", "runs/imagenet/nim-vits": f"{w}/nim-vits",
            "../../shared/": f"{gi.SHARED.resolve()}/", "limit: 500": "limit: 4",
            "batch_size: 125": "batch_size: 2", "steps: 10": "steps: 2", "eot: 4": "eot: 2"})
    return pre, bench, cfg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=520, help="seconds for the whole script")
    ap.add_argument("--epochs", type=int, default=60, help="NIM pre-training epochs")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test: tiny everything")
    a = ap.parse_args()
    w, out = gi.work_dirs("runs/imagenet-nim-smoke" if a.smoke else "runs/imagenet", a.smoke,
                          a.out)
    deadline = g.T0 + a.budget
    if not a.smoke:
        gi.unstage()
        subprocess.run(["nvidia-smi"], check=False)
    env = {"PYTHONPATH": "src", "PYTHONUNBUFFERED": "1"}
    rc = subprocess.run([PY, "-m", "advimage", "models", "import",
                         str(gi.SHARED / gi.MODEL_FILE), "--arch", "efficientnet-lite0",
                         "--out", str(w / "efficientnet-lite0.safetensors")],
                        env={**__import__("os").environ, **env})
    g.log(f"import rc {rc.returncode}")
    pre, bench, cfg = plan(a, w)
    status = g.wait_all({"nim-pretrain": g.start("nim-pretrain", g.q(pre), env),
                         "bench": g.start("bench", " ; ".join(bench), env)}, deadline - 150)
    if status.get("nim-pretrain") == 0:
        run = [PY, "-m", "advimage", "run", cfg, "--out", w / "nim-eval", "--no-progress"]
        status.update(g.wait_all({"nim-eval": g.start("nim-eval", g.q(run) + " && " + g.q(
            [PY, "-m", "advimage", "report", w / "nim-eval"]), env)}, deadline - 15))
    (w / "status.json").write_text(json.dumps(status, indent=1))
    g.log(f"status: {status}")
    pack(w, out)
    g.log("packed")
    return 0


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out weights, example tensors, the HTML (copied on its own) and WAL files."""
    name = info.name
    if name.endswith((".safetensors", "report.html", "-wal", "-shm")) or "/examples" in name:
        return None
    return info


def pack(w: Path, out: Path) -> None:
    """Logs, NIM history, the run's store and exports as one archive; the HTML report beside it."""
    with tarfile.open(out / "imagenet-nim-results.tar.gz", "w:gz") as tar:
        for sub in ("logs", "nim-vits", "nim-eval", "status.json"):
            if (w / sub).exists():
                tar.add(w / sub, arcname=sub, filter=_skip)
    html = w / "nim-eval" / "report.html"
    if html.exists() and html.stat().st_size < 15 * 2**20:
        shutil.copy(html, out / "nim-report.html")


if __name__ == "__main__":
    raise SystemExit(main())
