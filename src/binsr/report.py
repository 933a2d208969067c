"""``binsr report``: the zoo models and every training run beside the published numbers, in one Markdown file.

Reads three sources, any of which may be absent (a fresh clone has no runs):

* the zoo cards, ``<zoo>/<name>.json`` (default: the package's ``src/binsr/zoo``, written by
  ``binsr zoo --add``): their metrics, params/OPs, steps, training time and validation curve
  (``val_curve``) are taken as the card states them, measured with the same protocol when the
  model was added; a zoo model is not evaluated again;
* ``<runs>/*/results.json`` and ``<runs>/zoo/*/results.json`` (written by :func:`binsr.train.train`;
  the zoo's training runs live in ``runs/zoo/``): each run's ``best.safetensors`` is evaluated on
  the benchmark sets with :func:`binsr.evaluation.evaluate` (MATLAB-bicubic LR, Y channel, border =
  scale; cached in ``<run>/benchmark.json`` next to the weights' size and mtime), params/OPs
  counted with :func:`binsr.models.profile` at a 320x180 LR input, and its validation curve read
  from ``log.csv``;
* the archive ``<stem>_runs.json`` beside ``<out>`` (committed; run folders are not): the record
  of every run reported before (numbers, curve, the date they were measured; no weights). A run
  whose folder is not on this machine is taken from it (marked † in its table, left out of the
  crops); a local run replaces its entry. The report rewrites it with every run it reported.

A run that a card names as ``source_run`` (with the card's steps) is left out of the main tables
(shown once, as its zoo row; a local one is not evaluated); the group sections below keep it.

It writes

* ``<out>``: the zoo section first, then the runs; one table per scale (models, then the published
  rows of the same methods, with the difference model - published in PSNR), from ``published``
  (a copy of the SRBNAS/SCALES tables);
* ``<stem>_runs.json``: the archive (above), atomically;
* ``<stem>_val_psnr[_<group>].png``: validation PSNR against step (``_zoo``: the cards' curves);
* ``<stem>_crops_x<s>[_<group>].png``: one crop, bicubic | each model with weights | HR, per scale.

Runs are grouped by name (:data:`GROUPS`): ``darts_fix_*``, ``ablation_*`` (SRBNAS search
attempts), ``search_vs_random_*``, ``compare_estimator_*`` and ``compare_*`` (the same-budget
configs of ``configs/compare``) get their own tables, crops and plots.
:func:`search_vs_random` tabulates one search-against-random comparison (random mean, sample std,
the searched cell's rank), as ``benchmarks/search_vs_random.py`` prints it.

Nothing in the report is typed by hand: rerun the command after training.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from binsr import pretrained
from binsr.errors import UsageError
from binsr.files import make_folder, read_json

__all__ = ["collect_runs", "collect_zoo", "load_archive", "run_record", "write_report", "random_baseline",
           "search_vs_random", "PUBLISHED_NAMES", "BARS"]

#: (model family, recipe) -> the method name of that row in the published tables
PUBLISHED_NAMES = {
    ("srresnet", "fp"): "SRResNet-FP",
    ("srresnet", "e2fif"): "SRResNet-E2FIF",
    ("srresnet", "scales"): "SRResNet-SCALES",
    ("srresnet", "bnn"): "SRResNet-BNN",
    ("srresnet", "weight_only"): "SRResNet-BNN",  # Ma et al. 2019, the method of that SRBNAS row (issue 23)
    ("vdsr", "weight_only"): "VDSR-BNN",
    ("srbnas", "irnet"): "SRBNAS",
    ("srbnas", "srbnas"): "SRBNAS",
    ("swinir", "fp"): "SwinIR-FP",
    ("swinir", "scales"): "SwinIR-SCALES",
    ("swinir", "bibert"): "SwinIR-BiBERT",
}
#: (model family, recipe) -> the published row a recipe is held to where the tables have none of its
#: own on that backbone: issue 23's bar for BBCU and IR-Net on SRResNet, Ma et al.'s SRResNet-BNN
BARS = {("srresnet", "bbcu"): "SRResNet-BNN", ("srresnet", "irnet"): "SRResNet-BNN"}
#: binary rows every binary run is also compared with (the floor the project set: SRBNAS, x3/x4)
_FLOOR = ("SRBNAS",)
_CROP = 96  # HR pixels of the comparison crop
#: run-name prefix -> (section title, file-name tag), first match wins; other runs: the main table
GROUPS = (
    ("darts_fix_", "DARTS fixes, each searched cell trained as the random cells (benchmarks/darts_fixes.sh)",
     "darts_fixes"),
    ("ablation_", "the search's (mu, rho) ablation, Table 4 (benchmarks/ablation_x3.sh)", "ablation"),
    ("search_vs_random_", "searched cell against random cells of its size (configs/compare/search_vs_random_*)",
     "search_vs_random"),
    ("compare_estimator_", "sign-derivative estimators with and without attention (configs/compare/estimator_*)",
     "estimators"),
    ("compare_", "same-budget comparison of the recipes (configs/compare)", "compare"),
)


def _group(run: str) -> str:
    """The file tag of a record's section: ``zoo`` for a zoo card, else :data:`GROUPS`'s (``""``: the main table)."""
    if run.startswith(pretrained.PREFIX):
        return "zoo"
    return next((tag for prefix, _, tag in GROUPS if run.startswith(prefix)), "")


def _family(model: str) -> str:
    return model.split("_")[0]


def _weights(run: Path) -> Path | None:
    for name in ("best.safetensors", "last.safetensors"):
        if (run / name).is_file():
            return run / name
    return None


def _benchmark(run: Path, weights: Path, datasets: list[str], data_root: str | None) -> dict[str, Any]:
    """Metrics of ``weights`` per dataset, cached in ``run/benchmark.json`` while the file is unchanged."""
    from binsr.evaluation import evaluate
    from binsr.models import from_weights, profile
    from binsr.files import atomic_write

    stamp = {"weights": weights.name, "bytes": weights.stat().st_size, "mtime": weights.stat().st_mtime}
    cache_file = run / "benchmark.json"
    try:  # a cache: one that cannot be read is measured again
        cache = read_json(cache_file, "benchmark cache") if cache_file.exists() else {}
    except UsageError:
        cache = {}
    if cache.get("stamp") != stamp or not isinstance(cache.get("metrics"), dict):
        cache = {"stamp": stamp, "metrics": {}}
    missing = [d for d in datasets if d not in cache["metrics"]]
    if missing or "params_k" not in cache:
        model = from_weights(weights)
        prof = profile(model, (180, 320))
        cache.update(params_k=prof.params / 1e3, ops_g=prof.ops / 1e9)
        for ds in missing:
            r = evaluate(model, ds, model.signature["scale"], data_root=data_root)
            cache["metrics"][ds] = {"psnr": r["psnr"], "ssim": r["ssim"], "n_images": r["n_images"]}
        atomic_write(cache_file, lambda tmp: tmp.write_text(json.dumps(cache, indent=2) + "\n"))
    return cache


def run_record(run: str | Path, datasets: list[str], data_root: str | None = None) -> dict[str, Any] | None:
    """A finished run's record (``results.json``, params/OPs, metrics on ``datasets`` and the date
    they were measured, validation curve of ``log.csv``, None without a log); None when ``run``
    holds no ``results.json`` or no weights."""
    from binsr.train.runlog import read_val_curve

    run = Path(run)
    weights = _weights(run)
    if weights is None or not (run / "results.json").is_file():
        return None
    res = read_json(run / "results.json", "run results")
    bad = [k for k in ("model", "recipe", "scale", "steps", "train_seconds") if k not in res]
    bad += [k for k in ("scale", "steps") if k in res and not isinstance(res[k], int)]
    if bad:
        raise UsageError(f"run results file {run / 'results.json'} is not a finished binsr run's "
                         f"(missing or not an integer: {', '.join(bad)})")
    bench = _benchmark(run, weights, datasets, data_root)
    logged = (run / "log.csv").is_file()
    return {"run": run.name, "weights": weights, "model": res["model"], "recipe": res["recipe"],
            "kwargs": res.get("kwargs") or {}, "scale": int(res["scale"]), "steps": res["steps"],
            "train_seconds": res["train_seconds"], "params_k": bench["params_k"], "ops_g": bench["ops_g"],
            "metrics": bench["metrics"],
            "val_curve": [list(p) for p in read_val_curve(run / "log.csv")] if logged else None,
            "val_dataset": ((res.get("config") or {}).get("val") or {}).get("dataset") if logged else None,
            "measured": time.strftime("%Y-%m-%d", time.localtime((run / "benchmark.json").stat().st_mtime))}


def collect_runs(runs: str | Path, datasets: list[str], data_root: str | None = None,
                 exclude: Collection[tuple[str, int]] = ()) -> list[dict[str, Any]]:
    """One record per finished run under ``runs`` (a folder ``<runs>/<name>`` or ``<runs>/<dir>/<name>``
    with ``results.json`` and weights) whose (name, steps) is not in ``exclude`` (those are not
    evaluated); [] when ``runs`` does not exist."""
    found = sorted(f.parent for pattern in ("*/results.json", "zoo/*/results.json") for f in Path(runs).glob(pattern))
    return [r for run in found if (run.name, read_json(run / "results.json", "run results").get("steps"))
            not in exclude and (r := run_record(run, datasets, data_root))]


#: the keys of a run record, with their types in the archive (a record also has ``weights``: its
#: weights file, None for a run taken from the archive)
_ARCHIVED = {"run": str, "model": str, "recipe": str, "kwargs": dict, "scale": int, "steps": int,
             "train_seconds": (int, float, type(None)), "params_k": (int, float), "ops_g": (int, float),
             "metrics": dict, "val_curve": (list, type(None)), "val_dataset": (str, type(None)), "measured": str}


def _valid(rec: dict[str, Any]) -> bool:
    number = (int, float)
    return (all(isinstance(rec[k], t) for k, t in _ARCHIVED.items())
            and all(isinstance(m, dict) and isinstance(m.get("psnr"), number)
                    and isinstance(m.get("ssim"), (*number, type(None))) for m in rec["metrics"].values())
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, number) for x in p)
                    for p in rec["val_curve"] or []))


def load_archive(path: str | Path) -> dict[str, dict[str, Any]]:
    """The run records of the archive ``path`` (written by :func:`write_report`) by run name, with
    ``weights`` None; {} when there is no archive. A malformed archive is a :class:`UsageError`."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        records = {}
        for entry in read_json(path, "run archive")["runs"]:
            rec = {k: entry.get(k) for k in _ARCHIVED}
            if not _valid(rec):
                raise ValueError(f"bad run entry {rec['run']!r}")
            records[rec["run"]] = {**rec, "weights": None}
    except (UsageError, ValueError, KeyError, TypeError, AttributeError) as exc:  # UsageError: read_json's
        raise UsageError(f"run archive {path} is malformed ({type(exc).__name__}: {exc}); restore it from git "
                         "or delete it (its runs are then lost from the report)") from None
    return records


def _write_archive(path: Path, recs: list[dict[str, Any]]) -> None:
    from binsr.files import atomic_write

    text = json.dumps({"about": "run records of `binsr report` (one per reported run; read back for runs whose "
                                "folder is not on the machine); written by the command, do not edit",
                       "runs": [{k: r[k] for k in _ARCHIVED} for r in recs]}, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def collect_zoo(zoo: str | Path | None = None) -> list[dict[str, Any]]:
    """One record per zoo card in ``zoo`` (default: the package's zoo), run ``zoo:<name>``, with the
    card's numbers: nothing is evaluated; ``val_curve`` is None where the card has none; the card's
    ``note`` (``binsr zoo --add --note``) is listed under its table."""
    zoo = pretrained.ZOO_DIR if zoo is None else Path(zoo)
    records = []
    for name in pretrained.zoo_names(zoo):
        card = read_json(zoo / f"{name}.json", "model card")
        records.append({"run": pretrained.PREFIX + name, "source_run": card.get("source_run"),
                        "weights": zoo / f"{name}.safetensors", "model": card["model"], "recipe": card["recipe"],
                        "kwargs": card.get("kwargs") or {}, "scale": int(card["scale"]), "steps": card["steps"],
                        "train_seconds": card.get("train_seconds"), "params_k": card["params_k"],
                        "ops_g": card["ops_g_320x180"], "metrics": card["metrics"],
                        "val_curve": card.get("val_curve"), "val_dataset": card.get("val_dataset"),
                        "note": card.get("note")})
    return records


def _published(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UsageError(f"published results {path} not found (pass --published CSV)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _cell(m: dict | None, key_psnr: str = "psnr", key_ssim: str = "ssim") -> str:
    if not m or m.get(key_psnr) in (None, ""):
        return "-"
    ssim = m.get(key_ssim)
    return f"{float(m[key_psnr]):.2f} / {float(ssim):.4f}" if ssim not in (None, "") else f"{float(m[key_psnr]):.2f} / -"


def _table(title: str, scale: int, recs: list[dict], published: list[dict[str, str]], datasets: list[str]) -> list[str]:
    head = "| method | recipe | params (K) | OPs (G) | " + " | ".join(f"{d} PSNR / SSIM" for d in datasets)
    lines = [title, "", head + " | steps | train time | vs published (PSNR) |",
             "|---|---|---:|---:|" + "---|" * len(datasets) + "---:|---:|---|"]
    rows_pub = {r["method"]: r for r in published if r["scale"] == str(scale)}
    shown = []
    for r in sorted(recs, key=lambda r: r["run"]):
        key = (_family(r["model"]), r["recipe"])
        own = PUBLISHED_NAMES.get(key, BARS.get(key))
        diffs = []
        for name in dict.fromkeys([own, *(_FLOOR if r["recipe"] != "fp" else ())]):
            pub = rows_pub.get(name) if name else None
            if not pub:
                continue
            shown.append(name)
            parts = [f"{d} {r['metrics'][d]['psnr'] - float(pub[f'{d}_psnr']):+.2f}" for d in datasets
                     if d in r["metrics"] and pub.get(f"{d}_psnr")]
            if parts:
                diffs.append(f"{name}: " + ", ".join(parts))
        cells = [_cell(r["metrics"].get(d)) for d in datasets]
        minutes = f"{r['train_seconds'] / 60:.0f} min" if r["train_seconds"] else "-"
        mark = " †" if r["weights"] is None else ""  # taken from the archive
        lines.append(f"| {r['run']} ({r['model']}){mark} | {r['recipe']} | {r['params_k']:.1f} | "
                     f"{r['ops_g']:.2f} | " + " | ".join(cells)
                     + f" | {r['steps']} | {minutes} | {'; '.join(diffs) or '-'} |")
    for name in dict.fromkeys(["Bicubic", *shown]):
        for pub in (p for p in published if p["scale"] == str(scale) and p["method"] == name):
            cells = [_cell(pub, f"{d}_psnr", f"{d}_ssim") for d in datasets]
            lines.append(f"| *{pub['method']}* ({pub['source']}, published) | - | {pub['params_k'] or '-'} | "
                         f"{pub['ops_g'] or '-'} | " + " | ".join(cells) + " | - | - | - |")
    return lines + [""]


def random_baseline(searched: float, random: Sequence[float]) -> dict[str, Any]:
    """A searched cell's score against random cells: their mean and sample standard deviation
    (n - 1), the searched cell's rank among all the cells (1: best; a tie ranks it below) and
    whether it beats the mean by more than one standard deviation."""
    if len(random) < 2:
        raise UsageError(f"a standard deviation needs at least two random cells, got {len(random)}")
    mean, std = statistics.fmean(random), statistics.stdev(random)
    return {"mean": mean, "std": std, "rank": 1 + sum(r >= searched for r in random), "cells": len(random) + 1,
            "beats": searched > mean + std}


def _is_random(rec: dict[str, Any]) -> bool:
    return str(rec["kwargs"].get("genotype", "")).startswith("random")


def search_vs_random(records: list[dict[str, Any]], datasets: list[str]) -> str:
    """Markdown table of one search-against-random comparison (records of :func:`run_record`).

    SRBNAS runs whose genotype is ``random...`` are the random cells, the one other SRBNAS run is
    the searched cell; runs of other models (the hand-designed net of the same params) are listed
    but stay out of the statistics. Below the runs, per set: the random mean and sample std, the
    searched cell's rank among the cells and whether it beats mean + 1 std (:func:`random_baseline`).
    All runs must share the scale and the step count."""
    cells = [r for r in records if _family(r["model"]) == "srbnas"]
    random = sorted((r for r in cells if _is_random(r)), key=lambda r: r["run"])
    searched = [r for r in cells if not _is_random(r)]
    if len(searched) != 1:
        raise UsageError(f"expected one searched SRBNAS run (a genotype other than random...), got "
                         f"{len(searched)}: {', '.join(r['run'] for r in searched) or 'none'}")
    budgets = sorted({(r["scale"], r["steps"]) for r in records})
    if len(budgets) > 1:
        raise UsageError("runs differ in scale or steps (" + ", ".join(f"x{s}: {n}" for s, n in budgets)
                         + "): not a same-budget comparison")
    (scale, steps), others = budgets[0], [r for r in records if r not in cells]
    stats = {d: random_baseline(searched[0]["metrics"][d]["psnr"], [r["metrics"][d]["psnr"] for r in random])
             for d in datasets}
    lines = [f"x{scale}, {steps} steps per run; PSNR in dB (Y channel, MATLAB-bicubic LR, border = scale).", "",
             "| run | model / recipe | genotype | params (K) | " + " | ".join(f"{d} PSNR" for d in datasets) + " |",
             "|---|---|---|---:|" + "---:|" * len(datasets)]
    for r in [*searched, *random, *others]:
        lines.append(f"| {r['run']} | {r['model']} / {r['recipe']} | {r['kwargs'].get('genotype', '-')} | "
                     f"{r['params_k']:.1f} | " + " | ".join(f"{r['metrics'][d]['psnr']:.3f}" for d in datasets) + " |")
    n = len(random)
    rows = [(f"random mean (n = {n})", f"{statistics.fmean(r['params_k'] for r in random):.1f}",
             lambda st: f"{st['mean']:.3f}"),
            ("random std (n - 1)", "", lambda st: f"{st['std']:.3f}"),
            (f"searched rank (of {n + 1} cells)", "", lambda st: str(st["rank"])),
            ("searched > mean + 1 std", "", lambda st: "yes" if st["beats"] else "no")]
    for label, params, cell in rows:
        lines.append(f"| {label} | | | {params} | " + " | ".join(cell(stats[d]) for d in datasets) + " |")
    return "\n".join(lines) + "\n"


def _series(recs: list[dict]) -> list[tuple[str, Sequence[int], Sequence[float]]]:
    """(label, steps, PSNR) of the records that have validation points."""
    series = []
    for r in recs:
        if r["val_curve"]:
            steps, psnr = zip(*r["val_curve"])
            val_set = f", {r['val_dataset']}" if r.get("val_dataset") else ""
            series.append((f"{r['run']} (x{r['scale']}{val_set})", steps, psnr))
    return series


def _val_plot(series: list[tuple[str, Sequence[int], Sequence[float]]], path: Path) -> None:
    """Validation PSNR against step, one line per (label, steps, PSNR) series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, steps, psnr in series:
        ax.plot(steps, psnr, marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("validation PSNR (dB, Y)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _crops(scale: int, recs: list[dict], path: Path, data_root: str | None, image: tuple[str, int]) -> list[str]:
    """Crop comparison bicubic | each model (its ``weights`` file) | HR on one benchmark image;
    returns the panel labels."""
    import torch

    from binsr.data import BenchmarkSet, imresize, write_image
    from binsr.evaluation import upscale_image
    from binsr.models import from_weights

    pair = BenchmarkSet(image[0], scale, root=data_root)[image[1]]
    hr = pair.hr if pair.hr.ndim == 3 else np.stack([pair.hr] * 3, -1)
    h, w = hr.shape[:2]
    y0 = (h // 2 - _CROP // 2) // scale * scale
    x0 = (w // 2 - _CROP // 2) // scale * scale
    box = (slice(y0, y0 + _CROP), slice(x0, x0 + _CROP))
    panels, labels = [imresize(pair.lr, scale)[box]], ["bicubic"]
    for r in recs:
        with torch.no_grad():
            panels.append(upscale_image(from_weights(r["weights"]), pair.lr, scale)[box])
        labels.append(r["run"])
    panels.append(hr[box])
    labels.append("HR")
    panels = [p if p.ndim == 3 else np.stack([p] * 3, -1) for p in panels]
    gap = np.full((_CROP, 4, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    write_image(path, row, overwrite=True)
    return labels


def _preamble(runs: str | Path, archive: Path, published: str | Path, zoo_shown: str,
              shipped: dict[tuple[str, int], str]) -> list[str]:
    """The report's opening paragraph: where each number comes from and how it was measured."""
    lines = ["# Results", "",
             f"Generated by `binsr report` on {time.strftime('%Y-%m-%d')} from the zoo cards (`{zoo_shown}/*.json`), "
             f"`{runs}/*/results.json`, `{runs}/zoo/*/results.json` and the archive of earlier runs (`{archive}`); "
             "do not edit.",
             "Zoo rows (`zoo:<name>`) are the numbers of the model card, measured by `binsr zoo --add` with the "
             "protocol below when the model was added; they are not evaluated again.",
             "Every number of a run is measured by `binsr.evaluation.evaluate` on its `best.safetensors`: "
             "MATLAB-bicubic LR, PSNR/SSIM on the Y channel, `scale` border pixels cropped. Params = binary/32 + FP, "
             "OPs = BOPs/64 + FLOPs at a 320x180 LR input (`binsr profile`).",
             f"Each reported run is kept in `{archive}` (numbers, curve, date measured); a run whose folder is not "
             "on this machine is taken from there (marked †; no crop, no weights).",
             f"Published rows (italic) come from `{published}`, a copy of the SRBNAS (Biomimetics 2024, Tables 2-5) "
             "and SCALES (Tables III, IV, VI) tables; they were trained on other data and budgets (SCALES: DIV2K), "
             "so the difference column is a gap to close, not a like-for-like comparison.",
             "Runs named `compare_*` and `search_vs_random_*` get their own sections (one data set, optimiser and "
             "step count per section)."]
    if shipped:
        lines.append("Runs shipped as zoo models appear once in the main tables, as their zoo row: "
                     + ", ".join(f"{run} ({steps} steps, {name})" for (run, steps), name in sorted(shipped.items()))
                     + ".")
    return lines + [""]


def _group_lines(tag: str, title: str, group: list[dict], out: Path, archive: Path, pub: list[dict[str, str]],
                 datasets: list[str], data_root: str | None, crop_image: tuple[str, int]) -> tuple[list[str], list[str]]:
    """One group's tables (one per scale, with crops) and its validation-curve lines."""
    lines: list[str] = []
    val_lines: list[str] = []
    suffix = f"_{tag}" if tag else ""
    for scale in sorted({r["scale"] for r in group}):
        at = [r for r in group if r["scale"] == scale]
        lines += _table(f"### x{scale}" + (f": {title}" if title else ""), scale, at, pub, datasets)
        if notes := [f"- {r['run']}: {r['note']}" for r in at if r.get("note")]:
            lines += [*notes, ""]
        if dates := sorted({r["measured"] for r in at if r["weights"] is None}):
            lines += [f"† run folder not on this machine: numbers from the archive ({archive}), measured "
                      + ", ".join(dates) + ".", ""]
        if weighted := [r for r in at if r["weights"] is not None]:
            crops = out.with_name(f"{out.stem}_crops_x{scale}{suffix}.png")
            labels = _crops(scale, weighted, crops, data_root, crop_image)
            lines += [f"![crops x{scale}]({crops.name})", "",
                      f"{crop_image[0]} image {crop_image[1] + 1}, centre {_CROP}x{_CROP} HR crop, left to "
                      "right: " + " | ".join(labels) + ".", ""]
    if series := _series(group):
        plot = out.with_name(f"{out.stem}_val_psnr{suffix}.png")
        _val_plot(series, plot)
        caption = title or "training runs"
        val_lines += [f"{caption[0].upper()}{caption[1:]}:", "", f"![validation PSNR]({plot.name})", ""]
    if unrecorded := [r["run"] for r in group if r["val_curve"] is None]:
        val_lines += [", ".join(unrecorded) + ": curve not recorded (run folder not kept).", ""]
    return lines, val_lines


def write_report(runs: str | Path = "runs", out: str | Path = "docs/results.md",
                 published: str | Path = "docs/published_results.csv", datasets: list[str] | None = None,
                 data_root: str | None = None, crop_image: tuple[str, int] = ("Set14", 12),
                 zoo: str | Path | None = None) -> Path:
    """Collect the zoo cards (``zoo``, default: the package's zoo), the runs (local ones evaluated,
    the others from the archive ``<stem>_runs.json`` beside ``out``), write the report and the
    archive; returns the Markdown file's path."""
    datasets = datasets or ["Set5", "Set14", "B100"]
    out = Path(out)
    archive = out.with_name(f"{out.stem}_runs.json")
    pub = _published(Path(published))
    cards = collect_zoo(zoo)
    # a card's run (its source_run, same steps) is its zoo row in the main tables; the sections keep it
    shipped = {(c["source_run"], c["steps"]): c["run"] for c in cards
               if c["source_run"] and _group(c["source_run"]) == ""}
    archived = load_archive(archive)  # a malformed archive fails before any evaluation
    local = collect_runs(runs, datasets, data_root, exclude=shipped)
    recs = sorted({**archived, **{r["run"]: r for r in local}}.values(), key=lambda r: r["run"])
    if not cards and not recs:
        raise UsageError(f"no zoo cards in {zoo or pretrained.ZOO_DIR} and no finished runs in {runs} (a run folder "
                         "holds results.json and best.safetensors; train with binsr train, or pass --runs DIR)")
    zoo_shown = "src/binsr/zoo" if zoo is None else str(zoo)
    make_folder(out.parent, "report")
    lines = _preamble(runs, archive, published, zoo_shown, shipped)
    val_lines: list[str] = []
    parts = [(f"## Zoo: shipped models ({zoo_shown}/*.json)", cards, [("zoo", "zoo models")]),
             (f"## Training runs ({runs}/*/results.json, {runs}/zoo/*/results.json, {archive})",
              [r for r in recs if (r["run"], r["steps"]) not in shipped],
              [("", ""), *((tag, title) for _, title, tag in reversed(GROUPS))])]  # compare before estimators
    for heading, part, groups in parts:
        if part:
            lines += [heading, ""]
        for tag, title in groups:
            group = [r for r in part if _group(r["run"]) == tag]
            tables, curves = _group_lines(tag, title, group, out, archive, pub, datasets, data_root, crop_image)
            lines += tables
            val_lines += curves
    out.write_text("\n".join(lines + ["## Validation PSNR during training", "", *val_lines]))
    if recs:
        _write_archive(archive, recs)
    return out
