#!/usr/bin/env bash
# Zoo runs one after another on one core, each with --auto-resume (started, continued from its
# last.pt, or skipped when finished), so a session resumes a whole queue with one command:
#   nohup scripts/zoo_queue.sh 0 configs/zoo/srresnet_lite16_bbcu_x4.yaml configs/zoo/srresnet_lite16_irnet_x4.yaml \
#       configs/zoo/srresnet_lite16_weight_only_x4.yaml > runs/queue0.log 2>&1 &
# Run folder runs/zoo/<config name>, its log beside it (<name>.log).
set -u
cd "$(dirname "$0")/.."
core=$1; shift
for cfg in "$@"; do
  name=$(basename "$cfg" .yaml)
  OMP_NUM_THREADS=1 taskset -c "$core" .venv/bin/binsr train --config "$cfg" --out "runs/zoo/$name" --auto-resume \
      >> "runs/zoo/$name.log" 2>&1 || echo "zoo_queue: $cfg exited with $?" >&2
done
