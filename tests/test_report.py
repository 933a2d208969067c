"""binsr report: runs are evaluated with the protocol, cached, and set beside the published rows;
zoo cards come first with their own numbers (never evaluated again); runs whose folder is gone come
back from the archive beside the report; the search-against-random table and
benchmarks/search_vs_random.py."""

import importlib.util
import json
import shlex
import shutil
import time
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


def _fake_run(root, name, recipe, steps=10):
    torch.manual_seed(0)
    model = create("srresnet_lite", scale=2, recipe=recipe, num_feat=8, num_block=1, zero_tail=True)
    run = root / name
    run.mkdir(parents=True)
    save_weights(run / "best.safetensors", model)
    (run / "results.json").write_text(json.dumps({"model": "srresnet_lite", "recipe": recipe, "scale": 2,
                                                  "steps": steps, "train_seconds": 120.0}))
    (run / "log.csv").write_text("step,loss,lr,it_s,val_psnr,val_ssim\n5,0.1,0.001,1.0,30.0,0.9\n10,,,,31.0,0.91\n")
    return model


def test_report_measures_runs_and_sets_them_beside_the_papers(data_root, tmp_path):
    model = _fake_run(tmp_path / "runs", "e2fif_tiny", "e2fif")
    out = write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                       crop_image=("Set5", 2), zoo=tmp_path / "zoo")
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
                 crop_image=("Set5", 2), zoo=tmp_path / "zoo")
    assert cache.stat().st_mtime_ns == stamp  # weights unchanged: not evaluated again


def test_report_without_runs_or_zoo_is_a_usage_error(tmp_path, capsys):
    empty, out = tmp_path / "empty", tmp_path / "r.md"
    empty.mkdir()
    for runs in (tmp_path / "nope", empty):
        assert main(["report", "--runs", str(runs), "--zoo", str(empty), "--out", str(out)]) == 2
        assert "no zoo cards" in capsys.readouterr().err and not out.exists()


def _fake_card(zoo, name, source_run, curve=None, steps=1234, note=None):
    """A zoo entry (tiny x2 weights and a card of made-up numbers, ``val_curve`` when ``curve``,
    ``note`` when ``note``)."""
    zoo.mkdir(exist_ok=True)
    torch.manual_seed(0)
    save_weights(zoo / f"{name}.safetensors",
                 create("srresnet_lite", scale=2, recipe="e2fif", num_feat=8, num_block=1, zero_tail=True))
    card = {"name": name, "model": "srresnet_lite", "recipe": "e2fif", "scale": 2, "kwargs": {},
            "source_run": source_run, "steps": steps, "train_seconds": 600.0, "params_k": 12.34, "ops_g_320x180": 0.567,
            "metrics": {"Set5": {"psnr": 36.0, "ssim": 0.95}}}
    if curve:
        card.update(val_dataset="Set5", val_curve=curve)
    if note:
        card["note"] = note
    (zoo / f"{name}.json").write_text(json.dumps(card))


def _no_evaluation(monkeypatch):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("a model was evaluated")

    monkeypatch.setattr("binsr.evaluation.evaluate", no_evaluation)


def test_report_takes_zoo_cards_first_without_evaluating_them(data_root, tmp_path, monkeypatch):
    """Zoo rows: the card's numbers beside the published row, first; no runs folder needed; the run
    a card names as source_run (same steps) is not listed (nor evaluated) a second time."""
    _no_evaluation(monkeypatch)
    zoo, out = tmp_path / "zoo", tmp_path / "docs" / "results.md"
    _fake_card(zoo, "tiny_x2", "tiny_run", curve=[[500, 35.1], [1000, 35.8]], note="warm-started from a snapshot")
    _fake_card(zoo, "old_x2", "gone_run")
    text = write_report(tmp_path / "no_runs", out, PUBLISHED, ["Set5"], str(data_root), crop_image=("Set5", 2),
                        zoo=zoo).read_text()
    assert text.index("## Zoo: shipped models") < text.index("### x2: zoo models")
    assert "## Training runs" not in text
    row = next(line for line in text.splitlines() if line.startswith("| zoo:tiny_x2 "))
    assert row == ("| zoo:tiny_x2 (srresnet_lite) | e2fif | 12.3 | 0.57 | 36.00 / 0.9500 | 1234 | 10 min | "
                   "SRResNet-E2FIF: Set5 -1.50 |")  # SCALES Table III, x2: 37.50
    zoo_table = text.split("### x2: zoo models")[1].split("![crops")[0]
    assert "| zoo:old_x2 " in zoo_table and "*SRResNet-E2FIF* (SCALES, published)" in zoo_table
    assert "\n- zoo:tiny_x2: warm-started from a snapshot\n" in zoo_table and "- zoo:old_x2:" not in zoo_table
    assert "zoo:old_x2: curve not recorded (run folder not kept)." in text
    assert "zoo:tiny_x2: curve not recorded" not in text
    assert (tmp_path / "docs" / "results_val_psnr_zoo.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "results_crops_x2_zoo.png").stat().st_size > 1000
    _fake_run(tmp_path / "runs", "tiny_run", "e2fif", steps=1234)  # the card's source run, now present
    text = write_report(tmp_path / "runs", out, PUBLISHED, ["Set5"], str(data_root), crop_image=("Set5", 2),
                        zoo=zoo).read_text()
    rows = [line.split(" (")[0] for line in text.splitlines() if line.startswith("| ")]
    assert "| tiny_run" not in rows and rows.count("| zoo:tiny_x2") == 1
    assert ("appear once in the main tables, as their zoo row: gone_run (1234 steps, zoo:old_x2), "
            "tiny_run (1234 steps, zoo:tiny_x2).") in text
    assert not (tmp_path / "runs" / "tiny_run" / "benchmark.json").exists()


def _report(tmp_path, data_root, zoo="zoo"):
    return write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                        crop_image=("Set5", 2), zoo=tmp_path / zoo).read_text()


def _row(text, run):
    return next(line for line in text.splitlines() if line.startswith(f"| {run} "))


def test_archive_brings_back_runs_whose_folder_is_gone(data_root, tmp_path, monkeypatch):
    """The report keeps every run in docs/<stem>_runs.json (no local paths); once the folder is gone
    the row comes back from there, marked, with the same numbers and curve, and nothing is evaluated."""
    _fake_run(tmp_path / "runs", "e2fif_tiny", "e2fif")
    text = _report(tmp_path, data_root)
    archive = tmp_path / "docs" / "results_runs.json"
    (entry,) = json.loads(archive.read_text())["runs"]
    assert str(tmp_path) not in archive.read_text() and "weights" not in entry
    assert entry["run"] == "e2fif_tiny" and entry["steps"] == 10 and entry["train_seconds"] == 120.0
    assert entry["val_curve"] == [[5, 30.0], [10, 31.0]] and entry["measured"] == time.strftime("%Y-%m-%d")
    row = _row(text, "e2fif_tiny")
    assert "![crops x2](results_crops_x2.png)" in text and "†" not in row and "† run folder" not in text

    shutil.rmtree(tmp_path / "runs")
    _no_evaluation(monkeypatch)
    again = _report(tmp_path, data_root)
    assert _row(again, "e2fif_tiny") == row.replace("(srresnet_lite) |", "(srresnet_lite) † |")
    assert (f"† run folder not on this machine: numbers from the archive ({archive}), measured "
            f"{entry['measured']}.") in again
    assert "![crops x2](results_crops_x2.png)" not in again  # no weights: no crop
    assert "curve not recorded" not in again and "![validation PSNR](results_val_psnr.png)" in again
    assert json.loads(archive.read_text())["runs"] == [entry]


def test_local_run_replaces_its_archive_entry(data_root, tmp_path):
    archive = tmp_path / "docs" / "results_runs.json"
    archive.parent.mkdir()
    old = {"run": "e2fif_tiny", "model": "srresnet_lite", "recipe": "e2fif", "kwargs": {}, "scale": 2, "steps": 10,
           "train_seconds": 60.0, "params_k": 1.0, "ops_g": 0.1, "metrics": {"Set5": {"psnr": 99.0, "ssim": 0.99}},
           "val_curve": None, "val_dataset": None, "measured": "2000-01-01"}
    archive.write_text(json.dumps({"runs": [old, {**old, "run": "gone_tiny"}]}))
    model = _fake_run(tmp_path / "runs", "e2fif_tiny", "e2fif")
    text = _report(tmp_path, data_root)
    measured = evaluate(model.eval(), "Set5", 2, data_root=data_root)
    assert _row(text, "e2fif_tiny").startswith("| e2fif_tiny (srresnet_lite) | e2fif |")  # no mark
    assert f"{measured['psnr']:.2f} / {measured['ssim']:.4f}" in _row(text, "e2fif_tiny")
    assert "99.00" in _row(text, "gone_tiny") and "(srresnet_lite) †" in _row(text, "gone_tiny")
    assert "measured 2000-01-01." in text
    entries = {e["run"]: e for e in json.loads(archive.read_text())["runs"]}
    assert entries["gone_tiny"] == {**old, "run": "gone_tiny"}
    assert entries["e2fif_tiny"]["metrics"]["Set5"]["psnr"] == pytest.approx(measured["psnr"])
    assert entries["e2fif_tiny"]["measured"] == time.strftime("%Y-%m-%d")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"runs": {"a": 1}}', '{"runs": [{"run": "a"}]}',
                                     '{"runs": [{"run": "a", "model": "m", "recipe": "r", "kwargs": {}, "scale": 2, '
                                     '"steps": 1, "train_seconds": null, "params_k": "1", "ops_g": 1, "metrics": {}, '
                                     '"measured": "2026-01-01"}]}'])
def test_malformed_archive_is_a_usage_error(tmp_path, capsys, content):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "r_runs.json").write_text(content)
    assert main(["report", "--runs", str(tmp_path / "runs"), "--zoo", str(tmp_path / "zoo"),
                 "--out", str(tmp_path / "r.md")]) == 2
    assert f"run archive {tmp_path / 'r_runs.json'} is malformed" in capsys.readouterr().err


def test_shipped_runs_leave_the_main_table_but_not_their_section(data_root, tmp_path):
    """A card's source run (name and steps) is not listed in the main table, nested in runs/zoo/ or
    not (nor evaluated); a search_vs_random run stays in its section, curve included; other nested
    runs, and a run of a card's name but other steps, are collected."""
    zoo = tmp_path / "zoo"
    _fake_card(zoo, "tiny_x2", "tiny_run", steps=10)
    _fake_card(zoo, "searched_x2", "search_vs_random_x2_searched", steps=10)
    _fake_run(tmp_path / "runs" / "zoo", "tiny_run", "e2fif")
    _fake_run(tmp_path / "runs" / "zoo", "nested_run", "e2fif")
    _fake_run(tmp_path / "runs", "search_vs_random_x2_searched", "e2fif")
    text = _report(tmp_path, data_root)
    main_table = text.split("### x2\n")[1].split("###")[0]
    assert "| nested_run (" in main_table and "| tiny_run (" not in text
    assert not (tmp_path / "runs" / "zoo" / "tiny_run" / "benchmark.json").exists()
    section = text.split("### x2: searched cell against random cells")[1].split("###")[0]
    assert "| search_vs_random_x2_searched (srresnet_lite) | e2fif |" in section
    assert (tmp_path / "docs" / "results_val_psnr_search_vs_random.png").is_file()
    assert "search_vs_random_x2_searched: curve not recorded" not in text
    _fake_card(zoo, "tiny_x2", "tiny_run", steps=5)  # another run of that name
    assert "| tiny_run (srresnet_lite) |" in _report(tmp_path, data_root)


def test_compare_runs_get_their_own_sections(data_root, tmp_path):
    runs = [("zoo_tiny", "e2fif"), ("compare_bnn", "bnn"), ("compare_estimator_ste_none", "lt_attn"),
            ("ablation_mu0.2_rho0.8_train", "e2fif"), ("darts_fix_x2_warmup", "e2fif")]
    for name, recipe in runs:
        _fake_run(tmp_path / "runs", name, recipe)
    text = write_report(tmp_path / "runs", tmp_path / "docs" / "results.md", PUBLISHED, ["Set5"], str(data_root),
                        crop_image=("Set5", 2), zoo=tmp_path / "zoo").read_text()
    sections = [line for line in text.splitlines() if line.startswith("### x2")]
    assert sections == ["### x2", "### x2: same-budget comparison of the recipes (configs/compare)",
                        "### x2: sign-derivative estimators with and without attention (configs/compare/estimator_*)",
                        "### x2: the search's (mu, rho) ablation, Table 4 (benchmarks/ablation_x3.sh)",
                        "### x2: DARTS fixes, each searched cell trained as the random cells (benchmarks/darts_fixes.sh)"]
    body = text.split("### x2")[1:]
    for section, (name, _) in zip(body, runs):
        assert f"| {name}" in section
    for tag in ("", "_compare", "_estimators", "_ablation", "_darts_fixes"):
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


def test_bbcu_and_irnet_rows_are_held_to_srresnet_bnn():
    """Issue 23's bar: an SRResNet run of a recipe without a published row of its own there (BBCU,
    IR-Net) gets the difference to SRResNet-BNN (SRBNAS Table 5, x4: 29.33 dB Set5) beside the floor."""
    from binsr.report import _published, _table

    pub = _published(PUBLISHED)
    for recipe in ("bbcu", "irnet"):
        rec = {"run": f"{recipe}_x4", "model": "srresnet_lite16", "recipe": recipe, "params_k": 70.0, "ops_g": 2.75,
               "metrics": {"Set5": {"psnr": 30.5, "ssim": 0.86}}, "steps": 10, "train_seconds": 60.0, "weights": "w"}
        text = "\n".join(_table("### x4", 4, [rec], pub, ["Set5"]))
        row = next(line for line in text.splitlines() if line.startswith(f"| {recipe}_x4"))
        assert "SRResNet-BNN: Set5 +1.17" in row and "SRBNAS: Set5" in row
        assert "*SRResNet-BNN* (SRBNAS, published)" in text



@pytest.mark.parametrize("content, fragment", [
    ("{", "is not valid JSON"),
    ('{"model": "srresnet_lite"}', "missing or not an integer: recipe, scale, steps, train_seconds"),
    ('{"model": "m", "recipe": "r", "scale": "4", "steps": 1, "train_seconds": 1}', "not an integer: scale"),
])
def test_hostile_run_results_are_one_line(tmp_path, content, fragment):
    """A run folder whose results.json is not a finished binsr run's: one line naming the file,
    before anything is evaluated."""
    from binsr.report import run_record

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"")
    (run / "results.json").write_text(content)
    with pytest.raises(UsageError) as info:
        run_record(run, ["Set5"])
    assert fragment in str(info.value) and str(run / "results.json") in str(info.value)
    assert not (run / "benchmark.json").exists()
