"""Weights files whose metadata lies (issue 16): each is refused in one line (exit 1) before
anything of the claimed size is built, within a measured memory bound, leaving no output."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from binsr.errors import BinsrError
from binsr.models import build_for_eval, create, from_weights
from binsr.models._checked import check_kwargs, kwarg_names
from binsr.train.checkpoint import save_weights

KWARGS = {"num_block": 2, "num_feat": 16}
SLACK_MIB = 64  # hostile files may take this much memory above loading the honest one


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """An honest weights file of a small binary SRResNet, its tensors and metadata."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "good.safetensors"
    save_weights(path, create("srresnet_small", 4, "e2fif", **KWARGS))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    return path, load_file(path), meta


def _lie(good, tmp_path, name="bad", tensors=None, **meta):
    """A copy of the honest file with some metadata fields (strings) or tensors replaced."""
    _, good_tensors, good_meta = good
    path = tmp_path / f"{name}.safetensors"
    save_file(good_tensors if tensors is None else tensors, str(path), metadata={**good_meta, **meta})
    return path


def _mutations(good):
    """(case, metadata changes, tensor changes): every kwarg set to sizes that are zero, negative,
    off by one and huge, unknown names, wrong types, and tensors that disagree with the metadata."""
    _, tensors, meta = good
    kwargs = json.loads(meta["kwargs"])
    cases = []
    for key, value in kwargs.items():
        if isinstance(value, int) and not isinstance(value, bool):
            for v in (0, -3, value + 1, 100_000, 2_000_000, 2**62):
                cases.append((f"{key}={v}", {"kwargs": json.dumps({**kwargs, key: v})}, None))
    cases += [
        ("unknown kwarg", {"kwargs": json.dumps({**kwargs, "bogus": 1})}, None),
        ("kwargs a list", {"kwargs": "[1, 2]"}, None),
        ("kwargs a number", {"kwargs": "5"}, None),
        ("kwargs not JSON", {"kwargs": "{"}, None),
        ("NaN float kwarg", {"kwargs": json.dumps({**kwargs, "res_scale": float("nan")})}, None),
        ("string size", {"kwargs": json.dumps({**kwargs, "num_feat": "16"})}, None),
        ("unknown model", {"model": "nope"}, None),
        ("unknown recipe", {"recipe": "nope"}, None),
        ("scale 0", {"scale": "0"}, None),
        ("scale 5", {"scale": "5"}, None),
        ("scale not a number", {"scale": "x4"}, None),
    ]
    first = sorted(tensors)[0]
    cases += [
        ("NaN tensor", {}, {**tensors, first: torch.full_like(tensors[first], float("nan"))}),
        ("inf tensor", {}, {**tensors, first: torch.full_like(tensors[first], float("inf"))}),
        ("missing tensor", {}, {k: v for k, v in tensors.items() if k != first}),
        ("extra tensor", {}, {**tensors, "extra.weight": torch.zeros(3)}),
        ("wrong shape", {}, {**tensors, "conv_first.weight": torch.zeros(17, 3, 3, 3)}
         if "conv_first.weight" in tensors else {**tensors, first: torch.zeros(tensors[first].numel() + 1)}),
    ]
    return cases


def _static_good():
    """The honest file's tensors and metadata, built at import for the parametrization."""
    torch.manual_seed(0)
    model = create("srresnet_small", 4, "e2fif", **KWARGS)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    from binsr.train.checkpoint import _encode

    return None, state, _encode(model.signature, None)


MUTATIONS = _mutations(_static_good())


@pytest.mark.parametrize("case, meta, tensors", MUTATIONS, ids=[m[0] for m in MUTATIONS])
@pytest.mark.parametrize("load", [from_weights, lambda p: build_for_eval("srresnet_small", 4, weights=str(p))],
                         ids=["from_weights", "build_for_eval"])
def test_lying_weights_file_is_one_line_exit_1(good, tmp_path, case, meta, tensors, load):
    path = _lie(good, tmp_path, tensors=tensors, **meta)
    with pytest.raises(BinsrError) as err:
        load(path)
    assert type(err.value) is BinsrError and err.value.exit_code == 1, case  # a bad file, not a usage error
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(KWARGS)), value=st.integers(-2**63, 2**63 - 1))
def test_any_integer_in_the_metadata_loads_only_if_it_is_the_true_one(good, tmp_path, key, value):
    """Property: an integer kwarg builds a model exactly when it equals what the tensors imply."""
    path = _lie(good, tmp_path, name=f"{key}{value}", kwargs=json.dumps({**json.loads(good[2]["kwargs"]), key: value}))
    if value == KWARGS[key]:
        assert set(from_weights(path).state_dict()) == set(good[1])
    else:
        with pytest.raises(BinsrError, match="^[^\n]*$"):
            from_weights(path)


def test_kwarg_names_follow_the_model_class():
    names = kwarg_names("srresnet_small")
    assert {"num_block", "num_feat"} <= names and not {"scale", "recipe", "self"} & names
    assert "num_cells" in kwarg_names("srbnas") and "depths" in kwarg_names("swinir_light")


@pytest.mark.parametrize("kwargs, message", [
    ({"num_feat": -3}, "cannot be built with kwargs"),
    ({"bogus": 1}, "srresnet_small takes no kwarg bogus"),
    ({"num_feat": 2_000_000}, "hold 2000000; a config's model sizes are at most 1024"),
    ({"num_feat": 1024, "num_block": 1024}, "srresnet_small with kwargs .* needs at least .* GiB, more than the"),
])
def test_config_kwargs_are_one_line_usage_errors(kwargs, message):
    from binsr.errors import UsageError

    with pytest.raises(UsageError, match=message) as err:
        check_kwargs("srresnet_small", 4, "e2fif", kwargs)
    assert "\n" not in str(err.value)


_PEAK = textwrap.dedent("""
    import json, resource, sys
    from binsr.errors import BinsrError
    from binsr.models import from_weights
    from_weights(sys.argv[1])  # the honest file: imports, one build, one load
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    codes = []
    for path in sys.argv[2:]:
        try:
            from_weights(path)
            codes.append(0)
        except BinsrError as exc:
            codes.append(exc.exit_code)
    print(json.dumps({"base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "codes": codes}))
""")


def test_lying_files_stay_within_the_memory_of_an_honest_one(good, tmp_path):
    """Peak RSS (ru_maxrss, one subprocess) over every lying file stays within SLACK_MIB of the
    peak after loading the honest file (before the fix, num_block=100000 grew past 5 GiB)."""
    paths = [str(_lie(good, tmp_path, name=f"m{i}", tensors=t, **m)) for i, (_, m, t) in enumerate(MUTATIONS)]
    out = subprocess.run([sys.executable, "-c", _PEAK, str(good[0]), *paths], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    result = json.loads(out.stdout)
    assert result["codes"] == [1] * len(paths)
    assert (result["peak"] - result["base"]) / 1024 < SLACK_MIB, result


_TIMED_RUN = "import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); " \
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); " \
             "sys.exit(r.returncode)"


@pytest.mark.parametrize("case, command", [("num_block=100000", "upscale"), ("NaN tensor", "export")])
def test_cli_refuses_a_lying_file_in_one_line(good, tmp_path, case, command):
    """``binsr upscale --model FILE`` or ``binsr export --weights FILE``: exit 1, one line on
    stderr, no traceback, no output file, peak RSS under 1 GiB (torch alone takes ~250 MiB)."""
    (_, meta, tensors), = [m for m in MUTATIONS if m[0] == case]
    path = _lie(good, tmp_path, tensors=tensors, **meta)
    img = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(img)
    argv = {"upscale": ["upscale", str(img), "-o", str(tmp_path / "out"), "--model", str(path), "--backend", "torch"],
            "export": ["export", "--model", "srresnet_small", "--weights", str(path), "--out", str(tmp_path / "m.bsr")]}
    rss = tmp_path / "rss"
    r = subprocess.run([sys.executable, "-c", _TIMED_RUN, str(rss), sys.executable, "-m", "binsr", *argv[command]],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert int(rss.read_text()) < 1024 * 1024  # KiB
    assert not (tmp_path / "m.bsr").exists() and not list((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("backend", ["torch", "engine"])
def test_upscale_refuses_an_output_that_overflows_float32(good, tmp_path, capsys, backend):
    """Weights each finite in float32 whose sums overflow (the last conv's at +-3e38): the picture
    fails in one line naming the cause (exit 1, no output file), not as a black image, on the
    PyTorch backend and on the engine (the weights exported to a packed file first)."""
    from PIL import Image

    from binsr.cli import main

    _, tensors, _ = good
    path = _lie(good, tmp_path, tensors={**tensors, "tail.3.weight": torch.sign(tensors["tail.3.weight"]) * 3e38})
    img = tmp_path / "in.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(img)
    rc = main(["upscale", str(img), "-o", str(tmp_path / "out"), "--model", str(path), "--backend", backend, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "output holds NaN or infinite values" in err[0], err
    assert not list((tmp_path / "out").glob("*"))
