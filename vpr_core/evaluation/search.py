"""Exact L2 nearest-neighbour search of query descriptors in a database, wherever it runs best.

On the CPU: faiss `IndexFlatL2`, as the reference. On CUDA: faiss's GPU index when faiss was
built with GPU support (the faiss-gpu wheels), else the same exact search as torch matrix
products on the GPU. Mining's full rankings are `vpr_core.training.mining`'s: faiss's GPU
k-selection stops at k = 2048, and mining needs every rank.
"""
from __future__ import annotations

import faiss
import numpy as np
import torch

QUERY_BLOCK = 1024  # queries per matrix product on the GPU ([1024, N] distances at a time)


def faiss_gpus() -> int:
    """GPUs faiss can use: 0 with the CPU build (faiss-cpu) or no GPU."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def search(database: np.ndarray, queries: np.ndarray, k: int,
           device: torch.device | None = None, index: faiss.Index | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distances [M, k] ascending, database indices [M, k]); -1 pads k > N.

    database [N, D], queries [M, D]. `device` says where the descriptors came from: on CUDA
    the search runs there too. `index`, a trained empty faiss index (a compressed database,
    e.g. product quantisation), replaces the exact search.
    """
    database = np.ascontiguousarray(database, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if index is not None:
        index.reset()
        index.add(database)
        return index.search(queries, k)
    backend = search_backend(device)
    if backend == "faiss-gpu":
        return _faiss_gpu_search(database, queries, k, device)
    if backend == "torch":
        return torch_search(database, queries, k, device)
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    return index.search(queries, k)


def search_backend(device: torch.device | None) -> str:
    """'faiss' (CPU), 'faiss-gpu', or 'torch' (CUDA without faiss GPU support)."""
    if device is None or device.type != "cuda":
        return "faiss"
    return "faiss-gpu" if faiss_gpus() > 0 else "torch"


def _faiss_gpu_search(database: np.ndarray, queries: np.ndarray, k: int,
                      device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    resources = faiss.StandardGpuResources()
    config = faiss.GpuIndexFlatConfig()
    config.device = device.index or 0
    index = faiss.GpuIndexFlatL2(resources, database.shape[1], config)
    index.add(database)
    return index.search(queries, k)


@torch.no_grad()
def torch_search(database: np.ndarray, queries: np.ndarray, k: int,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The same search with torch: ||q||^2 + ||d||^2 - 2 q.d, then the k smallest; padded
    like faiss (index -1, the largest float32 distance) when k exceeds the database."""
    found = min(k, len(database))
    base = torch.from_numpy(database).to(device)
    base_norms = (base * base).sum(dim=1)
    distances = np.full((len(queries), k), np.finfo(np.float32).max, dtype=np.float32)
    indices = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), QUERY_BLOCK):
        block = torch.from_numpy(queries[start:start + QUERY_BLOCK]).to(device)
        squared = (block * block).sum(dim=1, keepdim=True) + base_norms - 2 * block @ base.T
        values, order = torch.topk(squared.clamp_min_(0), found, dim=1, largest=False)
        distances[start:start + len(block), :found] = values.cpu().numpy()
        indices[start:start + len(block), :found] = order.cpu().numpy()
    return distances, indices
