"""binsr.files: atomic writes and the no-silent-overwrite rule of every command's outputs."""

from __future__ import annotations

import json

import pytest

from binsr.cli import main
from binsr.errors import BinsrError, UsageError
from binsr.files import STDOUT, atomic_write, claim_output, write_output


def test_claim_output(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    assert claim_output(target) == target and target.parent.is_dir()  # parents created
    target.write_text("precious")
    with pytest.raises(UsageError, match="exists .pass --overwrite"):
        claim_output(target)
    assert claim_output(target, overwrite=True) == target and target.read_text() == "precious"
    with pytest.raises(UsageError, match="is a folder"):
        claim_output(tmp_path / "a", overwrite=True)


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
