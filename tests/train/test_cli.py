"""``binsr train`` end to end with a registered model, TrainPatches and binsr.evaluation."""

import json

import pytest
import torch

from binsr.cli import main
from binsr.errors import BinsrError
from binsr.models import build_for_eval
from binsr.models import create
from binsr.train import load_weights, read_signature, read_weights

CONFIG = """
name: cli_small
scale: 4
model: {name: srresnet_small, recipe: e2fif}
data: {train_sets: [Syn], patch_size: 16, batch_size: 2, num_workers: 0}
train: {steps: 3, lr: 1.0e-3, checkpoint_every: 2}
val: {every: 2, dataset: Syn2}
log: {every: 1, tensorboard: false, progress: false}
"""


def test_train_resume_and_load_for_eval(data_root, tmp_path, capsys):
    config, out = tmp_path / "c.yaml", tmp_path / "run"
    config.write_text(CONFIG)
    argv = ["train", "--config", str(config), "--out", str(out), "--data-root", str(data_root), "--device", "cpu"]
    assert main(argv + ["--set", "train.steps=2"]) == 0
    assert "cli_small: 2 steps" in capsys.readouterr().out
    # continue with the run's own config.yaml, extended by one step, is refused (it would change the schedule)
    assert main(["train", "--resume", "--out", str(out), "--set", "train.steps=3"]) == 2
    assert "train.steps: 2 -> 3" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--data-root", str(data_root), "--device", "cpu"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert (result["model"], result["recipe"], result["scale"], result["steps"]) == ("srresnet_small", "e2fif", 4, 2)
    assert result["val"]["dataset"] == "Syn2" and -1 <= result["val"]["ssim"] <= 1 and result["val"]["psnr"] > 5
    model = build_for_eval("srresnet_small", 4, "e2fif", weights=str(out / "best.safetensors"))
    assert torch.equal(model.conv_first.weight, read_weights(out / "best.safetensors")[0]["conv_first.weight"])
    sig = read_signature(out / "best.safetensors")  # rebuild exactly the trained model from the file
    assert sig == {"model": "srresnet_small", "recipe": "e2fif", "scale": 4, "kwargs": {"block": "published"}}
    load_weights(create(sig["model"], sig["scale"], sig["recipe"], **sig["kwargs"]), out / "best.safetensors")
    with pytest.raises(BinsrError, match="scale 4 \\(file\\) vs 2 \\(model\\)"):
        build_for_eval("srresnet_small", 2, "e2fif", weights=str(out / "best.safetensors"))


def test_auto_resume_starts_continues_and_skips(data_root, tmp_path, capsys):
    """--auto-resume: a fresh folder starts, a stopped run continues (exactly where --resume would),
    a finished run is left untouched; --resume and --auto-resume together are a usage error."""
    config, out = tmp_path / "c.yaml", tmp_path / "run"
    config.write_text(CONFIG)
    argv = ["train", "--config", str(config), "--out", str(out), "--data-root", str(data_root), "--device", "cpu",
            "--auto-resume"]
    assert main(argv + ["--stop-after", "1e-9"]) == 0  # checkpoints at once and stops
    assert "stopped at step" in capsys.readouterr().out and not (out / "results.json").exists()
    assert main(argv) == 0
    assert "cli_small: 3 steps" in capsys.readouterr().out
    finished = (out / "results.json").read_bytes()
    assert main(argv) == 0
    assert "finished (3 steps)" in capsys.readouterr().out and (out / "results.json").read_bytes() == finished
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--resume"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.lrr=1"], "unknown config key 'train.lrr'; valid keys in section 'train': steps, lr,"),
    (["--set", "model.name=nope"], "unknown model 'nope'; valid models: "),
    (["--set", "val.dataset=Nope"], "unknown dataset 'Nope'"),
])
def test_user_errors_are_one_line(data_root, tmp_path, capsys, extra, message):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "r"), "--data-root", str(data_root)] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("binsr train: error: ")


def test_print_config_shows_the_merged_config_and_trains_nothing(tmp_path, capsys):
    """--print-config: base merged, --set applied, defaults filled; the YAML it prints loads back as
    the same config; no run folder is made."""
    from binsr.train.config import load_config

    (tmp_path / "parent.yaml").write_text(CONFIG)
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: child\ntrain: {steps: 5}\n")
    assert main(["train", "--config", str(tmp_path / "child.yaml"), "--set", "train.lr=2e-3", "--print-config",
                 "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    cfg = load_config(tmp_path / "printed.yaml")
    assert cfg == load_config(tmp_path / "child.yaml", ["train.lr=2e-3"])
    assert (cfg.name, cfg.train.steps, cfg.train.lr, cfg.train.checkpoint_every) == ("child", 5, 2e-3, 2)
    assert "base" not in printed and not (tmp_path / "run").exists()
