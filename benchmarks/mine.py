"""`python -m benchmarks mine`: batched hard-negative mining against the reference's per-query kNN.

Both sides mine the same requests (built by this project's `CandidateSampler`: each query's
10 m positives and 1000 negatives drawn with replacement from the database images beyond 25 m):
- batched: `MiningIndex` (this project's miner) over the whole cache, asked 64 queries at a time
  as the trainer does; building the index (publish) and mining are timed apart. On CPU it ranks
  with faiss; on CUDA, when there is one, with torch.
- per query: the reference's `__getitem__` rule (`reference_loop.per_query_mine`), one query at
  a time, gathering its positive and negative rows from the database array (the reference
  reads them from an HDF5 file, which is slower: this side is flattered) and fitting two kNNs.
  It is slow, so it runs on the first `--reference-queries` queries only: compare throughput
  (queries per second), not totals.
Also: the share of queries whose triplet is unchanged when the cache is stored as float16.

The descriptors are synthetic but structured (`synthetic_street`): places along a straight street,
database image i at i metres, queries at random positions. A descriptor is the L2-normalised sum
of Gaussian parts: a street-wide mean; a place appearance that drifts along the street (AR(1),
correlation length 15 m); a facade style, one of 20, drawn for each segment (about 40 m long),
so far-apart segments of one style look alike (perceptual aliasing); and per-image noise,
stronger and of varying strength for queries (other light, occluders). So 10 m positives are
nearer than most negatives, and the hard negatives are places just beyond 25 m and aliased
facades: at the defaults about a third of the queries have no violating negative and half reach
the cap of 10 (`share_with_triplet`, `share_full` in the `batched` records).

    python -m benchmarks mine --quick
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.common import (
    emit,
    machine,
    peak_gpu_memory_gb,
    peak_host_memory_gb,
    ratio,
    synchronize,
)
from benchmarks.reference_loop import knn_backend, per_query_mine
from vpr_core.training.mining import (
    CandidateSampler,
    DescriptorCache,
    MiningIndex,
    MiningRequest,
    Triplet,
)

REQUEST_QUERIES = 64  # queries per mining request, as the trainer sends them
POSITIVE_M = 10.0  # training positives: database images within 10 m
NEGATIVE_M = 25.0  # potential negatives: database images beyond 25 m
QUICK = {"database": 2000, "dim": 4096, "queries": 200, "reference_queries": 20}

# synthetic street: squared weights of the parts of a descriptor (before normalisation)
STREET_MEAN = 0.25
APPEARANCE = 0.45  # smooth drift along the street
CORRELATION_M = 15.0
STYLE = (0.05, 0.35)  # per segment, uniform
STYLES, SEGMENT_M = 20, 40.0
DATABASE_NOISE = 0.3
QUERY_NOISE = (0.2, 1.2)  # per query, uniform


@dataclass(frozen=True)
class Street:
    """Unit descriptors of a street: database [N, D] and queries [Q, D] float32, with their
    positions along the street in metres, database_positions [N] (sorted), query_positions [Q]."""

    database: np.ndarray
    queries: np.ndarray
    database_positions: np.ndarray
    query_positions: np.ndarray


def synthetic_street(num_database: int, dim: int, num_queries: int, seed: int = 0) -> Street:
    """Database image i at i metres; queries at uniform random positions (see the module doc)."""
    rng = np.random.default_rng(seed)

    def gaussian(*shape):  # rows of expected norm 1
        return rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(dim))

    segment = np.searchsorted(np.cumsum(rng.exponential(SEGMENT_M, num_database)),
                              np.arange(num_database))  # [N] segment of each metre
    styles = gaussian(STYLES, dim)[rng.integers(0, STYLES, segment.max() + 1)]  # per segment
    styles *= np.sqrt(rng.uniform(*STYLE, (len(styles), 1))).astype(np.float32)
    mean = math.sqrt(STREET_MEAN) * gaussian(dim)
    query_positions = rng.uniform(0, num_database - 1, num_queries)
    query_place = np.rint(query_positions).astype(np.int64)
    query_noise = np.sqrt(rng.uniform(*QUERY_NOISE, (num_queries, 1))).astype(np.float32)

    database = np.empty((num_database, dim), np.float32)
    queries = np.empty((num_queries, dim), np.float32)
    rho = math.exp(-1.0 / CORRELATION_M)
    appearance = gaussian(dim)
    for start in range(0, num_database, 256):
        stop = min(start + 256, num_database)
        steps = gaussian(stop - start, dim)
        for row in range(len(steps)):  # AR(1) drift, one metre at a time
            appearance = rho * appearance + math.sqrt(1 - rho * rho) * steps[row]
            steps[row] = appearance
        place = mean + math.sqrt(APPEARANCE) * steps + styles[segment[start:stop]]  # [b, D]
        database[start:stop] = place + math.sqrt(DATABASE_NOISE) * gaussian(stop - start, dim)
        here = np.flatnonzero((query_place >= start) & (query_place < stop))
        queries[here] = (place[query_place[here] - start]
                         + query_noise[here] * gaussian(len(here), dim))
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return Street(database, queries, np.arange(num_database, dtype=np.float64), query_positions)


def ground_truth(street: Street) -> tuple[list, list]:
    """(positives within 10 m, potential negatives beyond 25 m): Q sorted arrays of db indices."""
    positions, everything = street.database_positions, np.arange(len(street.database_positions))
    positives, negatives = [], []
    for x in street.query_positions:
        lo = np.searchsorted(positions, x - POSITIVE_M, side="left")
        hi = np.searchsorted(positions, x + POSITIVE_M, side="right")
        positives.append(everything[lo:hi])
        near_lo = np.searchsorted(positions, x - NEGATIVE_M, side="left")
        near_hi = np.searchsorted(positions, x + NEGATIVE_M, side="right")
        negatives.append(np.concatenate([everything[:near_lo], everything[near_hi:]]))
    return positives, negatives


def make_requests(street: Street, args) -> list[MiningRequest]:
    """All queries, `REQUEST_QUERIES` at a time, with candidates drawn as the trainer does."""
    positives, negatives = ground_truth(street)
    sampler = CandidateSampler(positives, negatives, args.negatives)
    rng = np.random.default_rng(args.seed)
    ids = np.arange(len(street.queries))
    return [sampler.request(ids[start:start + REQUEST_QUERIES], rng, args.margin,
                            args.num_negatives)
            for start in range(0, len(ids), REQUEST_QUERIES)]


def publish(cache: DescriptorCache, device: torch.device) -> tuple[MiningIndex, float]:
    """(the index built over the cache on `device`, seconds it took)."""
    started = time.perf_counter()
    index = MiningIndex(cache, str(device))
    synchronize(device)
    return index, time.perf_counter() - started


def mine_batched(index: MiningIndex, requests: list[MiningRequest], device: torch.device
                 ) -> tuple[list[Triplet | None], float]:
    """(one triplet or None per query of `requests`, seconds the mining took)."""
    synchronize(device)
    started = time.perf_counter()
    triplets = [triplet for request in requests for triplet in index.mine(request)]
    synchronize(device)
    return triplets, time.perf_counter() - started


def mine_per_query(street: Street, requests: list[MiningRequest], limit: int
                   ) -> list[Triplet | None]:
    """The reference's way, for the first `limit` queries of `requests`."""
    pairs = itertools.islice(((r, b) for r in requests for b in range(len(r.query_ids))), limit)
    triplets: list[Triplet | None] = []
    for request, b in pairs:
        q, positives, negatives = request.query_ids[b], request.positives[b], request.negatives[b]
        positive_row, negative_rows = per_query_mine(
            street.queries[q], street.database[positives], street.database[negatives],
            request.margin, request.num_negatives)
        triplets.append(None if positive_row is None else
                        Triplet(int(q), int(positives[positive_row]), negatives[negative_rows]))
    return triplets


def identical_share(first: list, second: list) -> float:
    """Share of positions where both have no triplet, or the same positive and negative list."""
    def same(a, b):
        if a is None or b is None:
            return a is None and b is None
        return a.positive == b.positive and np.array_equal(a.negatives, b.negatives)

    pairs = list(zip(first, second))
    return round(sum(same(a, b) for a, b in pairs) / max(len(pairs), 1), 4)


def mining_profile(street: Street, triplets: list, num_negatives: int) -> dict:
    """How hard the mining is: shares of queries with a triplet / with a full one, distances."""
    found = [t for t in triplets if t is not None]
    d_pos = [np.linalg.norm(street.queries[t.query] - street.database[t.positive]) for t in found]
    d_neg = [np.linalg.norm(street.queries[t.query] - street.database[t.negatives[0]])
             for t in found]
    return {"share_with_triplet": round(len(found) / max(len(triplets), 1), 4),
            "share_full": round(sum(len(t.negatives) == num_negatives for t in found)
                                / max(len(triplets), 1), 4),
            "mean_hard_negatives": round(float(np.mean([len(t.negatives) for t in found]
                                                       or [0])), 3),
            "mean_positive_distance": round(float(np.mean(d_pos or [0])), 4),
            "mean_hardest_negative_distance": round(float(np.mean(d_neg or [0])), 4)}


def street_profile(street: Street, requests: list[MiningRequest], count: int = 8) -> dict:
    """Median distance from a few queries to their candidate negatives."""
    request = requests[0]
    distances = [np.linalg.norm(street.database[request.negatives[b]]
                                - street.queries[request.query_ids[b]], axis=1)
                 for b in range(min(count, len(request.query_ids)))]
    return {"median_candidate_distance": round(float(np.median(np.concatenate(distances))), 4)}


def float16_cache(cache: DescriptorCache) -> DescriptorCache:
    """The cache as it would be stored in float16, read back as float32."""
    return DescriptorCache(cache.database.astype(np.float16).astype(np.float32),
                           cache.queries.astype(np.float16).astype(np.float32), cache.query_ids)


def batched_record(device: torch.device, publish_seconds: float, mine_seconds: float,
                   street: Street, triplets: dict, args) -> dict:
    """The JSON record of one device's batched mining; `triplets` {device type: triplets}."""
    queries = args.queries
    record = {"benchmark": "mine", "record": "batched", "device": device.type,
              **sizes_of(args), "request_queries": REQUEST_QUERIES, "repeats": args.repeats,
              "publish_seconds": round(publish_seconds, 4),
              "mine_seconds": round(mine_seconds, 4),
              "queries_per_second": round(queries / mine_seconds, 2),
              "queries_per_second_with_publish":
                  round(queries / (mine_seconds + publish_seconds), 2),
              **mining_profile(street, triplets[device.type], args.num_negatives),
              "machine": machine(device)}
    if device.type == "cuda":
        record["identical_to_cpu_share"] = identical_share(triplets["cuda"], triplets["cpu"])
        record["peak_gpu_memory_gb"] = peak_gpu_memory_gb(device)
    return record


def sizes_of(args) -> dict:
    return {"database": args.database, "dim": args.dim, "queries": args.queries,
            "negatives": args.negatives, "margin": args.margin,
            "num_negatives": args.num_negatives}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mine",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=10000, help="database descriptors")
    parser.add_argument("--dim", type=int, default=32768, help="descriptor size (K*D)")
    parser.add_argument("--queries", type=int, default=1000, help="training queries mined")
    parser.add_argument("--reference-queries", type=int, default=100,
                        help="queries the per-query (reference) side mines")
    parser.add_argument("--negatives", type=int, default=1000,
                        help="candidate negatives drawn per query (with replacement)")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--num-negatives", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="batched mining repeats (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes to try it in seconds: " +
                             ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    for name in ("database", "dim", "queries", "reference_queries", "negatives",
                 "num_negatives", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.database <= 2 * NEGATIVE_M + 1:
        parser.error(f"--database must be above {2 * NEGATIVE_M + 1:.0f}: images are 1 m apart "
                     f"and negatives lie beyond {NEGATIVE_M:.0f} m")
    if args.margin <= 0:
        parser.error("--margin must be positive")
    args.reference_queries = min(args.reference_queries, args.queries)
    return args


def run_batched(street: Street, requests: list[MiningRequest], devices: list, args
                ) -> tuple[dict, dict]:
    """Publish and mine on each device -> ({device type: record}, {device type: triplets})."""
    cache = DescriptorCache(street.database, street.queries, np.arange(args.queries))
    if any(device.type == "cuda" for device in devices):
        torch.zeros(1, device="cuda")  # CUDA context start-up is not publishing
    indexes, publish_seconds, mine_seconds, triplets = {}, {}, {}, {}
    for device in devices:
        indexes[device.type], publish_seconds[device.type] = publish(cache, device)
        indexes[device.type].mine(requests[0])  # warm-up (cuBLAS, faiss threads)
    for _ in range(args.repeats):  # devices in turn, so a slow moment hits both
        for device in devices:
            triplets[device.type], seconds = mine_batched(indexes[device.type], requests, device)
            mine_seconds.setdefault(device.type, []).append(seconds)
    records = {device.type: batched_record(device, publish_seconds[device.type],
                                           statistics.median(mine_seconds[device.type]),
                                           street, triplets, args)
               for device in devices}
    return records, triplets


def run_per_query(street: Street, requests: list[MiningRequest], batched: list, args) -> dict:
    """Time the reference's per-query mining on the first `args.reference_queries` queries."""
    knn_backend()  # imports sklearn before the clock starts
    mine_per_query(street, requests, 1)  # warm-up
    started = time.perf_counter()
    triplets = mine_per_query(street, requests, args.reference_queries)
    seconds = time.perf_counter() - started
    return {"benchmark": "mine", "record": "per_query", "device": "cpu", "knn": knn_backend(),
            **sizes_of(args), "queries_mined": args.reference_queries,
            "seconds": round(seconds, 4),
            "queries_per_second": round(args.reference_queries / seconds, 2),
            "identical_to_batched_share": identical_share(triplets, batched),
            "note": "includes gathering each query's positive and negative rows from the "
                    "in-memory database (the reference reads them from HDF5)"}


def run_float16(street: Street, requests: list[MiningRequest], batched: list, args) -> dict:
    """Mine from a float16-rounded cache on CPU; compare with the float32 triplets."""
    cache = DescriptorCache(street.database, street.queries, np.arange(args.queries))
    triplets, _ = mine_batched(MiningIndex(float16_cache(cache), "cpu"), requests,
                               torch.device("cpu"))
    float32_bytes = street.database.nbytes + street.queries.nbytes
    return {"benchmark": "mine", "record": "float16_cache", **sizes_of(args),
            "identical_share": identical_share(triplets, batched),
            "bytes_float32": float32_bytes, "bytes_float16": float32_bytes // 2,
            "bytes_saved": float32_bytes - float32_bytes // 2}


def summary(batched: dict, per_query: dict, float16: dict, args, seconds: float) -> dict:
    cpu, reference_qps = batched["cpu"], per_query["queries_per_second"]
    record = {
        "benchmark": "mine", "record": "summary", **sizes_of(args),
        "reference_queries": args.reference_queries,
        "comparison": f"per-query throughput (queries/s): batched mines all {args.queries} "
                      f"queries, the per-query (reference) side the first "
                      f"{args.reference_queries} of them",
        "per_query_queries_per_second": reference_qps,
        "batched_cpu_queries_per_second": cpu["queries_per_second"],
        "speedup_batched_cpu_vs_per_query": ratio(cpu["queries_per_second"], reference_qps),
        "speedup_batched_cpu_with_publish_vs_per_query":
            ratio(cpu["queries_per_second_with_publish"], reference_qps),
        "float16_identical_share": float16["identical_share"],
        "float16_bytes_saved": float16["bytes_saved"],
        "peak_host_memory_gb": round(peak_host_memory_gb(), 3),
        "total_seconds": round(seconds, 3)}
    if "cuda" in batched:
        cuda = batched["cuda"]
        record.update(
            batched_cuda_queries_per_second=cuda["queries_per_second"],
            speedup_batched_cuda_vs_cpu=ratio(cuda["queries_per_second"],
                                              cpu["queries_per_second"]),
            speedup_batched_cuda_with_publish_vs_cpu=ratio(
                cuda["queries_per_second_with_publish"], cpu["queries_per_second_with_publish"]),
            speedup_batched_cuda_vs_per_query=ratio(cuda["queries_per_second"], reference_qps))
    return record


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    street = synthetic_street(args.database, args.dim, args.queries, args.seed)
    requests = make_requests(street, args)
    emit({"benchmark": "mine", "record": "descriptors", **sizes_of(args),
          "seconds": round(time.perf_counter() - started, 3),
          **street_profile(street, requests)})
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    batched, triplets = run_batched(street, requests, devices, args)
    for record in batched.values():
        emit(record)
    per_query = emit(run_per_query(street, requests, triplets["cpu"], args))
    float16 = emit(run_float16(street, requests, triplets["cpu"], args))
    emit(summary(batched, per_query, float16, args, time.perf_counter() - started))
