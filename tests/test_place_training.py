"""Place-batched training (the GSV-Cities recipe): the P x K sampler, the losses with their
miners, the schedules, training and resuming a run, and the refusals."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli_env, run_main
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from PIL import Image

from vpr_core.config import TrainConfig
from vpr_core.data.places import PlaceSet
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import load_checkpoint
from vpr_core.stages.train import training_run
from vpr_core.training.losses import PlaceLoss
from vpr_core.training.place_sampler import PlaceSampler
from vpr_core.training.schedule import Schedule
from vpr_core.training.triplets import TrainingDiverged

SIZE = (48, 64)  # H, W


# ---- data: places with a distinct colour pattern each, shifted and noisy per image ----------
def place_image(place: int, seed: int) -> Image.Image:
    grid = np.random.default_rng([1000, place]).uniform(0, 255, (3, 4, 3))
    rng = np.random.default_rng([seed, place])
    pattern = np.roll(np.kron(grid, np.ones((16, 16, 1))), tuple(rng.integers(-8, 9, 2)),
                      axis=(0, 1))
    pixels = 0.25 * pattern + 96 + rng.normal(0, 90, pattern.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_places(root: Path, places: int = 16, per_place: int = 4) -> PlaceSet:
    """A GSV-Cities-like root (Dataframes/<city>.csv marks the layout) and its `PlaceSet`."""
    (root / "Dataframes").mkdir(parents=True)
    (root / "Dataframes" / "Synth.csv").touch()  # the reader itself is stood in for
    paths, place_of = [], []
    for place in range(places):
        for i in range(per_place):
            path = root / "Images" / f"place{place:03d}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            place_image(place, seed=i).save(path, quality=95)
            paths.append(str(path))
            place_of.append(place)
    return PlaceSet("toy", root, tuple(paths), np.array(place_of, dtype=np.int64),
                    tuple(f"place{p}" for p in range(places)), native_size=SIZE)


def write_val(root: Path, places: int = 16) -> Path:
    """The same places seen again, in the @UTM@ folder layout: 100 m apart, one database
    image and one query each."""
    for kind, seed in (("database", 50), ("queries", 60)):
        folder = root / "images" / "val" / kind
        folder.mkdir(parents=True)
        for place in range(places):
            place_image(place, seed).save(folder / f"@{place * 100}@0@17@T@p{place}@.jpg",
                                          quality=95)
    return root


@pytest.fixture(scope="module")
def place_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("places")
    return write_places(base / "train"), write_val(base / "val")


@pytest.fixture
def opened(place_data, monkeypatch):
    """`open_places` (the readers' entry point) giving the hand-built `PlaceSet`."""
    import vpr_core.data.datasets as datasets

    monkeypatch.setattr(datasets, "open_places", lambda root, **_: place_data[0],
                        raising=False)
    return place_data


def place_config(place_data, tmp_path, **overrides) -> TrainConfig:
    places, val_root = place_data
    values = dict(data_root=places.root, val_root=val_root, arch="alexnet", aggregator="gem",
                  weights="none", cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
                  epochs=2, places_per_batch=4, images_per_place=4, warmup_steps=0,
                  optim="adamw", lr=1e-3,
                  cache_batch_size=16, workers=0, show_progress=False, patience=0)
    values.update(overrides)
    return TrainConfig(**values)


# ---- (a) the loss ----------------------------------------------------------------------
def multi_similarity_by_hand(x, labels, alpha=1.0, beta=50.0, base=0.0, epsilon=0.1):
    """The MS loss (Wang et al. 2019) with its miner, written out: for anchor i, negatives
    with S_in > min_p S_ip - epsilon and positives with S_ip < max_n S_in + epsilon are kept
    (mined on cosine similarity); loss_i = 1/alpha log(1 + sum_p exp(-alpha (S_ip - base)))
    + 1/beta log(1 + sum_n exp(beta (S_in - base))) on dot products; the mean over anchors."""
    sim = x @ x.T
    cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(x).T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(x), dtype=torch.bool)
    total = torch.zeros(())
    for i in range(len(x)):
        pos, neg = same[i] & ~eye[i], ~same[i]
        hard_neg = neg & (cos[i] + epsilon > cos[i][pos].min())
        hard_pos = pos & (cos[i] - epsilon < cos[i][neg].max())
        if hard_pos.any():
            total = total + torch.log1p(torch.exp(-alpha * (sim[i][hard_pos] - base)).sum()) / alpha
        if hard_neg.any():
            total = total + torch.log1p(torch.exp(beta * (sim[i][hard_neg] - base)).sum()) / beta
    return total / len(x)


def test_multi_similarity_loss_equals_the_formula():
    config = TrainConfig(loss="multi-similarity", ms_alpha=1.0, ms_beta=50.0, ms_base=0.0,
                         ms_epsilon=0.1)
    generator = torch.Generator().manual_seed(0)
    descriptors = torch.nn.functional.normalize(torch.randn(16, 8, generator=generator))
    labels = torch.arange(4).repeat_interleave(4)
    loss, kept, candidates = PlaceLoss(config)(descriptors, labels)
    assert torch.allclose(loss, multi_similarity_by_hand(descriptors, labels), atol=1e-5)
    assert 0 < kept <= candidates == 16 * 3 + 16 * 12


# ---- (b) the sampler -----------------------------------------------------------------------
def test_sampler_gives_every_place_once_per_epoch_in_p_by_k_batches():
    place_of = np.repeat(np.arange(12), [4, 5, 6, 4, 4, 7, 4, 4, 5, 4, 4, 4])
    sampler = PlaceSampler(place_of, places_per_batch=3, images_per_place=4, seed=5)
    first = sampler.epoch_batches(1)
    assert len(first) == sampler.batches_per_epoch == 4
    for batch in first:
        assert len(batch.images) == 12 and len(set(batch.images.tolist())) == 12
        assert (place_of[batch.images] == batch.labels).all()
        groups = batch.labels.reshape(3, 4)
        assert (groups == groups[:, :1]).all()  # K images of one place per group
    assert sorted(np.concatenate([b.labels[::4] for b in first]).tolist()) == list(range(12))
    again = PlaceSampler(place_of, 3, 4, seed=5).epoch_batches(1)
    assert all((a.images == b.images).all() for a, b in zip(first, again))
    second = sampler.epoch_batches(2)
    assert not all((a.labels == b.labels).all() for a, b in zip(first, second))


def test_sampler_resumed_mid_epoch_continues_identically():
    place_of = np.repeat(np.arange(10), 6)
    straight = PlaceSampler(place_of, 2, 4, seed=1)
    order = []
    for _ in range(8):  # past the end of epoch 1 (5 batches)
        batch = straight.remaining()[0]
        order.append(batch.images)
        straight.taken(batch)
    interrupted = PlaceSampler(place_of, 2, 4, seed=1)
    for batch in interrupted.remaining()[:2]:
        interrupted.taken(batch)
    resumed = PlaceSampler(place_of, 2, 4, seed=1)
    resumed.load_state_dict(interrupted.state_dict())
    again = []
    for _ in range(6):
        batch = resumed.remaining()[0]
        again.append(batch.images)
        resumed.taken(batch)
    assert all((a == b).all() for a, b in zip(order[2:], again))
    assert resumed.state_dict() == straight.state_dict()


# ---- (c) the schedules -----------------------------------------------------------------------
@pytest.mark.parametrize("scheduler, extra, expected", [
    # 10 steps per epoch, 4 epochs, 5 warm-up steps, lr 1
    ("multistep", dict(milestones=(1, 3), lr_gamma=0.5),
     {0: 0.2, 4: 1.0, 9: 1.0, 10: 0.5, 29: 0.5, 30: 0.25}),
    ("step", dict(lr_step=2, lr_gamma=0.1), {2: 0.6, 19: 1.0, 20: 0.1, 39: 0.1}),
    ("linear", dict(lr_end_factor=0.2), {4: 1.0, 5: 1.0, 22.5: 0.6, 40: 0.2}),
    ("cosine", {}, {3: 0.8, 5: 1.0, 22.5: 0.5, 40: 0.0}),
])
def test_schedules_warm_up_then_decay(scheduler, extra, expected):
    config = TrainConfig(loss="multi-similarity", lr=1.0, epochs=4, warmup_steps=5,
                         scheduler=scheduler, **extra)
    schedule = Schedule(config, steps_per_epoch=10)
    for step, lr in expected.items():
        if step == 22.5:  # halfway through the decay (steps 5 to 40)
            lr_mid = 0.5 * (schedule.lr_at(22) + schedule.lr_at(23))
            assert lr_mid == pytest.approx(lr, abs=1e-3), step
        else:
            assert schedule.lr_at(step) == pytest.approx(lr), step


# ---- (d) training ------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_raises_recall(opened, tmp_path):
    run = training_run(place_config(opened, tmp_path))
    assert run.config.loss == "multi-similarity" and run.config.scheduler == "multistep"
    before = run.validate()[5]
    results = list(run.epochs())
    assert [r.batches for r in results] == [4, 4]
    assert all(0 < r.mined_fraction <= 1 for r in results)
    assert results[-1].loss < results[0].loss, [r.loss for r in results]
    assert results[-1].recalls[5] > before, (before, [r.recalls for r in results])
    assert (run.run_dir / "checkpoints" / "model_best.pth.tar").is_file()


def test_a_diverging_place_run_names_the_batch(opened, tmp_path):
    run = training_run(place_config(opened, tmp_path, optim="SGD", lr=1e12, epochs=1))
    with pytest.raises(TrainingDiverged, match=r"the loss became (nan|inf) at epoch 1, batch "
                                               r"\d+; lower --lr \(now 1e\+12\)"):
        list(run.epochs())


# ---- (e) resume ---------------------------------------------------------------------------------
def test_resume_continues_the_sampler_and_the_schedule(opened, tmp_path):
    settings = dict(epochs=2, scheduler="linear", warmup_steps=3, places_per_batch=8)
    straight = training_run(place_config(opened, tmp_path / "a", **settings))
    seen = record_steps(straight)
    straight.run()

    first = training_run(place_config(opened, tmp_path / "b", **{**settings, "epochs": 1}))
    head = record_steps(first)
    first.run()
    checkpoint = load_checkpoint(first.run_dir / "checkpoints" / "checkpoint.pth.tar")
    assert checkpoint["place_sampler"]["epoch"] == 2 and checkpoint["schedule"]["step"] == 2
    resumed = training_run(place_config(opened, tmp_path / "b", **settings,
                                        resume=first.run_dir, run_dir=None, arch=None,
                                        aggregator=None))
    tail = record_steps(resumed)
    resumed.run()
    assert [lr for lr, _ in head + tail] == pytest.approx([lr for lr, _ in seen])
    assert all((a == b).all() for (_, a), (_, b) in zip(head + tail, seen))


def record_steps(run) -> list:
    """(learning rate, batch labels) of each optimiser step of `run`."""
    seen = []
    original = run.places._step

    def step(images, labels, train):
        result = original(images, labels, train)
        seen.append((run.optimizer.param_groups[0]["lr"], labels.cpu().numpy()))
        return result

    run.places._step = step
    return seen


# ---- (f) refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (dict(images_per_place=1), "--images-per-place 1 gives no positive pair"),
    (dict(places_per_batch=17), "--places-per-batch 17 x --images-per-place 4 is more than"),
    (dict(images_per_place=5), "has 4 images, fewer than --images-per-place 5"),
    (dict(loss="triplet"), "--loss triplet needs database images and queries"),
    (dict(val_root=None), "place data has no validation split; pass --val-root"),
    (dict(val_root="/nowhere/val"), "data root /nowhere/val does not exist; fix --val-root"),
])
def test_place_training_refuses_bad_settings(opened, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        training_run(place_config(opened, tmp_path, **overrides))
    assert not (tmp_path / "run").exists()


def test_a_place_loss_needs_place_data(synth_root, tmp_path):
    with pytest.raises(UserError, match="--loss contrastive needs place data"):
        TrainConfig(data_root=synth_root, loss="contrastive", weights="none").validate()
    with pytest.raises(UserError, match="--scheduler cosine applies to place batches only"):
        TrainConfig(data_root=synth_root, scheduler="cosine", weights="none").validate()


# ---- (e) a killed run, resumed from the command line ----------------------------------------
def test_a_killed_run_resumes_with_its_sampler_and_schedule(tmp_path, capsys, monkeypatch):
    """`train` on generated GSV-Cities data, killed (SIGKILL) once epoch 1 is written, then
    `train --resume`: epoch 2 trains on the same batches at the same learning rates as in a
    run never interrupted (its loss and recalls equal), and the run holds each epoch once:
    in its checkpoint and in MLflow, where the resumed command continues the killed run.
    Only the killed command runs in a process of its own."""
    gsv, pitts = tmp_path / "gsv", tmp_path / "pitts"
    assert run_main(["synth", "--out", gsv, "--layout", "gsv-cities", "--places", 12,
                     "--quiet"], capsys, monkeypatch, tmp_path).returncode == 0
    assert run_main(["synth", "--out", pitts, "--places", 16, "--quiet"], capsys, monkeypatch,
                    tmp_path).returncode == 0
    flags = ["--data-root", gsv, "--val-root", pitts, "--arch", "alexnet", "--aggregator",
             "gem", "--weights", "none", "--places-per-batch", 4, "--epochs", 2, "--optim",
             "adamw", "--lr", "1e-3", "--scheduler", "linear", "--warmup-steps", 3,
             "--workers", 0, "--cache-dir", tmp_path / "cache", "--quiet"]
    whole = run_main(["train", *flags, "--run-dir", tmp_path / "whole", "--json", "whole.json"],
                     capsys, monkeypatch, tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = tmp_path / "killed"
    log_path = tmp_path / "killed.log"
    tracking = ["--tracking-uri", store_uri(tmp_path / "m.db"), "--experiment", "places"]
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "train", *map(str, flags), "--run-dir",
             str(killed), *tracking], cwd=tmp_path, env=cli_env(), stdout=log,
            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None \
            and "epoch 1/2" not in log_path.read_text():
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert "epoch 1/2" in log_path.read_text(), log_path.read_text()[-2000:]
    resumed = run_main(["train", "--resume", killed, "--epochs", 2, "--json", "resumed.json",
                        "--quiet", *tracking], capsys, monkeypatch, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    whole_epochs = json.loads((tmp_path / "whole.json").read_text())["epochs"]
    resumed_epochs = json.loads((tmp_path / "resumed.json").read_text())["epochs"]
    assert [e["epoch"] for e in resumed_epochs] == [2]
    for key in ("loss", "lr", "recall@1", "recall@5", "batches"):
        assert resumed_epochs[0][key] == pytest.approx(whole_epochs[1][key], rel=1e-4), key
    checkpoint = load_checkpoint(killed / "checkpoints" / "checkpoint.pth.tar")
    assert checkpoint["epoch"] == 2
    assert checkpoint["schedule"]["step"] == 2 * resumed_epochs[0]["batches"]
    client = MlflowClient(store_uri(tmp_path / "m.db"))
    runs = client.search_runs([client.get_experiment_by_name("places").experiment_id])
    assert len(runs) == 1  # the resumed command continued the killed run
    run = runs[0]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "recall_at_5")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.value for m in history if m.step == 2] == \
        pytest.approx([resumed_epochs[0]["recall@5"]])
