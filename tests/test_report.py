"""binsr report: runs are evaluated with the protocol, cached, and set beside the published rows."""

import json
from pathlib import Path

import torch

from binsr.cli import main
from binsr.evaluation import evaluate
from binsr.models import create
from binsr.report import write_report
from binsr.train.checkpoint import save_weights

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "published_results.csv"


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
