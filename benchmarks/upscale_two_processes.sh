#!/bin/bash
# Ray cross-check: the 24-image folder as two plain serial processes, one per core, 12 images each,
# against one serial process pinned to one core (all 24). Caller pauses the trainings.
cd "$(dirname "$0")/.."
S=${BINSR_DATA:-../shared/data}/benchmark/Set14/image_SRF_4
D=/tmp/rayx; rm -rf $D; mkdir -p $D/a $D/b
i=0; for r in 1 2; do for f in $S/*_HR.png; do i=$((i+1)); if [ $((i % 2)) = 0 ]; then cp $f $D/a/r${r}_$(basename $f); else cp $f $D/b/r${r}_$(basename $f); fi; done; done
ls $D/a | wc -l; ls $D/b | wc -l
for round in 1 2; do
  rm -rf $D/oa $D/ob $D/oc
  t0=$(date +%s.%N)
  taskset -c 0 .venv/bin/binsr upscale $D/a -o $D/oa --threads 1 --quiet --png-level 1 &
  taskset -c 1 .venv/bin/binsr upscale $D/b -o $D/ob --threads 1 --quiet --png-level 1 &
  wait
  t1=$(date +%s.%N)
  taskset -c 0 .venv/bin/binsr upscale $D/a $D/b -o $D/oc --threads 1 --quiet --png-level 1
  t2=$(date +%s.%N)
  python3 -c "a=$t1-$t0; b=$t2-$t1; print(f'two processes {a:.2f} s, one process one core {b:.2f} s: {b/a:.2f}x')"
done
