"""ResNet encoders, GeM and CosPlace/EigenPlaces files, checked against torchvision, numpy and
state dicts written here by hand in the authors' key names."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vpr_core.errors import UserError
from vpr_core.models import gem, resnet
from vpr_core.models.backbones import encoder_layers
from vpr_core.models.formats.cosplace import recognise
from vpr_core.models.gem import GeM, GeMHead
from vpr_core.models.resnet import (
    frozen_prefix,
    infer_resnet,
    resnet_channels,
    resnet_layers,
    to_encoder_keys,
)

# torchvision's ResNet children and their index in CosPlace's `backbone` Sequential, written
# out here rather than taken from the code under test
COSPLACE_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


def random_torchvision(depth: int) -> nn.Module:
    """torchvision's ResNet with random weights and random BatchNorm statistics."""
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or (name.endswith(".bias") and "bn" in name):
                tensor.normal_(0, 0.1)
    return model.eval()


def torchvision_forward(model: nn.Module, images: torch.Tensor, keep_last_block: bool):
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    x = model.layer3(model.layer2(model.layer1(x)))
    return model.layer4(x) if keep_last_block else x


def cosplace_file(model: nn.Module, fc_dim: int, p: float = 2.6) -> dict:
    """A CosPlace release file's state dict: `backbone.N.*` and `aggregation.{1.p,3.*}`."""
    state = {}
    for key, value in model.state_dict().items():
        child, _, rest = key.partition(".")
        if child in COSPLACE_INDEX:
            state[f"backbone.{COSPLACE_INDEX[child]}.{rest}"] = value
    channels = model.fc.in_features
    generator = torch.Generator().manual_seed(1)
    device = next(iter(state.values())).device
    state["aggregation.1.p"] = torch.tensor([p], device=device)
    state["aggregation.3.weight"] = (torch.randn(fc_dim, channels, generator=generator) * 0.05
                                     ).to(device)
    state["aggregation.3.bias"] = (torch.randn(fc_dim, generator=generator) * 0.01).to(device)
    return state


def meta_torchvision(name: str) -> nn.Module:
    with torch.device("meta"):  # keys and shapes only
        return getattr(torchvision.models, name)(weights=None)


# (a) encoders


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("keep_last_block", [True, False])
def test_layers_give_torchvision_forward_up_to_the_cut(depth, keep_last_block):
    torch.manual_seed(0)
    model = random_torchvision(depth)
    encoder = nn.Sequential(*resnet_layers(depth, keep_last_block)).eval()
    missing, unexpected = encoder.load_state_dict(to_encoder_keys(model.state_dict()),
                                                  strict=False)
    assert missing == []
    assert all(key.startswith("7.") for key in unexpected) and \
        bool(unexpected) != keep_last_block  # only layer4, and only when it is cut
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ours = encoder(images)
        expected = torchvision_forward(model, images, keep_last_block)
    assert ours.shape == (2, resnet_channels(depth, keep_last_block), *expected.shape[-2:])
    assert torch.equal(ours, expected)


def test_key_mapping_round_trips_a_torchvision_state_dict():
    model = random_torchvision(18)
    original = model.state_dict()
    encoder = nn.Sequential(*resnet_layers(18, keep_last_block=True))
    encoder.load_state_dict(to_encoder_keys(original, ""), strict=True)
    back = encoder.state_dict()
    names = {str(i): name for name, i in COSPLACE_INDEX.items()}
    for key, value in back.items():
        index, _, rest = key.partition(".")
        assert torch.equal(value, original[f"{names[index]}.{rest}"])
    assert len(back) == len([key for key in original if not key.startswith("fc.")])


def test_key_mapping_under_a_prefix_drops_fc_and_other_modules():
    one = torch.zeros(1)
    state = {"backbone.model.conv1.weight": one, "backbone.model.bn1.running_mean": one,
             "backbone.model.layer1.0.conv1.weight": one, "backbone.model.layer4.2.bn3.bias": one,
             "backbone.model.fc.weight": one, "aggregator.mix.0.weight": one}
    assert set(to_encoder_keys(state, "backbone.model.")) == {
        "0.weight", "1.running_mean", "4.0.conv1.weight", "7.2.bn3.bias"}


def test_channels_and_frozen_prefix():
    assert [resnet_channels(d, False) for d in (18, 34, 50, 101, 152)] == \
        [256, 256, 1024, 1024, 1024]
    assert [resnet_channels(d, True) for d in (18, 34, 50, 101, 152)] == \
        [512, 512, 2048, 2048, 2048]
    assert frozen_prefix(50, True, "layer3") == 6  # CosPlace, MixVPR, BoQ's class default
    assert frozen_prefix(50, False, "layer2") == 5
    assert frozen_prefix(18, True, "conv1") == 0
    assert frozen_prefix(50, True, "layer4") == 7
    with pytest.raises(UserError, match="layer4"):
        frozen_prefix(50, False, "layer4")
    with pytest.raises(UserError, match="depth"):
        resnet_layers(42, True)


def test_imagenet_urls_are_torchvision_ones():
    for arch, url in resnet.IMAGENET_URLS.items():
        weights = getattr(torchvision.models, f"ResNet{arch[6:]}_Weights").IMAGENET1K_V1
        assert url == weights.url


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_infer_resnet_tells_depth_and_cut(depth):
    full = to_encoder_keys(meta_torchvision(f"resnet{depth}").state_dict())
    assert infer_resnet(full) == (depth, True)
    cut = {key: value for key, value in full.items() if not key.startswith("7.")}
    assert infer_resnet({f"encoder.{k}": v for k, v in cut.items()}, "encoder.") == (depth, False)


def test_infer_resnet_refuses_other_widths_and_partial_files():
    assert infer_resnet(to_encoder_keys(meta_torchvision("resnext50_32x4d").state_dict())) is None
    full = to_encoder_keys(meta_torchvision("resnet18").state_dict())
    del full["5.0.conv2.weight"]
    assert infer_resnet(full) is None
    assert infer_resnet({}) is None


# (b) GeM


def numpy_gem(x: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    """[N, C, h, w] -> [N, C]: the generalised mean of each channel."""
    return (np.maximum(x, eps) ** p).mean(axis=(2, 3)) ** (1.0 / p)


def test_gem_equals_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, 5, 7)).astype(np.float32)  # negatives too: clamped to eps
    layer = GeM()
    assert layer.p.item() == 3.0 and layer.eps == 1e-6
    with torch.no_grad():
        layer.p.fill_(2.5)
        ours = layer(torch.from_numpy(x))
    assert ours.shape == (3, 16, 1, 1)
    assert np.allclose(ours[:, :, 0, 0].numpy(), numpy_gem(x.astype(np.float64), 2.5),
                       rtol=1e-5, atol=1e-7)


def test_gem_head_equals_numpy_with_and_without_fc():
    rng = np.random.default_rng(1)
    x = rng.random(size=(2, 32, 4, 6)).astype(np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pooled = numpy_gem(unit, 3.0)
    head = GeMHead(32)
    assert head.output_dim == 32 and list(head.state_dict()) == ["1.p"]
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    with torch.no_grad():
        assert np.allclose(head(torch.from_numpy(x).float()).numpy(), expected, atol=1e-6)
    head = GeMHead(32, fc_dim=8)
    assert head.output_dim == 8 and list(head.state_dict()) == ["1.p", "3.weight", "3.bias"]
    weight, bias = head[3].weight.detach().double().numpy(), head[3].bias.detach().double().numpy()
    projected = pooled @ weight.T + bias
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    with torch.no_grad():
        assert np.allclose(head(torch.from_numpy(x).float()).numpy(), expected, atol=1e-6)


def test_gem_settings_are_its_defaults():
    assert gem.SETTINGS == {"p": 3.0, "fc_dim": None}
    head = GeMHead(64, **gem.SETTINGS)
    assert head.output_dim == 64 and head[1].p.item() == 3.0


# (c) CosPlace / EigenPlaces files


def test_cosplace_resnet18_file_is_recognised_and_gives_the_authors_descriptors():
    torch.manual_seed(0)
    model = random_torchvision(18)
    state = cosplace_file(model, fc_dim=64)
    released = recognise(state)
    assert released is not None
    assert (released.family, released.arch, released.aggregator) == ("cosplace", "resnet18", "gem")
    assert released.settings == {"fc_dim": 64}
    assert released.image_size is None and released.descriptor_dim == 64
    ours = nn.Sequential()
    ours.add_module("encoder", nn.Sequential(*resnet_layers(18, keep_last_block=True)))
    ours.add_module("pool", GeMHead(512, **released.settings))
    ours.load_state_dict(released.state_dict, strict=True)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        descriptors = ours.eval()(images)
        # the authors' head in plain torch ops
        x = F.normalize(torchvision_forward(model, images, keep_last_block=True), p=2, dim=1)
        p = state["aggregation.1.p"]
        x = x.clamp(min=1e-6).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
        x = F.linear(x, state["aggregation.3.weight"], state["aggregation.3.bias"])
        expected = F.normalize(x, p=2, dim=1)
    assert descriptors.shape == (2, 64)
    assert torch.allclose(descriptors, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth, fc_dim", [(50, 2048), (101, 128), (152, 32)])
def test_cosplace_deeper_resnets_are_told_apart(depth, fc_dim):
    released = recognise(cosplace_file(meta_torchvision(f"resnet{depth}"), fc_dim))
    assert released is not None
    assert (released.arch, released.settings, released.descriptor_dim) == \
        (f"resnet{depth}", {"fc_dim": fc_dim}, fc_dim)
    assert "encoder.7.2.conv3.weight" in released.state_dict
    assert released.state_dict["pool.3.weight"].shape == (fc_dim, 2048)


def test_cosplace_vgg16_file_maps_onto_this_projects_vgg16_encoder():
    features = meta_torchvision("vgg16").features.state_dict()
    state = {f"backbone.{key}": value for key, value in features.items()
             if int(key.split(".")[0]) <= 28}  # features[:-2]: up to conv5_3
    state.update({"aggregation.1.p": torch.ones(1), "aggregation.3.weight": torch.ones(256, 512),
                  "aggregation.3.bias": torch.ones(256)})
    released = recognise(state)
    assert released is not None and (released.arch, released.settings) == ("vgg16",
                                                                           {"fc_dim": 256})
    with torch.device("meta"):
        expected = nn.Sequential(*encoder_layers("vgg16")).state_dict()
    assert {k for k in released.state_dict if k.startswith("encoder.")} == \
        {f"encoder.{k}" for k in expected}


# (d) other files


def test_files_that_are_not_cosplace_are_not_recognised():
    state = cosplace_file(meta_torchvision("resnet18"), fc_dim=32)
    assert recognise({}) is None
    assert recognise({f"encoder.{k[9:]}" if k.startswith("backbone.") else k: v
                      for k, v in state.items()}) is None  # this project's keys
    cut = {k: v for k, v in state.items() if not k.startswith("backbone.7.")}
    cut["aggregation.3.weight"] = torch.ones(32, 256)
    assert recognise(cut) is None  # a cut ResNet (MixVPR/BoQ-like) under CosPlace's names
    assert recognise({**state, "aggregator.queries": torch.ones(4)}) is None  # an extra module
    wrong_fc = {**state, "aggregation.3.weight": torch.ones(32, 2048)}
    assert recognise(wrong_fc) is None  # FC input is not the backbone's channels
    no_fc = {k: v for k, v in state.items() if not k.startswith("aggregation.3.")}
    assert recognise(no_fc) is None
    resnext = cosplace_file(meta_torchvision("resnext50_32x4d"), fc_dim=32)
    assert recognise(resnext) is None
    netvlad = {"encoder.0.weight": torch.ones(64, 3, 3, 3), "pool.centroids": torch.ones(64, 512)}
    assert recognise(netvlad) is None
