"""The `cluster` stage: k-means centroids of local conv5 descriptors, NetVLAD's initialisation
(the visual vocabulary), in a centroid file shared by every run that asks for the same one."""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import h5py
import numpy as np
import torch

from ..config import ClusterConfig, format_image_size
from ..data import Split, open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..errors import UserError
from ..evaluation.extraction import extract_descriptors
from ..evaluation.search import faiss_gpus
from ..fileio import file_lock, missing_ancestors, remove_created, write_atomic
from ..models.aggregators import FeatureMap, L2Norm
from ..models.catalog import channels
from ..models.encoders import build_encoder, feature_map_size
from ..runtime import prepare_model, resolve_device, seed_everything


@dataclass(frozen=True)
class Centroids:
    centroids: np.ndarray  # [K, D] float32
    descriptors: np.ndarray  # [M, D] float32, the sampled local descriptors


@dataclass(frozen=True)
class ClusterResult:
    path: Path
    num_clusters: int
    num_descriptors: int
    num_images: int
    seconds: float
    reused: bool

    def to_dict(self) -> dict:
        return {"centroids": str(self.path), "num_clusters": self.num_clusters,
                "num_descriptors": self.num_descriptors, "num_images": self.num_images,
                "seconds": round(self.seconds, 3), "reused": self.reused}


def centroid_filename(arch: str, dataset: str, num_clusters: int) -> str:
    """The reference's name, e.g. `vgg16_pitts30k_64_desc_cen.hdf5`."""
    return f"{arch}_{dataset}_{num_clusters}_desc_cen.hdf5"


def weights_tag(weights: str) -> str:
    if weights in ("imagenet", "none"):
        return weights
    return "file-" + hashlib.sha256(str(Path(weights).absolute()).encode()).hexdigest()[:10]


def centroid_path(cache_dir: Path, arch: str, dataset: str, split: str, num_clusters: int,
                  image_size: tuple[int, int] | None, weights: str) -> Path:
    """`cache/centroids/<split>_<HxW|native>_<weights>/<arch>_<dataset>_<K>_desc_cen.hdf5`.

    The folder keeps apart centroids that differ in what the reference's name leaves out.
    """
    variant = f"{split}_{format_image_size(image_size)}_{weights_tag(weights)}"
    return Path(cache_dir) / "centroids" / variant / centroid_filename(arch, dataset, num_clusters)


def read_centroids(path: Path, num_clusters: int | None = None,
                   dim: int | None = None) -> Centroids:
    """Read and check a centroid file; a damaged or mismatched file raises `UserError`."""
    try:
        with h5py.File(path, "r") as handle:
            centroids = np.asarray(handle["centroids"], dtype=np.float32)
            descriptors = np.asarray(handle["descriptors"], dtype=np.float32)
    except (OSError, KeyError) as error:
        raise UserError(f"centroid file {path} is damaged or incomplete ({type(error).__name__}); "
                        f"delete it and run cluster again") from None
    expected_k = num_clusters if num_clusters is not None else centroids.shape[0]
    expected_d = dim if dim is not None else centroids.shape[1]
    if centroids.shape != (expected_k, expected_d) or descriptors.ndim != 2 \
            or descriptors.shape[1] != expected_d or not np.isfinite(centroids).all():
        raise UserError(f"centroid file {path} holds centroids of shape {centroids.shape}, not "
                        f"({expected_k}, {expected_d}); delete it or pass the matching "
                        f"--num-clusters/--arch")
    return Centroids(centroids, descriptors)


def write_centroids(path: Path, result: Centroids, attributes: dict) -> None:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("descriptors", data=result.descriptors)
            handle.create_dataset("centroids", data=result.centroids)
            for key, value in attributes.items():
                handle.attrs[key] = value

    write_atomic(path, write)


def sample_plan(num_database: int, locations_per_image: int, num_descriptors: int,
                per_image: int) -> tuple[int, int]:
    """(images, descriptors per image): the reference's 500 x 100, adapted to small data."""
    per_image = min(per_image, locations_per_image)
    images = min(num_database, math.ceil(num_descriptors / per_image))
    return images, per_image


def sample_local_descriptors(config: ClusterConfig, split: Split, image_size: tuple[int, int],
                             device: torch.device) -> np.ndarray:
    """Local descriptors [images * per_image, D]: L2-normalised conv5 vectors, random places."""
    height, width = feature_map_size(config.arch, image_size, config.aggregator)
    num_images, per_image = sample_plan(split.num_database, height * width,
                                        config.num_descriptors, config.descriptors_per_image)
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.choice(split.num_database, num_images, replace=False))
    encoder = prepare_model(torch.nn.Sequential(
        build_encoder(config.arch, config.weights, config.aggregator), FeatureMap(), L2Norm()),
        device, config.precision)

    def local_samples(images: torch.Tensor) -> torch.Tensor:
        features = encoder(images).flatten(2).transpose(1, 2)  # [B, H'W', D]
        picks = torch.stack([torch.from_numpy(rng.choice(features.shape[1], per_image,
                                                         replace=False))
                             for _ in range(len(features))]).to(features.device)
        rows = torch.gather(features, 1, picks[:, :, None].expand(-1, -1, features.shape[2]))
        return rows.reshape(len(features), -1)  # [B, per_image * D]

    feed = ImageFeed.for_config(config, split, image_size, device)
    flat = extract_descriptors(encoder, feed, chosen, batch_size=config.cache_batch_size,
                               precision=config.precision, show_progress=config.show_progress,
                               desc="cluster: descriptors", forward=local_samples)
    return flat.reshape(-1, channels(config.arch, config.aggregator))


def kmeans(descriptors: np.ndarray, num_clusters: int, iterations: int, seed: int,
           device: torch.device | None = None) -> np.ndarray:
    """faiss k-means (its defaults otherwise, as the reference): centroids [K, D]; on the GPU
    when `device` is CUDA and faiss was built with GPU support, else on the CPU (50,000
    descriptors take seconds there; a torch k-means would give other centroids)."""
    if len(descriptors) < num_clusters:
        raise UserError(f"--num-clusters {num_clusters} is larger than the {len(descriptors)} "
                        f"local descriptors sampled; lower --num-clusters or use more or larger "
                        f"images")
    # min_points_per_centroid only decides whether faiss prints a warning on stdout
    on_gpu = device is not None and device.type == "cuda" and faiss_gpus() > 0
    model = faiss.Kmeans(descriptors.shape[1], num_clusters, niter=iterations, verbose=False,
                         seed=seed, min_points_per_centroid=1, gpu=on_gpu)
    model.train(np.ascontiguousarray(descriptors, dtype=np.float32))
    return np.asarray(model.centroids, dtype=np.float32)


def _usable(path: Path, num_clusters: int) -> Centroids | None:
    """The centroids at `path` when the file is complete and fits, else None (rebuild it)."""
    if not path.is_file():
        return None
    try:
        return read_centroids(path, num_clusters)
    except UserError:
        return None  # damaged (a killed writer of an older version, a full disk): rebuild


def run(config: ClusterConfig, *, split: Split | None = None,
        force: bool = False) -> ClusterResult:
    """Compute (or reuse) the centroid file for (dataset, split, arch, K, image size, weights);
    `split`: the split `config.split` names, when the caller has opened it already."""
    config = config.validate()
    if config.aggregator != "netvlad":
        raise UserError(f"--aggregator {config.aggregator} has no centroids to cluster; use "
                        f"netvlad")
    started = time.perf_counter()
    split = split or open_split(config.data_root, config.split, config.dataset)
    image_size = resolve_image_size(split, config.image_size)
    path = centroid_path(config.cache_dir, config.arch, split.dataset, split.split,
                         config.num_clusters, config.image_size, config.weights)
    # Impossible settings fail before anything is written.
    height, width = feature_map_size(config.arch, image_size, config.aggregator)
    num_images, per_image = sample_plan(split.num_database, height * width,
                                        config.num_descriptors, config.descriptors_per_image)
    if num_images * per_image < config.num_clusters:
        raise UserError(f"--num-clusters {config.num_clusters} is larger than the "
                        f"{num_images * per_image} local descriptors the images give; lower "
                        f"--num-clusters or use more or larger images")
    lock = path.parent / (path.name + ".lock")
    created = missing_ancestors(path.parent)
    lock_is_new = not lock.exists()
    try:
        # One clustering per file however many processes (trials) ask for it at once.
        with file_lock(lock):
            existing = None if force else _usable(path, config.num_clusters)
            if existing is not None:
                return ClusterResult(path, config.num_clusters, len(existing.descriptors), 0,
                                     time.perf_counter() - started, reused=True)
            seed_everything(config.seed)
            device = resolve_device(config.device)
            descriptors = sample_local_descriptors(config, split, image_size, device)
            centroids = kmeans(descriptors, config.num_clusters, config.kmeans_iterations,
                               config.seed, device)
            attributes = {"arch": config.arch, "dataset": split.dataset, "split": split.split,
                          "num_clusters": config.num_clusters, "weights": str(config.weights),
                          "image_size": format_image_size(image_size), "seed": config.seed}
            write_centroids(path, Centroids(centroids, descriptors), attributes)
    except BaseException:
        remove_created(created, (lock,) if lock_is_new else ())
        raise
    return ClusterResult(path, config.num_clusters, len(descriptors), num_images,
                         time.perf_counter() - started, reused=False)
