"""Search smoke test (tiny config, real T91 images): outputs, genotype in the search space,
alphas moved, exact resume after an interruption, and the CLI's user errors."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from binsr.cli import main
from binsr.data.paths import data_root
from binsr.errors import UsageError
from binsr.nas import search as search_mod
from binsr.nas.config import load_search_config, search_config_from_dict
from binsr.nas.genotype import load_genotype
from binsr.nas.search import build_supernet, run_search
from binsr.train.checkpoint import load_state

TINY = {
    "name": "tiny", "scale": 4, "seed": 3,
    "data": {"train_sets": ["T91"], "patch_size": 32, "batch_size": 2, "max_images": 4},
    "supernet": {"num_cells": 1, "num_feat": 16, "steps": 2, "partial_k": 4, "groups": 2},
    "search": {"epochs": 3, "steps_per_epoch": 3, "warmup_epochs": 1, "arch_lr": 0.05},
    "reg": {"ramp_epochs": 2},
    "log": {"tensorboard": True, "progress": False},
}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "search"


def _t91_missing() -> str | None:
    """Why the T91 images are not there (``None`` when they are): checked at collection, so it
    must not raise on a fresh clone without ../shared (it is asked before a run, not at import)."""
    try:
        root = data_root()
    except UsageError as exc:
        return f"no data: {exc}"
    return None if (root / "train" / "T91").is_dir() else f"T91 not in {root / 'train'}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if _t91_missing():  # only the runs need T91: the config checks below run anywhere
        pytest.skip(_t91_missing())
    folder = tmp_path_factory.mktemp("search")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = folder / "run"
    assert main(["search", "--config", str(folder / "tiny.yaml"), "--out", str(out)]) == 0
    return folder, out


def test_search_writes_its_outputs(tiny_run):
    _, out = tiny_run
    for name in ("genotype.json", "cell.png", "alpha_history.csv", "alpha_history.png", "beta_history.csv",
                 "beta_history.png", "history.csv", "summary.json", "config.yaml", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["epochs"] == 3 and summary["steps"] == 9 and summary["search_time_s"] > 0
    rows = list(csv.DictReader((out / "alpha_history.csv").open()))
    assert len(rows) == 3 * 5 * 6  # epochs x edges x ops


def test_genotype_uses_only_search_space_ops(tiny_run):
    _, out = tiny_run
    geno = load_genotype(out / "genotype.json")
    ops = set(TINY.get("supernet", {}).get("ops", load_search_config(out / "config.yaml").supernet.ops))
    assert geno.steps == 2 and all(len(node) == 2 for node in geno.nodes)
    assert {op for node in geno.nodes for op, _ in node} <= ops - {"none"}
    assert geno.meta["complete"] and geno.meta["epochs"] == 3


def test_alphas_and_betas_moved(tiny_run):
    _, out = tiny_run
    cfg = search_config_from_dict(TINY)
    torch.manual_seed(cfg.seed)
    initial = build_supernet(cfg)
    final = load_state(out / "checkpoint.pt")["model"]
    assert (final["alphas"] - initial.alphas).abs().max() > 1e-3
    assert (final["betas"] - initial.betas).abs().max() > 1e-3
    history = load_state(out / "checkpoint.pt")["alpha_history"]
    assert torch.equal(history[0], initial.alphas.detach())  # warm-up epoch: weights only


def test_resume_after_interruption_is_exact(tiny_run, monkeypatch):
    folder, out = tiny_run
    cfg = search_config_from_dict(TINY)
    calls = {"n": 0}
    real = search_mod.bnn.set_progress

    def interrupt_in_epoch_2(model, p):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(model, p)

    monkeypatch.setattr(search_mod.bnn, "set_progress", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, folder / "resumed")
    monkeypatch.setattr(search_mod.bnn, "set_progress", real)
    assert load_state(folder / "resumed" / "checkpoint.pt")["epoch"] == 1
    with pytest.raises(UsageError, match="--resume"):
        run_search(cfg, folder / "resumed")
    geno = run_search(cfg, folder / "resumed", resume=True)
    a, b = load_state(out / "checkpoint.pt"), load_state(folder / "resumed" / "checkpoint.pt")
    assert torch.equal(a["model"]["alphas"], b["model"]["alphas"])
    assert torch.equal(a["model"]["betas"], b["model"]["betas"])
    assert geno == load_genotype(out / "genotype.json")


def test_cli_user_errors(tiny_run, capsys):
    folder, out = tiny_run
    assert main(["search", "--config", str(folder / "tiny.yaml"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["search", "--config", str(folder / "tiny.yaml"), "--out", str(out), "--resume",
                 "--set", "reg.mu=0.5"]) == 2
    assert "reg" in capsys.readouterr().err
    assert main(["search", "--config", str(folder / "tiny.yaml"), "--out", str(folder / "x"),
                 "--set", "supernet.ops=[conv_3x3,max_pool_3x3]"]) == 2
    assert "supernet.ops" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_configs_are_valid(path):
    cfg = load_search_config(path)
    assert cfg.supernet.ops and cfg.search.arch_lr == pytest.approx(6e-4) and cfg.search.model_lr == pytest.approx(1e-3)


def test_search_precision_is_checked_and_applied(monkeypatch, tmp_path):
    """``search.precision`` as ``train.precision``: an unknown value is one line; the supernet's
    binary convs get the resolved dtype before the first step."""
    with pytest.raises(UsageError, match="search.precision 'fp8'"):
        search_config_from_dict({**TINY, "search": {**TINY["search"], "precision": "fp8"}})
    seen = []

    def stop(model, precision):
        seen.append((type(model).__name__, precision))
        raise KeyboardInterrupt

    monkeypatch.setattr(search_mod, "prepare_model", stop)
    cfg = search_config_from_dict({**TINY, "search": {**TINY["search"], "precision": "bf16"}})
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run")
    assert seen == [("Supernet", "bf16")]


def test_stop_at_skips_ends_the_search_and_keeps_the_cell_before(tmp_path):
    """``search.stop_at_skips`` (DARTS+): with a threshold of one skip_connect in a space of
    conv_3x3 and skip_connect, the search stops at the first architecture epoch whose cell has a
    skip; genotype.json is the cell derived from the epoch before's alphas and betas."""
    if _t91_missing():
        pytest.skip(_t91_missing())
    raw = {**TINY, "supernet": {**TINY["supernet"], "ops": ["conv_3x3", "skip_connect"]},
           "search": {**TINY["search"], "epochs": 6, "stop_at_skips": 1, "arch_lr": 0.5},
           "log": {"tensorboard": False, "progress": False}}
    cfg = search_config_from_dict(raw)
    geno = run_search(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    state = load_state(tmp_path / "run" / "checkpoint.pt")
    assert summary["complete"] and summary["stopped"], summary
    assert summary["epochs"] == len(state["rows"]) and summary["epochs"] < 6
    model = build_supernet(cfg)
    model.alphas.data.copy_(state["alpha_history"][-2])
    model.betas.data.copy_(state["beta_history"][-2])
    assert geno.nodes == model.genotype().nodes
    assert state["stopped"].startswith(f"epoch {summary['epochs']}:")
    assert run_search(cfg, tmp_path / "run", resume=True).nodes == geno.nodes  # nothing left to search


def test_shrink_epochs_shrink_the_search_space_and_are_checked(tmp_path):
    """``search.shrink_epochs`` / ``shrink_keep``: after the last shrink every edge holds ``keep``
    ops, and the derived cell uses only ops still in; bad schedules are one line."""
    for bad in ({"shrink_epochs": [2], "shrink_keep": []}, {"shrink_epochs": [2, 1], "shrink_keep": [3, 2]},
                {"shrink_epochs": [1, 2], "shrink_keep": [3, 3]}, {"shrink_epochs": [3], "shrink_keep": [2]}):
        with pytest.raises(UsageError, match="search.shrink_epochs"):
            search_config_from_dict({**TINY, "search": {**TINY["search"], **bad}})
    if _t91_missing():
        pytest.skip(_t91_missing())
    raw = {**TINY, "search": {**TINY["search"], "shrink_epochs": [1, 2], "shrink_keep": [4, 2]},
           "log": {"tensorboard": False, "progress": False}}
    geno = run_search(search_config_from_dict(raw), tmp_path / "run")
    mask = load_state(tmp_path / "run" / "checkpoint.pt")["model"]["op_mask"]
    assert mask.sum(1).tolist() == [2] * mask.shape[0]
    ops = search_config_from_dict(raw).supernet.ops
    kept = [{op for op, m in zip(ops, row) if m} for row in mask.tolist()]
    for j, node in enumerate(geno.nodes):  # edge (src -> node j) is row j (j + 3) / 2 + src
        assert all(op in kept[j * (j + 3) // 2 + src] for op, src in node)


@pytest.mark.parametrize("section, key, value, message", [
    ("supernet", "num_cells", 10**8, "'supernet.num_cells' is at most 64"),
    ("supernet", "steps", 10**5, "'supernet.steps' is at most 16"),
    ("supernet", "num_feat", 10**6, "'supernet.num_feat' is at most 1024"),
])
def test_supernet_sizes_are_bounded(section, key, value, message):
    """A size whose supernet would take hours to build is refused by the config check."""
    with pytest.raises(UsageError, match=message):
        search_config_from_dict({**TINY, section: {**TINY[section], key: value}})


def test_a_batch_beyond_the_machine_is_refused_before_the_out_folder(tmp_path):
    """One step's activations are measured on the meta device before any data is read or folder made."""
    cfg = search_config_from_dict({**TINY, "data": {**TINY["data"], "batch_size": 10**9}})
    with pytest.raises(UsageError, match="a step of data.batch_size 1000000000 x 32 px patches"):
        run_search(cfg, tmp_path / "run", data_root=str(tmp_path / "no-data"))
    assert not (tmp_path / "run").exists()


def test_search_seed_is_in_range():
    with pytest.raises(UsageError, match=r"'seed' must be in \[0, 4294967295\], got -1"):
        search_config_from_dict({**TINY, "seed": -1})


@pytest.mark.parametrize("name", ["..", "a/b", ""])
def test_search_name_is_one_folder(name):
    with pytest.raises(UsageError, match="'name' must be a folder name"):
        search_config_from_dict({**TINY, "name": name})
