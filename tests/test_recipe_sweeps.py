"""The training recipe in a sweep: the loss, P, K, the optimiser and the schedule searched
beside the model where a spec lists them, each loss's own settings only when it is chosen, the
triplet margin only for triplets; place data refused with triplets and the other way round;
labels, params and the trial runs' own settings (end to end on generated GSV-Cities)."""
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow_helpers import store_uri
from sampling_helpers import sampled_points
from test_dataset_inputs import dataset_inputs

from orchestrator.spec import EXPERIMENTS_DIR, load_spec, spec_from_dict
from orchestrator.sweep import first_points
from orchestrator.sweep_params import fixed_params
from vpr_core.errors import UserError
from vpr_tracking.search_points import check_images
from vpr_tracking.search_space import (
    default_space,
    run_label,
    space_params,
    table_dimensions,
    uses_triplets,
    values_of,
)

RECIPE = {"arch": ["resnet18"], "aggregator": ["gem"],
          "loss": ["multi-similarity", "triplet-margin", "contrastive"],
          "ms_epsilon": {"log_uniform": [0.05, 0.2]}, "tm_margin": {"log_uniform": [0.05, 0.2]},
          "contrastive_neg_margin": {"log_uniform": [0.5, 1.0]},
          "places_per_batch": [4, 8], "optim": ["ADAMW", "SGD"],
          "lr": {"log_uniform": [1e-4, 1e-3]}}
OWN = {"multi-similarity": {"ms_epsilon"}, "triplet-margin": {"tm_margin"},
       "contrastive": {"contrastive_neg_margin"}}
COMMON = {"arch", "aggregator", "gem_p", "loss", "places_per_batch", "optim", "lr"}
# the place space without its losses' settings and P
MODEL = {k: RECIPE[k] for k in ("arch", "aggregator", "optim", "lr")}


@pytest.fixture(scope="module")
def place_root(tmp_path_factory) -> Path:
    """A folder that reads as GSV-Cities (a Dataframes/*.csv): enough for the spec's checks."""
    root = tmp_path_factory.mktemp("gsv")
    (root / "Dataframes").mkdir()
    (root / "Dataframes" / "London.csv").write_text("")
    return root


def place_spec(place_root, space=None, **sections):
    raw = {"data": {"root": str(place_root)},
           "search": {"num_samples": 6, "space": space or RECIPE},
           "train": {"weights": "none", "val_root": "/data/pitts"}, **sections}
    return spec_from_dict(raw, "recipe").validate()


def test_a_spec_that_lists_no_recipe_is_the_sweep_it_was():
    assert not {"loss", "optim", "scheduler", "places_per_batch", "ms_epsilon"} & \
        set(default_space())
    spec = spec_from_dict({}, "s").validate()
    assert uses_triplets(spec.space) and set(spec.deciding_points()) == {'{"aggregator": '
                                                                         '"netvlad"}'}
    assert not any(k.startswith(("loss", "optim", "places_", "ms_")) for k in
                   space_params(spec.space))


def test_a_recipe_setting_given_once_in_train_is_its_one_choice():
    """Specs written before the optimiser was searched (`train.optim: SGD`) still load."""
    spec = load_spec(EXPERIMENTS_DIR / "pitts30k.yaml")
    assert spec.space["optim"] == ["SGD"] and "optim" not in spec.train
    raw = {"search": {"space": {"optim": ["ADAM"]}}, "train": {"optim": "SGD"}}
    with pytest.raises(UserError, match="optim is given as train.optim and as search.space"):
        spec_from_dict(raw, "both.yaml")


def test_each_trial_samples_its_own_losss_settings_only(place_root):
    spec = place_spec(place_root)
    points, study = sampled_points(spec, 24, period=5)
    for point in points:
        assert set(point) == COMMON | OWN[point["loss"]], point  # no triplet margin either
    assert {p["loss"] for p in points[:3]} == set(OWN)  # each loss is tried first
    assert {p["optim"] for p in points} == {"ADAMW", "SGD"}


def test_the_triplet_margin_is_searched_for_triplets_only(place_root, synth_root):
    triplets = spec_from_dict({"search": {"num_samples": 2, "space": {
        "arch": ["alexnet"], "loss": ["triplet"], "optim": ["SGD", "ADAM"]}},
        "train": {"weights": "none"}}, "s").validate()
    assert {"margin", "loss", "optim"} <= set(first_points(triplets)[0])
    assert not uses_triplets(place_spec(place_root).space)
    with pytest.raises(UserError, match="search.space.margin applies to loss triplet only"):
        place_spec(place_root, {**RECIPE, "margin": 0.1})


def test_labels_params_and_columns_show_the_recipe():
    ms = {"arch": "resnet18", "aggregator": "gem", "gem_p": 3.0, "loss": "multi-similarity",
          "ms_epsilon": 0.1, "places_per_batch": 16, "lr": 1e-4}
    assert run_label(ms) == "resnet18 gem p=3 ms eps=0.1 P=16 lr=0.0001"
    logged = {k: str(v) for k, v in ms.items()} | {"margin": "0.1", "optim": "SGD"}
    assert values_of(logged, set(ms)) == ms  # the margin a place run logs is not searched
    assert "loss" not in values_of(logged)  # runs of sweeps that did not search it
    columns = [d.name for d in table_dimensions([ms])]
    assert columns == ["arch", "aggregator", "gem_p", "loss", "ms_epsilon", "places_per_batch",
                       "lr"]
    params = {k: str(v) for k, v in space_params(spec_from_dict(
        {"search": {"space": RECIPE}}, "s").space).items()}
    assert params["loss_choices"] == '["multi-similarity", "triplet-margin", "contrastive"]'
    assert params["ms_epsilon_only_with"] == '{"loss": ["multi-similarity"]}'
    assert params["contrastive_neg_margin_min"] == "0.5"
    assert "places_per_batch_only_with" not in params and "margin_min" not in params


def test_each_losss_trials_log_its_own_settings(place_root):
    spec = place_spec(place_root, train={"weights": "none", "val_root": "/data/pitts",
                                         "ms_alpha": 2.0})
    plan = SimpleNamespace(spec=spec, data_root=place_root, dataset="gsv", image_size=(64, 80))
    fixed = fixed_params(plan, on_gpu=False)
    assert fixed.shared["val_root"] == "/data/pitts" and "margin" not in fixed.of_sweep()
    for key, params in fixed.by_point.items():
        loss = "multi-similarity" if "multi-similarity" in key else \
            "triplet-margin" if "triplet-margin" in key else "contrastive"
        prefixes = {"multi-similarity": "ms_", "triplet-margin": "tm_",
                    "contrastive": "contrastive_"}
        others = [k for k in params if k.startswith(tuple(v for n, v in prefixes.items()
                                                          if n != loss))]
        assert not others, (key, params)
        assert ("momentum" in params) == ('"SGD"' in key)
    assert {p.get("ms_alpha") for k, p in fixed.by_point.items()
            if "multi-similarity" in k} == {2.0}


@pytest.mark.parametrize("change, message", [
    ({"space": {**MODEL, "loss": ["triplet"]}}, "search.space.loss triplet needs database "
                                                "images and queries"),
    ({"space": MODEL}, "holds place data (GSV-Cities or MSLS): list the losses"),
    ({"space": {**RECIPE, "loss": ["contrastive"]}},
     "search.space.ms_epsilon applies to loss multi-similarity only"),
    ({"space": {**RECIPE, "scheduler": ["warm"]}}, "search.space.scheduler must list some of"),
    ({"train": {"weights": "none"}}, "place data has no validation split"),
    ({"train": {"weights": "none", "val_root": "/v", "optim": "SGD"}},
     "optim is given as train.optim and as search.space.optim; keep one"),
    ({"search": {"start_with": [{"arch": "resnet18", "aggregator": "gem", "gem_p": 3.0,
                                 "loss": "contrastive", "ms_epsilon": 0.1,
                                 "contrastive_neg_margin": 0.7,
                                 "places_per_batch": 4, "optim": "SGD", "lr": 1e-4}]}},
     "ms_epsilon does not apply to loss contrastive"),
])
def test_impossible_recipes_are_one_clear_error(place_root, change, message):
    raw = {"data": {"root": str(place_root)},
           "search": {"num_samples": 6, "space": change.get("space", RECIPE),
                      **change.get("search", {})},
           "train": change.get("train", {"weights": "none", "val_root": "/v"})}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_dict(raw, "recipe").validate()


def test_place_losses_need_place_data_and_triplets_schedules_of_their_own(synth_root):
    with pytest.raises(UserError, match="search.space.loss multi-similarity needs place data"):
        spec_from_dict({"search": {"space": {"loss": ["triplet", "multi-similarity"]}}},
                       "s").validate()
    with pytest.raises(UserError, match="--scheduler cosine applies to place batches only"):
        spec_from_dict({"search": {"space": {"scheduler": ["step", "cosine"]}}}, "s").validate()


def test_the_gsv_cities_spec_parses(place_root):
    spec = load_spec(EXPERIMENTS_DIR / "gsv_cities.yaml")
    assert spec.space["places_per_batch"] == [120] and spec.space["images_per_place"] == [4]
    assert spec.train["image_size"] == (322, 322) and spec.train["val_root"]
    spec = dataclasses.replace(spec, data_root=place_root).validate()  # a place root
    check_images(spec.space, spec.train["image_size"])
    points = first_points(spec)
    assert {p["aggregator"]: p["arch"] for p in points} == {
        "mixvpr": "resnet50", "salad": "dinov2_vitb14", "boq": "resnet50",
        "netvlad": "resnet50"}
    assert not uses_triplets(spec.space)


def test_a_sweep_of_place_losses_on_gsv_cities(ray_session, synth_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from orchestrator.sweep import run_sweep
    from vpr_core.data.synthetic import SynthConfig, write_synthetic

    monkeypatch.chdir(tmp_path)
    gsv = tmp_path / "gsv"
    write_synthetic(SynthConfig(out=gsv, layout="gsv-cities", places=16, images_per_place=4,
                                image_size=(64, 80), show_progress=False))
    space = {"arch": ["resnet18"], "aggregator": ["gem"], "gem_p": 3.0,
             "loss": ["multi-similarity", "triplet-margin"],
             "ms_epsilon": {"log_uniform": [0.05, 0.2]}, "tm_margin": {"log_uniform": [0.05, 0.2]},
             "places_per_batch": [8], "optim": ["ADAMW"], "lr": {"log_uniform": [1e-4, 1e-3]}}
    spec = spec_from_dict({"name": "places", "data": {"root": str(gsv)},
                           "search": {"num_samples": 2, "seed": 0, "space": space},
                           "train": {"epochs": 1, "weights": "none", "val_root": str(synth_root),
                                     "warmup_steps": 2}}, "places")
    spec = dataclasses.replace(spec, tracking_uri=store_uri(tmp_path / "mlflow.db"))
    result = run_sweep(spec, storage=str(tmp_path / "ray_results"))
    assert not result.interrupted and len(result.rows) == 2
    assert {row.status for row in result.rows} == {"FINISHED"}, [r.reason for r in result.rows]
    assert {row.values["loss"] for row in result.rows} == {"multi-similarity", "triplet-margin"}
    assert any(" ms eps=" in row.label for row in result.rows)
    client = MlflowClient(spec.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["ms_epsilon_only_with"] == '{"loss": ["multi-similarity"]}'
    assert "miner_requests" not in parent.data.metrics  # no mining service: no triplets
    own = {"multi-similarity": "ms_", "triplet-margin": "tm_"}
    for row in result.rows:
        params = client.get_run(row.run_id).data.params
        mine = own[params["loss"]]
        other = next(prefix for prefix in own.values() if prefix != mine)
        assert any(k.startswith(mine) for k in params), params
        assert not any(k.startswith((other, "contrastive_", "pair_")) for k in params), params
        assert "margin" not in params and params["places_per_batch"] == "8"
        assert params["val_root"] == str(synth_root) and params["optim"] == "ADAMW"
    # every run trained on the places and measured its recalls on the --val-root split
    inputs = {("gsv-cities-train", "training"), ("synth-val", "validation")}
    assert dataset_inputs(parent) == inputs
    assert all(dataset_inputs(client.get_run(row.run_id)) == inputs for row in result.rows)
    from vpr_tracking.store import store_at

    logged = store_at(spec.tracking_uri).datasets(parent.info.run_id)
    places = next(d for d, context in logged if context == "training")
    assert places.layout == "gsv-cities" and places.source == str(gsv)
    assert places.counts == {"cities": 2, "places": 32, "images": 128}  # 16 in each city
