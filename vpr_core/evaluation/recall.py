"""Recall@N on a split, exactly as the reference computes it.

faiss `IndexFlatL2` over the database descriptors, the top 20 for each query, a query counts
as correct at N when one of its first N predictions is within `posDistThr` (25 m); queries
with no positive at all stay in the denominator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.image_feed import ImageFeed
from .extraction import extract_descriptors
from .search import search

RECALL_NS = (1, 5, 10, 20)


def recall_name(n: int) -> str:
    """The name of Recall@N in results, JSON and tracking: 'recall@5'."""
    return f"recall@{n}"


def named_recalls(recalls: dict) -> dict:
    """{N: fraction} -> {'recall@N': fraction}, by N."""
    return {recall_name(n): float(r) for n, r in sorted(recalls.items())}


@dataclass
class EvalResult:
    recalls: dict  # {N: fraction of queries correct at N}
    dataset: str
    split: str
    num_queries: int
    num_database: int
    seconds: float = 0.0
    predictions: np.ndarray | None = field(default=None, repr=False)  # [M, k] database indices
    distances: np.ndarray | None = field(default=None, repr=False)  # [M, k] squared L2
    precision: str = "fp32"  # of the forward passes that made the descriptors
    descriptors: np.ndarray | None = field(default=None, repr=False)  # [N + M, D], database first
    extract_seconds: float = 0.0  # of `seconds`: reading the images and computing descriptors

    def to_dict(self) -> dict:
        out = named_recalls(self.recalls)
        out.update(split=self.split, dataset=self.dataset, num_queries=self.num_queries,
                   num_database=self.num_database, seconds=round(self.seconds, 3),
                   precision=self.precision)
        return out

    def lines(self) -> list[str]:
        """The reference's console lines, `Recall@N: 0.xxxx`."""
        return [f"Recall@{n}: {r:.4f}" for n, r in sorted(self.recalls.items())]


def recall_at_n(predictions: np.ndarray, positives: list, ns=RECALL_NS) -> dict:
    """Fraction of queries with a positive among their first N predictions, for each N.

    predictions [M, k] database indices (best first); positives: M arrays of database indices.
    """
    num_queries = len(predictions)
    if num_queries == 0:
        return {n: 0.0 for n in ns}
    width = int(max(predictions.max(initial=0), max((p.max(initial=0) for p in positives),
                                                     default=0))) + 1
    # membership of (query, database) pairs, encoded as one integer each
    wanted = np.concatenate([q * width + np.asarray(p, dtype=np.int64)
                             for q, p in enumerate(positives)] + [np.empty(0, np.int64)])
    pairs = np.arange(num_queries)[:, None] * width + predictions.astype(np.int64)
    hits = np.isin(pairs, wanted) & (predictions >= 0)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {n: float(np.mean(first_hit < n)) for n in ns}


def evaluate_descriptors(database: np.ndarray, queries: np.ndarray, positives: list,
                         ns=RECALL_NS, device: torch.device | None = None, index=None
                         ) -> tuple[dict, np.ndarray, np.ndarray]:
    """(recalls, predictions [M, k], distances [M, k]) for descriptors of one split; the
    search runs on `device` when it is CUDA, or in `index` (see `vpr_core.evaluation.search`)."""
    k = min(max(ns), len(database))
    distances, predictions = search(database, queries, k, device, index)
    return recall_at_n(predictions, positives, ns), predictions, distances


def evaluate(model: torch.nn.Module, feed: ImageFeed, *, batch_size: int,
             precision: str = "fp32", show_progress: bool = False, index=None) -> EvalResult:
    """Extract database then query descriptors of the feed's split and compute Recall@N
    (searching in `index`, a trained empty faiss index, when given)."""
    started = time.perf_counter()
    split = feed.split
    descriptors = extract_descriptors(model, feed, range(len(split.all_paths)),
                                      batch_size=batch_size, precision=precision,
                                      show_progress=show_progress,
                                      desc=f"eval {split.split}: descriptors")
    extracted = time.perf_counter()
    database, queries = descriptors[:split.num_database], descriptors[split.num_database:]
    recalls, predictions, distances = evaluate_descriptors(database, queries,
                                                           split.eval_positives(),
                                                           device=feed.device, index=index)
    return EvalResult(recalls, split.dataset, split.split, split.num_queries, split.num_database,
                      time.perf_counter() - started, predictions, distances, precision,
                      descriptors, extracted - started)
