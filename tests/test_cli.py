"""The command line end to end, as a user runs it: synth, cluster, train, eval."""
import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run_cli, run_cli_into_gone_reader, run_main, tree

from vpr_core.models.place_model import build_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synth_root):
    folder = tmp_path_factory.mktemp("cli")
    return folder


def test_synth_cluster_train_eval(workspace):
    data = workspace / "data"
    done = run_cli("synth", "--out", data, "--places", 24, "--json", "synth.json", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert json.loads((workspace / "synth.json").read_text())["splits"]["train"]["queries"] == 24

    common = ["--data-root", data, "--arch", "alexnet", "--num_clusters", 4, "--weights", "none",
              "--quiet"]
    done = run_cli("cluster", *common, cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "alexnet_synth_4_desc_cen.hdf5" in done.stdout
    assert (workspace / "cache" / "centroids").is_dir()

    # the reference's spellings (--nEpochs, --batchSize, --cacheRefreshRate) work as aliases
    done = run_cli("train", *common, "--nEpochs", 1, "--batchSize", 4, "--cacheRefreshRate", 12,
                   "--json", "train.json", cwd=workspace)
    assert done.returncode == 0, done.stderr
    summary = json.loads((workspace / "train.json").read_text())
    run_dir = summary["run_dir"]
    assert run_dir.startswith(str(workspace / "runs")) and run_dir.endswith("_alexnet_netvlad")
    assert len(summary["epochs"]) == 1 and summary["epochs"][0]["triplets"] > 0

    # eval needs no --arch: the checkpoint says alexnet and K=4; --mode=test is the reference's
    done = run_cli("--mode=test", "--resume", run_dir, "--split", "test", "--json", "r.json",
                   "--quiet", cwd=workspace)
    assert done.returncode == 0, done.stderr
    result = json.loads((workspace / "r.json").read_text())
    assert {"recall@1", "recall@5", "recall@10", "recall@20", "split", "num_queries",
            "num_database"} <= set(result)
    assert result["split"] == "test" and result["num_queries"] == 24
    printed = [line for line in done.stdout.splitlines() if line.startswith("Recall@")]
    assert printed == [f"Recall@{n}: {result[f'recall@{n}']:.4f}" for n in (1, 5, 10, 20)]


def test_both_layouts_give_identical_recalls(tmp_path, synth_root, synth_folder_root, capsys,
                                            monkeypatch):
    checkpoint = tmp_path / "checkpoint.pth.tar"
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none")
    torch.save({"epoch": 1, "state_dict": model.state_dict(),
                "recalls": {5: np.float64(0.1)}, "best_score": np.float64(0.1)}, checkpoint)
    recalls = []
    for root in (synth_root, synth_folder_root):
        done = run_main(["eval", "--resume", checkpoint, "--data-root", root, "--split", "test",
                         "--json", tmp_path / "r.json", "--quiet"], capsys, monkeypatch, tmp_path)
        assert done.returncode == 0, done.stderr
        recalls.append(json.loads((tmp_path / "r.json").read_text()))
    keys = ("recall@1", "recall@5", "recall@10", "recall@20", "num_queries", "num_database")
    assert [recalls[0][k] for k in keys] == [recalls[1][k] for k in keys]
    assert 0 < recalls[0]["recall@20"]


def test_a_user_mistake_in_a_fresh_interpreter(tmp_path):
    done = run_cli("eval", "--data-root", tmp_path / "nope", "--arch", "alexnet", cwd=tmp_path)
    assert_user_error(done, "does not exist", "--data-root")
    assert tree(tmp_path) == []


def test_a_missing_image_fails_before_anything_is_written(tmp_path, synth_root):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "queries_real" / "val").glob("*.jpg"))[0]
    victim.unlink()
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli("train", "--data-root", root, "--arch", "alexnet", "--weights", "none",
                   "--quiet", cwd=work)
    assert_user_error(done, str(victim), "does not exist")
    assert tree(work) == []


# ---- a reader that goes away (`| head`) -------------------------------------------------------
def assert_ended_quietly(done) -> None:
    """Exit status 1 and nothing on stderr: no traceback from the write that failed, none from
    the logging module, none from Python's flush at exit ('Exception ignored ...')."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert done.stderr == "", done.stderr[-3000:]


def test_a_printed_result_into_a_gone_reader_ends_quietly(tmp_path):
    done = run_cli_into_gone_reader("synth", "--out", tmp_path / "data", "--places", 12,
                                    "--image-size", "48x64", "--quiet", cwd=tmp_path)
    assert_ended_quietly(done)
    assert (tmp_path / "data" / "datasets").is_dir()  # the work was done, only its line is lost


def test_logged_progress_into_a_gone_reader_stops_the_run_quietly(tmp_path, synth_root):
    run = tmp_path / "run"
    done = run_cli_into_gone_reader("train", "--data-root", synth_root, "--arch", "alexnet",
                                    "--num-clusters", 4, "--weights", "none", "--epochs", 1,
                                    "--workers", 0, "--quiet", "--run-dir", run,
                                    "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert_ended_quietly(done)
    # it stopped at its first line ('training ...'), not after an epoch nobody could read about
    assert not (run / "checkpoints" / "checkpoint.pth.tar").exists()
