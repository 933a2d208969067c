#!/bin/bash
# Issue 17's DARTS fixes, one attempt at a time (src/binsr/nas/README.md, "Search against random"):
# each attempt is the scale's search config with --set overrides, then its cell trained as the
# search-vs-random rows are (configs/compare/search_vs_random_x<S>.yaml: same data, seed, steps),
# so its row sits beside the random cells already trained:
#   fix_warmup   longer weight-only warm-up before the arch steps: a third of the epochs (PC-DARTS: 15 of 50)
#   fix_reg      eq. 4 / eq. 7 read so that they act: L1 on the raw alphas, sigmoid edge weights
#   fix_cells    a deeper supernet: 5 cells instead of 3
#   fix_shrink   progressive shrinking (P-DARTS): 4 ops per edge after a third of the epochs, 2 after two thirds
#   fix_skips    early stop on the skip count (DARTS+): stop at the first cell with 2 skip_connect
# Resumable: a finished step is skipped, an interrupted one continues with --resume. One core:
#   nohup bash benchmarks/darts_fixes.sh 4 1 > runs/darts_fixes_x4.log 2>&1 &    # scale 4, core 1
# then, per attempt:
#   .venv/bin/python benchmarks/search_vs_random.py table runs/darts_fix_x4_<name> runs/search_vs_random_x4_random* runs/search_vs_random_x4_e2fif
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:?scale (3 or 4)}
core=${2:-1}
epochs=$(sed -n 's/^  epochs: *\([0-9]*\).*/\1/p' "configs/search/srbnas_x${scale}.yaml")
third=$((epochs / 3))
run() { OMP_NUM_THREADS=1 taskset -c "$core" .venv/bin/binsr "$@"; }

declare -A FIXES=(
  [warmup]="--set search.warmup_epochs=$third"
  [reg]="--set reg.l1_on=raw --set supernet.beta_norm=sigmoid"
  [cells]="--set supernet.num_cells=5"
  [shrink]="--set search.shrink_epochs=[$third,$((2 * third))] --set search.shrink_keep=[4,2]"
  [skips]="--set search.stop_at_skips=2"
)
for name in warmup reg cells shrink skips; do
  search=runs/search/fix_x${scale}_$name
  train=darts_fix_x${scale}_$name
  if ! grep -q '"complete": true' "$search/summary.json" 2>/dev/null; then
    if [ -f "$search/checkpoint.pt" ]; then
      run search --out "$search" --resume --threads 1
    else
      # shellcheck disable=SC2086  # the overrides are words
      run search --config "configs/search/srbnas_x${scale}.yaml" --out "$search" --threads 1 ${FIXES[$name]}
    fi
  fi
  run train --config "configs/compare/search_vs_random_x${scale}.yaml" --set "name=$train" \
    --set "model.kwargs.genotype=$search/genotype.json" --auto-resume
  echo "$name done $(date)"
done
