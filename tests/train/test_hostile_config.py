"""Model kwargs in training configs (issue 16): ``--set model.kwargs.num_feat=-3`` and unknown
names are one line and exit 2, before any data or model is touched."""

from pathlib import Path

import pytest

from binsr.cli import main

CONFIG = Path(__file__).parents[2] / "configs" / "train" / "srresnet_e2fif_x4.yaml"


@pytest.mark.parametrize("overrides, message", [
    (["model.kwargs.num_feat=-3"], "srresnet cannot be built with kwargs"),
    (["model.kwargs.bogus=1"], "srresnet takes no kwarg bogus"),
    (["model.kwargs.num_block=100000000"], "hold 100000000; a config's model sizes are at most 1024"),
    (["model.kwargs.num_feat=1024", "model.kwargs.num_block=1000"], "} needs at least "),
    (["data.batch_size=1000000"], "a step of data.batch_size 1000000 x 192 px patches"),
])
def test_bad_model_kwargs_in_a_config_exit_2_in_one_line(tmp_path, capsys, overrides, message):
    sets = [a for o in overrides for a in ("--set", o)]
    code = main(["train", "--config", str(CONFIG), *sets, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unreadable_config_files_exit_2_in_one_line(tmp_path, capsys):
    """binsr train --config: a folder, binary bytes or a base cycle is one line and exit 2."""
    (tmp_path / "binary.yaml").write_bytes(b"\xd2\x80\xff" * 8)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\nname: loop\n")
    for config, message in ((tmp_path, "is not a regular file"), (tmp_path / "binary.yaml", "is not UTF-8 text"),
                            (tmp_path / "loop.yaml", "'base' files form a cycle")):
        code = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_run_folder_under_a_file_is_one_line(tmp_path, capsys):
    """--out below a file (or log.root naming one) was a NotADirectoryError traceback."""
    (tmp_path / "file").write_text("x")
    code = main(["train", "--config", str(CONFIG), "--set", "train.steps=2", "--set", "train.warmup=0",
                 "--out", str(tmp_path / "file" / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "run folder" in err and "cannot be created" in err and len(err.splitlines()) == 1
