"""Flags either work or are refused with one line: none is parsed and then ignored."""
import json

import pytest
from cli_helpers import assert_user_error, run_main, tree

from orchestrator.sweep import SweepResult, latest_name
from orchestrator.sweep_cli import check_outcome, with_flags
from vpr_core.config import TrainConfig
from vpr_core.errors import CommandFailed, UserError
from vpr_tracking.trials import TrialRow

TINY = ["--arch", "alexnet", "--num-clusters", 4, "--weights", "none", "--quiet"]


def test_start_epoch_counts_epochs_as_done(synth_root, tmp_path, capsys, monkeypatch):
    done = run_main(["train", "--data-root", synth_root, *TINY, "--epochs", 3,
                     "--start-epoch", 2, "--run-dir", tmp_path / "run", "--json", "t.json"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    epochs = json.loads((tmp_path / "t.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [3]  # the reference: range(start_epoch + 1, ...)


@pytest.mark.parametrize("flags, message", [
    (["--start-epoch", 1], "--start-epoch does not apply with --resume"),
    (["--centroids", "nowhere.hdf5"], "--centroids does not apply with --resume"),
])
def test_train_resume_refuses_what_it_would_ignore(trained, tmp_path, capsys, monkeypatch,
                                                   flags, message):
    done = run_main(["train", "--resume", trained, "--epochs", 3, "--quiet", *flags],
                    capsys, monkeypatch, tmp_path)
    assert_user_error(done, message)


@pytest.mark.parametrize("flags, message", [
    (["--centroids", "missing.hdf5"], "--centroids does not apply with --resume"),
    (["--weights", "imagenet"], "--weights does not apply with --resume"),
])
def test_eval_resume_refuses_what_it_would_ignore(trained, synth_root, tmp_path, capsys,
                                                  monkeypatch, flags, message):
    done = run_main(["eval", "--resume", trained, "--data-root", synth_root, "--quiet",
                     *flags], capsys, monkeypatch, tmp_path)
    assert_user_error(done, message)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("flag", ["--momentum", "--weight-decay", "--lr-step", "--lr-gamma"])
def test_adam_refuses_sgd_settings(synth_root, tmp_path, capsys, monkeypatch, flag):
    done = run_main(["train", "--data-root", synth_root, *TINY, "--optim", "adam", flag, 0.5],
                    capsys, monkeypatch, tmp_path)
    assert_user_error(done, flag, "--optim SGD only")
    assert tree(tmp_path) == []


def test_adam_resumes_an_older_run_whose_flags_hold_sgd_settings(trained, tmp_path, capsys,
                                                                  monkeypatch):
    """flags.json of runs made before: momentum etc. restored must not stop an Adam resume;
    the optimiser state (SGD's) must: it does not fit Adam, so the command says what to do."""
    done = run_main(["train", "--resume", trained, "--optim", "adam", "--epochs", 2, "--quiet"],
                    capsys, monkeypatch, tmp_path)
    assert_user_error(done, "optimiser state does not fit", "--fresh-optimizer")
    done = run_main(["train", "--resume", trained, "--optim", "adam", "--epochs", 2, "--quiet",
                     "--fresh-optimizer", "--run-dir", tmp_path / "adam"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and "optimiser starts afresh" in done.stderr


def test_fresh_optimizer_needs_resume(synth_root):
    with pytest.raises(UserError, match="--fresh-optimizer applies with --resume only"):
        TrainConfig(data_root=synth_root, weights="none", fresh_optimizer=True).validate()


# ---- sweeps -------------------------------------------------------------------------------
def sweep_args(**given):
    from orchestrator.cli import build_parser

    argv = ["sweep"]
    for flag, value in given.items():
        argv += [f"--{flag.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("flag", ["num_samples", "max_concurrent", "seed"])
def test_sweep_resume_refuses_settings_it_would_ignore(flag):
    from orchestrator.spec import load_spec

    with pytest.raises(UserError, match="do.* not apply to a resumed sweep"):
        with_flags(load_spec(None), sweep_args(resume=True, **{flag: 3}))


def test_sweep_paths_become_absolute(tmp_path, monkeypatch):
    """Trials run in folders of their own: a relative --weights would be missing there."""
    from orchestrator.spec import load_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    spec = with_flags(load_spec(None), sweep_args(weights="w/alexnet.pth",
                                                  cache_dir="c", data_root="d"))
    assert spec.train["weights"] == str(tmp_path / "w" / "alexnet.pth")
    assert spec.train["cache_dir"] == str(tmp_path / "c")
    assert spec.data_root == tmp_path / "d"


def test_a_missing_sweep_weight_file_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    done = run_main(["sweep", "--weights", "w/alexnet.pth", "--arch", "alexnet",
                     "--aggregator", "netvlad", "--num-samples", 1, "--quiet"], capsys,
                    monkeypatch, tmp_path)
    assert_user_error(done, "alexnet.pth", "--weights")
    assert tree(tmp_path) == []


def test_resume_without_name_on_object_storage_asks_for_the_name():
    from orchestrator.spec import load_spec

    with pytest.raises(UserError, match="pass --name"):
        latest_name("s3://bucket/ray_results", load_spec(None))


def row(status: str, reason: str = "") -> TrialRow:
    values = {"arch": "alexnet", "num_clusters": 4, "margin": 0.1, "lr": 1e-4}
    return TrialRow("t", "r", values, {}, 0, status, reason, 1.0, 0.0)


def test_a_sweep_whose_every_trial_failed_is_not_a_success():
    result = SweepResult("s", "/x", "sqlite:////x.db", "e", "p", "recall@5",
                         rows=[row("FAILED", "failed: TrainingDiverged: nan")] * 2)
    with pytest.raises(CommandFailed, match="every trial of the sweep failed.*nan"):
        check_outcome(result)
    result.rows.append(row("FINISHED"))
    check_outcome(result)  # one trial is enough for a result
