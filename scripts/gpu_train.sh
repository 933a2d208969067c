#!/bin/bash
# One call of the device tool: train CONFIG on the lent GPU for SECONDS (bf16 autocast by the
# config's train.precision: auto), checkpoint, and return the run folder under $OUT/run.
#   here, once:  .venv/bin/python scripts/gpu_data.py --scales 4      (gpu_data/, git-ignored)
#   device run:  bash scripts/gpu_train.sh configs/zoo/X.yaml 480 [runs/zoo/X]
#                with carry: ["gpu_data"]
# What travels is at most 64 MiB: the tracked files (21.4 MiB) and gpu_data (40.1 MiB) leave no
# room for a run folder (a 16 x 64 last.pt is 14 MiB), so a lent GPU starts a run afresh or
# warm-starts it from a committed checkpoints/ snapshot: EXTRA="--set model.init_from=checkpoints/X.safetensors".
# The third argument resumes a run folder that travelled (a smaller model's, or with less data).
# A cycle config's model.init_from names a run folder here (runs/zoo/<previous>/best.safetensors),
# which does not travel: give the zoo file that holds the same bytes (the card's source_run), e.g.
# EXTRA="--set model.init_from=src/binsr/zoo/swinir_light_scales_x4.safetensors" for swinir_light_scales_x4_c3.
# Tested here on the CPU: OUT=/tmp/gout DEVICE=cpu PYTHON=.venv/bin/python bash scripts/gpu_train.sh ... The device
# machine has its own Python and torch (no venv travels); binsr runs from src/. The returned
# folder replaces runs/<name> here, then `binsr train --resume --out runs/<name>` goes on, on CPU.
set -eo pipefail
cfg=$1 secs=$2 resume=$3
: "${OUT:?run this through the device tool (OUT is its output folder)}"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}  # the device machine's python3 holds torch
mkdir -p "$OUT/run"
args=()
if [ -n "$resume" ]; then cp -r "$resume"/. "$OUT/run/"; args+=(--resume); fi
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
$py -m binsr train --config "$cfg" --device "${DEVICE:-cuda}" --data-root gpu_data --out "$OUT/run" \
    --stop-after "$secs" "${args[@]}" ${EXTRA} 2>&1 | tee "$OUT/train.log"
rm -rf "$OUT/run/tb"  # the tool returns at most 8 files, 2 folders down
ls -la "$OUT/run"
