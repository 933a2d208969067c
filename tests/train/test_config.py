"""Config schema: every shipped config loads; unknown keys, bad types and bad names are refused."""

import copy
from pathlib import Path

import pytest

from binsr.errors import UsageError
from binsr.train.config import RESUME_NEUTRAL, apply_overrides, config_diff, config_from_dict, load_config, with_defaults

_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p for folder in ("train", "zoo", "ab", "compare", "teacher") for p in (_ROOT / folder).glob("*.yaml"))


def test_trainer_configs_are_shipped():
    assert {"srresnet_e2fif_x4_small.yaml", "srresnet_e2fif_x4.yaml", "srresnet_fp_x4.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_shipped_config_loads(path):
    cfg = load_config(path)  # schema, types and the model/recipe names
    assert cfg.name in (path.stem, f"compare_{path.stem}")  # configs/compare: runs named compare_<file>


def test_defaults_and_overrides():
    raw = apply_overrides({"name": "x"}, ["train.lr=1e-4", "model.kwargs.num_block=4", "data.train_sets=[T91]",
                                           "train.scheduler.type=multistep", "train.scheduler.milestones=[10, 20]"])
    cfg = config_from_dict(raw, check_names=False)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.kwargs == {"num_block": 4}
    assert cfg.data.train_sets == ["T91"]
    assert cfg.train.scheduler.milestones == [10, 20]
    assert cfg.train.steps == 100_000 and cfg.val.dataset == "Set5"  # untouched defaults


@pytest.mark.parametrize("raw, fragments", [
    ({"name": "x", "train": {"lrr": 1}}, ["'train.lrr'", "steps, lr, optimizer"]),
    ({"name": "x", "optim": {}}, ["'optim'", "name, scale, seed, model, data, train, val, log"]),
    ({"name": "x", "train": {"scheduler": {"typ": "cosine"}}}, ["'train.scheduler.typ'", "eta_min"]),
])
def test_unknown_keys_are_named_with_the_valid_ones(raw, fragments):
    with pytest.raises(UsageError) as err:
        config_from_dict(raw, check_names=False)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize("raw, fragment", [
    ({"name": "x", "train": {"steps": "many"}}, "'train.steps': expected an integer"),
    ({"name": "x", "train": {"ema": 1.5}}, "train.ema"),
    ({"name": "x", "scale": 3, "data": {"patch_size": 64}}, "not a multiple of scale 3"),
    ({"name": "x", "train": {"scheduler": {"type": "cosine", "milestones": [5]}}}, "only used by type multistep"),
    ({"name": "x", "train": {"optimizer": {"type": "sgd"}}}, "valid: adam"),
    ({"name": "x", "log": {"tensorboard": "yes"}}, "expected true or false"),
    ({"scale": 4}, "'name' is required"),
    ({"name": ".."}, "'name' must be a folder name"),  # the run folder would be runs/.., the project
    ({"name": "a/b"}, "'name' must be a folder name"),
    ({"name": "x", "seed": -1}, "'seed' must be in [0, 4294967295]"),  # torch.manual_seed: a traceback
    ({"name": "x", "seed": 10**30}, "'seed' must be in [0, 4294967295]"),  # an overflow traceback
    ({"name": "x", "train": {"scheduler": {"eta_min": -1.0}}}, "'train.scheduler.eta_min' must be >= 0"),
    ({"name": "x", "data": {"num_workers": 100000}}, "data.num_workers is at most 64"),  # as many processes
])
def test_bad_values_are_refused(raw, fragment):
    with pytest.raises(UsageError, match=None) as err:
        config_from_dict(raw, check_names=False)
    assert fragment in str(err.value)


def test_yaml_float_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  lr: 1e-4\n")  # PyYAML alone reads this as a string
    assert load_config(path, check_names=False).train.lr == 1e-4


def test_unknown_model_and_recipe_list_the_valid_ones():
    from binsr.models import names
    from binsr.nn.recipes import recipe_names

    with pytest.raises(UsageError, match=f"unknown model 'nope'; valid models: {names()[0]}"):
        config_from_dict({"name": "x", "model": {"name": "nope"}})
    with pytest.raises(UsageError, match=f"unknown recipe 'nope'; valid recipes: {recipe_names()[0]}"):
        config_from_dict({"name": "x", "model": {"name": "srresnet", "recipe": "nope"}})


def test_bad_override_syntax():
    with pytest.raises(UsageError, match="key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(UsageError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_config_diff_ignores_neutral_prefixes():
    a = config_from_dict({"name": "x"}, check_names=False).to_dict()
    b = config_from_dict({"name": "x", "train": {"lr": 1e-3}, "log": {"every": 5}}, check_names=False).to_dict()
    assert config_diff(a, b, ignore=("log.",)) == ["train.lr: 0.0002 -> 0.001"]
    c = config_from_dict({"name": "x", "model": {"init_from": "runs/a/best.safetensors"}}, check_names=False).to_dict()
    assert config_diff(a, c, ignore=RESUME_NEUTRAL) == []  # read only when a run starts, never on resume


def test_with_defaults_fills_keys_added_since_a_run_started():
    new = config_from_dict({"name": "x"}, check_names=False).to_dict()
    old = copy.deepcopy(new)
    del old["train"]["distill"]  # a run started before train.distill existed
    assert config_diff(old, new) != []
    assert config_diff(with_defaults(old), new) == []
    removed = {**new, "gone": 1}  # a key the schema no longer reads: kept, so the diff names it
    assert config_diff(with_defaults(removed), new) == ["gone: 1 -> None"]


def test_warm_starts_name_the_run_of_a_shipped_config():
    """A config that starts from weights starts from a run another shipped config trains
    (``runs/.../<its name>/best.safetensors``), never from a zoo file that a later cycle replaces."""
    names = {load_config(p, check_names=False).name for p in CONFIGS}
    for path in CONFIGS:
        init = load_config(path, check_names=False).model.init_from
        if init is not None:
            assert init.startswith("runs/") and Path(init).parent.name in names, (path.name, init)
