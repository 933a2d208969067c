"""``binsr upscale --ray``: the serial run's outputs, messages and exit codes on Ray workers.

One local Ray with 2 CPUs serves the whole file (Ray's start-up takes seconds); a tiny packed
x2 model (8 features, 1 block) keeps each run short. The tests without Ray need no Ray installed.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from binsr.cli import main
from binsr.data import read_image, write_image

RNG = np.random.default_rng(19)
ICC = b"binsr-ray-test-icc" * 4


def _smooth(h, w, channels=3, dtype=np.uint8):
    """Smooth random pixels (running sums of noise, rescaled): like a photo, not white noise."""
    x = RNG.random((h, w, channels)).cumsum(0).cumsum(1)
    x -= x.min(axis=(0, 1))
    x /= x.max(axis=(0, 1))
    peak = 255 if dtype == np.uint8 else 65535
    arr = np.round(x * peak).astype(dtype)
    return arr[..., 0] if channels == 1 else arr


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    import torch

    from binsr.deploy import export_packed
    from binsr.models import create

    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("model") / "tiny_x2.bsr"
    export_packed(create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=1), path)
    return path


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'binsr[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _mixed(folder: Path) -> Path:
    """RGB with an ICC profile, gray, RGBA, 16-bit RGB PNG, 16-bit gray TIFF and a broken PNG."""
    folder.mkdir()
    Image.fromarray(_smooth(20, 24)).save(folder / "rgb.png", icc_profile=ICC)
    Image.fromarray(_smooth(21, 17, 1)).save(folder / "gray.png")
    Image.fromarray(np.dstack([_smooth(18, 22), _smooth(18, 22, 1)]), "RGBA").save(folder / "rgba.png")
    write_image(folder / "rgb16.png", _smooth(16, 20, 3, np.uint16))
    write_image(folder / "gray16.tif", _smooth(19, 23, 1, np.uint16))
    Image.fromarray(_smooth(30, 30)).save(folder / "photo.jpg", quality=90)
    good = (folder / "rgb.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])
    return folder


def _upscale(capsys, *argv):
    rc = main(["upscale", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _failed(err: str) -> list[str]:
    return sorted(line for line in err.splitlines() if "failed:" in line)


def _same_files(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


def test_outputs_and_failures_match_the_serial_run(tmp_path, packed, ray_local, capsys):
    src = _mixed(tmp_path / "in")
    common = ["--model", packed, "--tile", 16, "--tile-overlap", 8, "--ext", "same"]
    rc_s, out_s, err_s = _upscale(capsys, src, "-o", tmp_path / "serial", *common)
    rc_r, out_r, err_r = _upscale(capsys, src, "-o", tmp_path / "ray", *common, "--ray", "--workers", 2)
    assert rc_s == rc_r == 1
    assert _failed(err_r) == _failed(err_s) and len(_failed(err_r)) == 1 and "broken.png" in _failed(err_r)[0]
    assert "upscaled 6 images" in out_r and "2 Ray workers x 1 thread on 1 node," in out_r and "images/s" in out_r
    names = _same_files(tmp_path / "serial", tmp_path / "ray")
    assert names == ["gray16_x2.tif", "gray_x2.png", "photo_x2.jpg", "rgb16_x2.png", "rgb_x2.png", "rgba_x2.png"]


def test_existing_outputs_are_kept(tmp_path, packed, ray_local, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_smooth(20, 20)).save(src / f"p{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1_x2.png").write_bytes(b"mine")
    rc, stdout, err = _upscale(capsys, src, "-o", out, "--model", packed, "--ray")
    assert rc == 1 and "upscaled 2 images" in stdout
    assert _failed(err) == [f"binsr upscale: failed: {src / 'p1.png'}: output {out / 'p1_x2.png'} exists "
                            "(pass --overwrite to replace it)"]
    assert (out / "p1_x2.png").read_bytes() == b"mine"
    (out / "p1_x2.png").unlink()
    rc, _, _ = _upscale(capsys, src, "-o", tmp_path / "serial", "--model", packed)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["p0_x2.png", "p2_x2.png"]  # no temporary left
    for name in ("p0_x2.png", "p2_x2.png"):
        assert (out / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _worker_pids() -> set[int]:
    """This process's Ray's upscale workers: titled by Ray, children of the raylet it started."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and b"ray::UpscaleWorker" in (entry / "cmdline").read_bytes()
                    and _parent(_parent(int(entry.name))) == os.getpid()):
                pids.add(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return pids


def test_a_killed_worker_is_restarted_and_its_file_run_again(tmp_path, packed, ray_local, capsys):
    src = tmp_path / "in"
    src.mkdir()
    n = 16
    for i in range(n):
        Image.fromarray(_smooth(96, 96)).save(src / f"f{i:02d}.png")
    assert _upscale(capsys, src, "-o", tmp_path / "serial", "--model", packed, "--tile", 32)[0] == 0
    out = tmp_path / "ray"
    earlier = _worker_pids()  # killed by an earlier test, maybe not yet gone
    result = {}
    run = threading.Thread(target=lambda: result.update(rc=main(["upscale", str(src), "-o", str(out), "--model",
                                                                 str(packed), "--tile", "32", "--quiet", "--ray"])))
    run.start()
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(out.glob("*.png"))) and time.monotonic() < deadline:
        time.sleep(0.005)
    victims = sorted(_worker_pids() - earlier)
    written = len(list(out.glob("*.png")))
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    run.join(120)
    # files still queued at the kill: each worker had two in flight (one upscaling, one being written)
    assert 0 < written < n - 4
    assert result["rc"] == 0
    assert victims[0] not in _worker_pids()
    _same_files(tmp_path / "serial", out)  # every output present and exact, no temporary left beside them
    assert "Traceback" not in capsys.readouterr().err


def test_joins_a_running_cluster_by_address(tmp_path, packed, ray_local):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_smooth(20, 24)).save(src / "a.png")
    write_image(src / "b.png", _smooth(16, 20, 3, np.uint16))
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "binsr", "upscale", str(src), "-o", str(tmp_path / "ray"), "--model", str(packed),
           "--quiet", "--ray", address]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "upscaled 2 images" in proc.stdout and "Ray worker" in proc.stdout
    assert main(["upscale", str(src), "-o", str(tmp_path / "serial"), "--model", str(packed), "--quiet"]) == 0
    _same_files(tmp_path / "serial", tmp_path / "ray")


def test_usage_errors(tmp_path, packed, capsys, monkeypatch):
    Image.fromarray(_smooth(8, 8)).save(tmp_path / "a.png")
    base = [tmp_path / "a.png", "-o", tmp_path / "out", "--model", packed]
    rc, _, err = _upscale(capsys, *base, "--workers", 2)
    assert rc == 2 and "--workers needs --ray" in err
    rc, _, err = _upscale(capsys, *base, "--backend", "torch", "--ray")
    assert rc == 2 and "packed engine" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    rc, _, err = _upscale(capsys, *base, "--ray")
    assert rc == 2 and err.strip() == "binsr upscale: error: --ray needs Ray: pip install 'binsr[ray]'"
    assert not (tmp_path / "out").exists()


def test_a_retried_file_keeps_only_its_own_published_output(tmp_path, packed, ray_local):
    from binsr.cli.upscale import FileOptions
    from binsr.infer.ray import UpscaleWorker

    Image.fromarray(_smooth(20, 24)).save(tmp_path / "a.png")
    src, target = str(tmp_path / "a.png"), tmp_path / "a_x2.png"
    worker = UpscaleWorker("tiny", 1, FileOptions(None, 16, 10_000, False, 1), False)  # in this process
    model = [ray_local.put(packed.read_bytes())]
    assert worker.run(model, src, str(target)) == (None, [], None)
    first = target.read_bytes()
    # run again, as after a kill between publishing and reporting: the same bytes, so it is kept
    assert worker.run(model, src, str(target)) == (None, [], None) and target.read_bytes() == first
    target.write_bytes(first[:-1] + b"!")  # another writer's output: refused and kept
    line = worker.run(model, src, str(target))[0]
    assert line == f"{src}: output {target} exists (pass --overwrite to replace it)"
    assert target.read_bytes() == first[:-1] + b"!"


def test_files_are_handed_out_largest_first(tmp_path):
    """``largest_first``: decreasing source size, ties in the given order, unreadable sources last."""
    from binsr.infer.ray import largest_first

    sizes = {"a": 10, "b": 300, "c": 10, "d": 2000}
    jobs = []
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
        jobs.append((tmp_path / name, tmp_path / f"out_{name}"))
    jobs.insert(1, (tmp_path / "missing", tmp_path / "out_missing"))
    assert [src.name for src, _ in largest_first(jobs)] == ["d", "b", "a", "c", "missing"]


def test_two_node_cluster(tmp_path, packed):
    """``ray.cluster_utils.Cluster``: two nodes of one CPU each, so the two 1-CPU workers land on
    different nodes (the summary counts them); the outputs equal the serial run's, byte for byte."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'binsr[ray]')")
    from ray.cluster_utils import Cluster

    src = _mixed(tmp_path / "in")
    (src / "broken.png").unlink()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cmd = [sys.executable, "-m", "binsr", "upscale", str(src), "-o", str(tmp_path / "ray"), "--model", str(packed),
               "--quiet", "--ray", cluster.address, "--workers", "2"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert "upscaled 6 images" in proc.stdout and "2 Ray workers x 1 thread on 2 nodes" in proc.stdout
    assert main(["upscale", str(src), "-o", str(tmp_path / "serial"), "--model", str(packed), "--quiet"]) == 0
    _same_files(tmp_path / "serial", tmp_path / "ray")


def test_a_worker_runs_the_self_ensemble(tmp_path, packed, ray_local):
    """``--self-ensemble`` reaches the workers: a worker's file is the local x8 ensemble's."""
    from binsr.cli.upscale import FileOptions
    from binsr.infer import load_upscaler, upscale_array
    from binsr.infer.ray import UpscaleWorker

    Image.fromarray(_smooth(20, 24)).save(tmp_path / "a.png")
    worker = UpscaleWorker("tiny", 1, FileOptions(None, 16, 10_000, False, 1), False, True)
    model = [ray_local.put(packed.read_bytes())]
    assert worker.run(model, str(tmp_path / "a.png"), str(tmp_path / "w.png")) == (None, [], None)
    local = upscale_array(load_upscaler(packed, threads=1, self_ensemble=True), read_image(tmp_path / "a.png"),
                          tile=None)
    plain = upscale_array(load_upscaler(packed, threads=1), read_image(tmp_path / "a.png"), tile=None)
    assert np.array_equal(read_image(tmp_path / "w.png"), local) and not np.array_equal(local, plain)
