"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed repeats the losses bitwise."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from _trainkit import main, raw_config
from binsr.train.checkpoint import load_state

KIT = str(Path(__file__).with_name("_trainkit.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _rows(run):
    with open(run / "log.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "it_s"} for r in csv.DictReader(fh)]


def test_kill_9_and_resume_gives_the_same_losses_and_weights(data_root, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw_config(data_root, train={"steps": 8, "checkpoint_every": 3})))
    a, b = tmp_path / "a", tmp_path / "b"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses
    try:
        main([str(config), str(a)])  # the uninterrupted reference run, in this process
    finally:
        torch.set_num_threads(threads)

    batch = 2  # raw_config's data.batch_size: the process hangs fetching the batch of step 6
    proc = subprocess.Popen([sys.executable, KIT, config, b, "--stall-after", str(5 * batch)], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not (b / "log.csv").exists() or "\n5," not in (b / "log.csv").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach step 5"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_state(b / "last.pt")["step"] == 3 and not (b / "results.json").exists()

    subprocess.run([sys.executable, KIT, config, b, "--resume"], check=True, env=ENV, timeout=60)
    rows_a, rows_b = _rows(a), _rows(b)
    assert [r["step"] for r in rows_b] == [str(s) for s in range(1, 9)]
    assert rows_a == rows_b  # loss (repr of the float), lr, val PSNR/SSIM: bit for bit
    for name in ("last.safetensors", "last_ema.safetensors", "best.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    adam_a, adam_b = load_state(a / "last.pt")["optimizer"]["state"], load_state(b / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(adam_a[i]["exp_avg_sq"], adam_b[i]["exp_avg_sq"]) for i in adam_a)
