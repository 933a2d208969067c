"""train.distill: the loss's teacher term, its neutrality at weight 0, exact resume, refusals."""

import csv

import pytest
import torch
from torch import nn

from _trainkit import SET, TinySR, evaluate, raw_config
from binsr.data import TrainPatches
from binsr.errors import UsageError
from binsr.models import create
from binsr.train import config_from_dict, save_weights, train


class Zero(nn.Module):
    """A teacher whose image is black: the teacher term is then ``mean |sr|``."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.unused = nn.Parameter(torch.zeros(1))  # the trainer moves and freezes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.new_zeros(n, c, h * self.scale, w * self.scale)


class _BlackHR(torch.utils.data.Dataset):
    """The synthetic patches with black HR targets: the L1 term is then ``mean |sr|`` too."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        lr, hr = self.dataset[index]
        return lr, torch.zeros_like(hr)


def _patches(root, cfg):
    return TrainPatches([root / "train" / SET], scale=cfg.scale, patch_size=cfg.data.patch_size, seed=cfg.seed)


def _train(root, out, teacher=None, black=False, resume=False, stop_after=None, **sections):
    cfg = config_from_dict(raw_config(root, **sections), check_names=False)
    torch.manual_seed(cfg.seed)
    model = TinySR(cfg.scale)
    data = _BlackHR(_patches(root, cfg)) if black else _patches(root, cfg)
    result = train(cfg, out, resume=resume, model=model, dataset=data, evaluate=evaluate, device="cpu",
                   teacher=teacher, stop_after=stop_after)
    return result, model


def _losses(run) -> list[float]:
    with open(run / "log.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_teacher_term_is_weight_times_l1_to_its_image(data_root, tmp_path):
    # black HR and a black teacher: the loss is (1 + weight) x the plain one, mean |sr|, at step 1
    # (same weights, batch and RNG) and after it (Adam's steps do not see a gradient's scale)
    _train(data_root, tmp_path / "plain", black=True)
    _train(data_root, tmp_path / "kd", teacher=Zero(2), black=True, train={"distill": {"weight": 0.5}})
    plain, kd = _losses(tmp_path / "plain"), _losses(tmp_path / "kd")
    assert len(kd) == 8 and kd[0] == pytest.approx(1.5 * plain[0], rel=1e-6)
    assert kd == pytest.approx([1.5 * x for x in plain], rel=1e-4)


def test_weight_zero_trains_as_without_a_teacher(data_root, tmp_path):
    torch.manual_seed(99)
    teacher = TinySR(2)
    _, plain = _train(data_root, tmp_path / "plain")
    _, kd = _train(data_root, tmp_path / "kd", teacher=teacher, train={"distill": {"weight": 0.0}})
    assert _losses(tmp_path / "kd") == _losses(tmp_path / "plain")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), kd.state_dict().values()))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_the_student_moves_toward_the_teacher(data_root, tmp_path):
    _, plain = _train(data_root, tmp_path / "plain")
    _, kd = _train(data_root, tmp_path / "kd", teacher=Zero(2), train={"distill": {"weight": 10.0}})
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert kd.eval()(x).abs().mean() < 0.5 * plain.eval()(x).abs().mean()


def _teacher_file(path, scale=2):
    torch.manual_seed(5)
    save_weights(path, create("espcn", scale=scale, recipe="fp"))
    return str(path)


def test_teacher_from_a_weights_file_resumes_exactly(data_root, tmp_path):
    distill = {"distill": {"teacher": _teacher_file(tmp_path / "teacher.safetensors"), "weight": 1.0}}
    straight, _ = _train(data_root, tmp_path / "straight", train=distill)
    assert straight["config"]["train"]["distill"]["teacher"].endswith("teacher.safetensors")
    cut, _ = _train(data_root, tmp_path / "cut", train=distill, stop_after=0.0)
    assert cut["stopped"] and cut["steps"] == 1
    _train(data_root, tmp_path / "cut", train=distill, resume=True)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "straight")
    _train(data_root, tmp_path / "plain")
    assert _losses(tmp_path / "plain")[0] < _losses(tmp_path / "straight")[0]  # the file's teacher adds its term


@pytest.mark.parametrize("teacher, match", [
    ("missing.safetensors", "train.distill.teacher: no such weights file"),
    ("x4", r"is an x4 model, not x2"),
    ("zoo:srbnas_x4", "zoo:srbnas_x4 is an x4 model, not x2"),
])
def test_bad_teachers_are_refused_in_one_line(data_root, tmp_path, teacher, match):
    if teacher == "x4":
        teacher = _teacher_file(tmp_path / "x4.safetensors", scale=4)
    elif teacher.endswith(".safetensors"):
        teacher = str(tmp_path / teacher)
    with pytest.raises(UsageError, match=match):
        _train(data_root, tmp_path / "run", train={"distill": {"teacher": teacher}})


def test_negative_weight_is_refused():
    with pytest.raises(UsageError, match="'train.distill.weight' must be >= 0"):
        config_from_dict({"name": "x", "train": {"distill": {"weight": -1}}}, check_names=False)
