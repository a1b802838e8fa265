import dataclasses

import optuna
import pytest

from orchestrator.space_sampler import SpaceSampler
from orchestrator.spec import EXPERIMENTS_DIR, load_spec, spec_from_dict
from orchestrator.sweep import first_points, plan_resources
from vpr_core.errors import UserError


@pytest.mark.parametrize("name", ["smoke", "pitts30k", "pretrained_vgg16", "compress"])
def test_the_shipped_specs_load(name):
    spec = load_spec(EXPERIMENTS_DIR / f"{name}.yaml").validate()
    assert spec.name == name


def test_the_compression_spec_expands_its_variants():
    from orchestrator.compress_sweep import expand

    variants = expand(load_spec(EXPERIMENTS_DIR / "compress.yaml").compress["variants"])
    assert len(variants) == 3 + 4 + 1 + 1 + 1 + 2  # every combination of the list values
    assert {"method": "prune", "structure": "channels", "amount": 0.5, "finetune_epochs": 2,
            "finetune_lr": 1e-3} in variants


def test_smoke_is_the_embedded_default():
    spec = load_spec(None)
    assert spec.name == "smoke" and spec.data_root is None
    assert set(spec.space["arch"]) == {"alexnet", "vgg16"} and spec.train["weights"] == "none"


@pytest.mark.parametrize("raw, message", [
    ({"search": {"num_samples": 1}}, "fewer than the 2 first trials"),
    ({"surprise": 1}, "unknown key(s) surprise"),
    ({"train": {"epochs": 2, "colour": "red"}}, "unknown key(s) colour"),
    ({"train": {"lr": 0.1}}, "train.lr is searched: give it under search.space.lr"),
    ({"train": {"epochs": 0}}, "--epochs"),
    ({"search": {"space": {"arch": ["resnet"]}}}, "search.space.arch"),
    ({"search": {"space": {"lr": {"log_uniform": [0.1, 0.01]}}}}, "search.space.lr"),
    ({"search": {"metric": "accuracy"}}, "search.metric"),
    ({"search": {"num_samples": "many"}}, "search.num_samples (--num-samples) must be an integer"),
    ({"resources": {"cpus_per_trial": 0}}, "cpus_per_trial"),
])
def test_bad_specs_are_one_clear_error(raw, message):
    with pytest.raises(UserError) as caught:
        spec_from_dict(raw, "spec.yaml").validate()
    assert message in str(caught.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsearch: [1, 2\ntrain: {}\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_spec(path)


def test_every_architecture_is_in_the_first_points():
    """A spec of before the aggregator was searched: NetVLAD only, the same first points."""
    spec = spec_from_dict({"search": {"space": {"arch": ["alexnet", "vgg16"],
                                                "num_clusters": [8, 16, 32],
                                                "lr": {"log_uniform": [1e-3, 1e-2]}}}}, "s")
    points = first_points(spec)
    assert [p["arch"] for p in points] == ["alexnet", "vgg16"]
    assert all(p == {"aggregator": "netvlad", "arch": p["arch"], "num_clusters": 16,
                     "lr": 1e-3, "margin": 0.1} for p in points)
    trial = optuna.trial.FixedTrial({"aggregator": "netvlad", "arch": "vgg16",
                                     "num_clusters": 32, "margin": 0.2, "lr": 5e-3})
    assert SpaceSampler(spec.space)(trial) == {"aggregator": "netvlad", "arch": "vgg16",
                                               "num_clusters": 32, "margin": 0.2, "lr": 5e-3}


def test_concurrency_follows_the_resources():
    spec = spec_from_dict({}, "s")
    assert plan_resources(spec, {"CPU": 2}) == ({"cpu": 1, "gpu": 0.0}, 2, 0.0)
    assert plan_resources(spec, {"CPU": 16, "GPU": 1}) == ({"cpu": 1, "gpu": 0.45}, 2, 0.1)
    assert plan_resources(spec, {"CPU": 16, "GPU": 4})[1] == 8
    spec = dataclasses.replace(spec, max_concurrent=1)
    assert plan_resources(spec, {"CPU": 8})[1] == 1
    spec = dataclasses.replace(spec, cpus_per_trial=4)
    with pytest.raises(UserError, match="one trial needs 4"):
        plan_resources(spec, {"CPU": 2})
    spec = dataclasses.replace(spec, cpus_per_trial=1, gpus_per_trial=0.5)
    with pytest.raises(UserError, match="no GPU"):
        plan_resources(spec, {"CPU": 2})
