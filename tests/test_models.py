import http.client
import urllib.error

import pytest
import torch
from torchvision import models as tv_models

from vpr_core.errors import UserError
from vpr_core.models import backbones as models
from vpr_core.models import encoders
from vpr_core.models.checkpoints import save_checkpoint
from vpr_core.models.encoders import feature_map_size
from vpr_core.models.place_model import build_model
from vpr_core.stages.starting_model import model_from_checkpoint


def test_encoders_are_cut_like_the_reference():
    vgg = build_model("vgg16", "netvlad", 8, weights="none")
    assert len(vgg.encoder) == 29 and isinstance(vgg.encoder[28], torch.nn.Conv2d)  # conv5_3
    alexnet = build_model("alexnet", "netvlad", 8, weights="none")
    assert len(alexnet.encoder) == 11 and isinstance(alexnet.encoder[10], torch.nn.Conv2d)
    assert vgg.output_dim == 8 * 512 and alexnet.output_dim == 8 * 256
    assert feature_map_size("vgg16", (480, 640)) == (30, 40)  # stride 16, as in the reference


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_encoders_are_torchvisions_features_layer_for_layer(arch):
    """The same layers, shapes and initialisation as torchvision's `features[:-2]`."""
    torch.manual_seed(0)  # seeded: a few-element bias's spread varies between draws
    ours = torch.nn.Sequential(*models.encoder_layers(arch))
    torch.manual_seed(1)
    theirs = getattr(tv_models, arch)(weights=None).features[:-2]
    assert [repr(layer) for layer in ours] == [repr(layer) for layer in theirs]
    for (name, mine), (_, reference) in zip(ours.state_dict().items(),
                                            theirs.state_dict().items()):
        assert mine.shape == reference.shape, name
        assert abs(float(mine.std()) - float(reference.std())) < 0.1 * float(reference.std()) \
            + 1e-6, name  # the same initial distribution


def test_a_local_weight_file_loads_and_freezes_like_pretrained(tmp_path):
    torch.manual_seed(0)
    reference = tv_models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(reference.state_dict(), path)  # torchvision's format: features.N.*, classifier.*
    model = build_model("alexnet", "netvlad", 4, weights=str(path))
    assert torch.equal(model.encoder[10].weight, reference.features[10].weight)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["encoder.10.weight", "encoder.10.bias", "pool.centroids",
                         "pool.conv.weight"]  # the reference's trainable set for AlexNet
    with pytest.raises(UserError, match="does not fit the vgg16 encoder"):
        build_model("vgg16", "netvlad", 4, weights=str(path))


def test_imagenet_weights_offline_are_one_clear_error(tmp_path, monkeypatch):
    """No network here, so the download is made to fail as it does offline (not attempted)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="--weights none, or --weights PATH") as caught:
        encoders.build_encoder("vgg16", "imagenet")
    assert "vgg16-397923af.pth" in str(caught.value)


@pytest.mark.parametrize("failure", [
    http.client.IncompleteRead(b"partial", 1000),  # the connection dropped mid-download
    RuntimeError('invalid hash value (expected "397923af", got "e3b0c442")'),  # a proxy's page
], ids=["cut-off", "not-the-file"])
def test_a_failed_imagenet_download_is_one_clear_error(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def download(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    with pytest.raises(UserError, match="vgg16-397923af.pth"):
        encoders.build_encoder("vgg16", "imagenet")


@pytest.mark.parametrize("bug", [
    TypeError("load_state_dict_from_url() got an unexpected keyword argument 'weights_only'"),
    RuntimeError("Expected all tensors to be on the same device"),
], ids=["type-error", "runtime-error"])
def test_a_bug_around_the_imagenet_download_is_not_called_a_network_problem(tmp_path,
                                                                           monkeypatch, bug):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def download(*args, **kwargs):
        raise bug

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    with pytest.raises(type(bug)) as caught:
        encoders.build_encoder("vgg16", "imagenet")
    assert caught.value is bug


def weight_files(folder) -> dict:
    """Files a user could pass as --weights that hold no weights, or damaged ones."""
    state = tv_models.alexnet(weights=None).state_dict()
    torch.save(state, folder / "good.pth")
    torch.save(state, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    good, legacy = (folder / "good.pth").read_bytes(), (folder / "legacy.pth").read_bytes()
    return {"notes.txt": b"hello world, not weights\n", "empty.pth": b"",
            "photo.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
            "cut.pth": good[:len(good) // 2], "cut-legacy.pth": legacy[:200]}


def test_a_weight_file_that_is_not_one_is_one_clear_error(tmp_path):
    for name, content in weight_files(tmp_path).items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"--weights {tmp_path / name} is not a") as caught:
            build_model("alexnet", "netvlad", 4, weights=str(tmp_path / name))
        assert "torchvision alexnet state_dict" in str(caught.value), name
    for intact in ("good.pth", "legacy.pth"):  # torch.save's zip and its older pickle format
        build_model("alexnet", "netvlad", 4, weights=str(tmp_path / intact))


@pytest.mark.parametrize("bug", [AttributeError("'NoneType' object has no attribute 'seek'"),
                                 TypeError("load() got an unexpected keyword argument"),
                                 ValueError("too many values to unpack")],
                         ids=lambda error: type(error).__name__)
def test_a_bug_reading_a_weight_file_is_not_called_a_bad_file(tmp_path, monkeypatch, bug):
    path = tmp_path / "alexnet.pth"
    torch.save(tv_models.alexnet(weights=None).state_dict(), path)

    def load(*args, **kwargs):
        raise bug

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(type(bug)) as caught:
        build_model("alexnet", "netvlad", 4, weights=str(path))
    assert caught.value is bug


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_max_and_avg_pooling_checkpoints_round_trip(tmp_path, pooling):
    model = build_model("alexnet", pooling, weights="none")
    images = torch.randn(2, 3, 64, 64)
    out = model(images)
    assert out.shape == (2, 256) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    path = tmp_path / "checkpoints" / "checkpoint.pth.tar"
    save_checkpoint(path, {"epoch": 1, "state_dict": model.state_dict()})
    (path.parent / "flags.json").write_text(f'{{"pooling": "{pooling}"}}')
    loaded, _, spec, _ = model_from_checkpoint(path)
    assert spec.aggregator == pooling and spec.num_clusters is None
    assert torch.allclose(loaded(images), out)
