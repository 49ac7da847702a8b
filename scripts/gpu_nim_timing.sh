#!/usr/bin/env bash
# Issue 16 item 6: time NIM pre-training at 224 px on a GPU (ViT-S- and ViT-B-sized encoders),
# on the held-out Imagenette images that scripts/gpu_imagenet.py --stage carries in .gpu/.
# Run from the repository root on the GPU machine: bash scripts/gpu_nim_timing.sh
# (DEV=cpu LIM=8 BS=4 PY=.venv/bin/python for a CPU smoke test).
python3 -c "import sys; sys.path.insert(0,'scripts'); import gpu_imagenet as m; m.unstage()" || exit 1
export PYTHONPATH=src PYTHONUNBUFFERED=1
DEV=${DEV:-cuda}; LIM=${LIM:-600}
for spec in "vit-s 384 12 6 256 4 8" "vit-b 768 12 12 512 8 16"; do
  set -- $spec
  timeout ${T:-60} ${PY:-python3} -m advimage nim pretrain --data imagenette --data-root ../shared/data/imagenette --limit $LIM --patch-size 16 --enc-dim $2 --enc-depth $3 --enc-heads $4 --dec-dim $5 --dec-depth $6 --dec-heads $7 --epochs 3 --batch-size ${BS:-128} --device $DEV --no-progress --out /tmp/nim-$1 2>&1 | sed "s/^/$1: /"
done
