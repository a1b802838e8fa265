"""The settings of clustering: NetVLAD's initial centroids."""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting
from .common import CommonConfig, split_setting


@dataclass(frozen=True)
class ClusterConfig(CommonConfig):
    split: str = split_setting("train")
    # the reference samples 500 images x 100 locations
    num_descriptors: int = setting(50000, "local descriptors to cluster", parse=int, minimum=1)
    descriptors_per_image: int = setting(100, "local descriptors sampled per image", parse=int,
                                         minimum=1)
    kmeans_iterations: int = setting(100, "k-means iterations", parse=int, minimum=1)
