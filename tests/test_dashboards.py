"""`python -m dashboards`: compare, report and retrievals on a store shaped like a sweep's."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run_cli, run_main, tree
from dashboards_store import EVAL_RECALLS, EXPERIMENT, NS, SWEEP, TRIALS, log_fake_sweep
from mlflow_helpers import store_uri
from PIL import Image

from dashboards.cli import main as dashboards_main
from dashboards.compare import given_curve
from dashboards.plots import recall_figure_size
from dashboards.retrievals import (
    choose_queries,
    frame_colours,
    grid_size,
    match_distances,
    match_is_positive,
)
from dashboards.style import ARCH_COLOURS, NEGATIVE_COLOUR, POSITIVE_COLOUR
from vpr_core.errors import UserError
from vpr_core.models.place_model import build_model
from vpr_tracking.search_space import (
    DIMENSIONS,
    space_from_params,
    space_params,
    table_cells,
    table_dimensions,
    table_header,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init AlexNet + NetVLAD (K=4) checkpoint, as `train` would write one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth.tar"
    model = build_model("alexnet", "netvlad", 4, weights="none")
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, synth_root, checkpoint) -> dict:
    """The fake sweep's store: {'uri', 'db', 'experiment_id', 'parent', 'trials', ...}."""
    folder = tmp_path_factory.mktemp("store")
    uri = store_uri(folder / "mlflow.db")
    ids = log_fake_sweep(uri, synth_root, checkpoint, folder)
    return {"uri": uri, "db": folder / "mlflow.db", **ids}


def dash(argv, capsys, monkeypatch, cwd):
    return run_main(argv, capsys, monkeypatch, cwd, main=dashboards_main)


def has_colour(path: Path, hex_colour: str) -> bool:
    """Whether some pixel of the PNG is exactly `hex_colour` ('#rrggbb')."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return bool((pixels == rgb).all(axis=1).any())


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decodes the whole file
        return image.size


class Page(HTMLParser):
    """What the checks need from a page: image sources, links, trial rows, text."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.rows, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "tr" and "data-trial" in attrs:
            self.rows.append(attrs["data-trial"])

    def handle_data(self, data):
        self.text.append(data)


def parse_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


# ---- pure pieces ----------------------------------------------------------------------------
def test_given_recalls_take_fractions_or_percentages():
    assert given_curve("alexnet", [0.68, 0.85, 0.89, 0.93]).recalls == {
        1: 0.68, 5: 0.85, 10: 0.89, 20: 0.93}
    assert given_curve("vgg16", [85, 95, 97, 98]).recalls == pytest.approx(
        {1: 0.85, 5: 0.95, 10: 0.97, 20: 0.98})
    with pytest.raises(UserError, match="takes 4 values"):
        given_curve("alexnet", [0.1, 0.2, 0.3])
    with pytest.raises(UserError, match="cannot fall"):
        given_curve("alexnet", [0.9, 0.8, 0.85, 0.95])
    with pytest.raises(UserError, match="0-100"):
        given_curve("alexnet", [10, 20, 30, 140])


def test_the_search_space_is_read_back_from_a_sweep_parent():
    space = {"arch": ["vgg16"], "num_clusters": [8, 64], "margin": (0.05, 0.2), "lr": (1e-5, 1e-3)}
    params = {k: str(v) for k, v in space_params(space).items()}  # MLflow keeps strings
    assert params["margin_min"] == "0.05" and params["lr_max"] == "0.001"
    assert space_from_params(params) == space
    # sweeps of earlier versions logged ranges as 'low-high' and choices as 'a,b'
    legacy = {"archs": "alexnet,vgg16", "num_clusters_choices": "4,8",
              "margin_range": "0.03-0.3", "lr_range": "1e-05-0.001"}
    assert space_from_params(legacy) == {"arch": ["alexnet", "vgg16"], "num_clusters": [4, 8],
                                         "margin": (0.03, 0.3), "lr": (1e-05, 0.001)}
    assert space_from_params({"lr_range": "0.0001-1e-03"}) == {"lr": (0.0001, 0.001)}
    assert space_from_params({"margin_range": "abc", "archs": ""}) == {}


def test_a_trial_without_values_keeps_the_table_columns():
    netvlad = {"arch": "vgg16", "aggregator": "netvlad", "num_clusters": 16, "margin": 0.1,
               "lr": 1e-4}
    gem = {"arch": "resnet18", "aggregator": "gem", "gem_p": 3.0, "margin": 0.1, "lr": 1e-4}
    full = table_cells(netvlad)
    assert len(table_header()) == len(full) == len(table_cells({}))
    assert table_cells({}).split() == ["-"] * len(DIMENSIONS)
    # a column for each aggregator setting some trial has; '-' where a trial has not
    columns = table_dimensions([netvlad, gem])
    assert [d.name for d in columns] == ["arch", "aggregator", "num_clusters", "gem_p",
                                         "margin", "lr"]
    assert table_header(columns).split() == ["arch", "aggregator", "K", "p", "margin", "lr"]
    assert table_cells(netvlad, columns).split() == ["vgg16", "netvlad", "16", "-", "0.100",
                                                     "1.00e-04"]
    assert table_cells(gem, columns).split() == ["resnet18", "gem", "-", "3.00", "0.100",
                                                 "1.00e-04"]
    assert [d.name for d in table_dimensions([])] == ["arch", "aggregator", "margin", "lr"]


def test_frames_follow_the_ground_truth_on_a_constructed_case():
    # query 0 is at the origin: database 0 at 10 m and 2 at 24 m are positives (25 m);
    # database 1 at 30 m and 3 at 100 m are not; query 1 has no positive at all
    positives = [np.array([0, 2]), np.array([], dtype=np.int64)]
    assert match_is_positive(0, 2, positives) and not match_is_positive(0, 1, positives)
    assert not match_is_positive(1, 0, positives)
    assert frame_colours(0, np.array([1, 0, 3, 2]), positives) == [
        NEGATIVE_COLOUR, POSITIVE_COLOUR, NEGATIVE_COLOUR, POSITIVE_COLOUR]
    assert frame_colours(1, [0, 2], positives) == [NEGATIVE_COLOUR, NEGATIVE_COLOUR]
    query_utm = np.array([[0.0, 0.0], [500.0, 0.0]])
    database_utm = np.array([[10.0, 0.0], [0.0, 30.0], [24.0, 0.0], [60.0, 80.0]])
    metres = match_distances(query_utm, database_utm, [0, 1], np.array([[1, 0], [3, 2]]))
    assert metres == pytest.approx(np.array([[30.0, 10.0], [np.hypot(440, 80), 476.0]]))


def test_queries_are_drawn_deterministically():
    wrong = np.array([True, False, True, True, False, False, True, False])
    first = choose_queries(wrong, 3, seed=1, only_wrong=False)
    assert list(first) == list(choose_queries(wrong, 3, seed=1, only_wrong=False))
    assert list(first) == sorted(first) and len(set(first)) == 3
    assert set(choose_queries(wrong, 10, seed=0, only_wrong=True)) == {0, 2, 3, 6}


# ---- compare --------------------------------------------------------------------------------
def test_compare_reference_recalls_need_no_mlflow(tmp_path):
    done = run_cli("compare", "--alexnet_recalls", 0.68, 0.85, 0.89, 0.93, "--vgg16_recalls",
                   0.85, 0.95, 0.97, 0.98, "--recalls", "MixVPR R50", 88, 94, 95.5, 97,
                   "--out", "charts/x.png", "--json", "x.json",
                   cwd=tmp_path, module="dashboards", timeout=120)
    assert done.returncode == 0, done.stderr
    assert png_size(tmp_path / "charts" / "x.png") == recall_figure_size(3)
    assert tree(tmp_path) == ["charts", "charts/x.png", "x.json"]  # no mlflow.db, no mlruns
    curves = json.loads((tmp_path / "x.json").read_text())["curves"]
    assert [c["arch"] for c in curves] == ["alexnet", "vgg16", "MixVPR R50"]
    assert curves[1]["recall@5"] == pytest.approx(0.95)
    assert curves[2]["recall@10"] == pytest.approx(0.955)  # percent read as percent


# three trials tied at Recall@5 = 1.000, listed worst R@1 first: (R@1, R@5, R@10, R@20)
TIED = ((0.76, 1.0, 1.0, 1.0), (0.88, 1.0, 1.0, 1.0), (0.80, 1.0, 1.0, 1.0))


def test_a_tie_in_the_search_metric_goes_to_the_better_other_recalls():
    from dashboards.compare import best_per_model
    from vpr_tracking.store import RunRecord
    from vpr_tracking.trials import TrialRow, best_row

    rows = [TrialRow(f"t{i}", f"r{i}", {"arch": "alexnet"}, dict(zip(NS, recalls)), 1,
                     "FINISHED", "", 1.0, 1.0) for i, recalls in enumerate(TIED)]
    assert best_row(rows, "recall@5").trial_id == "t1"
    runs = [RunRecord(f"r{i}", f"t{i}", "0", "FINISHED", 0, 1, params={"arch": "alexnet"},
                      tags={"kind": "trial"},
                      history=[{"epoch": 1, **{f"recall@{n}": r for n, r in zip(NS, recalls)}}])
            for i, recalls in enumerate(TIED)]
    assert [run.run_id for run in best_per_model(runs, "recall@5")] == ["r1"]


def test_trials_rank_by_the_search_metric_then_the_other_recalls_by_n():
    from vpr_tracking.trials import rank_key

    assert rank_key({1: 0.1, 5: 0.5, 10: 0.7, 20: 0.9}, "recall@10") == (0.7, 0.1, 0.5, 0.9)
    assert rank_key({5: 0.5}, "recall@5")[1] == float("-inf")  # not logged: ranks lowest


def test_compare_picks_the_best_trial_per_arch_and_the_evaluations(store, tmp_path, capsys,
                                                                     monkeypatch):
    done = dash(["compare", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT,
                 "--out", tmp_path / "new" / "c.png", "--json", tmp_path / "c.json"],
                capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    curves = json.loads((tmp_path / "c.json").read_text())["curves"]
    trials = store["trials"]
    assert [c["run_id"] for c in curves] == [trials["a1b2c_00002"], trials["a1b2c_00001"],
                                             store["evaluation"]]
    best = curves[0]  # its best epoch (the first), not its last
    assert [best[f"recall@{n}"] for n in (1, 5, 10, 20)] == list(TRIALS[2].epochs[0][:4])
    assert "alexnet K=8 margin=0.15 lr=0.0003" in best["label"]
    assert "epoch 1" in best["label"]
    assert "vgg16 netvlad K=64 checkpoint checkpoint.pth.tar (synth val)" == curves[2]["label"]
    assert curves[2]["recall@20"] == pytest.approx(EVAL_RECALLS[3])
    assert png_size(tmp_path / "new" / "c.png") == recall_figure_size(3)


def test_without_experiment_the_latest_sweep_is_shown(store, tmp_path, capsys, monkeypatch):
    """`report --out report/` and `compare --out cmp.png` right after a sweep, as the README
    shows them: the experiment of the latest sweep is the default."""
    done = dash(["compare", "--tracking-uri", store["uri"], "--out", tmp_path / "c.png",
                 "--json", tmp_path / "c.json"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "c.json").read_text())["curves"]) == 3
    done = dash(["report", "--tracking-uri", store["uri"], "--out", tmp_path / "r",
                 "--json", tmp_path / "r.json"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["experiment"] == EXPERIMENT and summary["parent_run_id"] == store["parent"]


def test_compare_chosen_runs_and_log_to_a_run(store, tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient

    trial = store["trials"]["a1b2c_00000"]
    done = dash(["compare", "--tracking-uri", store["uri"], "--runs", trial,
                 store["evaluation"], "--vgg16-recalls", 85, 95, 97, 98,
                 "--out", tmp_path / "runs.png", "--log-to", store["parent"]],
                capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "logged it to run" in done.stdout
    assert png_size(tmp_path / "runs.png") == recall_figure_size(3)
    logged = [a.path for a in MlflowClient(store["uri"]).list_artifacts(store["parent"],
                                                                        "plots")]
    assert logged == ["plots/runs.png"]


# ---- report ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    """The report of the fake sweep, written once by `python -m dashboards report`."""
    from dashboards.report import write_report

    out = tmp_path_factory.mktemp("report") / "site" / "sweep"
    summary = write_report(store["uri"], EXPERIMENT, out, mlflow_url="http://127.0.0.1:5000/")
    assert summary["index"] == str(out / "index.html")
    return out


def test_report_names_every_trial_and_links_only_local_images(report, store):
    page = parse_page(report / "index.html")
    trial_ids = [t.trial_id for t in TRIALS]
    assert page.rows == trial_ids
    text = " ".join(page.text)
    assert all(t in text for t in trial_ids)
    assert "stopped early after epoch 1 (ASHA)" in text and "FAILED" in text
    assert "60.0 %" in text  # the best trial's best Recall@5
    assert page.images, "no pictures in the report"
    for source in page.images:
        assert "/" not in source and (report / source).is_file(), source
        width, height = png_size(report / source)
        assert width >= 600 and height >= 300
    expected = {"recall_by_arch.png", "optimization_history.png", "param_importances.png",
                "parallel_coordinate.png", "curves_a1b2c_00000.png", "curves_a1b2c_00001.png",
                "curves_a1b2c_00002.png"}
    assert set(page.images) == expected  # the failed trial logged no epoch: a sentence instead
    assert "This trial logged no epoch." in text
    run = store["trials"]["a1b2c_00002"]
    assert f"http://127.0.0.1:5000/#/experiments/{store['experiment_id']}/runs/{run}" \
        in page.links
    assert png_size(report / "recall_by_arch.png") == recall_figure_size(2)
    for picture in ("recall_by_arch.png", "optimization_history.png"):  # one colour per arch
        assert all(has_colour(report / picture, ARCH_COLOURS[a]) for a in ("alexnet", "vgg16"))
    assert has_colour(report / "curves_a1b2c_00001.png", ARCH_COLOURS["vgg16"])


def test_report_replaces_an_earlier_report_and_explains_missing_views(store, tmp_path, capsys,
                                                                      monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (out / "index.html").write_text("old")
    (out / "stale.png").write_bytes(b"old")
    done = dash(["report", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT,
                 "--sweep", SWEEP, "--out", out, "--json", tmp_path / "r.json"],
                capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "index.html")
    assert not (out / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "r.json"]  # no temporary left
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["parent_run_id"] == store["parent"] and len(summary["trials"]) == 4
    assert [t["best"] for t in summary["trials"]] == [False, False, True, False]

    from dashboards.search_views import draw_views, rebuild_study
    from vpr_tracking.store import open_store
    from vpr_tracking.trials import trials_of

    runs = open_store(store["uri"])
    parent = runs.run(store["parent"], with_history=False)
    trials = trials_of(runs, parent)
    study = rebuild_study(parent, trials, "recall@5")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL"]
    assert study.best_value == pytest.approx(0.60)
    one = rebuild_study(parent, trials[:1], "recall@5")
    views = draw_views(one, tmp_path, "recall@5")
    assert views[0].file == "optimization_history.png" and views[1].file is None
    assert "at least two complete trials" in views[1].note


@contextlib.contextmanager
def served(folder: Path):
    """A static file server for `folder` on a free 127.0.0.1 port; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_served_report_loads_every_image(report):
    with served(report.parent) as base:
        page = Page()
        with urllib.request.urlopen(f"{base}/{report.name}/index.html", timeout=10) as reply:
            page.feed(reply.read().decode("utf-8"))
        assert page.rows and page.images
        for source in page.images:
            with urllib.request.urlopen(f"{base}/{report.name}/{source}", timeout=10) as reply:
                assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_mlflow_server_lists_the_sweep_runs(store, tmp_path, capsys, monkeypatch):
    """A team's tracking server (`mlflow server`, as the README starts one): its API lists the
    sweep's runs, and `dashboards report` and `compare` draw from it over HTTP."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job workers
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store["uri"],
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "mlflow server exited"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer /health"
                time.sleep(0.3)
        found = api(base, f"experiments/get-by-name?experiment_name={EXPERIMENT}")
        experiment_id = found["experiment"]["experiment_id"]
        runs = api(base, "runs/search", {"experiment_ids": [experiment_id],
                                         "max_results": 100})["runs"]
        tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])}
                for r in runs}
        assert tags[store["parent"]]["kind"] == "sweep"
        children = {run_id for run_id, t in tags.items()
                    if t.get("mlflow.parentRunId") == store["parent"]}
        assert children == set(store["trials"].values())

        reported = dash(["report", "--tracking-uri", base, "--out", tmp_path / "report",
                         "--json", tmp_path / "r.json"], capsys, monkeypatch, tmp_path)
        compared = dash(["compare", "--tracking-uri", base, "--out", tmp_path / "c.png",
                         "--json", tmp_path / "c.json"], capsys, monkeypatch, tmp_path)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert reported.returncode == 0, reported.stderr
    assert json.loads((tmp_path / "r.json").read_text())["parent_run_id"] == store["parent"]
    page = parse_page(tmp_path / "report" / "index.html")
    assert page.rows == [t.trial_id for t in TRIALS]
    assert page.images and all((tmp_path / "report" / i).is_file() for i in page.images)
    assert compared.returncode == 0, compared.stderr
    curves = json.loads((tmp_path / "c.json").read_text())["curves"]
    assert [c["run_id"] for c in curves] == [store["trials"]["a1b2c_00002"],
                                             store["trials"]["a1b2c_00001"], store["evaluation"]]
    assert png_size(tmp_path / "c.png") == recall_figure_size(3)


# ---- retrievals -----------------------------------------------------------------------------
def independent_true_positives(checkpoint: Path, synth_root: Path, queries: list, k: int
                               ) -> int:
    """True-positive matches among the top-k of `queries` on the val split, by brute force and
    without vpr_core's dataset, evaluation or ground-truth code: the split is read from its
    .mat (scipy), images are normalised here as the reference's transform does, the ranking is
    exhaustive L2 in numpy, and a match is a true positive when its UTM distance to the query
    is at most the split's posDistThr (25 m)."""
    from scipy.io import loadmat

    from vpr_core.models.place_model import build_model

    fields = loadmat(str(synth_root / "datasets" / "synth_val.mat"))["dbStruct"].item()
    names = [[str(np.ravel(cell)[0]) for cell in np.ravel(fields[i])] for i in (1, 3)]
    database_utm, query_utm = np.asarray(fields[2], float).T, np.asarray(fields[4], float).T
    pos_dist_thr = float(np.ravel(fields[7])[0])
    assert pos_dist_thr == 25.0 and database_utm.shape == (len(names[0]), 2)

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model = build_model("alexnet", "netvlad", state["pool.centroids"].shape[0], weights="none")
    model.load_state_dict(state)
    model.eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def descriptors(paths) -> np.ndarray:
        pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255
                           for p in paths])
        images = torch.from_numpy(((pixels - mean) / std).astype(np.float32))
        with torch.no_grad():
            return model(images.permute(0, 3, 1, 2)).numpy().astype(np.float64)

    database = descriptors([synth_root / name for name in names[0]])
    query_descriptors = descriptors([synth_root / "queries_real" / name for name in names[1]])
    found = 0
    for q in queries:
        sq_dist = ((database - query_descriptors[q]) ** 2).sum(axis=1)
        top_k = np.argsort(sq_dist, kind="stable")[:k]
        metres = np.sqrt(((database_utm[top_k] - query_utm[q]) ** 2).sum(axis=1))
        found += int((metres <= pos_dist_thr).sum())
    return found


def test_retrievals_frames_follow_the_ground_truth(checkpoint, synth_root, tmp_path, capsys,
                                                   monkeypatch):
    done = dash(["retrievals", "--resume", checkpoint, "--data-root", synth_root,
                 "--split", "val", "--queries", 6, "--top-k", 4, "--workers", 0,
                 "--device", "cpu", "--out", tmp_path / "grid.png", "--json",
                 tmp_path / "g.json"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "g.json").read_text())
    queries = [row["query_index"] for row in summary["rows"]]
    assert len(queries) == 6 and summary["arch"] == "alexnet" and summary["num_clusters"] == 4
    assert summary["green_frames"] + summary["red_frames"] == 6 * 4
    assert summary["green_frames"] == independent_true_positives(checkpoint, synth_root,
                                                                 queries, 4)
    assert png_size(tmp_path / "grid.png") == grid_size(6, 4, (64, 80))
    for colour, name in ((POSITIVE_COLOUR, "green"), (NEGATIVE_COLOUR, "red")):
        assert has_colour(tmp_path / "grid.png", colour) == (summary[f"{name}_frames"] > 0)


def test_retrievals_of_an_mlflow_run_and_only_wrong_queries(store, synth_root, tmp_path, capsys,
                                                            monkeypatch):
    trial = store["trials"]["a1b2c_00000"]
    done = dash(["retrievals", "--run", trial, "--tracking-uri", store["uri"],
                 "--only-wrong", "--queries", 24, "--workers", 0, "--device", "cpu",
                 "--out", tmp_path / "wrong.png", "--json", tmp_path / "w.json"],
                capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "w.json").read_text())
    assert summary["split"] == "val" and summary["dataset"] == "synth"  # from the run's params
    assert len(summary["rows"]) == summary["wrong_top1"]
    assert all(not row["matches"][0]["positive"] for row in summary["rows"])
    width, _ = png_size(tmp_path / "wrong.png")
    assert width == grid_size(1, 5, (64, 80))[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json", "wrong.png"]


# ---- user mistakes --------------------------------------------------------------------------
def test_user_mistakes_are_one_line_and_write_nothing(store, checkpoint, tmp_path, capsys,
                                                     monkeypatch):
    uri, trials = store["uri"], store["trials"]
    report = ["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--out", "r"]
    mistakes = [
        (["retrievals", "--resume", tmp_path / "missing.pth.tar", "--data-root", tmp_path,
          "--out", "g.png"], "does not exist"),
        (["report", "--tracking-uri", uri, "--experiment", "nope", "--out", "r"],
         "no experiment named 'nope'"),
        (["report", "--experiment", EXPERIMENT, "--out", "r"], "no MLflow database"),
        (["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--sweep", "other",
          "--out", "r"], "no sweep named 'other'"),
        (["compare", "--tracking-uri", uri, "--runs", "0" * 32, "--out", "c.png"],
         "is not in the MLflow store"),
        (["compare", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--log-to", "f" * 32,
          "--out", "c.png"], "is not in the MLflow store"),
        (["retrievals", "--run", "0" * 32, "--tracking-uri", uri, "--out", "g.png"],
         "is not in the MLflow store"),
        (["compare", "--alexnet-recalls", 0.68, 0.85, 0.89, "--out", "c.png"],
         "takes 4 values"),
        (["compare", "--recalls", "resnet50-gem", 0.8, "x", 0.9, 0.95, "--out", "c.png"],
         "write a model's name and its Recall@1"),
        (["compare", "--out", "c.png"], "no MLflow database"),
        (["compare", "--tracking-uri", uri, "--runs", trials["a1b2c_00003"], "--out", "c.png"],
         "logged no Recall@N"),
        (["retrievals", "--resume", checkpoint, "--data-root", tmp_path, "--top-k", 30,
          "--out", "g.png"], "--top-k must be between 1 and 20"),
        (["retrievals", "--run", trials["a1b2c_00002"], "--tracking-uri", uri, "--out",
          "g.png"], "has no artifact checkpoints/model_best.pth.tar"),
        (report + ["--parent", trials["a1b2c_00000"]], "is not a sweep"),
        (report + ["--mlflow-url", "127.0.0.1:5000"], "not an http(s):// address"),
        (["report", "--tracking-uri", "file:///tmp/mlruns", "--experiment", EXPERIMENT,
          "--out", "r"], "no longer accepts file stores"),
    ]
    before = tree(tmp_path)
    for argv, needle in mistakes:
        done = dash(argv + ["--json", "s.json"], capsys, monkeypatch, tmp_path)
        assert_user_error(done, needle)
        assert tree(tmp_path) == before, argv


def test_a_mistake_in_a_subprocess_prints_one_line(store, tmp_path):
    done = run_cli("report", "--tracking-uri", store["uri"], "--experiment", "nope",
                   "--out", "r", cwd=tmp_path, module="dashboards", timeout=120)
    assert_user_error(done, "no experiment named 'nope'", EXPERIMENT)
    assert tree(tmp_path) == []
