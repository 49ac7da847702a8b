"""Time one training step of a job kind on the GPU, under whatever contention is present.

``python scripts/gpu_pilot.py KIND OUT.json START_AT`` builds the job's real model(s) on CUDA,
warms up, waits until the wall-clock time ``START_AT`` (seconds since the epoch), then counts the
steps it completes in ``WINDOW`` seconds and writes ``{"kind", "step_s"}``. All pilots of a
:mod:`gpu_run` plan time the same window, so the times include the whole run's contention (the
first version timed 20 steps each whenever it was ready: on an H200 that underestimated the real
epochs about 3x, since most pilots ran while the others were still starting).

Kinds: ``train:ARCH`` (plain SGD step), ``kd:ARCH`` (plus a resnet56 teacher forward),
``adv:ARCH`` (plus 7 PGD steps), ``nim:MODE`` (an autoencoder step, batch 256),
``finetune:MODE`` (a frozen reconstruction plus a ViT classifier step, batch 128).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from advimage.attacks.pgd import PGD
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.models import create_model


def _step_fn(kind: str):  # noqa: ANN202
    dev = torch.device(os.environ.get("PILOT_DEVICE", "cuda"))  # cpu: smoke test of this file
    what, arg = kind.split(":")
    if what in ("train", "kd", "adv"):
        bs = 256 if what == "adv" else 128
        model = create_model(arg, num_classes=10).to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        teacher = create_model("resnet56", num_classes=10).to(dev).eval() if what == "kd" else None
        pgd = PGD(eps=8 / 255, steps=7, early_stop=False) if what == "adv" else None
        x = torch.rand(bs, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,), device=dev)

        def step() -> None:
            xb = pgd(model, x, y) if pgd is not None else x
            loss = F.cross_entropy(model(xb), y)
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(xb)
                loss = loss + F.kl_div(F.log_softmax(model(xb), 1), F.softmax(t, 1),
                                       reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step
    bs = 256 if what == "nim" else 128
    nim = NIMAutoencoder(NIMConfig(image_size=(32, 32), in_channels=3, mode=arg)).to(dev)
    opt = torch.optim.AdamW(nim.parameters(), lr=1e-4)
    x = torch.rand(bs, 3, 32, 32, device=dev)
    if what == "nim":

        def step() -> None:
            loss, _ = nim(x)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step
    clf = create_model("vit-tiny", num_classes=10).to(dev)  # a stand-in ViT of similar size
    copt = torch.optim.SGD(clf.parameters(), lr=0.01)
    nim.eval()

    def step() -> None:
        with torch.no_grad():
            rec = nim.reconstruct(nim.add_noise(x, 15.0), x).clamp(0, 1)  # (B, C, H, W)
        loss = F.cross_entropy(clf(rec), torch.zeros_like(x[:, 0, 0, 0]).long())
        copt.zero_grad()
        loss.backward()
        copt.step()

    return step


WINDOW = 8.0  # seconds every pilot times at once


def main() -> int:
    kind, out, start_at = sys.argv[1].split("#")[0], sys.argv[2], float(sys.argv[3])
    torch.set_num_threads(1)
    step = _step_fn(kind)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step()
    sync()
    while time.time() < start_at:  # keep the GPU busy (as in the real run) until the window
        step()
    sync()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < WINDOW:
        step()
        n += 1
        if n % 4 == 0:
            sync()
    sync()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"kind": kind, "step_s": (time.perf_counter() - t0) / n, "steps": n}, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
