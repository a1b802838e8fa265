import h5py
import pytest

from vpr_core.config import ClusterConfig
from vpr_core.errors import UserError
from vpr_core.stages import cluster
from vpr_core.stages.cluster import sample_plan


def config(root, cache_dir, **overrides):
    values = dict(data_root=root, arch="alexnet", num_clusters=8, weights="none",
                  cache_dir=cache_dir, workers=0, show_progress=False)
    values.update(overrides)
    return ClusterConfig(**values)


def test_the_reference_plan_and_its_adaptation_to_small_data():
    assert sample_plan(10000, 30 * 40, 50000, 100) == (500, 100)
    assert sample_plan(24, 12, 50000, 100) == (24, 12)
    assert sample_plan(3000, 16, 50000, 100) == (3000, 16)


def test_cluster_writes_the_reference_file_and_reuses_it(synth_root, tmp_path):
    first = cluster.run(config(synth_root, tmp_path))
    assert first.path.name == "alexnet_synth_8_desc_cen.hdf5" and not first.reused
    with h5py.File(first.path) as handle:
        assert handle["centroids"].shape == (8, 256)
        assert handle["descriptors"].shape == (24 * 12, 256)  # 24 images x 3*4 locations
    again = cluster.run(config(synth_root, tmp_path))
    assert again.reused and again.path == first.path


def test_a_truncated_centroid_file_is_rebuilt(synth_root, tmp_path):
    path = cluster.run(config(synth_root, tmp_path)).path
    path.write_bytes(path.read_bytes()[:1000])
    rebuilt = cluster.run(config(synth_root, tmp_path))
    assert not rebuilt.reused
    with h5py.File(rebuilt.path) as handle:
        assert handle["centroids"].shape == (8, 256)


def test_k_larger_than_the_descriptors_writes_nothing(synth_root, tmp_path):
    with pytest.raises(UserError, match="larger than the 288 local descriptors"):
        cluster.run(config(synth_root, tmp_path, num_clusters=1000))
    assert list(tmp_path.iterdir()) == []


def test_images_too_small_for_the_encoder(synth_root, tmp_path):
    with pytest.raises(UserError, match="too small for the alexnet encoder"):
        cluster.run(config(synth_root, tmp_path, image_size=(20, 20)))
    assert list(tmp_path.iterdir()) == []
