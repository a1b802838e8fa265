"""Sweeps across models: the aggregator searched beside the backbone, each aggregator's own
settings searched only when it is chosen (Optuna define-by-run), and everything that reads a
trial's values (labels, tables, params, the report) without the values a trial has not."""
from pathlib import Path

import optuna
import pytest
from sampling_helpers import sampled_points

from dashboards.search_views import draw_views, rebuild_study
from orchestrator.space_sampler import SpaceSampler
from orchestrator.spec import spec_from_dict
from orchestrator.sweep import first_points
from vpr_core.config import TrainConfig
from vpr_core.errors import UserError
from vpr_tracking.search_points import check_images, check_point
from vpr_tracking.search_space import run_label, space_from_params, space_params, values_of
from vpr_tracking.store import RunRecord

MODELS = {"arch": ["resnet18", "vgg16", "dinov2_vits14"],
          "aggregator": ["netvlad", "gem", "mixvpr", "salad", "boq"],
          "num_clusters": [4, 8], "gem_p": {"log_uniform": [2.0, 4.0]},
          "margin": 0.1, "lr": {"log_uniform": [1e-4, 1e-3]}}
OWN = {"netvlad": {"num_clusters"}, "salad": {"num_clusters"}, "gem": {"gem_p"},
       "mixvpr": {"mixvpr_out_rows"}, "boq": {"boq_num_queries"}}  # each aggregator's settings
COMMON = {"aggregator", "arch", "margin", "lr"}


def models_spec(**search):
    return spec_from_dict({"search": {"num_samples": 12, "space": MODELS, **search}},
                          "models").validate()


def test_each_trial_samples_its_aggregators_settings_and_a_backbone_it_fits():
    spec = models_spec()
    points, study = sampled_points(spec, 30, period=7)
    for point in points:
        assert set(point) == COMMON | OWN[point["aggregator"]], point
        assert check_point(spec.space, point) == point  # inside the space, the values fit
        assert point["margin"] == 0.1  # a constant: returned, not sampled
    assert {p["arch"] for p in points if p["aggregator"] == "salad"} == {"dinov2_vits14"}
    assert {p["aggregator"] for p in points} == set(OWN)
    # the first points, as Optuna was given them: SALAD's backbone under a name of its own
    assert points[:5] == [dict(p, margin=0.1) for p in first_points(spec)]
    assert study.trials[3].params["arch_for_salad"] == "dinov2_vits14"


def test_a_fixed_trial_gives_exactly_its_aggregators_settings():
    space = models_spec().space
    gem = optuna.trial.FixedTrial({"aggregator": "gem", "arch": "resnet18", "gem_p": 3.0,
                                   "lr": 1e-4})
    assert SpaceSampler(space)(gem) == {"aggregator": "gem", "arch": "resnet18", "gem_p": 3.0,
                                        "margin": 0.1, "lr": 1e-4}
    salad = optuna.trial.FixedTrial({"aggregator": "salad", "arch_for_salad": "dinov2_vits14",
                                     "num_clusters": 8, "lr": 2e-4})
    assert SpaceSampler(space)(salad) == {"aggregator": "salad", "arch": "dinov2_vits14",
                                          "num_clusters": 8, "margin": 0.1, "lr": 2e-4}


def test_first_points_try_every_aggregator_and_architecture_once():
    points = first_points(models_spec())
    assert [(p["aggregator"], p["arch"]) for p in points] == [
        ("netvlad", "resnet18"), ("gem", "vgg16"), ("mixvpr", "dinov2_vits14"),
        ("salad", "dinov2_vits14"), ("boq", "resnet18")]
    assert points[1] == {"aggregator": "gem", "arch": "vgg16", "gem_p": 3.0, "lr": 1e-4}
    # a spec of before: NetVLAD only, start_with entries without the aggregator
    old = spec_from_dict({"search": {"num_samples": 2, "start_with": [
        {"arch": "alexnet", "num_clusters": 16, "margin": 0.1, "lr": 1e-4}]}}, "s").validate()
    assert first_points(old) == [{"arch": "alexnet", "num_clusters": 16, "margin": 0.1,
                                  "lr": 1e-4, "aggregator": "netvlad"}]


@pytest.mark.parametrize("search, message", [
    ({"space": {**MODELS, "arch": ["alexnet", "vgg16"]}},
     "search.space.aggregator salad fits none of search.space.arch: the salad aggregator takes "
     "a ViT's class token"),
    ({"space": {"aggregator": ["netvlad"], "gem_p": 3.0}},
     "search.space.gem_p applies to aggregator gem only"),
    ({"start_with": [{"aggregator": "netvlad", "arch": "vgg16", "num_clusters": 4,
                      "gem_p": 3.0, "lr": 1e-4}]}, "gem_p does not apply to aggregator netvlad"),
    ({"start_with": [{"aggregator": "gem", "arch": "vgg16", "lr": 1e-4}]}, "lacks gem_p"),
    ({"start_with": [{"aggregator": "salad", "arch": "vgg16", "num_clusters": 4,
                      "lr": 1e-4}]}, "takes a ViT's class token"),
    ({"num_samples": 4}, "fewer than the 5 first trials"),
])
def test_impossible_spaces_and_points_are_one_clear_error(search, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models_spec(**search)


def test_fixed_settings_go_to_the_trials_of_their_aggregator_only():
    spec = spec_from_dict({"search": {"num_samples": 2, "space": {
        "arch": ["alexnet"], "aggregator": ["netvlad", "gem"]}},
        "train": {"gem_fc_dim": 64, "weights": "none"}}, "s").validate()
    netvlad = spec.trial_config({"aggregator": "netvlad", "arch": "alexnet", "num_clusters": 4})
    gem = spec.trial_config({"aggregator": "gem", "arch": "alexnet", "gem_p": 3.0})
    assert netvlad.gem_fc_dim is None and gem.gem_fc_dim == 64
    # a trial restored from its checkpoint (after a worker's death, a sweep's resume) is not
    # given its aggregator's settings again: `train --resume` would refuse them
    restored = spec.trial_config({"aggregator": "gem", "arch": "alexnet", "gem_p": 3.0},
                                 resume=Path("/trial/checkpoint.pth.tar"))
    assert (restored.gem_p, restored.gem_fc_dim, restored.aggregator) == (None, None, "gem")
    with pytest.raises(UserError, match="train.gem_fc_dim applies to aggregator gem only"):
        spec_from_dict({"train": {"gem_fc_dim": 64}}, "s").validate()
    with pytest.raises(UserError, match="train.aggregator is searched"):
        spec_from_dict({"train": {"aggregator": "gem"}}, "s")
    # what no sweep can make, no training run makes either
    with pytest.raises(UserError, match="the salad aggregator takes a ViT's class token"):
        TrainConfig(arch="resnet18", aggregator="salad", weights="none").validate()


def test_the_images_must_fit_every_model_of_the_space():
    space = models_spec().space
    check_images(space, (56, 70))  # 4 x 5 patches: more than 8 clusters
    with pytest.raises(UserError, match="multiples of its 14-pixel patches, not 64x80; pass "
                                        "--image-size 70x84"):
        check_images(space, (64, 80))
    with pytest.raises(UserError, match="num_clusters 4, 8: salad needs fewer clusters than "
                                        "the 4 patches"):
        check_images(space, (28, 28))
    with pytest.raises(UserError, match="mixvpr works on a feature map of one size"):
        check_images(space, None)
    check_images({**space, "arch": ["vgg16"], "aggregator": ["netvlad"]}, (64, 80))


def test_labels_params_and_values_leave_out_what_a_trial_has_not():
    gem = {"arch": "resnet18", "aggregator": "gem", "gem_p": 3.0, "margin": 0.1, "lr": 1e-4}
    assert run_label(gem) == "resnet18 gem p=3 margin=0.1 lr=0.0001"
    assert run_label({"arch": "alexnet", "aggregator": "netvlad", "num_clusters": 16}) == \
        "alexnet netvlad K=16"
    assert values_of({k: str(v) for k, v in gem.items()}) == gem
    params = {k: str(v) for k, v in space_params(models_spec().space).items()}
    assert params["aggregator_choices"] == '["netvlad", "gem", "mixvpr", "salad", "boq"]'
    assert params["num_clusters_only_with"] == '{"aggregator": ["netvlad", "salad"]}'
    assert params["gem_p_only_with"] == '{"aggregator": ["gem"]}'
    assert (params["gem_p_min"], params["gem_p_max"]) == ("2.0", "4.0")
    assert space_from_params(params)["mixvpr_out_rows"] == [2, 4, 8]
    # a NetVLAD-only space logs no other aggregator's setting and no condition
    old = space_params(spec_from_dict({}, "s").space)
    assert not any(k.startswith(("gem_", "mixvpr_", "boq_")) or k.endswith("_only_with")
                   for k in old)


def test_the_reports_search_views_take_trials_without_some_values(tmp_path):
    def run(number, values, recall):
        params = {k: str(v) for k, v in values.items()}
        return RunRecord(f"r{number}", f"t{number}", "1", "FINISHED", number, number + 1,
                         params=params, history=[{"epoch": 1, "recall@5": recall}])

    trials = [run(1, {"arch": "alexnet", "aggregator": "netvlad", "num_clusters": 4,
                      "lr": 1e-4}, 0.5),
              run(2, {"arch": "vgg16", "aggregator": "gem", "gem_p": 3.0, "lr": 3e-4}, 0.6),
              run(3, {"arch": "alexnet", "aggregator": "gem", "gem_p": 2.0, "lr": 2e-4}, 0.4)]
    parent = RunRecord("p", "sweep", "1", "FINISHED", 0, 9, params=space_params(
        models_spec().space))
    study = rebuild_study(parent, trials, "recall@5")
    assert [set(t.params) for t in study.trials] == [
        {"arch", "aggregator", "num_clusters", "lr"}, {"arch", "aggregator", "gem_p", "lr"},
        {"arch", "aggregator", "gem_p", "lr"}]
    views = draw_views(study, tmp_path, "recall@5")
    assert [v.note for v in views] == [None, None, None], views
    assert (tmp_path / "parallel_coordinate.png").is_file()


def test_sweep_flags_narrow_the_aggregators_as_the_architectures():
    from orchestrator.cli import build_parser
    from orchestrator.spec import load_spec
    from orchestrator.sweep_cli import with_flags

    args = build_parser().parse_args(["sweep", "--aggregator", "gem", "--arch", "vgg16"])
    spec = with_flags(load_spec(None), args).validate()
    assert spec.space["aggregator"] == ["gem"] and spec.space["arch"] == ["vgg16"]
    assert [set(p) for p in first_points(spec)] == [COMMON | {"gem_p"}]
    args = build_parser().parse_args(["sweep", "--aggregator", "salad"])
    with pytest.raises(UserError, match="aggregator salad fits none of search.space.arch"):
        with_flags(load_spec(None), args).validate()
