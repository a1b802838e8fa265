"""The shared hard-negative mining service: one Ray actor serving every trial of a sweep.

Trials publish their descriptor caches (versioned by owner and refresh number) and send
batches of mining requests; the actor answers each request with one batched search over the
owner's database index (faiss flat L2 on the CPU, torch on a GPU when it has one). It keeps the
total size of the caches it holds within a memory budget, never writes to the arrays it
receives (Ray hands them over zero-copy and read-only), and is restarted by Ray if its process
dies: trainers then see `CacheMissing` and publish again.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import ray
from ray import tune

from vpr_core.training.mining import (
    CacheMissing,
    DescriptorCache,
    Miner,
    MiningIndex,
    MiningRequest,
    Triplet,
)

SERVICE_NAME = "netvlad-mining-service"
NAMESPACE = "vpr-sweeps"


class MemoryBudgetExceeded(ValueError):
    """A cache that would take the service over its memory budget."""


class MiningService:
    """The actor's class (wrapped with `ray.remote` by `start_service`)."""

    def __init__(self, memory_budget_bytes: int, device: str = "auto", threads: int = 1):
        import faiss
        import torch

        faiss.omp_set_num_threads(max(1, threads))  # Ray sets 1 for a 0-CPU actor; be explicit
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.indexes: dict[str, tuple[int, int, MiningIndex]] = {}  # owner -> version, bytes, index
        self.lock = threading.Lock()
        self.requests = 0
        self.served: set[str] = set()  # every owner that ever published
        self.started = time.time()

    def publish(self, owner: str, version: int, database: np.ndarray, queries: np.ndarray,
                query_ids: np.ndarray) -> int:
        """Hold `owner`'s cache version `version`, replacing what the owner had (a restarted
        trainer counts versions from 1 again, so the newest publish wins). Returns its bytes."""
        cache = DescriptorCache(database, queries, query_ids)
        with self.lock:
            held = sum(size for name, (_, size, _) in self.indexes.items() if name != owner)
        if held + cache.nbytes > self.memory_budget_bytes:
            raise MemoryBudgetExceeded(
                f"the descriptor cache of {owner} ({cache.nbytes / 2**20:.0f} MiB) would take the "
                f"mining service over its memory budget ({held / 2**20:.0f} of "
                f"{self.memory_budget_bytes / 2**20:.0f} MiB held); raise --miner-memory-gb, "
                f"lower the concurrency, or use smaller images or fewer clusters")
        index = MiningIndex(cache, self.device)  # copies what it keeps
        with self.lock:
            self.indexes[owner] = (version, cache.nbytes, index)
            self.served.add(owner)
        return cache.nbytes

    def mine(self, owner: str, version: int, request: MiningRequest) -> list[Triplet | None]:
        with self.lock:
            held = self.indexes.get(owner)
            self.requests += 1
        if held is None or held[0] != version:
            raise CacheMissing(f"no descriptor cache version {version} for {owner}")
        return held[2].mine(request)

    def release(self, owner: str) -> None:
        with self.lock:
            self.indexes.pop(owner, None)

    def stats(self) -> dict:
        with self.lock:
            return {"owners": sorted(self.indexes), "device": self.device,
                    "bytes": sum(size for _, size, _ in self.indexes.values()),
                    "memory_budget_bytes": self.memory_budget_bytes, "requests": self.requests,
                    "owners_served": len(self.served),
                    "uptime_s": time.time() - self.started}

    def pid(self) -> int:
        import os

        return os.getpid()


def start_service(memory_budget_bytes: int, num_gpus: float = 0.0, device: str = "auto",
                  threads: int = 1, name: str = SERVICE_NAME):
    """Create (or find) the named service actor, owned by the driver.

    It asks for no CPU, so it never takes a trial's slot on a small machine; with GPUs it asks
    for a small GPU fraction, because Ray hides GPUs from actors that ask for none.
    """
    actor_class = ray.remote(MiningService)
    return actor_class.options(
        name=name, namespace=NAMESPACE, get_if_exists=True, num_cpus=0, num_gpus=num_gpus,
        max_restarts=-1, max_task_retries=-1, max_concurrency=8,
    ).remote(memory_budget_bytes, device, threads)


class RayMiner(Miner):
    """The `Miner` interface over the shared service, used inside trial processes."""

    def __init__(self, name: str = SERVICE_NAME, namespace: str = NAMESPACE):
        self.name, self.namespace = name, namespace
        self.actor = ray.get_actor(name, namespace=namespace)

    def publish(self, owner: str, version: int, cache: DescriptorCache) -> None:
        ray.get(self.actor.publish.remote(owner, version, cache.database, cache.queries,
                                          cache.query_ids))

    def mine(self, owner: str, version: int, request: MiningRequest) -> list[Triplet | None]:
        return ray.get(self.actor.mine.remote(owner, version, request))

    def release(self, owner: str) -> None:
        """Nothing here: the driver frees a trial's cache when Tune says the trial ended
        (`ReleaseOnTrialEnd`), which also covers trials whose process died."""


class ReleaseOnTrialEnd(tune.Callback):
    """Frees a trial's cache in the service when the trial completes or fails."""

    def __init__(self, name: str = SERVICE_NAME, namespace: str = NAMESPACE):
        self.name, self.namespace = name, namespace

    def _release(self, trial) -> None:
        try:
            ray.get_actor(self.name, namespace=self.namespace).release.remote(trial.trial_id)
        except ValueError:
            pass  # the service is gone (end of the sweep): nothing to free

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)
