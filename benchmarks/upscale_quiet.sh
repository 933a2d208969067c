#!/bin/bash
# The upscale, eval and serve measurements of the README, in one go (stop 17); pause any training first.
# Output folder runs/quiet/out.
cd "$(dirname "$0")/.."
B=.venv/bin/binsr
O=runs/quiet/out; rm -rf $O; mkdir -p $O
lscpu | grep "Model name"; grep -m1 -o "avx512_vpopcntdq\|avx512_bf16\|amx_tile" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "== upscale_ray"; .venv/bin/python benchmarks/upscale_ray.py --rounds 2 --json benchmarks/upscale-ray-zen4-set14hr-s17.json 2>&1 | tail -12
S14=${BINSR_DATA:-../shared/data}/benchmark/Set14/image_SRF_4
echo "== Set14 x4 upscale, 2 threads"
for lvl in 1 6; do /usr/bin/time -f "level $lvl: %e s wall, %M KiB" $B upscale $S14/*HR.png -o $O/l$lvl --threads 2 --quiet --png-level $lvl; du -sb $O/l$lvl; done
/usr/bin/time -f "torch backend: %e s" $B upscale $S14/*HR.png -o $O/torch --threads 2 --quiet --backend torch
echo "== eval packed vs torch (Set5 x4)"
/usr/bin/time -f "%e s wall" $B eval --model src/binsr/zoo/srresnet_lite_e2fif_x4.bsr --dataset Set5 --scale 4 2>&1 | tail -3
/usr/bin/time -f "%e s wall" $B eval --model zoo:srresnet_lite_e2fif_x4 --dataset Set5 --scale 4 2>&1 | tail -3
echo "== small picture"
/usr/bin/time -f "engine zoo: %e s wall" $B upscale src/binsr/assets/sample_hr.png -o $O/small --quiet
echo "== big 4000x3000 x4 memory"
.venv/bin/python -c "
import numpy as np; from PIL import Image
from binsr.data import read_image
a = read_image('src/binsr/assets/demo_hr.png'); rep = np.tile(a, (3000//a.shape[0]+1, 4000//a.shape[1]+1, 1))[:3000,:4000]
Image.fromarray(rep).save('$O/big.png')"
/usr/bin/time -f "big: %e s wall, %M KiB peak RSS" $B upscale $O/big.png -o $O/bigout --model src/binsr/zoo/srresnet_lite_e2fif_x4.bsr --threads 2 --quiet
ls -la $O/bigout
echo "== serve"
timeout 300 .venv/bin/python benchmarks/serve.py --repeat 3 2>&1 | tail -8
