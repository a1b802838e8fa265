"""`orchestrator benchmark`: three models (a released CosPlace file, a run folder of this
project, an MLflow run's checkpoint) on two test sets (a .mat and an @UTM@ folder dataset),
one MLflow parent run with a child per model and test set, each cell's recalls those of
`eval`; the table printed and drawn by `dashboards benchmark`; a user's mistake is one line."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import torchvision
from cli_helpers import assert_user_error, run_main, tree
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from test_dataset_inputs import dataset_inputs
from test_resnet_gem import cosplace_file

from dashboards.cli import main as dashboards_main
from orchestrator import benchmark_spec
from orchestrator.cli import build_parser
from orchestrator.cli import main as orchestrator_main
from orchestrator.tracking import Tracker
from vpr_core.data.synthetic import SynthConfig, write_synthetic
from vpr_core.models.checkpoints import BEST_FILE, save_checkpoint
from vpr_core.models.place_model import build_model

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]
TINY = dict(places=12, queries=4, image_size=(48, 64), show_progress=False)
QUICK = ["--workers", 0, "--quiet"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    """Two test sets, three models (one of them an MLflow run's) and the store holding it."""
    folder = tmp_path_factory.mktemp("bench")
    write_synthetic(SynthConfig(out=folder / "pitts", seed=0, **TINY))
    write_synthetic(SynthConfig(out=folder / "streets", layout="folder", seed=1, **TINY))
    torch.manual_seed(0)
    torch.save(cosplace_file(torchvision.models.resnet18().eval(), fc_dim=32),
               folder / "cosplace_r18.pth")
    netvlad = build_model("alexnet", "netvlad", 4, weights="none")
    save_checkpoint(folder / "alexnet_run" / "checkpoints" / "checkpoint.pth.tar",
                    {"epoch": 0, "state_dict": netvlad.state_dict(),
                     "model": netvlad.shape.record()})
    gem = build_model("alexnet", "gem", weights="none")
    save_checkpoint(folder / "gem" / BEST_FILE, {"epoch": 0, "state_dict": gem.state_dict(),
                                                 "model": gem.shape.record()})
    uri = store_uri(folder / "store" / "mlflow.db")
    tracker = Tracker(uri, "trainings")
    run_id = tracker.create_run("alexnet-gem", {}, {"kind": "training"})
    tracker.store.log_file(run_id, folder / "gem" / BEST_FILE, "checkpoints")
    tracker.store.end(run_id, "FINISHED")
    return {"folder": folder, "uri": uri, "gem_run": run_id,
            "models": [folder / "cosplace_r18.pth", folder / "alexnet_run",
                       f"runs:/{run_id}"],
            "test_sets": [folder / "pitts", folder / "streets"]}


@pytest.fixture(scope="module")
def benchmarked(bench) -> dict:
    """The benchmark's printed lines, its --json result and the labels it gave the models."""
    work = bench["folder"] / "work"
    work.mkdir()
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.chdir(work)
        code = orchestrator_main([str(a) for a in [
            "benchmark", "--resume", *bench["models"], "--data-root", *bench["test_sets"],
            "--name", "tiny", "--tracking-uri", bench["uri"], "--json", work / "b.json",
            *QUICK]])
    assert code == 0
    result = json.loads((work / "b.json").read_text())
    return {"lines": printed.getvalue().splitlines(), "json": result,
            "cells": {(r["model"], r["test_set"]): r for r in result["results"]},
            "labels": ["cosplace_r18", "alexnet_run", "alexnet-gem"]}


def test_a_row_per_model_and_a_column_group_per_test_set(benchmarked):
    result, cells, labels = benchmarked["json"], benchmarked["cells"], benchmarked["labels"]
    assert [m["label"] for m in result["models"]] == labels
    assert [m["family"] for m in result["models"]] == ["cosplace", "vpr-sweeps", "vpr-sweeps"]
    assert [t["label"] for t in result["test_sets"]] == ["synth", "streets"]
    assert list(cells) == [(m, t) for m in labels for t in ("synth", "streets")]
    assert cells[("cosplace_r18", "synth")]["descriptor_dim"] == 32
    assert cells[("alexnet_run", "streets")]["descriptor_bytes"] == 4 * 4 * 256
    assert all(r["ms_per_image"] > 0 and r["image_size"] == "48x64" for r in cells.values())
    lines = benchmarked["lines"]  # R@1 and R@5 per test set, in percent
    header = next(i for i, line in enumerate(lines) if "synth" in line and "streets" in line)
    rows = {line.split()[0]: line for line in lines[header + 3:header + 6]}
    assert list(rows) == labels
    for model, row in rows.items():
        for test_set in ("synth", "streets"):
            assert f"{100 * cells[(model, test_set)]['recalls']['recall@5']:.1f}" in row


@pytest.mark.parametrize("model, test_set", [(0, 1), (1, 0)])
def test_each_cell_is_what_eval_gives(model, test_set, bench, benchmarked, tmp_path, capsys,
                                      monkeypatch):
    done = run_main(["eval", "--resume", bench["models"][model], "--data-root",
                     bench["test_sets"][test_set], "--split", "test", "--json",
                     tmp_path / "eval.json", *QUICK], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = json.loads((tmp_path / "eval.json").read_text())
    cell = benchmarked["cells"][(benchmarked["labels"][model], ("synth", "streets")[test_set])]
    assert cell["recalls"] == {f"recall@{n}": expected[f"recall@{n}"] for n in (1, 5, 10, 20)}


def test_mlflow_holds_the_protocol_and_a_child_per_model_and_test_set(bench, benchmarked):
    client = MlflowClient(bench["uri"])
    runs = client.search_runs([client.get_experiment_by_name("benchmarks").experiment_id])
    parents = [r for r in runs if r.data.tags["kind"] == "benchmark"]
    assert [p.info.run_id for p in parents] == [benchmarked["json"]["mlflow_parent_run_id"]]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["benchmark"] == "tiny"
    assert parent.data.params["split"] == "test"
    assert float(parent.data.params["positive_dist"]) == 25
    assert json.loads(parent.data.params["models"]) == benchmarked["labels"]
    assert json.loads(parent.data.params["model_sources"])[2] == \
        f"runs:/{bench['gem_run']}/checkpoints/{BEST_FILE}"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 6
    for child in children:
        cell = benchmarked["cells"][(child.data.tags["model"], child.data.tags["test_set"])]
        assert child.info.status == "FINISHED" and child.data.tags["kind"] == "benchmark-result"
        for n in (1, 5, 10, 20):
            assert child.data.metrics[f"recall_at_{n}"] == \
                pytest.approx(cell["recalls"][f"recall@{n}"])
        assert {"descriptor_dim", "descriptor_bytes", "ms_per_image", "image_height",
                "image_width"} <= set(child.data.metrics)
        assert {"checkpoint", "checkpoint_sha256", "family", "arch", "aggregator", "test_set",
                "data_root", "split"} <= set(child.data.params)
    # each cell measured on its test set's test split; the parent lists both test sets
    measured = {"synth": {("synth-test", "evaluation")},
                "streets": {("streets-test", "evaluation")}}
    assert all(dataset_inputs(c) == measured[c.data.tags["test_set"]] for c in children)
    assert dataset_inputs(parent) == measured["synth"] | measured["streets"]
    gem = next(c for c in children if c.data.tags["model"] == "alexnet-gem")
    assert gem.data.params["aggregator"] == "gem"
    # the table itself, as a page and a picture in the parent's artifacts
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "table")}
    assert logged == {"table/index.html", "table/benchmark.png"}
    page = Path(client.download_artifacts(parent.info.run_id, "table/index.html"))
    assert all(label in page.read_text() for label in benchmarked["labels"])
    assert gem.data.params["checkpoint"].startswith(f"runs:/{bench['gem_run']}")


def test_dashboards_draw_it_from_mlflow_as_a_page_and_a_picture(bench, benchmarked, tmp_path,
                                                                capsys, monkeypatch):
    drawn = run_main(["benchmark", "--tracking-uri", bench["uri"], "--out", tmp_path / "page"],
                     capsys, monkeypatch, tmp_path, main=dashboards_main)
    assert drawn.returncode == 0, drawn.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    assert all(f'data-model="{label}"' in page for label in benchmarked["labels"])
    first = benchmarked["cells"][("cosplace_r18", "synth")]["recalls"]["recall@1"]
    assert f"{100 * first:.1f}" in page and 'class="best"' in page
    assert (tmp_path / "page" / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_checkpoint_is_one_line_and_nothing_is_logged(bench, tmp_path, capsys,
                                                                monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_main(["benchmark", "--resume", bench["models"][0], tmp_path / "nope.pth",
                     "--data-root", *bench["test_sets"], "--tracking-uri", uri, *QUICK],
                    capsys, monkeypatch, tmp_path)
    assert_user_error(done, "nope.pth does not exist", "run folder")
    assert tree(tmp_path) == []  # no store, no runs, no result


def test_the_example_spec_reads_and_flags_override_it(tmp_path):
    args = build_parser().parse_args(["benchmark", "--config",
                                      str(REPO / benchmark_spec.EXAMPLE),
                                      "--positive-dist", "10", "--workers", "0"])
    spec = benchmark_spec.benchmark_spec(args)
    assert spec.model_entries()[0] == benchmark_spec.ModelEntry(
        "models/resnet50_2048_cosplace.pth", "CosPlace R50-2048")
    assert spec.model_entries()[-1] == benchmark_spec.ModelEntry("runs/vgg16_netvlad")
    assert spec.test_set_entries()[0] == benchmark_spec.TestSetEntry(
        Path("/data/pittsburgh"), "pitts30k", "Pitts30k")
    assert (spec.split, spec.positive_dist, spec.experiment) == ("test", 10.0, "benchmarks")
    assert spec.eval_config().workers == 0 and spec.eval_config().cache_batch_size == 32
