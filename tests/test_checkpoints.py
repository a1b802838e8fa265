import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_core.errors import UserError
from vpr_core.models.checkpoints import (
    checkpoint_file,
    load_checkpoint,
    save_checkpoint,
)
from vpr_core.models.place_model import build_model
from vpr_core.models.shape import infer_model_shape
from vpr_core.stages.starting_model import model_from_checkpoint


def reference_checkpoint(model, parallel_prefix=False):
    """A dict as pytorch-NetVlad saves it: numpy float64 recalls and best_score."""
    state = model.state_dict()
    if parallel_prefix:  # nn.DataParallel wraps encoder and pool separately
        state = {k.replace("encoder.", "encoder.module.", 1).replace("pool.", "pool.module.", 1): v
                 for k, v in state.items()}
    return {"epoch": 7, "state_dict": state,
            "recalls": {n: np.float64(r) for n, r in zip((1, 5, 10, 20), (.8, .9, .95, .97))},
            "best_score": np.float64(0.9), "optimizer": {"state": {}, "param_groups": []},
            "parallel": parallel_prefix}


def save_like_2018(checkpoint, path):
    """Legacy (non-zip) torch format with numpy 1.x's name for scalars, as the released file."""
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"cnumpy._core.multiarray\nscalar\n" in raw
    path.write_bytes(raw.replace(b"cnumpy._core.multiarray\nscalar\n",
                                 b"cnumpy.core.multiarray\nscalar\n"))


# The released VGG16 + NetVLAD, key by key (netvlad-reference.md section D): conv layers of
# `features[:-2]` as (index, out_channels, in_channels), then the pool; written out by hand,
# not derived from this project's model.
RELEASED_VGG16_CONVS = ((0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128),
                        (12, 256, 256), (14, 256, 256), (17, 512, 256), (19, 512, 512),
                        (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512))


def handwritten_vgg16_state_dict(seed: int = 0) -> dict:
    """28 tensors with the released checkpoint's keys and shapes, random values (He-scaled, so
    13 conv layers keep activations finite), in the released file's key order."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, out_channels, in_channels in RELEASED_VGG16_CONVS:
        scale = (2.0 / (in_channels * 9)) ** 0.5
        state[f"encoder.{index}.weight"] = torch.randn(out_channels, in_channels, 3, 3,
                                                       generator=generator) * scale
        state[f"encoder.{index}.bias"] = torch.randn(out_channels, generator=generator) * 0.01
    centroids = torch.randn(64, 512, generator=generator)
    state["pool.centroids"] = centroids
    state["pool.conv.weight"] = (10.0 * centroids / centroids.norm(dim=1, keepdim=True)
                                 )[:, :, None, None]
    return state


def released_vgg16_checkpoint(folder: Path, seed: int = 0) -> tuple[Path, dict]:
    """`folder/checkpoints/checkpoint.pth.tar` as the released file: the hand-written state
    dict, numpy float64 recalls and best_score, the legacy (non-zip) format, no flags.json."""
    path = folder / "checkpoints" / "checkpoint.pth.tar"
    path.parent.mkdir(parents=True)
    state = handwritten_vgg16_state_dict(seed)
    save_like_2018({"epoch": 30, "state_dict": state,
                    "recalls": {n: np.float64(r) for n, r in
                                zip((1, 5, 10, 20), (.852, .948, .970, .984))},
                    "best_score": np.float64(0.948), "optimizer": {"state": {}, "param_groups": []},
                    "parallel": False}, path)
    return path, state


def test_a_handwritten_release_loads_unchanged(tmp_path):
    path, state = released_vgg16_checkpoint(tmp_path / "vgg16_netvlad_checkpoint")
    assert len(state) == 28 and not (path.parent / "flags.json").exists()
    assert not path.read_bytes().startswith(b"PK")  # the legacy format, not a zip
    model, checkpoint, spec, _ = model_from_checkpoint(
        checkpoint_file(tmp_path / "vgg16_netvlad_checkpoint"))
    assert (spec.arch, spec.aggregator, spec.num_clusters) == ("vgg16", "netvlad", 64)
    assert isinstance(checkpoint["best_score"], np.float64) and checkpoint["epoch"] == 30
    assert list(model.state_dict()) == list(state)  # the same keys, in the same order
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        descriptors = model.eval()(images)
    assert descriptors.shape == (2, 64 * 512) and torch.isfinite(descriptors).all()


@pytest.mark.parametrize("parallel_prefix", [False, True])
def test_the_released_format_loads_with_weights_only(tmp_path, parallel_prefix):
    model = build_model("vgg16", "netvlad", 64, weights="none")
    path = tmp_path / "vgg16_netvlad_checkpoint" / "checkpoints" / "checkpoint.pth.tar"
    path.parent.mkdir(parents=True)
    save_like_2018(reference_checkpoint(model, parallel_prefix), path)
    loaded, checkpoint, spec, _ = model_from_checkpoint(
        checkpoint_file(tmp_path / "vgg16_netvlad_checkpoint"))
    assert (spec.arch, spec.aggregator, spec.num_clusters) == ("vgg16", "netvlad", 64)
    assert checkpoint["recalls"][5] == 0.9 and isinstance(checkpoint["best_score"], np.float64)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_the_doubly_nested_release_zip_layout_is_found(tmp_path):
    nested = tmp_path / "vgg16_netvlad_checkpoint" / "vgg16_netvlad_checkpoint" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / "model_best.pth.tar").write_bytes(b"x")
    assert checkpoint_file(tmp_path / "vgg16_netvlad_checkpoint", "best") == \
        nested / "model_best.pth.tar"


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(UserError, match="refused to load .*system"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_unreadable_checkpoints_are_one_clear_error(tmp_path, content):
    path = tmp_path / "c.pth.tar"
    good = tmp_path / "good.pth.tar"
    torch.save(reference_checkpoint(build_model("alexnet", "netvlad", 4, "none")), good)
    path.write_bytes({"truncated": good.read_bytes()[:2000], "text": b"hello",
                      "empty": b""}[content])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_arch_and_k_are_read_from_the_keys_and_checked(tmp_path):
    model = build_model("alexnet", "netvlad", 4, "none")
    assert infer_model_shape(model.state_dict()).arch == "alexnet"
    path = tmp_path / "a.pth.tar"
    save_checkpoint(path, reference_checkpoint(model))
    with pytest.raises(UserError, match="arch alexnet, not vgg16"):
        model_from_checkpoint(path, arch="vgg16")
    with pytest.raises(UserError, match="K=4, not 8"):
        model_from_checkpoint(path, num_clusters=8)
    state = dict(model.state_dict(), **{"pool.conv.bias": torch.zeros(4)})
    with pytest.raises(UserError, match="vladv2"):
        infer_model_shape(state)


def test_save_is_atomic_when_the_writer_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(2)}})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(2)}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar"]
