"""Hard-negative mining behind one narrow `Miner` interface.

A trainer publishes a descriptor cache (database and training-query descriptors) under its
owner name and a version (the refresh number), then asks for the positive and the hard
negatives of a batch of queries. The trainer draws the candidates (the reference's 1000 random
negatives plus the query's negatives from the last time it was mined), so the miner itself is
deterministic: the same cache and request give the same triplets wherever the miner runs.

The rule is the reference's: the positive is the feature-space nearest of the query's 10 m
positives; the negatives are the (at most `num_negatives`) nearest candidates whose distance is
below d(query, positive) + sqrt(margin).
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch


class CacheMissing(RuntimeError):
    """The miner holds no cache for this owner and version (never published, or lost)."""


@dataclass(frozen=True)
class DescriptorCache:
    """database [N, D]; queries [Q, D] for training-query ids `query_ids` [Q]; float32, or
    float16 (half the bytes; rankers compute in float32)."""

    database: np.ndarray
    queries: np.ndarray
    query_ids: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.database.nbytes + self.queries.nbytes + self.query_ids.nbytes)


@dataclass(frozen=True)
class MiningRequest:
    """For each query id: candidate positives and candidate negatives (database indices)."""

    query_ids: np.ndarray  # [B]
    positives: list  # B arrays of database indices within 10 m
    negatives: list  # B arrays of database indices beyond 25 m (sampled)
    margin: float = 0.1
    num_negatives: int = 10


@dataclass(frozen=True)
class Triplet:
    query: int  # training-query id (index into the split's queries)
    positive: int  # database index
    negatives: np.ndarray = field(repr=False)  # [n <= num_negatives] database ids, nearest first


class Miner(abc.ABC):
    """Where mining runs: in this process (`InProcessMiner`) or in a shared service."""

    @abc.abstractmethod
    def publish(self, owner: str, version: int, cache: DescriptorCache) -> None:
        """Make `cache` the owner's current descriptors; older versions may be dropped."""

    @abc.abstractmethod
    def mine(self, owner: str, version: int, request: MiningRequest) -> list[Triplet | None]:
        """One triplet per query (None when it has no violating negative). Raises `CacheMissing`."""

    @abc.abstractmethod
    def release(self, owner: str) -> None:
        """Forget the owner's cache."""


class MiningIndex:
    """One owner's published cache with an exact flat L2 index over its database descriptors."""

    def __init__(self, cache: DescriptorCache, device: str = "cpu"):
        order = np.argsort(cache.query_ids, kind="stable")
        self.query_ids = np.asarray(cache.query_ids)[order]
        self.queries = np.asarray(cache.queries)[order]  # fancy indexing copies: ours to keep
        self.num_database = len(cache.database)
        self.ranker = make_ranker(cache.database, device)

    def mine(self, request: MiningRequest) -> list[Triplet | None]:
        rows = np.searchsorted(self.query_ids, request.query_ids)
        rows = np.minimum(rows, len(self.query_ids) - 1)
        if not np.array_equal(self.query_ids[rows], request.query_ids):
            raise KeyError("a requested query is not in the published cache")
        sq_dist, ranked = self.ranker.rank(self.queries[rows])
        return select_triplets(sq_dist, ranked, request, self.num_database)


def select_triplets(sq_dist: np.ndarray, ranked: np.ndarray, request: MiningRequest,
                    num_database: int) -> list[Triplet | None]:
    """Apply the reference's rule to full rankings.

    sq_dist [B, N] squared L2 distances in ascending order; ranked [B, N] database indices.
    """
    batch = len(request.query_ids)
    rows = np.arange(batch)[:, None]
    dist = np.sqrt(np.maximum(sq_dist, 0.0))
    is_positive = _membership(request.positives, batch, num_database)[rows, ranked]  # [B, N]
    is_negative = _membership(request.negatives, batch, num_database)[rows, ranked]
    first_positive = is_positive.argmax(axis=1)
    has_positive = is_positive.any(axis=1)
    d_positive = dist[np.arange(batch), first_positive]
    violating = is_negative & (dist < (d_positive + math.sqrt(request.margin))[:, None])
    chosen = violating & (np.cumsum(violating, axis=1) <= request.num_negatives)
    triplets: list[Triplet | None] = []
    for b in range(batch):
        negatives = ranked[b][chosen[b]]
        if not has_positive[b] or len(negatives) == 0:
            triplets.append(None)
            continue
        triplets.append(Triplet(int(request.query_ids[b]), int(ranked[b, first_positive[b]]),
                                negatives.astype(np.int64)))
    return triplets


def _membership(candidates: list, batch: int, size: int) -> np.ndarray:
    mask = np.zeros((batch, size), dtype=bool)
    for b, ids in enumerate(candidates):
        mask[b, np.asarray(ids, dtype=np.int64)] = True
    return mask


class FaissRanker:
    """Full ranking of the database by faiss `IndexFlatL2` (exact, CPU)."""

    def __init__(self, database: np.ndarray):
        # faiss copies the vectors into the index; the caller's array is never written to.
        self.index = faiss.IndexFlatL2(database.shape[1])
        self.index.add(np.ascontiguousarray(database, dtype=np.float32))

    def rank(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """queries [B, D] -> (squared distances [B, N] ascending, database indices [B, N])."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(queries, self.index.ntotal)


class TorchRanker:
    """Full ranking with torch on a GPU: the same exact flat L2 search, as one matrix product.

    faiss-GPU's k-selection stops at k=2048, and mining needs the whole ranking to restrict it
    to each query's candidates, so the GPU path is a torch matrix product and sort.
    """

    def __init__(self, database: np.ndarray, device: str):
        self.device = torch.device(device)
        self.database = self._upload(database)
        self.sq_norms = (self.database * self.database).sum(dim=1)

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """float32 on the device; a float16 cache travels as float16 and widens there."""
        return torch.from_numpy(np.array(array)).to(self.device).float()

    @torch.no_grad()
    def rank(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = self._upload(queries)
        sq = (q * q).sum(dim=1, keepdim=True) + self.sq_norms[None] - 2.0 * q @ self.database.T
        sq_sorted, order = torch.sort(sq.clamp_min_(0.0), dim=1, stable=True)
        return sq_sorted.cpu().numpy(), order.cpu().numpy()


def make_ranker(database: np.ndarray, device: str = "cpu"):
    return FaissRanker(database) if str(device) == "cpu" else TorchRanker(database, device)


class InProcessMiner(Miner):
    """Mining in the trainer's own process (the reference's behaviour, without a service)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.indexes: dict[str, tuple[int, MiningIndex]] = {}

    def publish(self, owner: str, version: int, cache: DescriptorCache) -> None:
        self.indexes[owner] = (version, MiningIndex(cache, self.device))

    def mine(self, owner: str, version: int, request: MiningRequest) -> list[Triplet | None]:
        held = self.indexes.get(owner)
        if held is None or held[0] != version:
            raise CacheMissing(f"no descriptor cache version {version} for {owner}")
        return held[1].mine(request)

    def release(self, owner: str) -> None:
        self.indexes.pop(owner, None)


class CandidateSampler:
    """The trainer's side of mining: candidate positives and negatives per query.

    Keeps each query's last hard negatives (the reference's negCache, kept across refreshes
    and epochs here) and adds `num_samples` negatives drawn with replacement, as the reference.
    """

    def __init__(self, train_positives: list, potential_negatives: list, num_samples: int):
        self.train_positives = train_positives
        self.potential_negatives = potential_negatives
        self.num_samples = num_samples
        self.negative_cache = [np.empty(0, dtype=np.int64) for _ in potential_negatives]

    def request(self, query_ids: np.ndarray, rng: np.random.Generator, margin: float,
                num_negatives: int) -> MiningRequest:
        negatives = []
        for q in query_ids:
            pool = self.potential_negatives[q]
            sample = rng.choice(pool, self.num_samples) if len(pool) else pool
            negatives.append(np.unique(np.concatenate([self.negative_cache[q], sample])))
        positives = [self.train_positives[q] for q in query_ids]
        return MiningRequest(np.asarray(query_ids, dtype=np.int64), positives, negatives,
                             margin, num_negatives)

    def remember(self, triplets: list[Triplet | None]) -> None:
        for triplet in triplets:
            if triplet is not None:
                self.negative_cache[triplet.query] = triplet.negatives

    def cache_state(self, width: int) -> torch.Tensor:
        """The negative cache as an int64 tensor [Q, width], padded with -1 (for checkpoints)."""
        state = torch.full((len(self.negative_cache), width), -1, dtype=torch.int64)
        for q, negatives in enumerate(self.negative_cache):
            state[q, :len(negatives)] = torch.tensor(negatives[:width], dtype=torch.int64)
        return state

    def load_cache_state(self, state: torch.Tensor) -> None:
        if state.shape[0] != len(self.negative_cache):
            from ..errors import UserError

            raise UserError(f"the checkpoint's negative cache is for {state.shape[0]} training "
                            f"queries, this training split has {len(self.negative_cache)}: it "
                            f"was trained on other data; resume on the data it was trained "
                            f"on, or start a new run")
        for q, row in enumerate(state.numpy()):
            self.negative_cache[q] = row[row >= 0].astype(np.int64)
