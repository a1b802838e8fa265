"""Shared fixtures: small synthetic datasets written once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from vpr_core.data.synthetic import SynthConfig, write_synthetic

SMALL = dict(places=24, queries=24, image_size=(64, 80), seed=0, show_progress=False)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Pittsburgh layout (train/val/test .mat files)."""
    out = tmp_path_factory.mktemp("synth") / "pitts"
    write_synthetic(SynthConfig(out=out, **SMALL))
    return out


@pytest.fixture(scope="session")
def synth_folder_root(tmp_path_factory) -> Path:
    """The same images as `synth_root`, in the @UTM@ folder layout."""
    out = tmp_path_factory.mktemp("synth") / "folder"
    write_synthetic(SynthConfig(out=out, layout="folder", **SMALL))
    return out


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray for every test that needs it (starting Ray costs seconds)."""
    import ray

    from orchestrator.ray_cluster import QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    yield ray
    ray.shutdown()


TINY_SPEC = {
    "name": "tiny",
    "data": {"synthetic": {"places": 16, "queries": 16, "image_size": "48x64", "seed": 1}},
    "search": {"num_samples": 3, "seed": 0,
               "space": {"arch": ["alexnet", "vgg16"], "num_clusters": [4, 8],
                         "margin": {"log_uniform": [0.05, 0.2]},
                         "lr": {"log_uniform": [1.0e-4, 1.0e-3]}},
               "scheduler": {"grace_period": 1, "reduction_factor": 2}},
    "train": {"epochs": 2, "weights": "none"},
}


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory) -> Path:
    """The run folder of one epoch of AlexNet + NetVLAD, K=4 (1,024-d descriptors), SGD, on
    `synth_root`: a checkpoint to resume, evaluate and compress (one per test module)."""
    from vpr_core.config import TrainConfig
    from vpr_core.stages.train import training_run

    folder = tmp_path_factory.mktemp("trained")
    training_run(TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=4,
                            weights="none", epochs=1, workers=0, show_progress=False,
                            cache_dir=folder / "cache", run_dir=folder / "run")).run()
    return folder / "run"
