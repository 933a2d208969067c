"""Weights files: round trip, refusal of other architectures/scales, truncated and foreign files."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from _trainkit import TinySR
from binsr.errors import BinsrError
from binsr.files import atomic_write
from binsr.train.checkpoint import (init_weights, load_state, load_weights, read_weights, save_state,
                                    save_weights)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = TinySR(scale=2, feat=8)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, extra={"step": 12})
    return model, path


def test_round_trip_and_metadata(saved):
    model, path = saved
    other = TinySR(scale=2, feat=8)
    state = load_weights(other, path)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v) and torch.equal(state[k], v)
    _, meta = read_weights(path)
    assert meta["model"] == "tiny" and meta["recipe"] == "fp" and meta["scale"] == "2"
    assert json.loads(meta["kwargs"]) == {"feat": 8} and meta["step"] == "12"
    assert set(load_weights({"model": "tiny", "recipe": "fp", "scale": 2, "kwargs": {"feat": 8}}, path)) == set(state)
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]  # no temp file left


@pytest.mark.parametrize("make, fragment", [
    (lambda: TinySR(scale=4, feat=8), "scale 2 (file) vs 4 (model)"),
    (lambda: TinySR(scale=2, feat=4), "kwargs.feat 8 (file) vs 4 (model)"),
])
def test_other_architecture_or_scale_is_refused(saved, make, fragment):
    _, path = saved
    with pytest.raises(BinsrError) as err:
        load_weights(make(), path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_signature_recipe_mismatch_and_layer_mismatch(saved):
    _, path = saved
    with pytest.raises(BinsrError, match="recipe 'fp' \\(file\\) vs 'e2fif' \\(model\\)"):
        load_weights({"model": "tiny", "recipe": "e2fif", "scale": 2, "kwargs": {"feat": 8}}, path)
    model = TinySR(scale=2, feat=8)
    model.extra = torch.nn.Linear(1, 1)  # same signature, different layers
    with pytest.raises(BinsrError, match="missing: extra.bias, extra.weight"):
        load_weights(model, path)


def test_truncated_and_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (4, 100, len(data) - 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(BinsrError, match="truncated or foreign"):
            load_weights(TinySR(), bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(BinsrError, match="truncated or foreign"):
        load_weights(TinySR(), junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(BinsrError, match="without binsr metadata"):
        load_weights(TinySR(), plain)
    with pytest.raises(BinsrError, match="not found"):
        load_weights(TinySR(), tmp_path / "missing.safetensors")
    with pytest.raises(BinsrError, match="not a regular file"):  # a folder, not "not found"
        load_weights(TinySR(), tmp_path)


def test_training_state_round_trip_and_truncation(tmp_path):
    path = tmp_path / "s.pt"
    save_state(path, {"step": 3, "t": torch.arange(4), "nested": {"x": [1.5, "a"]}})
    state = load_state(path)
    assert state["step"] == 3 and torch.equal(state["t"], torch.arange(4)) and state["nested"]["x"] == [1.5, "a"]
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(BinsrError, match="not a readable training state"):
        load_state(path)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_init_weights_copies_what_fits_across_scales(saved):
    model, path = saved  # x2
    other = TinySR(scale=4, feat=8)
    fresh_tail = other.tail.weight.detach().clone()
    loaded, skipped = init_weights(other, path)
    assert loaded == ["head.bias", "head.weight"] and skipped == ["tail.bias", "tail.weight"]
    assert torch.equal(other.head.weight, model.head.weight) and torch.equal(other.tail.weight, fresh_tail)
    with pytest.raises(BinsrError, match="no tensor"):
        init_weights(TinySR(scale=4, feat=4), path)
    foreign = TinySR(scale=2, feat=8)
    foreign.signature = dict(foreign.signature, recipe="e2fif")
    with pytest.raises(BinsrError, match="recipe 'fp' \\(file\\) vs 'e2fif'"):
        init_weights(foreign, path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(saved, tmp_path, value):
    """NaN/inf weights (a diverged run) are one line at load, not a black image later."""
    model, _ = saved
    model.head.weight.data[0, 0, 0, 0] = value
    path = tmp_path / "bad.safetensors"
    save_weights(path, model)
    with pytest.raises(BinsrError, match="holds NaN or infinite weights \\(head.weight\\)") as err:
        load_weights(TinySR(scale=2, feat=8), path)
    assert "\n" not in str(err.value)
