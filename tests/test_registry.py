"""The Model Registry: runs' checkpoints registered as versions of a named model (tags,
pyfunc, signature), the `champion` alias rule, `models:/` references resolved for `--resume`,
and a user's mistake in a reference as one line. A real MLflow sqlite store, runs made through
the project's Store."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run_main
from mlflow_helpers import store_uri

from vpr_core.models.checkpoints import BEST_FILE, FLAGS_FILE, save_checkpoint
from vpr_core.models.place_model import build_model
from vpr_core.stages.starting_model import model_from_checkpoint
from vpr_tracking.model_refs import model_checkpoint
from vpr_tracking.registry import register_run
from vpr_tracking.store import Store

NAME = "places"
QUICK = ["--workers", 0, "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An AlexNet + NetVLAD (K=4) checkpoint of a run folder, with its flags.json."""
    folder = tmp_path_factory.mktemp("registered") / "run" / "checkpoints"
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none")
    path = save_checkpoint(folder / BEST_FILE, {"epoch": 1, "state_dict": model.state_dict(),
                                                "model": model.shape.record()})
    (folder / FLAGS_FILE).write_text(json.dumps({"arch": "alexnet", "aggregator": "netvlad",
                                                 "num_clusters": 4, "weights": "none"}))
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory, checkpoint, synth_root):
    """A store and `trained(recall@5, split)`: a finished training run of `checkpoint` that
    measured that Recall@5 on the synthetic dataset's `split`."""
    folder = tmp_path_factory.mktemp("store")
    store = Store(store_uri(folder / "mlflow.db"))
    experiment = store.experiment_id("registry", create=True)

    def trained(recall5: float, split: str = "val") -> str:
        run_id = store.create_run(experiment, f"r5-{recall5}-{split}",
                                  {"dataset": "synth", "val_split": split,
                                   "data_root": str(synth_root), "image_size": "64x80"},
                                  {"kind": "training"})
        store.log_metrics(run_id, {"recall@1": recall5 / 2, "recall@5": recall5}, step=1)
        store.log_file(run_id, checkpoint, "checkpoints")
        store.log_file(run_id, checkpoint.parent / FLAGS_FILE, "config")
        store.end(run_id, "FINISHED")
        return run_id

    return {"store": store, "uri": store.uri, "trained": trained, "versions": {}}


def champion_of(store, name=NAME) -> str:
    return str(store.client.get_registered_model(name).aliases.get("champion"))


def test_the_champion_moves_only_for_a_higher_recall_on_the_same_split(registry):
    store, trained = registry["store"], registry["trained"]
    first = register_run(store, NAME, trained(0.5), sweep_run_id="s" * 32)
    assert (first.version, first.champion, first.moved) == ("1", "1", True)
    tags = store.client.get_model_version(NAME, "1").tags
    assert tags["recall_at_5"] == "0.500000" and tags["recall_at_1"] == "0.250000"
    assert (tags["metric"], tags["dataset"], tags["split"]) == ("recall@5", "synth", "val")
    assert (tags["arch"], tags["aggregator"], tags["descriptor_dim"]) == \
        ("alexnet", "netvlad", str(4 * 256))
    assert tags["source_run_id"] == first.tags["source_run_id"] and tags["git_commit"]
    assert tags["sweep_run_id"] == "s" * 32 and tags["image_size"] == "64x80"

    worse = register_run(store, NAME, trained(0.4))
    assert (worse.version, worse.moved, champion_of(store)) == ("2", False, "1")
    assert "0.4000 is not higher than its 0.5000" in worse.reason

    elsewhere = register_run(store, NAME, trained(0.9, split="test"))
    assert (elsewhere.version, elsewhere.moved, champion_of(store)) == ("3", False, "1")
    assert "measured on synth/val, this version on synth/test" in elsewhere.reason

    better = register_run(store, NAME, trained(0.6))
    assert (better.version, better.moved, champion_of(store)) == ("4", True, "4")
    assert "0.6000 > 0.5000 of version 1" in better.reason
    registry["versions"] = {"champion": "4"}


def test_pyfunc_predict_gives_the_checkpoints_descriptors(registry, checkpoint, monkeypatch):
    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])  # as a user points MLflow
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    inputs = model.metadata.get_input_schema().inputs[0]
    assert inputs.shape == (-1, 3, 64, 80) and inputs.type == np.dtype(np.float32)
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 1024)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 80), dtype=np.uint8)
    images = pixels.astype(np.float32) / 255
    descriptors = model.predict(images)
    network = model_from_checkpoint(checkpoint).model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = network((torch.from_numpy(images) - mean) / std).numpy()
    assert descriptors.dtype == np.float32 and descriptors.shape == (3, 1024)
    np.testing.assert_allclose(descriptors, expected, rtol=1e-5, atol=1e-6)


def test_eval_of_the_champion_gives_the_checkpoints_recalls(registry, checkpoint, synth_root,
                                                            tmp_path, capsys, monkeypatch):
    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    results = {}
    for given in (checkpoint, f"models:/{NAME}@champion"):
        done = run_main(["eval", "--resume", given, "--data-root", synth_root, "--tracking-uri",
                         registry["uri"], "--json", tmp_path / "eval.json", *QUICK],
                        capsys, monkeypatch, tmp_path)
        assert done.returncode == 0, done.stderr
        payload = json.loads((tmp_path / "eval.json").read_text())
        results[str(given)] = {k: v for k, v in payload.items() if k.startswith("recall@")}
    assert len(results) == 2 and len({json.dumps(r) for r in results.values()}) == 1
    cached = model_checkpoint(f"models:/{NAME}@champion", registry["store"],
                              tmp_path / "cache" / "models")
    version = champion_of(registry["store"])
    assert cached == tmp_path / "cache" / "models" / NAME / version / BEST_FILE
    assert (cached.parent / FLAGS_FILE).is_file()


def test_export_of_the_champion_is_the_checkpoints_file(registry, checkpoint, tmp_path, capsys,
                                                       monkeypatch):
    """`export --resume models:/NAME@champion` writes the ONNX of the registered checkpoint,
    whose metadata names the downloaded file and the model it holds."""
    import onnx

    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    out = tmp_path / "champion.onnx"
    done = run_main(["export", "--resume", f"models:/{NAME}@champion", "--tracking-uri",
                     registry["uri"], "--out", out, "--image-size", "64x80"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    metadata = {p.key: p.value for p in onnx.load(str(out), load_external_data=False)
                .metadata_props}
    assert metadata["arch"] == "alexnet" and metadata["aggregator"] == "netvlad"
    assert f"cache/models/{NAME}/" in metadata["source"]


def test_benchmark_and_train_resume_take_a_registered_model(registry, checkpoint, synth_root,
                                                            tmp_path, capsys, monkeypatch):
    """`benchmark` measures `models:/NAME@champion` as it measures the checkpoint itself, and
    `train --resume models:/NAME@champion` continues it (its flags restored) in a new run
    folder."""
    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    reference = f"models:/{NAME}@champion"
    done = run_main(["benchmark", "--resume", checkpoint, reference, "--data-root", synth_root,
                     "--split", "val", "--tracking-uri", registry["uri"], "--json",
                     tmp_path / "b.json", *QUICK], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert len(rows) == 2 and rows[0]["recalls"] == rows[1]["recalls"]

    done = run_main(["train", "--resume", reference, "--tracking-uri", registry["uri"],
                     "--data-root", synth_root, "--epochs", 2, "--json", tmp_path / "t.json",
                     *QUICK], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "t.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [2]  # the version's epoch 1, continued
    assert summary["run_dir"].startswith(str(tmp_path / "runs"))
    trained = json.loads((Path(summary["run_dir"]) / "checkpoints" / FLAGS_FILE).read_text())
    assert (trained["arch"], trained["num_clusters"]) == ("alexnet", 4)


@pytest.mark.parametrize("reference, words", [
    ("models:/nothing@champion", ["no registered model 'nothing'", NAME]),
    (f"models:/{NAME}@staging", ["no alias 'staging'", "champion (version"]),
    (f"models:/{NAME}/99", ["no version 99", "its versions: 1"]),
    (f"models:/{NAME}", ["models:/NAME/VERSION or models:/NAME@ALIAS"]),
    ("no store", ["no MLflow database at", "--tracking-uri"]),
])
def test_a_bad_model_reference_is_one_line(registry, reference, words, synth_root, tmp_path,
                                           capsys, monkeypatch):
    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    uri = registry["uri"]
    if reference == "no store":
        reference, uri = f"models:/{NAME}@champion", f"sqlite:///{tmp_path / 'none.db'}"
    done = run_main(["eval", "--resume", reference, "--data-root", synth_root,
                     "--tracking-uri", uri, *QUICK], capsys, monkeypatch, tmp_path)
    assert_user_error(done, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no cache, no store made


def test_compress_registers_its_variant_of_a_registered_model_on_request(
        registry, synth_root, tmp_path, capsys, monkeypatch):
    """`compress --resume models:/NAME@champion --register NAME-half`: the variant is a new
    registered model's first version, measured on the split it was compressed on."""
    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    done = run_main(["compress", "--resume", f"models:/{NAME}@champion", "--method", "half",
                     "--data-root", synth_root, "--split", "test", "--tracking-uri",
                     registry["uri"], "--register", f"{NAME}-half", "--latency-batches", 1,
                     "--json", tmp_path / "compress.json", *QUICK], capsys, monkeypatch,
                    tmp_path)
    assert done.returncode == 0, done.stderr
    registration = json.loads((tmp_path / "compress.json").read_text())["registration"]
    assert (registration["version"], registration["champion_moved"]) == ("1", True)
    tags = registry["store"].client.get_model_version(f"{NAME}-half", "1").tags
    assert (tags["dataset"], tags["split"], tags["image_size"]) == ("synth", "test", "64x80")
    assert f"registered models:/{NAME}-half/1" in done.stdout


def test_retrievals_of_a_registered_model_take_its_data_from_the_version(
        registry, tmp_path, capsys, monkeypatch):
    from dashboards.cli import main as dashboards_main

    if not registry["versions"]:
        register_run(registry["store"], NAME, registry["trained"](0.5))
    done = run_main(["retrievals", "--resume", f"models:/{NAME}/1", "--out",
                     tmp_path / "grid.png", "--tracking-uri", registry["uri"], "--queries", 2,
                     "--workers", 0], capsys, monkeypatch, tmp_path, main=dashboards_main)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert (tmp_path / "cache" / "models" / NAME / "1" / BEST_FILE).is_file()


def test_a_failed_registration_is_a_warning_and_the_sweep_stands(registry, capsys):
    """A best trial whose checkpoint is not in the store: the sweep's registration is a
    warning naming what failed and a result saying so, not an error."""
    from orchestrator.registering import register_best, registration_line
    from orchestrator.sweep import SweepResult
    from orchestrator.tracking import Tracker
    from vpr_tracking.trials import TrialRow

    tracker = Tracker(registry["uri"], "registry")
    run_id = tracker.create_run("no checkpoint", {}, {"kind": "trial"})
    tracker.store.log_metrics(run_id, {"recall@5": 0.9}, step=1)
    parent = tracker.create_run("sweep", {}, {"kind": "sweep"})
    best = TrialRow("t1", run_id, {"arch": "alexnet"}, {5: 0.9}, 1, "FINISHED", "", 1.0, 1.0)
    result = SweepResult("s", "/nowhere", registry["uri"], "registry", parent, "recall@5",
                         [best])
    capsys.readouterr()
    done = register_best(tracker, result, "unreached")
    assert done["name"] == "unreached" and "checkpoints/model_best.pth.tar" in done["error"]
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "the best trial (t1) was not registered as unreached" in \
        warned[0] and "the results stand" in warned[0]
    assert registration_line(done).startswith("not registered as unreached: UserError")
    assert not [m.name for m in registry["store"].client.search_registered_models()
                if m.name == "unreached"]


@pytest.mark.parametrize("flags, words", [
    (["--register", "a/b"], ["--register 'a/b' is not a model name"]),
    (["--register", "a", "--no-register"], ["contradict"]),
])
def test_a_bad_register_flag_fails_before_the_sweep_starts(flags, words, tmp_path, capsys,
                                                            monkeypatch):
    done = run_main(["sweep", *flags, "--num-samples", 1, "--quiet"], capsys, monkeypatch,
                    tmp_path)
    assert_user_error(done, *words)
    assert sorted(tmp_path.iterdir()) == []  # no Ray, no store, no synthetic data


def test_the_split_is_read_from_dataset_inputs_and_other_files_do_not_compare(registry):
    """Runs that logged their validation split as a dataset input: the version is tagged with
    it (digest included); a higher recall on a split of the same name but other files does
    not take the alias."""
    from vpr_core.data.description import DataDescription
    from vpr_tracking.names import Context

    store, trained = registry["store"], registry["trained"]

    def on_files(recall5: float, digest: str) -> str:
        run_id = trained(recall5)
        val = DataDescription("pitts", "val", "pittsburgh", {"database": 9, "queries": 3},
                              digest, "/data/pitts")
        store.log_datasets(run_id, [(val, Context.VALIDATION)])
        return run_id

    first = register_run(store, "inputs", on_files(0.5, "a" * 16))
    tags = store.client.get_model_version("inputs", first.version).tags
    assert (tags["dataset"], tags["split"], tags["dataset_digest"]) == ("pitts", "val", "a" * 16)
    other = register_run(store, "inputs", on_files(0.9, "b" * 16))
    assert (other.moved, other.champion) == (False, first.version)
    assert "pitts/val (files aaaaaaaa), this version on pitts/val (files bbbbbbbb)" in \
        other.reason
