"""The discrete SRBNAS network: shapes, binary-conv accounting, the 156K budget, recipes, CLI."""

from pathlib import Path

import pytest
import torch

from binsr.cli import main
from binsr.errors import UsageError
from binsr.models import create, profile
from binsr.models.complexity import is_binary
from binsr.models.srbnas import SRBNAS
from binsr.nas.genotype import Genotype, load_genotype, shipped_genotypes

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"format": "binsr.srbnas.genotype/1", "groups": 2,
         "nodes": [[["dil_conv_3x3", 0], ["skip_connect", 1]], [["conv_5x5", 0], ["conv_7x7", 2]]]}
HEAVY = {"format": "binsr.srbnas.genotype/1", "groups": 2,  # the most parameters a 4-node genotype can have
         "nodes": [[["conv_7x7", 0], ["conv_7x7", 1]]] + [[["conv_7x7", j], ["conv_7x7", j + 1]] for j in range(3)]}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_forward_shape_and_gradients(scale):
    torch.manual_seed(0)
    model = SRBNAS(scale, "irnet", SMALL, num_cells=2, num_feat=16)
    y = model(torch.rand(2, 3, 7, 9))
    assert y.shape == (2, 3, 7 * scale, 9 * scale)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_binary_convs_are_counted_by_profile():
    model = SRBNAS(4, "irnet", SMALL, num_cells=3, num_feat=16)
    binary = [m for m in model.modules() if is_binary(m)]
    assert len(binary) == 3 * (3 + 1)  # 3 conv ops (skip has none) + the 1x1 fuse, per cell
    assert {m.groups for m in binary} == {1, 2} and all(isinstance(m, torch.nn.Conv2d) for m in binary)
    assert sorted({m.dilation[0] for m in binary}) == [1, 2]
    prof = profile(model, (16, 16))
    assert prof.binary_params == sum(m.weight.numel() for m in binary) and prof.bops > 0


def test_three_cells_of_64_channels_fit_the_papers_156k():
    prof = profile(SRBNAS(4, "irnet", HEAVY, num_cells=3, num_feat=64), (32, 32))
    assert prof.params <= 156_000
    assert prof.fp_params == (3 * 64 * 9 + 64) + (64 * 48 * 9 + 48)  # FP head + tail only


def test_recipes_groups_and_errors():
    fp = SRBNAS(4, "fp", SMALL, num_cells=1, num_feat=16)
    assert not any(is_binary(m) for m in fp.modules())
    assert any(is_binary(m) for m in SRBNAS(4, "e2fif", SMALL, num_cells=1, num_feat=16).modules())
    convs = [m for m in SRBNAS(4, "irnet", SMALL, num_cells=1, num_feat=16, groups=4).modules() if is_binary(m)]
    assert max(m.groups for m in convs) == 4
    with pytest.raises(UsageError):
        SRBNAS(4, "irnet", SMALL, num_feat=15)
    with pytest.raises(UsageError):
        SRBNAS(5, "irnet", SMALL)


def test_shipped_default_genotype():
    assert "srbnas_x4" in shipped_genotypes()
    geno = load_genotype(None)
    assert geno == load_genotype("srbnas_x4") and isinstance(geno, Genotype) and geno.steps == 4
    model = create("srbnas", scale=4, recipe="irnet")
    assert model.genotype == geno and len(model.body) == 3
    assert len(create("srbnas_large", scale=4, recipe="irnet", num_feat=16).body) == 8


def test_profile_cli_with_a_genotype_file(tmp_path, capsys):
    Genotype.from_dict(SMALL).save(tmp_path / "g.json")
    assert main(["profile", "--model", "srbnas", "--recipe", "irnet", "--genotype", str(tmp_path / "g.json"),
                 "--lr-size", "32x32", "--quiet"]) == 0
    assert "params (binary/32 + FP)" in capsys.readouterr().out


def test_train_config_is_valid():
    from binsr.train.config import load_config

    cfg = load_config(ROOT / "configs" / "train" / "srbnas_x4.yaml")
    assert cfg.model.name == "srbnas" and cfg.model.kwargs["genotype"] == "srbnas_x4" and cfg.train.lr == 1e-3
