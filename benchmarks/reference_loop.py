"""The reference's (pytorch-NetVlad `main.py`) clustering, training and validation, as a baseline.

`reference_run` times the reference's way of working on this project's data and settings, so
that this project's loop can be compared with it on the same images, model and hyper-parameters.

Faithful to the reference (what costs it time):
- float32 throughout; every image is read alone with PIL in a DataLoader (`num_workers=threads`),
  then `ToTensor` + ImageNet `Normalize`.
- Clustering (`get_clusters`): random database images, 100 random locations of each image's
  L2-normalised encoder output, written to an HDF5 file, `faiss.Kmeans(D, K, niter=100)`.
- Training: each epoch splits the queries that have a 10 m positive into contiguous subsets of
  `cache_refresh_rate`; for each subset the WHOLE training set (database + all queries) is encoded
  into an HDF5 `features` file, then a shuffled DataLoader mines per query inside its workers
  (open the HDF5 file, kNN fit on the positives, 1000 random negatives with replacement plus the
  negative cache, kNN fit on those, the violating ones within sqrt(margin)), reads the query,
  positive and negative images one by one, and drops queries without a violating negative.
  The loss is the reference's double Python loop of `TripletMarginLoss(reduction='sum')` calls
  divided by the number of negatives; SGD with momentum 0.9 and weight decay 1e-3; the learning
  rate follows the reference's StepLR closed form (halved every 5 epochs).
- The negative cache is written in the worker processes, so with `threads > 0` it is lost,
  as in the reference; with `threads=0` it is kept.
- Validation: the val split encoded by a DataLoader, `faiss.IndexFlatL2`, top 20, Recall@N
  divided by all queries; the reported loss is the reference's `epoch_loss / nBatches`, where
  batches skipped for having no triplet still count.

Differs from the reference:
- Images are resized (bilinear) to `image_size` when their size differs; the reference never
  resizes. Images go through `.convert('RGB')`.
- The model is this project's `build_model` (same layers, keys and NetVLAD maths; the pool
  is a batched matrix product, not the reference's loop over clusters).
- Cluster counts adapt to small datasets: min(num_database, 500) images and min(100, H'*W')
  locations per image (the reference needs at least 500 images and 100 locations).
- The kNN is sklearn `NearestNeighbors(n_jobs=1)` (the VPR_NetVLAD fork's value; Nanne's -1 does
  not change sklearn's brute-force kernel) or, without sklearn, an equal numpy brute force.
  The negative kNN asks for min(nNeg * 10, number of candidates) neighbours instead of raising.
- No checkpoints, TensorBoard or early stopping: they are not what is being timed.
- Validation descriptors are float32 from the start (the reference fills a float64 array).
"""
from __future__ import annotations

import functools
import itertools
import math
import random
import time
from pathlib import Path

import faiss
import h5py
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, SubsetRandomSampler
from torch.utils.data.dataloader import default_collate
from torchvision import transforms

from benchmarks.common import synchronize
from vpr_core.data import open_split, resolve_image_size
from vpr_core.evaluation import RECALL_NS, recall_at_n, recall_name
from vpr_core.models.aggregators import L2Norm
from vpr_core.models.place_model import build_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLUSTER_IMAGES = 500  # nDescriptors 50000 / nPerImage 100
CLUSTER_LOCATIONS = 100
NEGATIVE_SAMPLES = 1000  # nNegSample
NUM_NEGATIVES = 10  # nNeg

_TO_TENSOR = transforms.Compose([transforms.ToTensor(),
                                 transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_image(path: str, image_size: tuple[int, int]) -> torch.Tensor:
    """One image from disk, as the reference reads it: [3, H, W] float32, ImageNet-normalised."""
    image = Image.open(path).convert("RGB")
    height, width = image_size
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return _TO_TENSOR(image)


class ImageList(Dataset):
    """`WholeDatasetFromStruct`: item i is (image [3, H, W], i)."""

    def __init__(self, paths: tuple[str, ...], image_size: tuple[int, int]):
        self.paths = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return load_image(self.paths[index], self.image_size), index


# ---------------------------------------------------------------- mining, one query at a time

@functools.cache
def _sklearn_neighbors():
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:  # not a dependency of this project: fall back to numpy
        return None
    return NearestNeighbors


def knn_backend() -> str:
    """'sklearn' or 'numpy': which kNN `per_query_mine` uses here."""
    return "numpy" if _sklearn_neighbors() is None else "sklearn"


def kneighbors(features: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit a kNN on `features` [M, D] and ask it for `query` [D]: (distances [k], rows [k]).

    Distances are L2, ascending; the reference fits sklearn `NearestNeighbors` per query.
    """
    neighbors = _sklearn_neighbors()
    if neighbors is not None:
        distances, rows = neighbors(n_jobs=1).fit(features).kneighbors(query[None], k)
        return distances[0], rows[0]
    sq_dist = (np.einsum("md,md->m", features, features, dtype=np.float64)
               - 2.0 * (features @ query).astype(np.float64) + float(query @ query))
    rows = np.argsort(sq_dist, kind="stable")[:k]
    return np.sqrt(np.maximum(sq_dist[rows], 0.0)), rows


def per_query_mine(query_feature: np.ndarray, positive_features: np.ndarray,
                   negative_features: np.ndarray, margin: float, num_negatives: int
                   ) -> tuple[int | None, np.ndarray]:
    """The reference's mining of one query (`QueryDatasetFromStruct.__getitem__`).

    query_feature [D]; positive_features [P, D] of its 10 m positives; negative_features [M, D]
    of its candidate negatives. Returns (row of the positive in `positive_features`, rows of
    the hard negatives in `negative_features` [n <= num_negatives], nearest first), or
    (None, empty) when no candidate is within d(query, positive) + sqrt(margin).
    """
    none = (None, np.empty(0, dtype=np.int64))
    if len(positive_features) == 0 or len(negative_features) == 0:
        return none
    d_positive, positive_rows = kneighbors(positive_features, query_feature, 1)
    k = min(num_negatives * 10, len(negative_features))
    d_negative, negative_rows = kneighbors(negative_features, query_feature, k)
    violating = d_negative < d_positive[0] + math.sqrt(margin)
    if not violating.any():
        return none
    return int(positive_rows[0]), negative_rows[violating][:num_negatives].astype(np.int64)


class QueryDataset(Dataset):
    """`QueryDatasetFromStruct`: item i mines query `queries[i]` from the HDF5 cache `cache_path`
    and returns (query [3, H, W], positive [3, H, W], negatives [n, 3, H, W], [q, p, *negs]),
    or None when it has no violating negative."""

    def __init__(self, split, image_size: tuple[int, int], margin: float):
        self.split = split
        self.image_size = image_size
        self.margin = margin
        self.positives = split.train_positives()
        self.queries = np.array([q for q, p in enumerate(self.positives) if len(p) > 0])
        self.potential_negatives = split.potential_negatives()
        self.negative_cache = [np.empty(0) for _ in range(split.num_queries)]
        self.cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int):
        q = int(self.queries[index])
        positives = self.positives[q]
        with h5py.File(self.cache_path, "r") as h5:
            features = h5["features"]
            query_feature = features[q + self.split.num_database]
            positive_features = features[positives.tolist()]
            sample = np.random.choice(self.potential_negatives[q], NEGATIVE_SAMPLES)
            negatives = np.unique(np.concatenate([self.negative_cache[q], sample])).astype(int)
            negative_features = features[negatives.tolist()]
        positive_row, negative_rows = per_query_mine(query_feature, positive_features,
                                                     negative_features, self.margin,
                                                     NUM_NEGATIVES)
        if positive_row is None:
            return None
        positive = int(positives[positive_row])
        hard = negatives[negative_rows].astype(np.int32)
        self.negative_cache[q] = hard  # lost when this runs in a DataLoader worker
        paths = self.split.database_paths
        negative_images = torch.stack([load_image(paths[n], self.image_size) for n in hard])
        return (load_image(self.split.query_paths[q], self.image_size),
                load_image(paths[positive], self.image_size), negative_images,
                [q, positive] + hard.tolist())


def collate_triplets(batch: list):
    """Drop None items; (query [B,3,H,W], positive [B,3,H,W], negatives [sum n,3,H,W],
    negative counts [B], flat indices), or five Nones when nothing is left."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None, None, None, None, None
    query, positive, negatives, indices = zip(*batch)
    counts = default_collate([n.shape[0] for n in negatives])
    return (default_collate(query), default_collate(positive), torch.cat(negatives, 0), counts,
            list(itertools.chain(*indices)))


# ---------------------------------------------------------------- the three stages

def get_clusters(model, split, image_size, num_clusters: int, *, threads: int,
                 batch_size: int, device: torch.device, path: Path
                 ) -> tuple[np.ndarray, np.ndarray]:
    """k-means of local descriptors of random database images -> (centroids [K, D],
    descriptors [M, D]), both float32 and also written to the HDF5 file `path`."""
    num_images = min(split.num_database, CLUSTER_IMAGES)
    chosen = np.random.choice(split.num_database, num_images, replace=False)
    loader = DataLoader(ImageList(split.database_paths, image_size), batch_size=batch_size,
                        num_workers=threads, sampler=SubsetRandomSampler(chosen),
                        pin_memory=device.type == "cuda")
    encoder = nn.Sequential(model.encoder, L2Norm())
    sampled = []
    model.eval()
    with torch.no_grad():
        for images, _ in loader:
            local = encoder(images.to(device)).flatten(2).permute(0, 2, 1)  # [B, H'W', D]
            count = min(CLUSTER_LOCATIONS, local.shape[1])
            for one in local:
                rows = np.random.choice(local.shape[1], count, replace=False)
                sampled.append(one[rows].cpu().numpy())
    descriptors = np.concatenate(sampled).astype(np.float32)
    kmeans = faiss.Kmeans(descriptors.shape[1], num_clusters, niter=100, verbose=False)
    kmeans.train(descriptors)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("descriptors", data=descriptors)
        h5.create_dataset("centroids", data=kmeans.centroids)
    with h5py.File(path, "r") as h5:  # train mode reads the file back, as the reference
        return h5["centroids"][...], h5["descriptors"][...]


def build_cache(model, split, image_size, path: Path, *, threads: int, batch_size: int,
                device: torch.device) -> None:
    """Encode database then queries of `split` into HDF5 `features` [N_db + N_q, K*D]."""
    loader = DataLoader(ImageList(split.all_paths, image_size), batch_size=batch_size,
                        num_workers=threads, shuffle=False, pin_memory=device.type == "cuda")
    model.eval()
    with h5py.File(path, "w") as h5, torch.no_grad():
        features = h5.create_dataset("features", (len(split.all_paths), model.output_dim),
                                     dtype=np.float32)
        for images, indices in loader:
            vlad = model.pool(model.encoder(images.to(device)))
            features[indices.numpy(), :] = vlad.cpu().numpy()


def triplet_loss(vlad_q, vlad_p, vlad_n, counts, criterion) -> torch.Tensor:
    """The reference's loss: vlad_q, vlad_p [B, K*D]; vlad_n [sum counts, K*D]; counts [B].
    Sum of one criterion call per (query, negative) pair, divided by the number of negatives."""
    loss = 0
    for i, count in enumerate(counts.tolist()):
        for n in range(count):
            j = int(counts[:i].sum()) + n
            loss = loss + criterion(vlad_q[i:i + 1], vlad_p[i:i + 1], vlad_n[j:j + 1])
    return loss / counts.sum().float().to(vlad_q.device)


def train_subset(model, dataset: QueryDataset, indices: np.ndarray, optimizer, criterion, *,
                 threads: int, batch_size: int, device: torch.device) -> tuple[float, int]:
    """Train on the queries `dataset[indices]` -> (sum of batch losses, batches trained)."""
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=True,
                        collate_fn=collate_triplets, num_workers=threads,
                        pin_memory=device.type == "cuda")
    model.train()
    total, batches = 0.0, 0
    for query, positive, negatives, counts, _ in loader:
        if query is None:
            continue
        size = query.shape[0]
        images = torch.cat([query, positive, negatives]).to(device)
        vlad = model.pool(model.encoder(images))
        vlad_q, vlad_p, vlad_n = torch.split(vlad, [size, size, int(counts.sum())])
        optimizer.zero_grad()
        loss = triplet_loss(vlad_q, vlad_p, vlad_n, counts, criterion)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total, batches


def validate(model, split, image_size, *, threads: int, batch_size: int,
             device: torch.device) -> dict:
    """Recall@{1,5,10,20} of `model` on `split`, as the reference's `test`."""
    loader = DataLoader(ImageList(split.all_paths, image_size), batch_size=batch_size,
                        num_workers=threads, shuffle=False, pin_memory=device.type == "cuda")
    descriptors = np.empty((len(split.all_paths), model.output_dim), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for images, indices in loader:
            descriptors[indices.numpy()] = model(images.to(device)).cpu().numpy()
    database, queries = descriptors[:split.num_database], descriptors[split.num_database:]
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    _, predictions = index.search(queries, min(max(RECALL_NS), split.num_database))
    recalls = recall_at_n(predictions, split.eval_positives(), RECALL_NS)
    return {recall_name(n): round(float(r), 4) for n, r in recalls.items()}


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)


class _Clock:
    """Seconds since the last `lap`, device work included."""

    def __init__(self, device: torch.device):
        self.device = device
        self.last = time.perf_counter()

    def lap(self) -> float:
        synchronize(self.device)
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds


def _train_epoch(model, dataset, optimizer, criterion, num_subsets: int, clock, *, threads: int,
                 batch_size: int, cache_batch_size: int, device) -> tuple:
    """One epoch as the reference runs it: an HDF5 cache of the whole training set before each
    subset. Returns (cache seconds, training seconds, summed loss, batches)."""
    cache_seconds = train_seconds = loss_sum = 0.0
    batches = 0
    split, image_size = dataset.split, dataset.image_size
    for indices in np.array_split(np.arange(len(dataset)), max(num_subsets, 1)):
        clock.lap()
        build_cache(model, split, image_size, dataset.cache_path, threads=threads,
                    batch_size=cache_batch_size, device=device)
        cache_seconds += clock.lap()
        subset_loss, subset_batches = train_subset(
            model, dataset, indices, optimizer, criterion, threads=threads,
            batch_size=batch_size, device=device)
        loss_sum += subset_loss
        batches += subset_batches
        dataset.cache_path.unlink()
        train_seconds += clock.lap()
    return cache_seconds, train_seconds, loss_sum, batches


def reference_run(data_root, *, arch: str = "alexnet", num_clusters: int = 16, epochs: int = 2,
                  image_size: tuple[int, int] | None = None,
                  device: torch.device | str = "cpu", weights: str = "none",
                  threads: int = 2, batch_size: int = 4, cache_batch_size: int = 24,
                  cache_refresh_rate: int = 1000, margin: float = 0.1, lr: float = 1e-4,
                  seed: int = 123, workdir: Path) -> dict:
    """Cluster, then `epochs` of reference-style training, each followed by validation.

    Returns {"cluster_seconds", "epochs": [{"epoch", "seconds", "cache_seconds",
    "train_seconds", "val_seconds", "loss", "batches", "recall@1/5/10/20"}], "total_seconds"}.
    Opening the splits and building the model are not timed.
    """
    device, workdir = torch.device(device), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _seed(seed)
    train_split, val_split = open_split(data_root, "train"), open_split(data_root, "val")
    image_size = resolve_image_size(train_split, image_size)
    model = build_model(arch, "netvlad", num_clusters, weights).to(device)
    started = time.perf_counter()
    clock = _Clock(device)
    centroids, descriptors = get_clusters(
        model, train_split, image_size, num_clusters, threads=threads,
        batch_size=cache_batch_size, device=device,
        path=workdir / f"{arch}_{train_split.dataset}_{num_clusters}_desc_cen.hdf5")
    model.pool.init_params(centroids, descriptors)
    model.to(device)
    result = {"cluster_seconds": round(clock.lap(), 3), "epochs": []}

    dataset = QueryDataset(train_split, image_size, margin)
    dataset.cache_path = workdir / "train_feat_cache.hdf5"
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=0.9, weight_decay=1e-3)
    criterion = nn.TripletMarginLoss(margin=math.sqrt(margin), p=2, reduction="sum").to(device)
    num_subsets = math.ceil(len(dataset) / cache_refresh_rate) if cache_refresh_rate > 0 else 1
    for epoch in range(1, epochs + 1):
        for group in optimizer.param_groups:  # StepLR(step_size=5, gamma=0.5).step(epoch)
            group["lr"] = lr * 0.5 ** (epoch // 5)
        cache_seconds, train_seconds, loss_sum, batches = _train_epoch(
            model, dataset, optimizer, criterion, num_subsets, clock, threads=threads,
            batch_size=batch_size, cache_batch_size=cache_batch_size, device=device)
        recalls = validate(model, val_split, image_size, threads=threads,
                           batch_size=cache_batch_size, device=device)
        val_seconds = clock.lap()
        result["epochs"].append({
            "epoch": epoch, "seconds": round(cache_seconds + train_seconds + val_seconds, 3),
            "cache_seconds": round(cache_seconds, 3), "train_seconds": round(train_seconds, 3),
            "val_seconds": round(val_seconds, 3),
            "loss": round(loss_sum / max(math.ceil(len(dataset) / batch_size), 1), 6),
            "batches": batches, **recalls})
    result["total_seconds"] = round(time.perf_counter() - started, 3)
    return result
