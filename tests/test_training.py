import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_core.config import ClusterConfig, TrainConfig
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.data.synthetic import SynthConfig, write_synthetic
from vpr_core.errors import UserError
from vpr_core.evaluation import evaluate
from vpr_core.models.checkpoints import load_checkpoint
from vpr_core.stages import cluster
from vpr_core.stages.train import training_run
from vpr_core.training.mining import Triplet
from vpr_core.training.results import EpochStats


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    """The default synthetic dataset size: 120 places per split, enough for recall to move."""
    out = tmp_path_factory.mktemp("street") / "data"
    write_synthetic(SynthConfig(out=out, seed=0))
    return out


def train_config(root, tmp_path, **overrides):
    values = dict(data_root=root, arch="alexnet", num_clusters=16, weights="none",
                  cache_dir=tmp_path / "cache", run_dir=tmp_path / "run", epochs=3,
                  workers=0, show_progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_raises_recall_over_the_untrained_model(street, tmp_path):
    run = training_run(train_config(street, tmp_path))
    test = open_split(street, "test")

    def recall_at_5():
        feed = ImageFeed(test, run.image_size, run.device)
        return evaluate(run.model, feed, batch_size=24).recalls[5]

    before = recall_at_5()
    results = list(run.epochs())
    after = recall_at_5()
    assert [r.epoch for r in results] == [1, 2, 3]
    assert all(r.triplets > 0 and r.batches > 0 and r.loss > 0 for r in results)
    assert results[-1].loss < results[0].loss
    assert after >= before + 0.08, (before, after)


def test_checkpoint_format_and_resume_match_an_uninterrupted_run(synth_root, tmp_path):
    straight = training_run(train_config(synth_root, tmp_path / "a", epochs=2, num_clusters=4))
    straight.run()
    first = training_run(train_config(synth_root, tmp_path / "b", epochs=1, num_clusters=4))
    first.run()
    checkpoint = load_checkpoint(first.run_dir / "checkpoints" / "checkpoint.pth.tar")
    assert {"epoch", "state_dict", "recalls", "best_score", "optimizer", "parallel"} <= \
        set(checkpoint)
    assert checkpoint["epoch"] == 1 and set(checkpoint["recalls"]) == {1, 5, 10, 20}
    assert (first.run_dir / "checkpoints" / "model_best.pth.tar").is_file()
    assert (first.run_dir / "checkpoints" / "flags.json").is_file()

    resumed = training_run(train_config(synth_root, tmp_path / "b", epochs=2, num_clusters=4,
                                       resume=first.run_dir, run_dir=None))
    assert resumed.run_dir == first.run_dir and resumed.standing.epoch == 1
    assert [r.epoch for r in resumed.epochs()] == [2]
    for key, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key], value, atol=1e-6), key
    assert resumed.best_score == straight.best_score


def record_learning_rates(optimizer) -> list:
    """The learning rate of each `optimizer.step()` call, as the optimiser reads it then."""
    seen = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([group["lr"] for group in opt.param_groups]))
    return seen


def test_learning_rate_steps_and_early_stopping(synth_root, tmp_path, monkeypatch):
    run = training_run(train_config(synth_root, tmp_path, epochs=30, patience=2, num_clusters=4))
    assert isinstance(run.optimizer, torch.optim.SGD)
    assert [run.learning_rate(e) for e in (1, 4, 5, 9, 10)] == \
        [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5]
    steps = record_learning_rates(run.optimizer)

    def one_step_epoch(epoch, query_ids, train):
        run.optimizer.step()  # no gradients: nothing moves, but the optimiser reads its lr
        return EpochStats(loss=0.1, triplets=1, negatives=1, batches=1, skipped_batches=0)

    # better through epoch 8; 9, 10 (equal is not better) and 11 are not: 3 > patience 2
    scores = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.75, 0.8, 0.79, 0.9])
    monkeypatch.setattr(run.triplets, "run", one_step_epoch)
    monkeypatch.setattr(run, "validate", lambda: {n: next(scores) if n == 5 else 0.0
                                                   for n in (1, 5, 10, 20)})
    results = list(run.epochs())
    assert [r.epoch for r in results] == list(range(1, 12))
    assert run.best_epoch == 8 and run.best_score == 0.8 and run.standing.stopped_early
    # what the optimiser received in each epoch: the reference's StepLR (x0.5 every 5 epochs)
    expected = [1e-4] * 4 + [5e-5] * 5 + [2.5e-5] * 2
    assert steps == [[pytest.approx(lr, rel=1e-12)] for lr in expected]
    assert [r.lr for r in results] == pytest.approx(expected, rel=1e-12)


def test_an_image_that_stops_decoding_leaves_nothing_behind(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "database" / "train").glob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])  # header intact
    # clustering meets the image first: no centroid file, lock or folder stays in the cache
    with pytest.raises(UserError, match=victim.name):
        training_run(train_config(root, tmp_path, epochs=1, num_clusters=4))
    assert not (tmp_path / "cache").exists()
    # with centroids from intact data, training meets it: no run folder stays
    cluster.run(ClusterConfig(data_root=synth_root, arch="alexnet", num_clusters=4, weights="none",
                          cache_dir=tmp_path / "cache", workers=0, show_progress=False))
    run = training_run(train_config(root, tmp_path, epochs=1, num_clusters=4,
                                   run_dir=tmp_path / "runs" / "one"))
    with pytest.raises(UserError, match=victim.name):
        list(run.epochs())
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting, message", [
    (dict(lr=0.0), "--lr must be positive"), (dict(margin=-0.1), "--margin must be positive"),
    (dict(batch_size=0), "--batch-size"), (dict(num_clusters=0), "--num-clusters"),
    (dict(arch="resnet"), "--arch 'resnet' must be one of"), (dict(optim="rmsprop"), "--optim"),
])
def test_impossible_settings_are_refused_before_any_work(synth_root, tmp_path, setting, message):
    with pytest.raises(UserError, match=message):
        training_run(train_config(synth_root, tmp_path, **setting))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_bfloat16_autocast_trains(synth_root, tmp_path):
    """--precision bf16 runs the convolutions in bfloat16 (here on the CPU; on a GPU the same
    code), with NetVLAD and the loss in float32."""
    run = training_run(train_config(synth_root, tmp_path, epochs=1, num_clusters=4,
                                   precision="bf16"))
    seen = set()
    run.model.encoder[0].register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    run.model.pool.register_forward_hook(lambda m, i, out: seen.add(("pool", out.dtype)))
    result = next(run.epochs())
    assert seen == {torch.bfloat16, ("pool", torch.float32)}
    assert result.triplets > 0 and 0 < result.loss < 1 and 0 <= result.recalls[5] <= 1


def test_padded_batches_train_as_unpadded_ones(synth_root, tmp_path):
    """On CUDA batches are padded to a multiple of 8 images; the padding is left out of the
    loss, so the same epoch gives the same loss and weights (here forced on the CPU)."""
    results = []
    for multiple in (1, 8):
        run = training_run(train_config(synth_root, tmp_path / str(multiple), epochs=1,
                                       num_clusters=4))
        run.triplets.batch_multiple = multiple
        results.append((next(run.epochs()).loss, run.model.pool.centroids.detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    padded = run.triplets._images_of(
        [Triplet(query=0, positive=1, negatives=np.array([2, 3, 4]))], run.train_input)
    assert padded == [run.data.train_feed.query_index(0), 1, 2, 3, 4] + \
        [run.data.train_feed.query_index(0)] * 3


def test_adam_keeps_its_learning_rate(synth_root, tmp_path, monkeypatch):
    """Adam has no schedule (the reference's): each epoch's steps run at --lr, including
    epoch 5, where SGD's StepLR halves it. Epochs 1-4 take one empty step each (to see the
    rate the optimiser holds), epoch 5 trains for real."""
    run = training_run(train_config(synth_root, tmp_path, epochs=5, num_clusters=4, optim="adam",
                                   lr=1e-3, eval_every=5))
    assert isinstance(run.optimizer, torch.optim.Adam)
    steps = record_learning_rates(run.optimizer)
    real_epoch = run.triplets.run

    def quick_early_epochs(epoch, query_ids, train):
        if epoch == 5:
            return real_epoch(epoch, query_ids, train)
        run.optimizer.step()
        return EpochStats(loss=0.1, triplets=1, negatives=1, batches=1, skipped_batches=0)

    monkeypatch.setattr(run.triplets, "run", quick_early_epochs)
    per_epoch = {}
    for result in run.epochs():
        per_epoch[result.epoch], steps[:] = list(steps), []
        assert result.batches > 0 and len(per_epoch[result.epoch]) == result.batches
    assert sorted(per_epoch) == [1, 2, 3, 4, 5] and len(per_epoch[5]) > 1
    assert {lr for lrs in per_epoch.values() for group in lrs for lr in group} == {1e-3}
