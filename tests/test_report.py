"""binsr report: runs are evaluated with the protocol, cached, and set beside the published rows;
the search-against-random table and benchmarks/search_vs_random.py."""

import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch

from binsr.cli import main
from binsr.errors import UsageError
from binsr.evaluation import evaluate
from binsr.models import create
from binsr.report import random_baseline, search_vs_random, write_report
from binsr.train import load_config
from binsr.train.checkpoint import save_weights

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "published_results.csv"


def _fake_run(root, name, recipe):
    torch.manual_seed(0)
    model = create("srresnet_lite", scale=2, recipe=recipe, num_feat=8, num_block=1, zero_tail=True)
    run = root / name
    run.mkdir(parents=True)
    save_weights(run / "best.safetensors", model)
    (run / "results.json").write_text(json.dumps({"model": "srresnet_lite", "recipe": recipe, "scale": 2,
                                                  "steps": 10, "train_seconds": 120.0}))
    (run / "log.csv").write_text("step,loss,lr,it_s,val_psnr,val_ssim\n5,0.1,0.001,1.0,30.0,0.9\n10,,,,31.0,0.91\n")
    return model


def test_report_measures_runs_and_sets_them_beside_the_papers(data_root, tmp_path):
    model = _fake_run(tmp_path / "runs", "e2fif_tiny", "e2fif")
    out = write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                       crop_image=("Set5", 2))
    text = out.read_text()
    measured = evaluate(model.eval(), "Set5", 2, data_root=data_root)
    row = next(line for line in text.splitlines() if line.startswith("| e2fif_tiny"))
    assert f"{measured['psnr']:.2f} / {measured['ssim']:.4f}" in row
    assert f"SRResNet-E2FIF: Set5 {measured['psnr'] - 37.50:+.2f}" in row  # SCALES Table III, x2
    assert "*SRResNet-E2FIF* (SCALES, published)" in text and "*Bicubic* (SCALES, published)" in text
    assert (tmp_path / "docs" / "results_val_psnr.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "results_crops_x2.png").stat().st_size > 1000
    cache = tmp_path / "runs" / "e2fif_tiny" / "benchmark.json"
    stamp = cache.stat().st_mtime_ns
    write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                 crop_image=("Set5", 2))
    assert cache.stat().st_mtime_ns == stamp  # weights unchanged: not evaluated again


def test_report_without_runs_is_a_usage_error(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path / "nope")]) == 2
    assert "runs folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--runs", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_compare_runs_get_their_own_sections(data_root, tmp_path):
    for name, recipe in [("zoo_tiny", "e2fif"), ("compare_bnn", "bnn"), ("compare_estimator_ste_none", "lt_attn")]:
        _fake_run(tmp_path / "runs", name, recipe)
    text = write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                        crop_image=("Set5", 2)).read_text()
    sections = [line for line in text.splitlines() if line.startswith("### x2")]
    assert sections == ["### x2", "### x2: same-budget comparison of the recipes (configs/compare)",
                        "### x2: sign-derivative estimators with and without attention (configs/compare/estimator_*)"]
    body = text.split("### x2")[1:]
    assert "| zoo_tiny" in body[0] and "| compare_bnn" in body[1] and "| compare_estimator_ste_none" in body[2]
    for tag in ("", "_compare", "_estimators"):
        assert (tmp_path / "docs" / f"results_val_psnr{tag}.png").is_file()
        assert (tmp_path / "docs" / f"results_crops_x2{tag}.png").is_file()


def test_random_baseline_mean_sample_std_and_rank():
    st = random_baseline(30.0, [29.0, 29.5, 30.5, 29.8, 29.2])
    assert st["mean"] == pytest.approx(29.6) and st["std"] == pytest.approx((1.38 / 4) ** 0.5)  # n - 1
    assert st["rank"] == 2 and st["cells"] == 6 and not st["beats"]  # 30.0 < 29.6 + 0.587
    assert random_baseline(31.0, [29.0, 29.5])["beats"] and random_baseline(31.0, [29.0, 29.5])["rank"] == 1
    assert random_baseline(30.0, [30.0, 29.0])["rank"] == 2  # a tie ranks the searched cell below
    with pytest.raises(UsageError, match="at least two random cells"):
        random_baseline(30.0, [29.0])


def _record(run, genotype, psnr, model="srbnas", steps=100):
    kwargs = {"genotype": genotype} if genotype else {"num_block": 5}
    return {"run": run, "model": model, "recipe": "irnet" if genotype else "e2fif", "kwargs": kwargs, "scale": 4,
            "steps": steps, "params_k": 41.0, "metrics": {"Set5": {"psnr": psnr[0]}, "Set14": {"psnr": psnr[1]}}}


RANDOM = [29.0, 29.5, 30.5, 29.8, 29.2]


def _rows(table):
    """The cells of a Markdown table's rows, below its header."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[4:]]


def test_search_vs_random_table():
    recs = [_record("s_e2fif", None, (31.0, 28.0), model="srresnet_lite"),
            _record("s_searched", "srbnas_x4", (30.0, 27.0))]
    recs += [_record(f"s_random{k}", f"random_sized:{k}:srbnas_x4", (p, 26.0 + k / 10))
             for k, p in enumerate(RANDOM, 1)]
    text = search_vs_random(recs, ["Set5", "Set14"])
    assert text.startswith("x4, 100 steps per run")
    rows = _rows(text)
    assert [r[0] for r in rows[:7]] == ["s_searched", *(f"s_random{k}" for k in range(1, 6)), "s_e2fif"]
    assert rows[0][2] == "srbnas_x4" and rows[6][1:] == ["srresnet_lite / e2fif", "-", "41.0", "31.000", "28.000"]
    assert rows[7] == ["random mean (n = 5)", "", "", "41.0", "29.600", "26.300"]
    assert rows[8] == ["random std (n - 1)", "", "", "", f"{(1.38 / 4) ** 0.5:.3f}", "0.158"]
    assert rows[9] == ["searched rank (of 6 cells)", "", "", "", "2", "1"]
    assert rows[10] == ["searched > mean + 1 std", "", "", "", "no", "yes"]  # the e2fif row stays out
    with pytest.raises(UsageError, match="one searched SRBNAS run"):
        search_vs_random(recs + [_record("s_other", "srbnas_x3", (1, 1))], ["Set5"])
    with pytest.raises(UsageError, match="not a same-budget comparison"):
        search_vs_random(recs + [_record("s_random9", "random_sized:9", (1, 1), steps=50)], ["Set5"])


def _script():
    spec = importlib.util.spec_from_file_location("search_vs_random", ROOT / "benchmarks" / "search_vs_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_vs_random_script_tabulates_run_folders(tmp_path, capsys):
    """Fake finished runs (weights + a current benchmark.json cache): no training, no evaluation."""
    for k, psnr in enumerate([30.0, *RANDOM]):
        run = tmp_path / f"s_{k}"
        run.mkdir()
        (run / "best.safetensors").write_bytes(b"weights")
        stat = (run / "best.safetensors").stat()
        (run / "benchmark.json").write_text(json.dumps({
            "stamp": {"weights": "best.safetensors", "bytes": stat.st_size, "mtime": stat.st_mtime},
            "params_k": 41.0, "ops_g": 2.0, "metrics": {"Set5": {"psnr": psnr, "ssim": 0.8, "n_images": 5}}}))
        genotype = f"random_sized:{k}" if k else "srbnas_x4"
        (run / "results.json").write_text(json.dumps({"model": "srbnas", "recipe": "irnet",
                                                      "kwargs": {"genotype": genotype}, "scale": 4, "steps": 100,
                                                      "train_seconds": 60.0}))
    runs = [str(tmp_path / f"s_{k}") for k in range(6)]
    assert _script().main(["table", *runs, "--dataset", "Set5"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[6] == ["random mean (n = 5)", "", "", "41.0", "29.600"] and rows[8][-1] == "2"
    assert _script().main(["table", *runs, str(tmp_path), "--dataset", "Set5"]) == 2
    assert "not finished runs" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["x4", "large_x4"])
def test_search_vs_random_commands_load_and_match_the_params(setting, tmp_path):
    from binsr.models import create, profile
    from binsr.nas.genotype import load_genotype

    script = _script()
    name = f"search_vs_random_{setting}"
    config = str(ROOT / "configs" / "compare" / f"{name}.yaml")
    lines = script.commands(config, ["train.steps=300"], cells=2, prefix="binsr train")
    assert lines[0].startswith(f"# {name}: srbnas") and "srresnet_lite e2fif" in lines[0]
    assert lines[-1].startswith(f"# then: .venv/bin/python benchmarks/search_vs_random.py table runs/{name}_searched")
    cfgs = []
    for line in lines[1:-1]:
        args = shlex.split(line)[2:]
        assert args[:2] == ["--config", config]
        cfgs.append(load_config(config, args[3::2]))
    assert [c.name for c in cfgs] == [f"{name}_{r}" for r in ("searched", "random1", "random2", "e2fif")]
    assert {c.train.steps for c in cfgs} == {300} and len({(c.seed, str(c.data)) for c in cfgs}) == 1

    def params(c):
        return profile(create(c.model.name, scale=c.scale, recipe=c.model.recipe, **c.model.kwargs), (8, 8)).params

    searched = params(cfgs[0])
    assert cfgs[3].model.name == "srresnet_lite" and cfgs[3].model.recipe == "e2fif"
    assert all(abs(params(c) - searched) <= 0.1 * searched for c in cfgs[1:])
    # the random cells take the size of the config's genotype (the x3 search's, once it has run)
    load_genotype("srbnas_x4").save(tmp_path / "g.json")
    x3 = str(ROOT / "configs" / "compare" / "search_vs_random_x3.yaml")
    lines = script.commands(x3, [f"model.kwargs.genotype={tmp_path / 'g.json'}"], cells=1)
    assert f"model.kwargs.genotype=random_sized:1:{tmp_path / 'g.json'}" in lines[2]
