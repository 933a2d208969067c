"""torchrun with 2 CPU processes (gloo): ranks train on different patches and end with equal weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from _trainkit import TinySR, raw_config

KIT = str(Path(__file__).with_name("_trainkit.py"))


def test_torchrun_two_processes(data_root, tmp_path):
    config, out, dump = tmp_path / "tiny.yaml", tmp_path / "run", tmp_path / "dump"
    config.write_text(yaml.safe_dump(raw_config(data_root, train={"steps": 6, "checkpoint_every": 3})))
    dump.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           KIT, str(config), str(out), "--dump", str(dump)]
    subprocess.run(cmd, check=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)

    w0, w1 = load_file(dump / "rank0.safetensors"), load_file(dump / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # DDP kept the replicas identical
    torch.manual_seed(7)  # raw_config's seed: the initial weights
    assert not torch.equal(w0["head.weight"], TinySR(2).head.weight.detach())
    seen = [set(map(int, (dump / f"indices{r}.txt").read_text().split())) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6 * 2 and not seen[0] & seen[1]  # 6 steps x batch 2, disjoint
    result = json.loads((dump / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
    assert torch.equal(load_file(out / "last.safetensors")["head.weight"], w0["head.weight"])
