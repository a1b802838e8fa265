"""The shared mining service in a real local Ray, against the in-process miner."""
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray
import torch

from orchestrator.mining_service import MemoryBudgetExceeded, RayMiner, start_service
from vpr_core.config import TrainConfig
from vpr_core.models.checkpoints import load_checkpoint
from vpr_core.stages.train import training_run
from vpr_core.training.mining import (
    CacheMissing,
    DescriptorCache,
    InProcessMiner,
    Miner,
    MiningRequest,
)


def caches_and_requests(seed, owners=3, batches=4):
    rng = np.random.default_rng(seed)
    out = {}
    for o in range(owners):
        database = rng.normal(size=(400, 32)).astype(np.float32)
        queries = rng.normal(size=(60, 32)).astype(np.float32)
        cache = DescriptorCache(database, queries, np.arange(1000, 1060))
        requests = []
        for _ in range(batches):
            ids = rng.choice(np.arange(1000, 1060), 16, replace=False)
            requests.append(MiningRequest(
                ids, [rng.choice(400, 3, replace=False) for _ in ids],
                [np.unique(rng.choice(400, 150)) for _ in ids], margin=0.5, num_negatives=10))
        out[f"trial-{o}"] = (cache, requests)
    return out


def same(a, b):
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and x.query == y.query
                                      and x.positive == y.positive
                                      and np.array_equal(x.negatives, y.negatives))
        for x, y in zip(a, b))


def test_service_answers_exactly_as_the_in_process_miner(ray_session):
    actor = start_service(2**30, name="svc-equal")
    remote, local = RayMiner("svc-equal"), InProcessMiner()
    for owner, (cache, requests) in caches_and_requests(0).items():
        remote.publish(owner, 1, cache)
        local.publish(owner, 1, cache)
        for request in requests:
            expected = local.mine(owner, 1, request)
            assert any(t is not None for t in expected)
            assert same(remote.mine(owner, 1, request), expected)
    ray.kill(actor)


class Recording(Miner):
    """Passes everything to `inner` and keeps each answer of `mine`."""

    def __init__(self, inner: Miner):
        self.inner, self.answers, self.versions = inner, [], []

    def publish(self, owner, version, cache):
        self.versions.append(version)
        self.inner.publish(owner, version, cache)

    def mine(self, owner, version, request):
        found = self.inner.mine(owner, version, request)
        self.answers.append(found)
        return found

    def release(self, owner):
        self.inner.release(owner)


def test_training_through_the_service_equals_training_in_process(ray_session, synth_root,
                                                                tmp_path):
    """A whole TrainingRun (2 epochs, 3 cache refreshes each) mining in the Ray actor gives the
    triplets, losses and checkpoints of the same run mining in this process."""
    actor = start_service(2**30, name="svc-training")
    outcomes = {}
    for name, miner in (("service", RayMiner("svc-training")), ("in_process", None)):
        recording = Recording(miner or InProcessMiner())
        run = training_run(TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=4,
                                      weights="none", epochs=2, cache_refresh_rate=8,
                                      cache_dir=tmp_path / "cache", run_dir=tmp_path / name,
                                      workers=0, show_progress=False),
                          miner=recording, owner="trial-a")
        if miner is None:
            assert isinstance(run.miner, Recording) and isinstance(recording.inner,
                                                                   InProcessMiner)
        epochs = list(run.epochs())
        outcomes[name] = (recording, epochs,
                          load_checkpoint(tmp_path / name / "checkpoints" / "checkpoint.pth.tar"))
    (remote, remote_epochs, remote_ckpt), (local, local_epochs, local_ckpt) = \
        outcomes["service"], outcomes["in_process"]
    assert remote.versions == local.versions == [1, 2, 3, 4, 5, 6]
    assert len(remote.answers) == len(local.answers) == 6
    assert all(same(a, b) for a, b in zip(remote.answers, local.answers))
    assert sum(t is not None for answer in local.answers for t in answer) > 20
    assert [e.loss for e in remote_epochs] == [e.loss for e in local_epochs]
    assert [(e.triplets, e.negatives, e.batches) for e in remote_epochs] == \
        [(e.triplets, e.negatives, e.batches) for e in local_epochs]
    assert all(e.loss > 0 for e in local_epochs)
    assert remote_ckpt["state_dict"].keys() == local_ckpt["state_dict"].keys()
    for key, value in local_ckpt["state_dict"].items():
        assert torch.equal(remote_ckpt["state_dict"][key], value), key
    assert torch.equal(remote_ckpt["negative_cache"], local_ckpt["negative_cache"])
    assert ray.get(actor.stats.remote())["requests"] == 6
    ray.kill(actor)


def test_concurrent_trials_get_what_each_gets_alone(ray_session):
    actor = start_service(2**30, name="svc-load")
    work = caches_and_requests(1, owners=4, batches=6)
    alone = {}
    local = InProcessMiner()
    for owner, (cache, requests) in work.items():
        local.publish(owner, 1, cache)
        alone[owner] = [local.mine(owner, 1, r) for r in requests]
    got, errors = {}, []

    def trial(owner):
        try:
            miner = RayMiner("svc-load")
            cache, requests = work[owner]
            miner.publish(owner, 1, cache)
            got[owner] = [miner.mine(owner, 1, r) for r in requests]
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=trial, args=(o,)) for o in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for owner in work:
        assert all(same(a, b) for a, b in zip(got[owner], alone[owner]))
    assert ray.get(actor.stats.remote())["requests"] == sum(len(r) for _, r in work.values())
    ray.kill(actor)


def test_received_arrays_are_never_written_and_budget_is_enforced(ray_session):
    actor = start_service(200_000, name="svc-budget")
    miner = RayMiner("svc-budget")
    cache, requests = caches_and_requests(2, owners=1)["trial-0"]
    reference = cache.database.copy()
    miner.publish("a", 1, cache)  # ~60 KB
    miner.mine("a", 1, requests[0])
    assert np.array_equal(cache.database, reference)
    big = DescriptorCache(np.zeros((2000, 32), np.float32), cache.queries, cache.query_ids)
    with pytest.raises(MemoryBudgetExceeded, match="memory budget"):
        miner.publish("b", 1, big)
    ray.get(actor.release.remote("a"))
    assert ray.get(actor.stats.remote())["owners"] == []
    ray.kill(actor)


def test_a_killed_service_restarts_and_trainers_publish_again(ray_session):
    actor = start_service(2**30, name="svc-restart")
    miner = RayMiner("svc-restart")
    cache, requests = caches_and_requests(3, owners=1)["trial-0"]
    miner.publish("a", 1, cache)
    before = miner.mine("a", 1, requests[0])
    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
    time.sleep(1.0)
    with pytest.raises(CacheMissing):
        miner.mine("a", 1, requests[0])
    miner.publish("a", 1, cache)  # what TrainingRun does on CacheMissing
    assert same(miner.mine("a", 1, requests[0]), before)
    ray.kill(actor)
