"""binsr.files: atomic writes and the no-silent-overwrite rule of every command's outputs."""

from __future__ import annotations

import json

import pytest

from binsr.cli import main
from binsr.errors import BinsrError, UsageError
from binsr.files import STDOUT, atomic_write, claim_output, make_folder, read_json, write_output


def test_claim_output(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    assert claim_output(target) == target and target.parent.is_dir()  # parents created
    target.write_text("precious")
    with pytest.raises(UsageError, match="exists .pass --overwrite"):
        claim_output(target)
    assert claim_output(target, overwrite=True) == target and target.read_text() == "precious"
    with pytest.raises(UsageError, match="is a folder"):
        claim_output(tmp_path / "a", overwrite=True)


def test_make_folder_refuses_in_one_line(tmp_path) -> None:
    """A file where a folder must go, or under it, is a UsageError naming the folder."""
    assert make_folder(tmp_path / "x" / "y", "run") == tmp_path / "x" / "y" and (tmp_path / "x" / "y").is_dir()
    assert make_folder(tmp_path / "x" / "y", "run").is_dir()  # an existing folder is kept
    (tmp_path / "f").write_text("precious")
    with pytest.raises(UsageError, match="run folder .*f is not a folder"):
        make_folder(tmp_path / "f", "run")
    with pytest.raises(UsageError, match="run folder .*f/sub cannot be created: Not a directory"):
        make_folder(tmp_path / "f" / "sub", "run")
    with pytest.raises(UsageError, match="its folder .*f is not a folder"):
        claim_output(tmp_path / "f" / "out.json")
    assert (tmp_path / "f").read_text() == "precious"


def test_stdout_is_an_output_too(tmp_path, capsys, monkeypatch) -> None:
    """``-`` is standard output: nothing to claim, the text printed, no file named ``-``."""
    monkeypatch.chdir(tmp_path)
    assert claim_output(STDOUT) is None
    write_output(STDOUT, "{}\n")
    assert capsys.readouterr().out == "{}\n" and not (tmp_path / "-").exists()
    write_output(tmp_path / "f.json", "[]\n")
    assert (tmp_path / "f.json").read_text() == "[]\n"


def test_atomic_write_leaves_nothing_behind(tmp_path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(BinsrError, match="cannot write .*disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_gives_ordinary_permissions(tmp_path) -> None:
    """safetensors creates its files 0600; a written model is readable as any new file is."""
    import os

    from safetensors.numpy import save_file

    import numpy as np

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(tmp_path / "m.safetensors", lambda tmp: save_file({"a": np.zeros(2)}, str(tmp)))
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("argv", [
    ["export", "--model", "srresnet_small", "--out", "{out}"],
    ["bench", "--model", "srresnet_small", "--size", "24x16", "--repeat", "1", "--threads", "1", "--skip", "onnx",
     "--json", "{out}"],
    ["profile", "--model", "srresnet_small", "--json", "{out}"],
    ["zoo", "--json", "{out}"],
    ["eval", "--model", "bicubic", "--dataset", "Set5", "--scale", "4", "--json", "{out}"],
])
def test_commands_never_overwrite_without_flag(tmp_path, capsys, argv) -> None:
    """An existing output is refused at once (exit 2, one line), before any work; with
    --overwrite it is replaced; a missing parent folder is created."""
    out = tmp_path / "old.out"
    out.write_text("precious")
    assert main([a.format(out=out) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and out.read_text() == "precious"
    if argv[0] == "eval":
        return  # replacing needs the benchmark data; the refusal above did not
    assert main([a.format(out=out) for a in argv] + ["--overwrite"]) == 0
    assert out.read_bytes() != b"precious"
    fresh = tmp_path / "new" / "dir" / "f.out"
    assert main([a.format(out=fresh) for a in argv]) == 0 and fresh.is_file()
    if argv[0] != "export":
        json.loads(fresh.read_text())


def test_racing_writers_never_both_claim_a_name(tmp_path) -> None:
    """Two writers of one name without overwrite: both finish their temporary file before either
    publishes (a barrier), yet exactly one succeeds and its bytes are the file's (os.link claims
    the name; the earlier os.replace silently dropped one result)."""
    import threading

    target = tmp_path / "out.txt"
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def writer(name: str) -> None:
        def write(tmp):
            tmp.write_text(name)
            barrier.wait(timeout=10)

        try:
            atomic_write(target, write, overwrite=False)
            results[name] = "ok"
        except UsageError as exc:
            results[name] = str(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if r == "ok"]
    assert len(winners) == 1, results
    loser = ({"first", "second"} - set(winners)).pop()
    assert "exists" in results[loser] and target.read_text() == winners[0]
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_temporary_files_of_killed_writers_are_removed(tmp_path) -> None:
    """A killed writer leaves ``.<name>.<pid>.<random>.tmp``; the next write of that name removes
    it when that pid is gone, and leaves a live writer's file alone."""
    import os
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    stale = tmp_path / f".x.txt.{dead}.0123abcd.tmp"
    live = tmp_path / f".x.txt.{os.getpid()}.4567ef01.tmp"
    other = tmp_path / f".y.txt.{dead}.89abcdef.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"")
    atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("new"))
    assert not stale.exists() and live.exists() and other.exists()  # only x.txt's dead writers


def test_a_read_only_folder_names_the_output_not_the_temporary(tmp_path, monkeypatch) -> None:
    """EROFS (root ignores permission bits, so the file system's answer is simulated): one line
    with the output's name and the reason; the cleanup's own EROFS is not what is reported."""
    import errno
    from pathlib import Path

    def read_only(tmp):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(BinsrError) as info:
        atomic_write(tmp_path / "out.png", read_only)
    assert str(info.value) == f"cannot write {tmp_path / 'out.png'}: Read-only file system"


@pytest.mark.parametrize("content, fragment", [
    (None, "file not found"),
    ("folder", "is not a regular file"),
    (b"\xd2\x80\xff", "is not UTF-8 text"),
    ("{", "is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),  # nested past the parser's recursion limit
    ("[1, 2]", "must hold a JSON object, not list"),
    ("x" * 65, "holds 65 bytes; at most 64"),
])
def test_read_json_refuses_hostile_files_in_one_line(tmp_path, content, fragment) -> None:
    path = tmp_path / "results.json"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as info:
        read_json(path, "run results", max_bytes=64 if content and content[0] == "x" else 1 << 20)
    assert "run results file" in str(info.value) and fragment in str(info.value) and "\n" not in str(info.value)


def test_read_json_reads_an_object(tmp_path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps({"steps": 3, "metrics": {"Set5": {"psnr": 30.5}}}))
    assert read_json(path, "model card") == {"steps": 3, "metrics": {"Set5": {"psnr": 30.5}}}
