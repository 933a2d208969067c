"""Derivation (two strongest edges per node, strongest op per edge), JSON round trip, drawing."""

import json

import pytest
import torch

from binsr.errors import UsageError
from binsr.nas.genotype import Genotype, derive_genotype, load_genotype, plot_cell, random_genotype
from binsr.nas.ops import OPS as SEARCH_SPACE

OPS = ["none", "conv_3x3", "conv_7x7", "skip_connect"]


def _arch(steps: int = 3):
    n = sum(j + 2 for j in range(steps))
    return torch.zeros(n, len(OPS)), [torch.full((j + 2,), 1.0 / (j + 2)) for j in range(steps)]


def test_derivation_picks_top2_edges_and_top_op_without_none():
    alphas, s = _arch()
    alphas[:, 0] = 10.0  # "none" is the strongest op everywhere and must never be chosen
    alphas[0, 1], alphas[1, 3] = 5.0, 5.0  # node 0: edges from states 0 and 1
    alphas[2, 2], alphas[3, 2], alphas[4, 1] = 4.0, 1.0, 4.0  # node 1: inputs 0 and 2 beat input 1
    alphas[5:9, 3] = 3.0  # node 2: all skip; betas decide the edges
    s[2] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    g = derive_genotype(alphas, s, OPS, groups=4)
    assert g.nodes == ((("conv_3x3", 0), ("skip_connect", 1)),
                       (("conv_7x7", 0), ("conv_3x3", 2)),
                       (("skip_connect", 2), ("skip_connect", 3)))
    assert g.groups == 4 and g.steps == 3


def test_edge_strength_is_beta_weighted():
    alphas, s = _arch(2)
    alphas[2:5, 1] = torch.tensor([3.0, 2.0, 1.0])  # op preference alone would pick inputs 0 and 1
    s[1] = torch.tensor([0.05, 0.15, 0.8])  # but the betas make input 2 dominant
    g = derive_genotype(alphas, s, OPS, groups=1)
    assert [src for _, src in g.nodes[1]] == [1, 2]


def test_json_round_trip(tmp_path):
    g = Genotype(((("conv_3x3", 0), ("dil_conv_5x5", 1)), (("skip_connect", 2), ("conv_7x7", 0))), 2, {"mu": 0.8})
    g.save(tmp_path / "g.json")
    back = load_genotype(tmp_path / "g.json")
    assert back == g and back.meta == {"mu": 0.8}
    assert load_genotype(json.loads((tmp_path / "g.json").read_text())) == g


@pytest.mark.parametrize("nodes", [
    [[["max_pool_3x3", 0], ["conv_3x3", 1]]],  # not in the search space
    [[["none", 0], ["conv_3x3", 1]]],  # never part of a derived cell
    [[["conv_3x3", 0], ["conv_3x3", 2]]],  # node 0 can only read states 0 and 1
    [[["conv_3x3"]]],
])
def test_malformed_genotypes_are_refused(nodes):
    with pytest.raises(UsageError):
        load_genotype({"format": "binsr.srbnas.genotype/1", "groups": 2, "nodes": nodes})


def test_missing_or_foreign_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_genotype(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="not an SRBNAS genotype"):
        load_genotype(tmp_path / "x.json")


def test_plot_cell_writes_a_png(tmp_path):
    g = Genotype(((("conv_3x3", 0), ("dil_conv_5x5", 1)), (("skip_connect", 2), ("conv_7x7", 0))), 2)
    plot_cell(g, tmp_path / "cell.png")
    assert (tmp_path / "cell.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_genotypes_are_valid_reproducible_and_differ():
    base = load_genotype(None)
    cells = [load_genotype(f"random:{seed}") for seed in range(3)]
    for cell in cells:
        assert cell.steps == base.steps and cell.groups == base.groups
        assert Genotype.from_dict(cell.to_dict()) == cell  # passes the same validation as a file
        for j, node in enumerate(cell.nodes):
            assert len({src for _, src in node}) == 2 and all(0 <= src < j + 2 for _, src in node)
            assert all(op in SEARCH_SPACE and op != "none" for op, _ in node)
    assert load_genotype("random:1") == random_genotype(1, base.steps, base.groups)
    assert len(set(cells)) == 3


def test_bad_random_seed_is_a_usage_error():
    with pytest.raises(UsageError, match="random:<non-negative integer seed>"):
        load_genotype("random:x")


def test_sized_random_genotypes_match_the_default_size():
    from binsr.nas.genotype import _kernel_area

    base = load_genotype(None)
    cells = [load_genotype(f"random_sized:{seed}") for seed in range(3)]
    for cell in cells:
        assert abs(_kernel_area(cell) - _kernel_area(base)) <= 0.1 * _kernel_area(base)
    assert len(set(cells)) == 3 and load_genotype("random_sized:1") == load_genotype("random_sized:1")
    with pytest.raises(UsageError, match="no random cell"):
        random_genotype(0, base.steps, base.groups, like=base, tolerance=0.0, tries=3)


def test_sized_random_genotypes_follow_the_reference_genotype(tmp_path):
    """``random_sized:SEED:REF``: REF's node count, groups and footprint (the x3 search's cell)."""
    from binsr.nas.genotype import _kernel_area

    ref = Genotype(((("conv_5x5", 0), ("conv_7x7", 1)), (("conv_3x3", 1), ("dil_conv_5x5", 2)),
                    (("conv_3x3", 0), ("skip_connect", 3))), 4)
    ref.save(tmp_path / "ref.json")
    for seed in range(1, 4):
        cell = load_genotype(f"random_sized:{seed}:{tmp_path / 'ref.json'}")
        assert cell.steps == 3 and cell.groups == 4
        assert abs(_kernel_area(cell) - _kernel_area(ref)) <= 0.1 * _kernel_area(ref)
    assert load_genotype(f"random:1:{tmp_path / 'ref.json'}").steps == 3
    assert load_genotype("random_sized:2:srbnas_x4") == load_genotype("random_sized:2")
    with pytest.raises(UsageError, match="genotype file not found"):
        load_genotype("random_sized:1:srbnas_x9")


@pytest.mark.parametrize("scale", [3, 4])
def test_sized_random_large_nets_match_the_searched_params(scale):
    from binsr.models import create, profile

    def params(genotype: str) -> float:
        return profile(create("srbnas_large", scale=scale, recipe="irnet", genotype=genotype), (8, 8)).params

    searched = params("srbnas_x4")
    assert all(abs(params(f"random_sized:{k}") - searched) <= 0.1 * searched for k in range(1, 6))
