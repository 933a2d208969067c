#!/bin/bash
# The SRBNAS paper's Table 4 (mu, rho) ablation at x3 (configs/search/ablation_*.yaml): each
# search, then its cell trained as the x3 search-vs-random rows are
# (configs/compare/search_vs_random_x3.yaml). Resumable: rerun it to continue. One core:
#   nohup bash benchmarks/ablation_x3.sh 0 > runs/ablation_x3.log 2>&1 &     # on core 0
# then: binsr report (the three runs join its x3 table; the paper's rows: 366K / 350K / 192K
# params, Set5 32.17 / 32.02 / 31.84 dB)
set -euo pipefail
cd "$(dirname "$0")/.."
core=${1:-1}
run() { OMP_NUM_THREADS=1 taskset -c "$core" .venv/bin/binsr "$@"; }
for ab in mu0.2_rho0.8 mu0.5_rho0.5 mu0.8_rho0.2; do
  search=runs/search/ablation_$ab
  if ! grep -q '"complete": true' "$search/summary.json" 2>/dev/null; then
    if [ -f "$search/checkpoint.pt" ]; then
      run search --out "$search" --resume --threads 1
    else
      run search --config "configs/search/ablation_$ab.yaml" --out "$search" --threads 1
    fi
  fi
  run train --config configs/compare/search_vs_random_x3.yaml --set "name=ablation_${ab}_train" \
    --set "model.kwargs.genotype=$search/genotype.json" --auto-resume
  echo "$ab done $(date)"
done
