"""Each setting declared once (`vpr_core.settings`): the flags, what --resume restores, the
MLflow params and the spec keys come from the configs' fields; configs never change after they
are built; a flag the command would ignore is refused."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import assert_user_error, run_main, tree

from dashboards.retrievals import RetrievalSettings
from orchestrator.cli import build_parser
from orchestrator.spec import SweepSpec, load_spec, train_keys
from orchestrator.sweep import default_name
from orchestrator.sweep_cli import SweepRun, with_flags
from vpr_core import arguments, settings
from vpr_core.config import ClusterConfig, CompressConfig, EvalConfig, ExportConfig, TrainConfig
from vpr_core.data.synthetic import SynthConfig
from vpr_core.errors import UserError
from vpr_core.settings import LOGGED, RESTORED, SPEC, declared, names_with, setting
from vpr_core.stages import compress
from vpr_core.stages import train as train_stage
from vpr_core.stages.starting_model import model_from_checkpoint, training_start
from vpr_core.training.frozen_features import frozen_layers
from vpr_tracking import search_space
from vpr_tracking.params import logged_params

REPO = Path(__file__).resolve().parents[1]
CONFIGS = (ClusterConfig, TrainConfig, EvalConfig, CompressConfig, ExportConfig, SynthConfig,
           SweepSpec, SweepRun, RetrievalSettings)


def test_configs_are_frozen_and_validate_returns_a_resolved_copy():
    assert all(cls.__dataclass_params__.frozen for cls in CONFIGS)
    config = TrainConfig(data_root="rel", weights="none", image_size="64x80")
    resolved = config.validate()
    assert (config.data_root, config.momentum, config.image_size) == ("rel", None, "64x80")
    assert resolved.data_root == Path("rel").absolute()
    assert (resolved.momentum, resolved.image_size, resolved.precision) == (0.9, (64, 80), "fp32")
    assert resolved.validate() == resolved  # resolving again changes nothing
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.lr = 1.0


def test_every_declared_setting_is_a_flag_of_its_verb():
    verbs = build_parser()._subparsers._group_actions[0].choices
    for verb, cls in (("train", TrainConfig), ("eval", EvalConfig), ("cluster", ClusterConfig),
                      ("compress", CompressConfig), ("export", ExportConfig),
                      ("synth", SynthConfig)):
        flags = {option for action in verbs[verb]._actions for option in action.option_strings}
        for name, meta in declared(cls):
            own = meta.flag_of(name)
            assert own is None or own in flags, (verb, own)
            assert own is None or set(meta.aliases) <= flags, (verb, meta.aliases)
            assert {switch.flag for switch in meta.switches} <= flags, (verb, name)
    train = {o for a in verbs["train"]._actions for o in a.option_strings}
    assert {"--num_clusters", "--nEpochs", "--batchSize", "--cacheBatchSize", "--weightDecay",
            "--cacheRefreshRate", "--lrStep", "--lrGamma", "--threads", "--fromscratch",
            "--nocuda", "--ckpt", "--resume"} <= train


def test_one_new_field_is_a_flag_restored_logged_checked_and_a_spec_key():
    """What a new training setting takes: one field with its roles."""
    extended = dataclasses.make_dataclass(
        "Extended", [("warmup", int, setting(0, "warm-up epochs", parse=int, minimum=0,
                                             roles=(RESTORED, LOGGED, SPEC)))],
        bases=(TrainConfig,), frozen=True)
    parser = arguments.OneLineParser()
    arguments.add_settings(parser, extended)
    args = parser.parse_args(["--warmup", "3", "--lr", "0.01"])
    assert arguments.given(args, extended) == {"warmup": 3, "lr": 0.01}
    assert settings.restored(extended, {"warmup": 2, "epochs": 9}, {}) == {"warmup": 2}
    config = extended(**settings.restored(extended, {"warmup": 2}, {}), weights="none",
                      data_root="/d").validate()
    assert logged_params(config)["warmup"] == 2
    assert "warmup" in names_with(extended, SPEC)
    with pytest.raises(UserError, match="--warmup must be an integer of at least 0"):
        extended(warmup=-1, weights="none").validate()


def test_resume_restores_the_restored_settings_and_drops_what_no_longer_applies():
    flags = {"lr": 0.5, "epochs": 7, "workers": 3, "arch": "alexnet", "precision": "bf16",
             "optim": "SGD", "momentum": 0.9, "run_dir": "/old"}
    assert settings.restored(TrainConfig, flags, {"epochs": 2}) == \
        {"lr": 0.5, "arch": "alexnet", "optim": "SGD", "momentum": 0.9, "epochs": 2}
    # a run trained with SGD resumed with --optim ADAM: SGD's settings are left behind...
    assert "momentum" not in settings.restored(TrainConfig, flags, {"optim": "ADAM"})
    # ...but given explicitly, they are refused
    with pytest.raises(UserError, match="--momentum does not apply to --optim ADAM"):
        TrainConfig(optim="adam", momentum=0.5, weights="none").validate()


def test_params_and_spec_keys_follow_the_roles():
    params = logged_params(TrainConfig(weights="none", data_root="/d").validate())
    assert set(params) == set(names_with(TrainConfig, LOGGED))
    assert params["data_root"] == "/d" and params["image_size"] == "native"
    assert train_keys() == set(names_with(TrainConfig, SPEC)) - set(search_space.NAMES)
    assert {"epochs", "weights", "cache_dir"} <= train_keys()
    assert not {"lr", "arch", "run_dir", "resume", "workers"} & train_keys()


# ---- a flag the spec's kind would ignore is refused ----------------------------------------
def write_spec(folder: Path, kind: str, checkpoint: Path) -> Path:
    section = {"checkpoint": str(checkpoint)}
    if kind == "compress":
        section["variants"] = [{"method": "half"}]
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump({"name": kind, "data": {"root": str(folder)},
                                    kind: section}))
    return path


@pytest.mark.parametrize("kind, flags, named", [
    ("evaluate", ["--num-samples", "3"], "--num-samples"),
    ("evaluate", ["--arch", "alexnet"], "--arch"),
    ("evaluate", ["--seed", "1"], "--seed"),
    ("evaluate", ["--epochs", "2"], "--epochs"),
    ("evaluate", ["--weights", "none"], "--weights"),
    ("evaluate", ["--name", "n"], "--name"),
    ("evaluate", ["--storage", "s"], "--storage"),
    ("evaluate", ["--ray-address", "127.0.0.1:1"], "--ray-address"),
    ("evaluate", ["--resume"], "--resume"),
    ("compress", ["--resume"], "--resume"),
    ("compress", ["--num-samples", "3"], "--num-samples"),
    ("compress", ["--epochs", "2"], "--epochs"),
    ("compress", ["--fromscratch"], "--weights"),
    ("compress", ["--arch", "vgg16"], "--arch"),
    ("compress", ["--miner-memory-gb", "1"], "--miner-memory-gb"),
])
def test_a_flag_the_spec_would_ignore_is_refused(kind, flags, named, tmp_path, capsys,
                                                 monkeypatch):
    spec = write_spec(tmp_path, kind, tmp_path / "model.pth.tar")
    before = tree(tmp_path)
    done = run_main(["sweep", "--config", spec, *flags], capsys, monkeypatch, tmp_path)
    assert_user_error(done, named, "does not apply" if len(flags) else "")
    assert tree(tmp_path) == before


def test_synth_quiet_draws_no_progress_bar(tmp_path, capsys, monkeypatch):
    argv = ["synth", "--places", 12, "--queries", 12, "--image-size", "48x64"]
    loud = run_main([*argv, "--out", tmp_path / "a"], capsys, monkeypatch, tmp_path)
    quiet = run_main([*argv, "--out", tmp_path / "b", "--quiet"], capsys, monkeypatch, tmp_path)
    assert loud.returncode == quiet.returncode == 0
    assert "synth train" in loud.stderr and "synth" not in quiet.stderr


# ---- the sweep's name -----------------------------------------------------------------------
def sweep_args(*argv):
    return build_parser().parse_args(["sweep", *map(str, argv)])


def test_the_default_sweep_on_a_users_data_is_named_after_it(tmp_path):
    data = tmp_path / "corridor"
    named = with_flags(load_spec(None), sweep_args("--data-root", data, "--experiment",
                                                   "corridor-sweep"))
    assert default_name(named).startswith("corridor-sweep-")
    assert named.experiment_name == "corridor-sweep"
    plain = with_flags(load_spec(None), sweep_args("--data-root", data))
    assert default_name(plain).startswith("corridor-")
    assert plain.experiment_name == "netvlad-corridor"
    spec = REPO / "experiments" / "pitts30k.yaml"
    own = with_flags(load_spec(spec), sweep_args("--config", spec, "--data-root", data))
    assert default_name(own).startswith("pitts30k-")  # a spec of its own keeps its name
    assert default_name(load_spec(None)).startswith("smoke-")


# ---- one freezing rule for train --resume and compress fine-tuning ---------------------------
def test_a_checkpoint_without_flags_is_fine_tuned_frozen_as_train_resume_freezes_it(
        trained, synth_root, tmp_path, monkeypatch):
    """A checkpoint without flags.json (the released VGG16, any reference checkpoint) counts
    as trained from ImageNet weights: train --resume and compress fine-tuning both keep all
    but its last conv layer fixed."""
    bare = tmp_path / "bare" / "checkpoint.pth.tar"
    bare.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "checkpoint.pth.tar", bare)
    resumed = TrainConfig(data_root=synth_root, resume=bare, arch="alexnet", num_clusters=4,
                          epochs=2, workers=0, cache_dir=tmp_path / "cache",
                          show_progress=False).validate()
    assert frozen_layers(training_start(resumed, None).model) == 10  # AlexNet up to conv4
    tuned = []
    real_run = train_stage.training_run

    def training_run(config, *args, model=None, **kwargs):
        tuned.append(frozen_layers(model))
        return real_run(config, *args, model=model, **kwargs)

    monkeypatch.setattr(train_stage, "training_run", training_run)
    result = compress.run(CompressConfig(
        data_root=synth_root, resume=bare, method="prune", amount=0.2, finetune_epochs=1,
        finetune_lr=1e-2, run_dir=tmp_path / "variant", workers=0, latency_batches=(1,),
        cache_dir=tmp_path / "cache", show_progress=False))
    assert tuned == [10] and len(result.finetune) == 2
    original, _, _, _ = model_from_checkpoint(bare)
    variant, _, _, _ = model_from_checkpoint(result.checkpoint)
    for index in (0, 3, 6, 8):  # conv1-4: untouched where pruning left them
        before, after = original.encoder[index].weight, variant.encoder[index].weight
        kept = after != 0
        assert torch.equal(before[kept], after[kept]), index
