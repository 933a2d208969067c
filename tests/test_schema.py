"""Config files (binsr.schema.read_yaml): ``base:`` chains merge as documented; hostile files (a folder,
binary bytes, a huge file, a cycle, a chain too deep, a bad ``base`` value) are one-line UsageErrors."""

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binsr.errors import UsageError
from binsr.schema import MAX_BASE_DEPTH, MAX_CONFIG_BYTES, merge, read_yaml

_ZOO = Path(__file__).resolve().parents[1] / "configs" / "zoo"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_base_is_merged_under_the_file(tmp_path):
    _write(tmp_path, "parent.yaml", "name: parent\nseed: 0\nmodel: {name: srresnet, kwargs: {num_feat: 64, num_block: 16}}\n"
                                    "data: {train_sets: [T91, BSD200], patch_size: 96}\ntrain: {steps: 40000, lr: 5.0e-4}\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\nname: child\nmodel: {kwargs: {num_block: 4}}\n"
                                           "data: {train_sets: [T91]}\ntrain: {steps: 100}\n")
    raw = read_yaml(child)
    assert "base" not in raw
    assert raw["name"] == "child" and raw["seed"] == 0
    assert raw["model"] == {"name": "srresnet", "kwargs": {"num_feat": 64, "num_block": 4}}  # mappings merge
    assert raw["data"] == {"train_sets": ["T91"], "patch_size": 96}  # lists replace
    assert raw["train"] == {"steps": 100, "lr": 5.0e-4}


def test_base_chain_and_relative_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "a.yaml", "name: a\nseed: 1\nscale: 2\n")
    _write(tmp_path / "sub", "b.yaml", "base: ../a.yaml\nname: b\nseed: 2\n")
    c = _write(tmp_path, "c.yaml", "base: sub/b.yaml\nname: c\n")
    assert read_yaml(c) == {"name": "c", "seed": 2, "scale": 2}  # nearest file wins, paths from each file's folder


@pytest.mark.parametrize("child", sorted(p.name for p in _ZOO.glob("*.yaml") if "base:" in p.read_text()))
def test_shipped_cycle_configs_name_their_own_run(child):
    """Every shipped config with a base sets its own name (its run folder), never its parent's."""
    base = yaml.safe_load((_ZOO / child).read_text(encoding="utf-8"))["base"]
    assert read_yaml(_ZOO / child)["name"] == Path(child).stem != read_yaml(_ZOO / base)["name"]


@pytest.mark.parametrize("text, fragment", [
    ("base: self.yaml\nname: x\n", "cycle (self.yaml -> self.yaml)"),
    ("base: [a.yaml]\nname: x\n", "'base' must name a YAML file"),
    ("base: ''\nname: x\n", "'base' must name a YAML file"),
    ("base: missing.yaml\nname: x\n", "config file not found"),
    ("base: .\nname: x\n", "is not a regular file"),
])
def test_bad_base_is_refused(tmp_path, text, fragment):
    path = _write(tmp_path, "self.yaml", text)
    with pytest.raises(UsageError) as info:
        read_yaml(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_two_file_cycle_and_depth_limit(tmp_path):
    _write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\nname: b\n")
    with pytest.raises(UsageError, match=r"cycle \(a.yaml -> b.yaml -> a.yaml\)"):
        read_yaml(tmp_path / "a.yaml")
    for i in range(MAX_BASE_DEPTH + 1):  # f0 <- f1 <- ... : f_n names f_{n-1}
        _write(tmp_path, f"f{i}.yaml", (f"base: f{i - 1}.yaml\n" if i else "") + f"name: f{i}\n")
    assert read_yaml(tmp_path / f"f{MAX_BASE_DEPTH - 1}.yaml")["name"] == f"f{MAX_BASE_DEPTH - 1}"
    with pytest.raises(UsageError, match=f"more than {MAX_BASE_DEPTH} 'base' files"):
        read_yaml(tmp_path / f"f{MAX_BASE_DEPTH}.yaml")


def test_hostile_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes([0xD2, 0x80, 0xFF, 0x00]) * 16)
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:  # sparse: the size is declared, not written
        f.truncate(MAX_CONFIG_BYTES + 1)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 200_000 + "]" * 200_000)
    cases = {tmp_path: "is not a regular file", binary: "is not UTF-8 text", huge: f"at most {MAX_CONFIG_BYTES}",
             deep: "nests deeper than a config can"}
    if os.path.exists("/dev/zero"):
        cases[Path("/dev/zero")] = "is not a regular file"  # endless: must never be read
    for path, fragment in cases.items():
        with pytest.raises(UsageError) as info:
            read_yaml(path)
        assert fragment in str(info.value) and "\n" not in str(info.value)


_values = st.recursive(st.integers() | st.text(max_size=3) | st.none() | st.lists(st.integers(), max_size=2),
                       lambda inner: st.dictionaries(st.sampled_from("abc"), inner, max_size=3), max_leaves=8)
_mappings = st.dictionaries(st.sampled_from("abcd"), _values, max_size=4)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # CI cores are shared with trainings
@given(_mappings, _mappings)
def test_merge_properties(base, over):
    before = repr(base), repr(over)
    out = merge(base, over)
    assert (repr(base), repr(over)) == before  # neither argument changed
    assert set(out) == set(base) | set(over)
    for key, value in over.items():  # the file wins, key by key at every depth
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            assert out[key] == merge(base[key], value)
        else:
            assert out[key] == value
    for key in set(base) - set(over):
        assert out[key] == base[key]
    assert merge(out, over) == out  # laying the same file twice changes nothing
