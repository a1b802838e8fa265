"""Exact search wherever it runs: faiss on the CPU, faiss's GPU index, torch on CUDA."""
import faiss
import numpy as np
import pytest
import torch

from vpr_core.evaluation import search as search_module
from vpr_core.evaluation.search import search, search_backend, torch_search


@pytest.fixture
def descriptors():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(500, 64)).astype(np.float32)
    queries = database[:40] + 0.3 * rng.normal(size=(40, 64)).astype(np.float32)
    return database, queries


def test_torch_search_equals_faiss(descriptors):
    """The CUDA fallback's arithmetic, run here on the CPU: the same neighbours and distances."""
    database, queries = descriptors
    faiss_d, faiss_i = search(database, queries, 20)
    torch_d, torch_i = torch_search(database, queries, 20, torch.device("cpu"))
    np.testing.assert_allclose(torch_d, faiss_d, rtol=1e-4, atol=1e-3)
    assert np.array_equal(torch_i, faiss_i)  # random data: no near-ties in the top 20


def test_torch_search_pads_like_faiss():
    database = np.eye(3, dtype=np.float32)
    faiss_d, faiss_i = search(database, database, 5)
    torch_d, torch_i = torch_search(database, database, 5, torch.device("cpu"))
    assert np.array_equal(torch_i[:, 3:], faiss_i[:, 3:]) and (torch_i[:, 3:] == -1).all()
    assert np.array_equal(torch_d[:, 3:], faiss_d[:, 3:])


def test_the_backend_follows_the_device_and_faiss_build(monkeypatch):
    cuda = torch.device("cuda")  # a device object only: nothing runs on it here
    assert search_backend(None) == "faiss" and search_backend(torch.device("cpu")) == "faiss"
    assert search_backend(cuda) == "torch"  # faiss-cpu, as installed here
    monkeypatch.setattr(search_module, "faiss_gpus", lambda: 1)
    assert search_backend(cuda) == "faiss-gpu"
    assert search_backend(torch.device("cpu")) == "faiss"


class CpuBackedGpuIndex:
    """Stands in for faiss.GpuIndexFlatL2, which faiss-cpu lacks (no GPU here): records that
    it was used and searches with the CPU index."""

    made = []

    def __init__(self, resources, dim, config):
        self.index, self.config = faiss.IndexFlatL2(dim), config
        type(self).made.append(config.device)

    def add(self, vectors):
        self.index.add(vectors)

    def search(self, queries, k):
        return self.index.search(queries, k)


def test_faiss_gpu_index_is_used_where_faiss_has_gpus(descriptors, monkeypatch):
    database, queries = descriptors
    monkeypatch.setattr(search_module, "faiss_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatConfig",
                        lambda: type("Config", (), {"device": None})(), raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", CpuBackedGpuIndex, raising=False)
    distances, indices = search(database, queries, 20, torch.device("cuda", 1))
    assert CpuBackedGpuIndex.made == [1]
    assert np.array_equal(indices, search(database, queries, 20)[1])
