"""Datasets as MLflow knows them: a split's or a place set's description and file digest, logged
as a run's dataset inputs in a real sqlite store, read back, filtered on, and `measured_on`."""
import random

import pytest
from mlflow_helpers import store_uri

from vpr_core.data import PlaceSet, open_split
from vpr_core.data.description import DataDescription, describe, file_digest, of_split
from vpr_tracking.datasets import training_inputs
from vpr_tracking.measured_on import UNKNOWN, measured_on
from vpr_tracking.names import Context
from vpr_tracking.store import Store

ROOT = "/data/pitts"
FILES = [f"{ROOT}/{i:03d}/{i:06d}_pitch1_yaw{i % 12}.jpg" for i in range(200)]


def dataset_inputs(run) -> set:
    """(name, context) of each dataset input of an MLflow `Run` (for the tests of the runs
    that log them)."""
    return {(logged.dataset.name, tag.value) for logged in run.inputs.dataset_inputs
            for tag in logged.tags if tag.key == "mlflow.data.context"}


def test_the_digest_is_of_the_file_list_not_its_order():
    groups = {"database": FILES[:150], "queries": FILES[150:]}
    digest = file_digest(ROOT, groups)
    assert len(digest) == 16 and int(digest, 16) >= 0
    shuffled = {name: random.Random(1).sample(paths, len(paths)) for name, paths in groups.items()}
    assert file_digest(ROOT, shuffled) == digest
    # the same relative paths under another root: the same data, wherever it lies
    moved = {name: [p.replace(ROOT, "/mnt/copy") for p in paths]
             for name, paths in groups.items()}
    assert file_digest("/mnt/copy", moved) == digest
    renamed = dict(groups, queries=[*FILES[150:-1], f"{ROOT}/999/other.jpg"])
    assert file_digest(ROOT, renamed) != digest
    fewer = dict(groups, queries=FILES[150:-1])
    assert file_digest(ROOT, fewer) != digest
    # a query moved into the database is another split
    assert file_digest(ROOT, {"database": FILES[:151], "queries": FILES[151:]}) != digest
    assert file_digest(ROOT, groups, places=3) != digest


def test_a_split_and_a_place_set_are_described_by_name_layout_and_counts(synth_root,
                                                                         tmp_path):
    val = open_split(synth_root, "val")
    described = of_split(val)
    assert described.name == "synth-val" and described.split == "val"
    assert described.layout == "pittsburgh" and described.source == str(synth_root)
    assert described.counts == {"database": val.num_database, "queries": val.num_queries}
    assert described.digest != of_split(open_split(synth_root, "train")).digest
    assert DataDescription.from_dict(described.to_dict()) == described
    (tmp_path / "Dataframes").mkdir()
    (tmp_path / "Dataframes" / "Rome.csv").write_text("")
    names = ["Rome_0000001"] * 4 + ["Osaka_0000007"] * 4 + ["Rome_0000002"] * 4
    places = PlaceSet.grouped("gsv-cities", tmp_path, [tmp_path / f"{i}.jpg" for i in
                                                       range(12)], names, 4, "test")
    assert places.cities == ("Rome", "Osaka")
    training = describe(places, "train")
    assert training.name == "gsv-cities-train" and training.layout == "gsv-cities"
    assert training.counts == {"cities": 2, "places": 3, "images": 12}


def description(dataset: str, split: str, digest: str) -> DataDescription:
    return DataDescription(dataset, split, "pittsburgh", {"database": 10, "queries": 5}, digest,
                           ROOT)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Store:
    """One store for the module (making a database costs MLflow seconds)."""
    return Store(store_uri(tmp_path_factory.mktemp("store") / "mlflow.db"))


@pytest.fixture()
def store(database, request) -> tuple[Store, str]:
    """The module's store and an experiment of the test's own."""
    return database, database.experiment_id(request.node.name, create=True)


def test_inputs_are_read_back_filtered_on_and_say_what_was_measured(synth_root, store):
    store, experiment = store
    train, val = open_split(synth_root, "train"), open_split(synth_root, "val")
    trained = store.create_run(experiment, "trained", {}, {})
    store.log_datasets(trained, training_inputs(train, val))
    store.log_datasets(trained, training_inputs(train, val))  # a resumed run: not twice
    logged = store.datasets(trained)
    assert sorted((d.name, context) for d, context in logged) == [
        ("synth-train", Context.TRAINING), ("synth-val", Context.VALIDATION)]
    assert dict((context, d) for d, context in logged)[Context.VALIDATION] == of_split(val)
    assert measured(store, trained) == ("synth", "val", of_split(val).digest)

    evaluated = store.create_run(experiment, "evaluated", {}, {})
    other = description("pitts30k", "test", "0123456789abcdef")
    store.log_datasets(evaluated, [(other, Context.EVALUATION)])
    assert measured(store, evaluated) == ("pitts30k", "test", "0123456789abcdef")
    bare = store.create_run(experiment, "no inputs", {}, {})
    assert measured(store, bare) == (UNKNOWN, UNKNOWN, "")  # nor params to say it
    several = store.create_run(experiment, "a benchmark", {}, {})
    store.log_datasets(several, [(other, Context.EVALUATION), (of_split(val),
                                                               Context.EVALUATION)])
    assert measured(store, several)[2] == ""  # which input would be ambiguous

    def found(where: str) -> set:
        return {run.run_id for run in store.search(experiment, where, with_history=False)}

    assert found("dataset.name = 'synth-val'") == {trained, several}
    assert found("dataset.context = 'training'") == {trained}
    assert found(f"dataset.digest = '{other.digest}'") == {evaluated, several}
    assert found("dataset.name IN ('pitts30k-test', 'synth-train')") == \
        {trained, evaluated, several}


def test_a_split_trained_and_validated_on_is_recorded_as_measured(synth_root, store):
    store, experiment = store
    val = open_split(synth_root, "val")
    run_id = store.create_run(experiment, "same split", {}, {})
    store.log_datasets(run_id, training_inputs(val, val))  # MLflow keeps one per name+digest
    assert [context for _, context in store.datasets(run_id)] == [Context.VALIDATION]
    assert measured(store, run_id) == ("synth", "val", of_split(val).digest)


def test_a_dataset_the_store_refuses_costs_the_run_nothing(store, capsys):
    store, experiment = store
    run_id = store.create_run(experiment, "long name", {}, {})
    refused = description("x" * 600, "val", "0123456789abcdef")  # MLflow takes 500 characters
    store.log_datasets(run_id, [(refused, Context.EVALUATION)])
    warned = capsys.readouterr().err
    assert f"warning: the datasets of MLflow run {run_id} were not logged" in warned
    assert "maximum length of 500" in warned
    store.log_metrics(run_id, {"recall@5": 0.5}, step=0)
    store.end(run_id, "FINISHED")
    run = store.run(run_id)
    assert run.status == "FINISHED" and run.metrics["recall_at_5"] == 0.5
    assert store.datasets(run_id) == []


def test_an_input_logged_by_other_code_is_still_read(store):
    from mlflow.entities import Dataset, DatasetInput

    store, experiment = store
    run_id = store.create_run(experiment, "mlflow.log_input", {}, {})
    source = '{"uri": "s3://bucket/frame.parquet"}'
    store.client.log_inputs(run_id, [DatasetInput(Dataset("frame", "abcd", "s3", source))])
    [(found, context)] = store.datasets(run_id)
    assert (found.dataset, found.digest, found.split, context) == ("frame", "abcd", "", "")
    assert found.source == "s3://bucket/frame.parquet" and found.counts == {}
    assert measured(store, run_id)[2] == ""  # no context: not what recalls were measured on


def measured(store, run_id) -> tuple:
    """(dataset, split, digest) of what `measured_on` says of the run."""
    on = measured_on(store, run_id)
    return on.dataset, on.split, on.digest
