import math

import numpy as np
import pytest

from vpr_core.training.mining import (
    CacheMissing,
    CandidateSampler,
    DescriptorCache,
    FaissRanker,
    InProcessMiner,
    MiningRequest,
    TorchRanker,
)


def reference_mine(query, database, positives, negatives, margin, num_negatives):
    """The reference's per-query rule with plain numpy (its sklearn kNN calls, spelled out)."""
    d_pos_all = np.linalg.norm(database[positives] - query, axis=1)
    positive = positives[np.argmin(d_pos_all)]
    d_pos = d_pos_all.min()
    d_neg = np.linalg.norm(database[negatives] - query, axis=1)
    order = np.argsort(d_neg, kind="stable")[:num_negatives * 10]
    violating = order[d_neg[order] < d_pos + math.sqrt(margin)][:num_negatives]
    if len(violating) == 0:
        return None
    return positive, negatives[violating]


@pytest.fixture
def cache():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(300, 16)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = database[:40] + 0.3 * rng.normal(size=(40, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return DescriptorCache(database, queries, np.arange(100, 140))


def make_request(rng, query_ids, margin=0.1, num_negatives=10):
    positives = [np.array(sorted(rng.choice(300, 3, replace=False))) for _ in query_ids]
    negatives = [np.unique(rng.choice(300, 120)) for _ in query_ids]
    return MiningRequest(np.asarray(query_ids), positives, negatives, margin, num_negatives)


@pytest.mark.parametrize("margin", [0.01, 0.1, 1.0])
def test_miner_follows_the_reference_rule(cache, margin):
    rng = np.random.default_rng(1)
    miner = InProcessMiner()
    miner.publish("trial", 1, cache)
    request = make_request(rng, [105, 100, 139, 120], margin)
    found = miner.mine("trial", 1, request)
    for b, q in enumerate(request.query_ids):
        expected = reference_mine(cache.queries[q - 100], cache.database, request.positives[b],
                                  request.negatives[b], margin, 10)
        if expected is None:
            assert found[b] is None
            continue
        assert found[b].query == q
        assert found[b].positive == expected[0]
        assert found[b].negatives.tolist() == expected[1].tolist()
    counts = [0 if t is None else len(t.negatives) for t in found]
    assert max(counts) > 0 and (margin != 1.0 or max(counts) == 10)


def test_versions_and_release(cache):
    miner = InProcessMiner()
    request = make_request(np.random.default_rng(2), [100])
    with pytest.raises(CacheMissing):
        miner.mine("trial", 1, request)
    miner.publish("trial", 1, cache)
    miner.mine("trial", 1, request)
    with pytest.raises(CacheMissing):
        miner.mine("trial", 2, request)
    miner.release("trial")
    with pytest.raises(CacheMissing):
        miner.mine("trial", 1, request)


def test_published_arrays_are_not_written_to(cache):
    database = cache.database.copy()
    database.setflags(write=False)
    queries = cache.queries.copy()
    queries.setflags(write=False)
    miner = InProcessMiner()
    miner.publish("t", 1, DescriptorCache(database, queries, cache.query_ids))
    miner.mine("t", 1, make_request(np.random.default_rng(3), [101, 102]))
    assert np.array_equal(database, cache.database) and np.array_equal(queries, cache.queries)


def per_database_row(sq_dist: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """[B, N] distances in ranking order -> [B, N] distances indexed by database row."""
    out = np.full(sq_dist.shape, np.nan, dtype=np.float64)
    np.put_along_axis(out, ranked, sq_dist, axis=1)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_torch_ranking_equals_faiss_ranking(dtype):
    """The whole ranking, ties included: equal distances may come in either order, so each
    ranking must sort the other library's distances (up to float32 rounding)."""
    rng = np.random.default_rng(4)
    unique = rng.normal(size=(200, 16)).astype(np.float32)
    unique /= np.linalg.norm(unique, axis=1, keepdims=True)
    # 100 exact duplicates (exact ties for every query), then shuffled so ties are far apart
    database = np.concatenate([unique, unique[:70], unique[150:180]])[rng.permutation(300)]
    database = database.astype(dtype)
    queries = np.concatenate([unique[:30] + 0.3 * rng.normal(size=(30, 16)).astype(np.float32),
                              unique[190:200].astype(dtype)]).astype(np.float32)
    # (the last 10 queries are database rows: distance 0)
    exact = ((queries[:, None, :].astype(np.float64)
              - database[None].astype(np.float64)) ** 2).sum(-1)  # [40, 300]
    tolerance = 1e-5  # float32 rounding of squared distances of unit vectors (at most 4)

    rankings = {"faiss": FaissRanker(database).rank(queries),
                "torch": TorchRanker(database, "cpu").rank(queries)}
    by_row = {}
    for name, (sq_dist, ranked) in rankings.items():
        assert sq_dist.shape == ranked.shape == (40, 300), name
        assert all(sorted(row) == list(range(300)) for row in ranked.tolist()), name
        assert (np.diff(sq_dist, axis=1) >= 0).all(), name  # its own distances ascend
        by_row[name] = per_database_row(sq_dist, ranked)
        assert np.abs(by_row[name] - exact).max() < tolerance, name
    assert np.abs(by_row["faiss"] - by_row["torch"]).max() < tolerance
    for name, other in (("faiss", "torch"), ("torch", "faiss")):
        other_in_this_order = np.take_along_axis(by_row[other], rankings[name][1], axis=1)
        assert np.diff(other_in_this_order, axis=1).min() >= -tolerance, (name, other)
    # the data has what the test is about: exact ties, and rows equal to queries
    tied = [row for row in exact.tolist() if len(set(row)) < len(row)]
    assert len(tied) == 40 and (exact[30:].min(axis=1) == 0).all()


def test_sampler_handles_fewer_negatives_than_the_sample_size_and_keeps_the_cache():
    positives = [np.array([0]), np.array([1])]
    negatives = [np.array([5, 6, 7]), np.array([], dtype=np.int64)]
    sampler = CandidateSampler(positives, negatives, num_samples=1000)
    rng = np.random.default_rng(0)
    request = sampler.request(np.array([0, 1]), rng, 0.1, 10)
    assert request.negatives[0].tolist() == [5, 6, 7]
    assert request.negatives[1].tolist() == []
    # the query's last hard negatives join the next candidates, even when not drawn again
    sampler.negative_cache[0] = np.array([42])
    assert 42 in sampler.request(np.array([0]), rng, 0.1, 10).negatives[0]
    state = sampler.cache_state(width=3)
    fresh = CandidateSampler(positives, negatives, 1000)
    fresh.load_cache_state(state)
    assert fresh.negative_cache[0].tolist() == [42] and fresh.negative_cache[1].tolist() == []


def test_a_query_with_no_negative_candidates_gives_no_triplet(cache):
    miner = InProcessMiner()
    miner.publish("t", 1, cache)
    request = MiningRequest(np.array([100]), [np.array([0])], [np.array([], dtype=np.int64)])
    assert miner.mine("t", 1, request) == [None]
