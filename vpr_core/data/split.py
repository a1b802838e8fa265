"""`Split`: one split of a place-recognition dataset, whatever its layout on disk."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

# Thresholds of the Pittsburgh dbStruct files, used by the folder layout too.
POS_DIST_THR = 25.0  # metres: a database image this close to a query is a positive at evaluation
NONTRIV_POS_DIST_SQ_THR = 100.0  # square metres: (10 m)^2, positives used for training


@dataclass(frozen=True)
class Split:
    """Database and query images of one split with their UTM positions (metres).

    `database_paths` and `query_paths` are absolute; `database_utm` is [N, 2] and `query_utm`
    is [M, 2], (easting, northing).
    """

    dataset: str
    split: str
    root: Path
    database_paths: tuple[str, ...]
    query_paths: tuple[str, ...]
    database_utm: np.ndarray
    query_utm: np.ndarray
    pos_dist_thr: float = POS_DIST_THR
    nontriv_pos_dist_sq_thr: float = NONTRIV_POS_DIST_SQ_THR
    native_size: tuple[int, int] | None = field(default=None, compare=False)  # (H, W) if shared

    @property
    def num_database(self) -> int:
        return len(self.database_paths)

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def all_paths(self) -> tuple[str, ...]:
        """Database images first, then queries: the order the reference caches them in."""
        return self.database_paths + self.query_paths

    def positives_within(self, radius: float) -> list[np.ndarray]:
        """For each query, the sorted database indices within `radius` metres (inclusive)."""
        if self.num_database == 0 or self.num_queries == 0:
            return [np.empty(0, dtype=np.int64) for _ in range(self.num_queries)]
        tree = cKDTree(self.database_utm)
        found = tree.query_ball_point(self.query_utm, r=radius)
        return [np.array(sorted(ids), dtype=np.int64) for ids in found]

    def eval_positives(self) -> list[np.ndarray]:
        """Positives for Recall@N: database images within `pos_dist_thr` (25 m)."""
        return self.positives_within(self.pos_dist_thr)

    def train_positives(self) -> list[np.ndarray]:
        """Non-trivial positives for training: within sqrt(`nontriv_pos_dist_sq_thr`) (10 m)."""
        return self.positives_within(math.sqrt(self.nontriv_pos_dist_sq_thr))

    def potential_negatives(self) -> list[np.ndarray]:
        """For each query, the database indices farther than `pos_dist_thr` (25 m)."""
        everything = np.arange(self.num_database, dtype=np.int64)
        return [np.setdiff1d(everything, near, assume_unique=True)
                for near in self.eval_positives()]

    def describe(self) -> str:
        return (f"{self.dataset} {self.split}: {self.num_database} database images, "
                f"{self.num_queries} queries")
