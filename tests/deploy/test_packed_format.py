"""docs/PACKED_FORMAT.md describes every op the runtime runs and every field the exporter writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from binsr.deploy import export_packed
from binsr.deploy.runtime import DEFAULTS, FORMAT, VERSION
from binsr.models import create

DOC = Path(__file__).resolve().parents[2] / "docs" / "PACKED_FORMAT.md"
RUNTIME = Path(__file__).resolve().parents[2] / "src" / "binsr" / "deploy" / "runtime.py"


def _rows() -> dict[str, str]:
    """op name -> the text of its row in the doc's ops table."""
    rows = re.findall(r"^\| `(\w+)` \| (.*)$", DOC.read_text(), flags=re.M)
    return dict(rows)


def test_every_runtime_op_is_documented() -> None:
    kinds = set(re.findall(r'kind == "(\w+)"', RUNTIME.read_text()))
    assert len(kinds) >= 13 and kinds == set(_rows())


def test_header_version_and_defaults_are_the_documented_ones() -> None:
    text = DOC.read_text()
    assert f'"format": "{FORMAT}", "version": {VERSION}' in text and f"format v{VERSION}" in text
    for key, value in DEFAULTS.items():
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
        assert f"`{key}` {shown}" in text, key


@pytest.mark.parametrize("name,recipe", [("srresnet_small", "e2fif"), ("srresnet_small", "scales"),
                                         ("srresnet_small", "bbcu"), ("swinir_light", "scales"),
                                         ("srbnas", "irnet")])
def test_every_written_field_is_documented(tmp_path, name: str, recipe: str) -> None:
    torch.manual_seed(0)
    kwargs = {"embed_dim": 24, "depths": (2,), "num_heads": (2,), "window_size": 4} if name == "swinir_light" else {}
    export_packed(create(name, scale=2, recipe=recipe, **kwargs).eval(), tmp_path / "m.bsr")
    with safe_open(str(tmp_path / "m.bsr"), framework="numpy") as f:
        graph = json.loads(f.metadata()["binsr"])
    rows = _rows()
    for op in graph["ops"]:
        fields = set(re.findall(r"`(\w+)`", rows[op["op"]].split(" | ")[0]))
        assert set(op) - {"op"} <= fields, (op["op"], set(op) - {"op"} - fields)
