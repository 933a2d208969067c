"""The training loop in-process: run folder, schedule, EMA, progress, refusals, NaN handling."""

import csv
import json
import logging
import math

import pytest
import torch
from safetensors.torch import load_file

from _trainkit import SET, TinySR, evaluate, raw_config
from binsr.data import TrainPatches
from binsr.errors import BinsrError, UsageError
from binsr.train import config_from_dict, load_weights, read_weights, train
from binsr.train.optim import lr_factor
from binsr.train.sampling import StepBatchSampler


def _run(root, out, dataset=None, resume=False, **sections):
    cfg = config_from_dict(raw_config(root, **sections), check_names=False)
    torch.manual_seed(cfg.seed)
    model = TinySR(cfg.scale)
    data = dataset or TrainPatches([root / "train" / SET], scale=cfg.scale, patch_size=cfg.data.patch_size,
                                   seed=cfg.seed)
    return train(cfg, out, resume=resume, model=model, dataset=data, evaluate=evaluate, device="cpu"), model, cfg


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_folder_results_and_schedule(data_root, tmp_path):
    out = tmp_path / "run"
    result, model, cfg = _run(data_root, out, log={"tensorboard": True})
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "last.safetensors", "last_ema.safetensors", "last.pt", "best.safetensors",
            "log.csv", "results.json", "tb"} <= names
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result))
    assert (result["model"], result["recipe"], result["scale"], result["steps"]) == ("tiny", "fp", 2, 8)
    assert result["train_seconds"] > 0 and result["config"]["train"]["lr"] == 1e-2
    assert model.probe.seen == [s / 8 for s in range(8)]  # binsr.nn.set_progress(model, step / steps)

    rows = _rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-2 * lr_factor(s, cfg.train) for s in range(8)])
    assert all(math.isfinite(float(r["loss"])) and float(r["it_s"]) > 0 for r in rows)
    val = {int(r["step"]): float(r["val_psnr"]) for r in rows if r["val_psnr"]}
    assert sorted(val) == [4, 8] and result["val"]["psnr"] == pytest.approx(val[8], abs=1e-4)

    best_step = max(val, key=val.get)
    assert result["best"]["step"] == best_step
    _, meta = read_weights(out / "best.safetensors")
    assert meta["step"] == str(best_step) and meta["ema"] == "0.9" and meta["val_dataset"] == "Set5"
    # the EMA weights, not the raw ones, are evaluated and saved as best/last_ema
    raw, ema = load_file(out / "last.safetensors"), load_file(out / "last_ema.safetensors")
    assert torch.equal(raw["head.weight"], model.head.weight.detach())
    assert not torch.equal(raw["head.weight"], ema["head.weight"])
    load_weights(TinySR(2), out / "best.safetensors")


def test_existing_run_needs_resume_and_the_same_config(data_root, tmp_path):
    out = tmp_path / "run"
    _run(data_root, out, train={"steps": 4})
    with pytest.raises(UsageError, match="already holds a run; pass --resume"):
        _run(data_root, out, train={"steps": 4})
    with pytest.raises(UsageError, match="train.lr: 0.01 -> 0.001"):
        _run(data_root, out, resume=True, train={"steps": 4, "lr": 1e-3})
    with pytest.raises(UsageError, match="nothing to resume"):
        _run(data_root, tmp_path / "empty", resume=True)
    result, _, _ = _run(data_root, out, resume=True, train={"steps": 4}, log={"every": 2})  # log keys are free
    assert result["steps"] == 4


def test_run_started_before_a_config_key_existed_resumes(data_root, tmp_path):
    """A checkpoint whose saved config lacks a key added to the schema later (as train.distill was)
    resumes: the key takes its default on both sides of the comparison."""
    out = tmp_path / "run"
    _run(data_root, out, train={"steps": 4})
    state = torch.load(out / "last.pt", weights_only=True)
    del state["config"]["train"]["distill"]
    torch.save(state, out / "last.pt")
    result, _, _ = _run(data_root, out, resume=True, train={"steps": 4})
    assert result["steps"] == 4
    with pytest.raises(UsageError, match="train.lr: 0.01 -> 0.001"):  # a real difference is still refused
        _run(data_root, out, resume=True, train={"steps": 4, "lr": 1e-3})


class _Poison(torch.utils.data.Dataset):
    """NaN targets for the items of the given update steps."""

    def __init__(self, dataset, cfg, steps):
        sampler = StepBatchSampler(len(dataset), cfg["data"]["batch_size"], cfg["seed"])
        self.dataset, self.bad = dataset, {i for s in steps for i in sampler.batch(s)}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        lr, hr = self.dataset[index]
        return (lr, hr * math.nan) if index in self.bad else (lr, hr)


def test_nonfinite_loss_is_skipped_then_stops(data_root, tmp_path, caplog):
    raw = raw_config(data_root, train={"max_nonfinite": 3})
    data = TrainPatches([data_root / "train" / SET], scale=2, patch_size=16, seed=raw["seed"])
    with caplog.at_level(logging.WARNING, logger="binsr.train.trainer"):
        result, model, _ = _run(data_root, tmp_path / "a", dataset=_Poison(data, raw, steps=[2, 3]),
                                train={"max_nonfinite": 3})
    assert result["steps"] == 8 and all(torch.isfinite(p).all() for p in model.parameters())
    assert [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()] == [
        "step 3: non-finite loss or gradient, update skipped (1 in a row)",
        "step 4: non-finite loss or gradient, update skipped (2 in a row)"]
    assert [r["loss"] for r in _rows(tmp_path / "a" / "log.csv")][2:4] == ["nan", "nan"]
    with pytest.raises(BinsrError, match="training diverged: 3 consecutive non-finite losses up to step 5"):
        _run(data_root, tmp_path / "b", dataset=_Poison(data, raw, steps=range(2, 8)), train={"max_nonfinite": 3})
