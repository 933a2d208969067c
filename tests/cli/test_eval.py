"""``binsr eval`` and ``binsr demo``: table + JSON, exit codes, one-line errors."""

import json
from importlib import resources

import numpy as np
import pytest

from binsr.cli import main
from binsr.data import read_image


def test_eval_table_and_json(data_root, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["eval", "--dataset", "Set5", "--scale", "2,4", "--json", str(out), "--data-root", str(data_root)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "Set5" in table and "x2" in table and "x4" in table and "PSNR" in table
    results = json.loads(out.read_text())
    assert [(r["dataset"], r["scale"]) for r in results] == [("Set5", 2), ("Set5", 4)]
    assert all({"model", "psnr", "ssim", "n_images"} <= r.keys() and r["model"] == "bicubic" for r in results)
    assert abs(results[1]["psnr"] - 28.42) < 0.03
    assert main(args[:4] + ["4"] + args[5:]) == 2  # an existing JSON file is kept ...
    assert len(json.loads(out.read_text())) == 2
    assert main(args[:4] + ["4"] + args[5:] + ["--overwrite"]) == 0  # ... unless --overwrite
    assert [r["scale"] for r in json.loads(out.read_text())] == [4]


def test_eval_json_to_stdout_with_per_image(data_root, capsys):
    assert main(["eval", "--dataset", "Set5", "--scale", "4", "--json", "-", "--per-image", "--lr-source", "shipped",
                 "--data-root", str(data_root)]) == 0
    captured = capsys.readouterr()
    (result,) = json.loads(captured.out)  # stdout is pure JSON; the table went to stderr
    assert len(result["per_image"]) == 5 and result["lr_source"] == "shipped"
    assert "Set5" in captured.err


def test_eval_help_explains_matlab_default(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "published tables" in text and "--lr-source" in text


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_eval_missing_data_root_exits_2(tmp_path, capsys):
    assert main(["eval", "--dataset", "Set5", "--scale", "4", "--data-root", str(tmp_path / "nope")]) == 2
    err = _error_line(capsys)
    assert "nope" in err and "--data-root" in err and "BINSR_DATA" in err


def test_eval_unknown_set_and_model_exit_2(data_root, capsys):
    assert main(["eval", "--dataset", "Set5,Nope", "--data-root", str(data_root)]) == 2
    assert "Nope" in _error_line(capsys)
    assert main(["eval", "--model", "no_such_model", "--dataset", "Set5", "--scale", "4",
                 "--data-root", str(data_root)]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_eval_corrupt_image_exits_1_naming_it(tmp_path, capsys):
    bad = tmp_path / "benchmark" / "Bad" / "image_SRF_2" / "img_001_SRF_2_HR.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["eval", "--dataset", "Bad", "--scale", "2", "--data-root", str(tmp_path)]) == 1
    assert str(bad) in _error_line(capsys)


def test_demo_without_data_and_overwrite_rules(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BINSR_DATA", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", "bicubic"]) == 0 and main(["demo", "--model", "bicubic"]) == 0  # replaces its own
    out = capsys.readouterr().out
    assert "skipping Set5" in out and "PSNR" in out
    panel = read_image(tmp_path / "outputs" / "sample_x4_bicubic.png")
    assert panel.shape == (192 + 22, 2 * 192 + 4, 3)  # 192-pixel panels under a 22-pixel label strip
    with resources.as_file(resources.files("binsr") / "assets" / "demo_hr.png") as sample:
        np.testing.assert_array_equal(panel[22:, -192:], read_image(sample))  # right panel: the original
    for x0 in (0, 196):  # each panel has its label (dark text on the white strip)
        assert (panel[:22, x0 : x0 + 192] < 128).any()
    assert main(["demo", "--model", "bicubic", "--out", "mine"]) == 0
    assert main(["demo", "--model", "bicubic", "--out", "mine"]) == 2  # an explicit folder needs --overwrite
    assert "--overwrite" in _error_line(capsys)
    assert main(["demo", "--model", "bicubic", "--out", "mine", "--overwrite"]) == 0


def test_demo_with_data_prints_set5(data_root, tmp_path, capsys):
    assert main(["demo", "--model", "bicubic", "--out", str(tmp_path), "--data-root", str(data_root)]) == 0
    assert "Set5 x4: PSNR 28.4" in capsys.readouterr().out


def test_demo_defaults_to_the_zoo_x4_model_without_data(tmp_path, monkeypatch, capsys):
    from binsr.cli.demo import default_model
    from binsr.models import zoo_card, zoo_names

    monkeypatch.setenv("BINSR_DATA", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    name = default_model()
    assert name.startswith("zoo:") == any(zoo_card(n)["scale"] == 4 for n in zoo_names())
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    panel = read_image(tmp_path / "outputs" / f"sample_x4_{name.removeprefix('zoo:')}.png")
    panels = 2 if name == "bicubic" else 3
    assert panel.shape == (192 + 22, panels * 192 + (panels - 1) * 4, 3)
    psnr = [float(line.split("PSNR ")[1].split(" dB")[0]) for line in out.splitlines() if "sample image" in line]
    assert len(psnr) == panels - 1
    if name != "bicubic":
        assert psnr[1] > psnr[0]  # the binary model beats bicubic on the sample


def test_eval_packed_model_measures_the_engine(data_root, capsys):
    """A .bsr file is evaluated on the 1-bit engine itself: the zoo x4 model's shipped packed file
    scores what its PyTorch forward scores (the outputs differ in < 0.1% of values, by 1)."""
    from binsr.pretrained import packed_file

    bsr = str(packed_file("srresnet_lite_e2fif_x4"))
    args = ["eval", "--dataset", "Set5", "--scale", "4", "--json", "-", "--data-root", str(data_root)]
    assert main(args + ["--model", bsr]) == 0
    engine = json.loads(capsys.readouterr().out)[0]
    assert main(args + ["--model", "zoo:srresnet_lite_e2fif_x4"]) == 0
    torch_ = json.loads(capsys.readouterr().out)[0]
    assert engine["model"] == bsr and abs(engine["psnr"] - torch_["psnr"]) < 0.005
    assert main(["eval", "--model", bsr, "--dataset", "Set5", "--scale", "2", "--data-root", str(data_root)]) == 2
    assert "x4 model, not x2" in capsys.readouterr().err


def test_eval_self_ensemble_on_the_engine(data_root, capsys):
    """--self-ensemble (EDSR's "+"): the zoo x4 model's packed file on Set5 scores above its single
    pass (flips and quarter turns of a natural image average out some of the error), and says so in
    the table and the JSON; bicubic has none (exit 2, one line)."""
    from binsr.pretrained import packed_file

    bsr = str(packed_file("srresnet_lite_e2fif_x4"))
    args = ["eval", "--model", bsr, "--dataset", "Set5", "--scale", "4", "--json", "-", "--data-root", str(data_root)]
    assert main(args) == 0
    single = json.loads(capsys.readouterr().out)[0]
    assert main(args + ["--self-ensemble"]) == 0
    captured = capsys.readouterr()
    plus = json.loads(captured.out)[0]
    assert plus["self_ensemble"] is True and "self_ensemble" not in single and "self-ensemble: x8" in captured.err
    assert 0.05 < plus["psnr"] - single["psnr"] < 0.5 and plus["ssim"] > single["ssim"]
    assert main(["eval", "--dataset", "Set5", "--scale", "4", "--self-ensemble", "--data-root", str(data_root)]) == 2
    assert "self-ensemble" in _error_line(capsys)
