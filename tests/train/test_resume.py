"""Exact resume: a run killed (SIGKILL, or at any rename of a checkpoint) and resumed repeats the losses bitwise."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from _trainkit import main, raw_config
from binsr import files
from binsr.errors import BinsrError, UsageError
from binsr.train.checkpoint import CHECKPOINT_FILES, load_state, save_state

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


class _Killed(BaseException):
    """A simulated kill: a BaseException, so that no ``except Exception`` in binsr catches it."""


def _kill_at(monkeypatch, target: int, before: bool):
    """Make the ``target``-th rename onto a checkpoint file (``CHECKPOINT_FILES``, counted from 0)
    the last thing the process does: before it (leaving the temporary file behind, as a real kill
    does) or right after it."""
    real_replace, count = files.os.replace, [0]

    def replace(src, dst):
        if Path(dst).name in CHECKPOINT_FILES:
            count[0] += 1
            if count[0] - 1 == target:
                if before:
                    shutil.copyfile(src, Path(src).with_name(f".{Path(dst).name}.killed.tmp"))
                    raise _Killed
                real_replace(src, dst)
                raise _Killed
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


def _same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)  # losses, lr, val PSNR/SSIM: bit for bit
    for name in ("last.safetensors", "last_ema.safetensors", "best.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """An uninterrupted run with checkpoints at steps 2 and 4, and its config."""
    tmp = tmp_path_factory.mktemp("ref")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw_config(data_root, train={"steps": 4, "checkpoint_every": 2, "warmup": 1},
                                                val={"every": 2})))
    main([str(config), str(tmp / "a")])
    return config, tmp / "a"


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize("target", range(2 * len(CHECKPOINT_FILES)))
def test_kill_at_every_checkpoint_write_then_resume_is_exact(reference, tmp_path, monkeypatch, target, before):
    """A kill before or after each rename of both checkpoints (steps 2 and 4): ``--resume`` continues
    from the last whole checkpoint and repeats the uninterrupted run exactly; with no whole
    checkpoint yet, a fresh run into the folder starts and does the same."""
    config, a = reference
    b = tmp_path / "b"
    with monkeypatch.context() as m:
        _kill_at(m, target, before)
        with pytest.raises(_Killed):
            main([str(config), str(b)])
    n = len(CHECKPOINT_FILES)  # last.pt is renamed last: the checkpoint is whole once it is
    saved = target // n + (target % n == n - 1 and not before)
    if saved == 0:
        assert not (b / "last.pt").exists()
        with pytest.raises(UsageError, match="nothing to resume"):
            main([str(config), str(b), "--resume"])
        main([str(config), str(b)])
    else:
        assert load_state(b / "last.pt")["step"] == 2 * saved
        main([str(config), str(b), "--resume"])
    _same_run(a, b)
    assert not list(b.glob(".*.tmp"))  # the killed write's temporary file is cleared


def test_stop_after_checkpoints_off_schedule_and_resumes_exactly(reference, tmp_path):
    """``stop_after`` (``binsr train --stop-after``): the run stops after the step in which the
    time ran out, with a checkpoint of that step although it is off ``checkpoint_every``, writes no
    results.json, and ``--resume`` then repeats the uninterrupted run exactly."""
    config, a = reference
    b = tmp_path / "b"
    main([str(config), str(b), "--stop-after", "1e-9"])  # the time is up after the first step
    assert load_state(b / "last.pt")["step"] == 1 and not (b / "results.json").exists()
    main([str(config), str(b), "--resume"])
    _same_run(a, b)


def test_stop_after_is_checked_and_reported_by_the_cli(reference, tmp_path, capsys):
    from binsr.cli import main as cli

    config, _ = reference
    assert cli(["train", "--config", str(config), "--out", str(tmp_path / "c"), "--stop-after", "0"]) == 2
    assert "--stop-after must be > 0" in capsys.readouterr().err


def test_resume_from_a_checkpoint_written_before_weights_were_inside(reference, tmp_path):
    """An older ``last.pt`` without the weights resumes from ``last.safetensors`` of its step, and
    is refused when that file is of another step."""
    config, a = reference
    b = tmp_path / "b"
    with pytest.MonkeyPatch.context() as m:
        _kill_at(m, 2 * len(CHECKPOINT_FILES) - 1, before=False)  # killed after the step 4 checkpoint
        with pytest.raises(_Killed):
            main([str(config), str(b)])
    state = load_state(b / "last.pt")
    del state["weights"], state["signature"]
    save_state(b / "last.pt", {**state, "step": 2})
    with pytest.raises(BinsrError, match="last.safetensors \\(step 4\\) and last.pt \\(step 2\\) do not belong"):
        main([str(config), str(b), "--resume"])
    save_state(b / "last.pt", state)
    main([str(config), str(b), "--resume"])
    _same_run(a, b)
