"""Promises of the README that no other test held the code to: one test each, on generated data
with `--weights none`, through the command line as a user runs it (in this process where no
second process is needed)."""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import REPO, run_main
from mlflow import MlflowClient
from PIL import Image

from orchestrator.cli import build_parser, make_config, translate_mode
from vpr_core.config import ClusterConfig, EvalConfig, TrainConfig
from vpr_core.data import open_split
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import load_checkpoint
from vpr_core.models.place_model import build_model
from vpr_core.stages import cluster
from vpr_core.stages.cluster import read_centroids
from vpr_core.training import TrainingRun

QUICK = ["--workers", 0, "--quiet"]
ALEXNET = ["--arch", "alexnet", "--num-clusters", 4, "--weights", "none"]


def one_error_line(done, *needles: str) -> str:
    """Exit status 2 and one line on stderr holding every needle."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (relative path -> bytes): to tell that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root) -> Path:
    """A finished 1-epoch AlexNet run with non-default lr and margin (tests copy it)."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)
        from orchestrator.cli import main

        code = main([str(a) for a in ["train", "--data-root", synth_root, *ALEXNET,
                                      "--epochs", 1, "--lr", 3e-4, "--margin", 0.2,
                                      "--run-dir", folder / "run", "--cache-dir",
                                      folder / "cache", *QUICK]])
    assert code == 0
    return folder / "run"


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


@pytest.fixture(scope="module")
def alexnet_checkpoint(tmp_path_factory) -> Path:
    """A random-init AlexNet + NetVLAD (K=4) checkpoint file, no flags.json."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "alexnet.pth.tar"
    torch.save({"epoch": 1, "state_dict": build_model("alexnet", "netvlad", 4, "none")
                .state_dict()}, path)
    return path


# ---- train --resume ---------------------------------------------------------------------------
def test_train_resume_restores_the_runs_flags_and_ckpt_best_resumes_from_the_best(
        trained, tmp_path, capsys, monkeypatch):
    run = copy_run(trained, tmp_path)
    latest = run / "checkpoints" / "checkpoint.pth.tar"
    best = run / "checkpoints" / "model_best.pth.tar"
    # the latest checkpoint now claims epoch 3: resuming from it would leave nothing to train
    checkpoint = load_checkpoint(latest)
    torch.save(dict(checkpoint, epoch=3), latest)
    assert load_checkpoint(best)["epoch"] == 1
    learning_rates, margins = [], []
    real_init, real_loss = TrainingRun.__init__, torch.nn.functional.triplet_margin_loss

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.optimizer.register_step_pre_hook(
            lambda opt, a, k: learning_rates.append(opt.param_groups[0]["lr"]))

    def loss(*args, **kwargs):
        margins.append(kwargs["margin"])
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(TrainingRun, "__init__", init)
    monkeypatch.setattr(torch.nn.functional, "triplet_margin_loss", loss)
    # no --data-root, --arch, --num-clusters, --weights, --lr or --margin: flags.json has them
    done = run_main(["train", "--resume", run, "--ckpt", "best", "--epochs", 2,
                     "--json", tmp_path / "t.json", *QUICK], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "t.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [2]  # went on from the best (epoch 1)
    assert summary["run_dir"] == str(run)
    assert learning_rates and set(learning_rates) == {3e-4}
    assert margins and all(m == pytest.approx(math.sqrt(0.2)) for m in margins)
    flags = json.loads((run / "checkpoints" / "flags.json").read_text())
    assert (flags["arch"], flags["num_clusters"], flags["lr"], flags["margin"]) == \
        ("alexnet", 4, 3e-4, 0.2)
    assert flags["epochs"] == 2  # written by the resumed run
    assert load_checkpoint(latest)["epoch"] == 2


# ---- eval ---------------------------------------------------------------------------------------
def test_untrained_eval_prints_recalls_and_writes_json(synth_root, tmp_path, capsys,
                                                       monkeypatch):
    done = run_main(["eval", "--data-root", synth_root, *ALEXNET, "--split", "val",
                     "--cache-dir", tmp_path / "cache", "--json", tmp_path / "r.json", *QUICK],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["split"] == "val" and result["num_queries"] == 24
    assert "checkpoint" not in result
    printed = [line for line in done.stdout.splitlines() if line.startswith("Recall@")]
    assert printed == [f"Recall@{n}: {result[f'recall@{n}']:.4f}" for n in (1, 5, 10, 20)]
    assert 0 < result["recall@20"] <= 1
    # NetVLAD was initialised from centroids of the train split, clustered for this eval
    (centroids,) = sorted((tmp_path / "cache").rglob("*.hdf5"))
    with h5py.File(centroids) as handle:
        assert handle.attrs["split"] == "train" and handle["centroids"].shape == (4, 256)
        assert handle.attrs["weights"] == "none"


def test_eval_resume_logs_one_finished_run_at_an_absolute_sqlite_uri(
        alexnet_checkpoint, synth_root, tmp_path, capsys, monkeypatch):
    work, store = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    uri = f"sqlite:///{store}/m.db"
    assert uri.startswith("sqlite:////")
    done = run_main(["eval", "--resume", alexnet_checkpoint, "--data-root", synth_root,
                     "--split", "val", "--tracking-uri", uri, "--experiment", "E",
                     "--json", tmp_path / "r.json", *QUICK], capsys, monkeypatch, work)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("E").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id == result["mlflow_run_id"]
    assert runs[0].data.params["checkpoint"] == str(alexnet_checkpoint)
    for n in (1, 5, 10, 20):
        assert runs[0].data.metrics[f"recall_at_{n}"] == pytest.approx(result[f"recall@{n}"])
    assert (store / "m.db").is_file()
    assert not {"mlflow.db", "mlruns", "m.db"} & {p.name for p in work.iterdir()}  # not in cwd


# ---- a full disk ----------------------------------------------------------------------------
class FullDisk:
    """A writer's replacement on a full disk: the file it writes gets a few bytes (truncated
    first, as a real writer's open does), then ENOSPC. `targets` lists what it was asked to
    write, so a test knows the failure really happened."""

    def __init__(self):
        self.targets: list[Path] = []

    def write(self, target) -> None:
        self.targets.append(Path(target))
        with open(target, "wb") as handle:
            handle.write(b"\0partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))


def fails(call) -> str:
    """`call()` must fail: raise an OSError (or a UserError), or return a non-zero exit
    status. Returns what it said."""
    try:
        done = call()
    except (OSError, UserError) as error:
        return str(error)
    assert done.returncode != 0, done.stdout[-2000:]
    return done.stderr


def test_a_full_disk_keeps_the_checkpoint_and_says_how_to_resume(trained, tmp_path, capsys,
                                                                 monkeypatch):
    run = copy_run(trained, tmp_path)
    before = snapshot(run / "checkpoints")
    disk = FullDisk()
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: disk.write(f))
    done = run_main(["train", "--resume", run, "--epochs", 2, *QUICK], capsys, monkeypatch,
                    tmp_path)
    assert disk.targets, "no checkpoint was written"
    line = one_error_line(done, str(run / "checkpoints"), f"--resume {run}")
    after = snapshot(run / "checkpoints")
    assert after.keys() == before.keys()  # no temporary file left beside them
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert after[name] == before[name], name
    # the printed command continues the run once there is space again
    monkeypatch.undo()
    resume = re.search(r"--resume (\S+)", line).group(1).rstrip(";,.")
    done = run_main(["train", "--resume", resume, "--epochs", 2, "--json", tmp_path / "t.json",
                     *QUICK], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [e["epoch"] for e in json.loads((tmp_path / "t.json").read_text())["epochs"]] == [2]


def test_a_full_disk_at_the_first_checkpoint_advises_nothing_that_cannot_work(
        synth_root, tmp_path, capsys, monkeypatch):
    disk = FullDisk()
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: disk.write(f))
    done = run_main(["train", "--data-root", synth_root, *ALEXNET, "--epochs", 1, "--run-dir",
                     tmp_path / "run", "--cache-dir", tmp_path / "cache", *QUICK],
                    capsys, monkeypatch, tmp_path)
    monkeypatch.undo()
    line = one_error_line(done, "No space left", "run the command again")
    assert disk.targets
    advised = re.search(r"--resume (\S+)", line)
    if advised:  # the advice must work once there is space again
        done = run_main(["train", "--resume", advised.group(1).rstrip(";,."), "--epochs", 1,
                         *QUICK], capsys, monkeypatch, tmp_path)
        assert done.returncode == 0, done.stderr


def test_a_full_disk_keeps_the_centroid_file(synth_root, tmp_path, monkeypatch):
    config = dict(data_root=synth_root, arch="alexnet", num_clusters=4, weights="none",
                  cache_dir=tmp_path / "cache", workers=0, show_progress=False)
    path = cluster.run(ClusterConfig(**config)).path
    before = snapshot(path.parent)
    disk, real_file = FullDisk(), h5py.File

    def file(name, mode="r", *args, **kwargs):
        if mode != "r":
            disk.write(name)
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", file)
    said = fails(lambda: cluster.run(ClusterConfig(**config), force=True))  # a rebuild
    monkeypatch.undo()
    assert disk.targets and "No space left" in said
    assert snapshot(path.parent) == before  # the old file, byte for byte; no temporary file
    assert read_centroids(path, 4, 256).centroids.shape == (4, 256)


def test_a_full_disk_keeps_the_sweep_report(synth_root, alexnet_checkpoint, tmp_path, capsys,
                                            monkeypatch):
    from dashboards_store import EXPERIMENT, log_fake_sweep
    from matplotlib.figure import Figure

    from dashboards.cli import main as dashboards_main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_fake_sweep(uri, synth_root, alexnet_checkpoint, tmp_path)
    argv = ["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--out", "report"]
    done = run_main(argv, capsys, monkeypatch, tmp_path, main=dashboards_main)
    assert done.returncode == 0, done.stderr
    before = snapshot(tmp_path / "report")
    assert "index.html" in before and any(name.endswith(".png") for name in before)
    entries = sorted(p.name for p in tmp_path.iterdir())
    disk = FullDisk()
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: disk.write(fname))
    done = run_main(argv, capsys, monkeypatch, tmp_path, main=dashboards_main)
    one_error_line(done, "No space left", "free disk space")
    assert disk.targets
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == entries  # no half-built folder


def test_a_full_disk_keeps_the_json_result(alexnet_checkpoint, synth_root, tmp_path, capsys,
                                           monkeypatch):
    result = tmp_path / "r.json"
    result.write_text('{"recall@5": 0.5}\n')
    disk, real_write_text = FullDisk(), Path.write_text

    def write_text(self, data, *args, **kwargs):
        if "r.json" in self.name:
            disk.write(self)
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    done = run_main(["eval", "--resume", alexnet_checkpoint, "--data-root", synth_root,
                     "--split", "val", "--json", result, *QUICK], capsys, monkeypatch, tmp_path)
    monkeypatch.undo()
    one_error_line(done, f"cannot write {result}", "No space left")
    assert disk.targets
    assert result.read_text() == '{"recall@5": 0.5}\n'
    assert [p.name for p in tmp_path.iterdir() if "r.json" in p.name] == ["r.json"]


# ---- one clustering per centroid file -------------------------------------------------------
CLUSTER_RACE = textwrap.dedent("""
    import contextlib, json, os, sys, time
    import vpr_core.stages.cluster as clustering
    log = sys.argv[1]
    real_lock, real_kmeans = clustering.file_lock, clustering.kmeans
    locked = []

    def note(event):
        with open(log, "a") as handle:  # one short append each: lines never interleave
            handle.write(json.dumps({"event": event, "pid": os.getpid()}) + "\\n")

    def others(event):
        with open(log) as handle:
            return [e["pid"] for e in map(json.loads, handle)
                    if e["event"] == event and e["pid"] != os.getpid()]

    def blocked_on(path):
        # processes waiting for the lock of `path`: Linux lists them as '1: -> FLOCK ...'
        inode = f":{os.stat(path).st_ino} "
        with open("/proc/locks") as handle:
            return [int(line.split("->")[1].split()[3]) for line in handle
                    if "->" in line and inode in line]

    @contextlib.contextmanager
    def file_lock(path):
        note("lock-wanted")
        with real_lock(path):
            note("lock-held")
            locked.append(path)
            try:
                yield
            finally:
                note("lock-released")  # the lock goes right after this line

    def kmeans(*args, **kwargs):
        note("kmeans-start")
        # hold the lock until the other process waits for it (or, were there no lock, has
        # it too): an order of events, however slowly the other process starts
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not others("lock-held"):
            if set(blocked_on(locked[-1])) - {os.getpid()}:
                note("other-blocked")
                break
            time.sleep(0.02)
        try:
            return real_kmeans(*args, **kwargs)
        finally:
            note("kmeans-end")

    clustering.file_lock, clustering.kmeans = file_lock, kmeans
    from orchestrator.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="reads waiters in /proc/locks")
def test_two_processes_cluster_one_centroid_file_once(synth_root, tmp_path):
    log = tmp_path / "events.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled")
    processes = [subprocess.Popen(
        [sys.executable, "-c", CLUSTER_RACE, str(log), "cluster", "--data-root",
         str(synth_root), *map(str, ALEXNET), "--cache-dir", str(tmp_path / "cache"),
         "--json", str(tmp_path / f"{name}.json"), *map(str, QUICK)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    order = [(e["event"], e["pid"]) for e in map(json.loads, log.read_text().splitlines())]
    kmeans = [(event, pid) for event, pid in order if event.startswith("kmeans")]
    assert [event for event, _ in kmeans] == ["kmeans-start", "kmeans-end"]  # clustered once
    first = kmeans[0][1]
    second = ({pid for _, pid in order} - {first}).pop()
    # the second process asked for the lock while the first held it, was blocked on it, and
    # got it once the first had clustered and let go
    assert ("other-blocked", first) in order, order
    assert order.index(("lock-wanted", second)) < order.index(("kmeans-end", first)) < \
        order.index(("lock-released", first)) < order.index(("lock-held", second)), order
    results = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b")]
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["centroids"] == results[1]["centroids"]
    files = sorted((tmp_path / "cache").rglob("*.hdf5"))
    assert [str(f) for f in files] == [results[0]["centroids"]]
    assert read_centroids(files[0], 4, 256).centroids.shape == (4, 256)


# ---- datasets -------------------------------------------------------------------------------
def test_synth_folder_layout_is_what_open_split_reads(tmp_path, capsys, monkeypatch):
    out = tmp_path / "folder"
    done = run_main(["synth", "--out", out, "--layout", "folder", "--places", 12, "--queries",
                     10, "--image-size", "32x40", "--json", tmp_path / "s.json"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["images"]  # no .mat files
    name = re.compile(r"^@(\d+\.\d+)@(\d+\.\d+)@[^/]*@\.jpg$")
    for split in ("train", "val", "test"):
        for kind, count in (("database", 12), ("queries", 10)):
            files = sorted((out / "images" / split / kind).rglob("*"))
            assert len(files) == count and all(name.match(f.name) for f in files), files[:2]
            with Image.open(files[0]) as image:
                assert image.size == (40, 32)
        read = open_split(out, split)
        assert (read.num_database, read.num_queries, read.native_size) == (12, 10, (32, 40))
        utm = [[float(v) for v in name.match(Path(p).name).groups()] for p in read.query_paths]
        assert np.array_equal(read.query_utm, np.array(utm))
        assert sum(len(p) > 0 for p in read.eval_positives()) == 10  # every query has one
        assert all(str(p).startswith(str(out / "images" / split / "database"))
                   for p in read.database_paths)


def test_train_uses_the_centroid_file_it_is_given(synth_root, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(7)
    given = tmp_path / "mine.hdf5"
    with h5py.File(given, "w") as handle:
        handle.create_dataset("centroids", data=rng.normal(size=(4, 256)).astype(np.float32))
        handle.create_dataset("descriptors", data=rng.normal(size=(64, 256)).astype(np.float32))
    seen = {}
    real_init = TrainingRun.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen["centroids"] = self.model.pool.centroids.detach().cpu().clone()

    monkeypatch.setattr(TrainingRun, "__init__", init)
    monkeypatch.setattr(TrainingRun, "epochs", lambda self: iter(()))  # the model is the point
    done = run_main(["train", "--data-root", synth_root, *ALEXNET, "--centroids", given,
                     "--cache-dir", tmp_path / "cache", "--run-dir", tmp_path / "run", *QUICK],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    with h5py.File(given) as handle:
        assert torch.equal(seen["centroids"], torch.from_numpy(handle["centroids"][()]))
    assert not list((tmp_path).rglob("*_desc_cen.hdf5"))  # nothing was clustered


def test_the_reference_flag_spellings_land_in_the_config(tmp_path):
    def config(cls, argv):
        return make_config(cls, build_parser().parse_args(translate_mode(argv))).validate()

    args = build_parser().parse_args(translate_mode(["--mode=train", "--nEpochs", "3"]))
    assert args.verb == "train"
    train = config(TrainConfig, [
        "--mode=train", "--num_clusters", "8", "--nEpochs", "3", "--batchSize", "2",
        "--cacheBatchSize", "12", "--cacheRefreshRate", "100", "--lrStep", "3",
        "--lrGamma", "0.25", "--weightDecay", "0.01", "--threads", "0", "--ckpt", "best",
        "--resume", str(tmp_path / "run"), "--fromscratch", "--nocuda"])
    assert (train.num_clusters, train.epochs, train.batch_size, train.cache_batch_size,
            train.cache_refresh_rate, train.lr_step, train.lr_gamma, train.weight_decay,
            train.workers, train.ckpt, train.resume, train.weights, train.device) == \
        (8, 3, 2, 12, 100, 3.0, 0.25, 0.01, 0, "best", tmp_path / "run", "none", "cpu")
    test = config(EvalConfig, ["--mode=test", "--split", "test", "--resume", str(tmp_path),
                               "--ckpt", "best", "--cacheBatchSize", "6", "--threads", "0",
                               "--nocuda"])
    assert build_parser().parse_args(translate_mode(["--mode=test"])).verb == "eval"
    assert (test.split, test.resume, test.ckpt, test.cache_batch_size, test.workers,
            test.device) == ("test", tmp_path, "best", 6, 0, "cpu")
    clustering = config(ClusterConfig, ["--mode", "cluster", "--num_clusters", "16",
                                        "--fromscratch", "--cacheBatchSize", "4",
                                        "--threads", "0", "--nocuda"])
    assert build_parser().parse_args(translate_mode(["--mode", "cluster"])).verb == "cluster"
    assert (clustering.num_clusters, clustering.weights, clustering.cache_batch_size,
            clustering.workers, clustering.device) == (16, "none", 4, 0, "cpu")


def test_a_verb_keeps_its_own_mode_flag():
    """`compress --method quantize --mode ptq-int8`, as the README writes it, is compress's
    --mode, not the reference's --mode=train|test|cluster."""
    argv = ["compress", "--resume", "runs/a", "--method", "quantize", "--mode", "ptq-int8"]
    assert translate_mode(argv) == argv
    args = build_parser().parse_args(translate_mode(argv))
    assert (args.verb, args.method, args.mode) == ("compress", "quantize", "ptq-int8")


def test_mixed_image_sizes_need_image_size(alexnet_checkpoint, synth_root, tmp_path, capsys,
                                           monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    odd = sorted((root / "queries_real" / "val").glob("*.jpg"))[5]
    with Image.open(odd) as image:
        image.resize((96, 72)).save(odd)
    argv = ["eval", "--resume", alexnet_checkpoint, "--data-root", root, "--split", "val",
            "--json", tmp_path / "r.json", *QUICK]
    done = run_main(argv, capsys, monkeypatch, tmp_path)
    one_error_line(done, "differ in size", "--image-size")
    assert not (tmp_path / "r.json").exists()
    done = run_main(argv + ["--image-size", "64x80"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_queries"] == 24 and 0 < result["recall@20"] <= 1


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_a_checkpoint_without_flags_is_not_evaluated_as_max_pooling_by_guess(
        pooling, synth_root, tmp_path, capsys, monkeypatch):
    """Max and avg pooling have no parameters, so a checkpoint without flags.json cannot tell
    them apart: eval must use the right pooling or say to pass --pooling, never guess."""
    path = tmp_path / "ckpt" / "checkpoint.pth.tar"
    path.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": build_model("alexnet", pooling, weights="none")
                .state_dict()}, path)
    uri = f"sqlite:///{tmp_path}/m.db"
    argv = ["eval", "--resume", path, "--data-root", synth_root, "--split", "val",
            "--tracking-uri", uri, "--experiment", "E", *QUICK]
    done = run_main(argv, capsys, monkeypatch, tmp_path)
    if done.returncode == 0:
        run = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("E")
                                             .experiment_id])[0]
        assert run.data.params["aggregator"] == pooling
    else:
        one_error_line(done, "--aggregator")
        done = run_main(argv + ["--pooling", pooling], capsys, monkeypatch, tmp_path)
        assert done.returncode == 0, done.stderr
