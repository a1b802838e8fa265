"""The quantize method: int8 encoders (ptq-int8, qat-int8) for CPU inference."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.intrinsic.quantized import ConvReLU2d as QuantizedConvReLU2d
from torch.ao.nn.quantized import Conv2d as QuantizedConv2d
from torch.ao.quantization import FakeQuantizeBase

from vpr_core.compression import CompressionContext, compressed_checkpoint, quantize
from vpr_core.config import TrainConfig
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import save_checkpoint
from vpr_core.models.netvlad import NetVLAD
from vpr_core.models.place_model import PlaceModel, build_model
from vpr_core.models.shape import ModelShape
from vpr_core.stages.starting_model import model_from_checkpoint
from vpr_core.stages.train import training_run

CPU = torch.device("cpu")
CONVS = {"alexnet": 5, "vgg16": 13}


@pytest.fixture(scope="module")
def feed(synth_root) -> ImageFeed:
    return ImageFeed(open_split(synth_root, "train"), (64, 80), CPU)


@pytest.fixture(scope="module")
def images(feed) -> torch.Tensor:
    """Every training image (24 database, 24 queries): [48, 3, 64, 80]."""
    return next(feed.batches([range(len(feed.paths))]))


def context(feed, finetune=None, precision="fp32") -> CompressionContext:
    return CompressionContext(train_feed=feed, device=CPU, batch_size=24, precision=precision,
                              seed=0, finetune=finetune)


def float_model(arch: str, images: torch.Tensor, pooling: str = "netvlad") -> PlaceModel:
    """A random-weight model whose NetVLAD centroids are local features of `images`, so that
    different places get different descriptors (random centroids would make all alike)."""
    torch.manual_seed(0)
    model = build_model(arch, pooling, 4, weights="none").eval()
    if pooling == "netvlad":
        with torch.no_grad():
            local = F.normalize(model.encoder(images), dim=1)
        local = local.permute(0, 2, 3, 1).reshape(-1, model.encoder_dim)
        picked = torch.randperm(len(local), generator=torch.Generator().manual_seed(0))[:4]
        model.pool.init_params(local[picked].numpy(), local.numpy())
    return model


def quantized_convs(model: PlaceModel) -> list[nn.Module]:
    return [m for m in model.encoder.modules()
            if isinstance(m, (QuantizedConv2d, QuantizedConvReLU2d))]


@pytest.mark.parametrize("pooling", ["netvlad", "max"])
def test_ptq_int8_keeps_the_descriptors_and_round_trips_through_a_checkpoint(
        feed, images, tmp_path, pooling):
    model = float_model("alexnet", images, pooling)
    settings = quantize.validate({"mode": "ptq-int8"}, model)
    int8, extra = quantize.apply(model, settings, context(feed))

    assert isinstance(int8, PlaceModel) and (int8.arch, int8.aggregator) == ("alexnet", pooling)
    assert settings["float_layers"] == [0, 10]  # the first and the last conv stay float
    assert len(quantized_convs(int8)) == CONVS["alexnet"] - 2
    assert all(conv.weight().dtype == torch.qint8 for conv in quantized_convs(int8))
    float_convs = [name for name, m in int8.encoder.named_modules() if type(m) is nn.Conv2d]
    assert float_convs == ["0.0", "10"]  # conv1 (fused with its ReLU) and conv5
    assert isinstance(model.encoder, nn.Sequential)  # the float model is left as it was
    if pooling == "netvlad":
        assert isinstance(int8.pool, NetVLAD)
        assert torch.equal(int8.pool.centroids, model.pool.centroids)
    with torch.no_grad():
        fp32, found = model(images), int8(images)
    assert found.dtype == torch.float32 and found.shape == fp32.shape
    torch.testing.assert_close(found.norm(dim=1), torch.ones(len(found)))
    assert (fp32 * found).sum(dim=1).mean() > 0.95
    # each image's int8 descriptor is nearer its own fp32 descriptor than any other image's
    assert torch.equal((found @ fp32.T).argmax(dim=1), torch.arange(len(found)))

    spec = ModelShape.of("alexnet", pooling, {"num_clusters": 4} if pooling == "netvlad" else {})
    path = save_checkpoint(tmp_path / "int8.pth.tar",
                           compressed_checkpoint(int8, "quantize", settings, spec, extra))
    loaded, checkpoint, loaded_spec, _ = model_from_checkpoint(path)  # torch.load(weights_only)
    assert loaded_spec == spec and checkpoint["compression"]["settings"] == settings
    assert len(quantized_convs(loaded)) == CONVS["alexnet"] - 2
    with torch.no_grad():
        assert torch.equal(loaded(images), found)


def test_ptq_int8_vgg16_computes_its_convs_in_int8_and_is_smaller(feed, tmp_path):
    """What makes int8 faster: its convs are quantized modules that take and give quantized
    tensors, so they run int8 kernels (`python -m benchmarks compress` times it)."""
    torch.manual_seed(0)
    model = build_model("vgg16", "netvlad", 4, weights="none").eval()
    settings = quantize.validate({"mode": "ptq-int8", "calibration_images": 8}, model)
    int8, extra = quantize.apply(model, settings, context(feed))
    convs = quantized_convs(int8)
    assert len(convs) == CONVS["vgg16"] - 2  # conv1_1 and conv5_3 stay float
    assert all(conv.weight().dtype == torch.qint8 for conv in convs)
    seen = []

    def record(conv, inputs, output):
        seen.append((inputs[0].dtype, output.dtype))

    for conv in convs:
        conv.register_forward_hook(record)
    with torch.no_grad():
        descriptors = int8(torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(0)))
    assert seen == [(torch.quint8, torch.quint8)] * len(convs)
    assert descriptors.dtype == torch.float32 and descriptors.shape == (2, model.output_dim)

    spec = ModelShape.of("vgg16", "netvlad", {"num_clusters": 4})
    fp32_file = save_checkpoint(tmp_path / "fp32.pth.tar",
                                {"state_dict": model.state_dict(), "arch": "vgg16"})
    int8_file = save_checkpoint(tmp_path / "int8.pth.tar",
                                compressed_checkpoint(int8, "quantize", settings, spec, extra))
    # int8 weights take a quarter of the bytes; biases, NetVLAD and the float convs (conv1_1
    # and conv5_3, 16% of the weights) stay fp32: 2.7x measured
    assert fp32_file.stat().st_size > 2.4 * int8_file.stat().st_size


def test_qat_int8_fine_tunes_with_the_triplet_loss_then_converts(synth_root, feed, images,
                                                                 tmp_path):
    model = float_model("alexnet", images)
    trained = {}

    def finetune(prepared: nn.Module, after_step) -> nn.Module:
        assert after_step is None
        assert (prepared.arch, prepared.aggregator) == ("alexnet", "netvlad")
        assert isinstance(prepared.pool, NetVLAD)
        assert any(isinstance(m, FakeQuantizeBase) for m in prepared.encoder.modules())
        config = TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=4,
                             weights="none", epochs=2, workers=0, show_progress=False,
                             lr=1e-3, cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")
        trained["result"] = training_run(config, model=prepared).run()
        trained["fake_quantized"] = copy.deepcopy(prepared).eval()
        return prepared

    settings = quantize.validate({"mode": "qat-int8"}, model)
    int8, _ = quantize.apply(model, settings, context(feed, finetune))

    epochs = trained["result"].epochs
    assert [e.epoch for e in epochs] == [1, 2] and all(e.batches > 0 for e in epochs)
    assert all(math.isfinite(e.loss) and e.loss >= 0 for e in epochs)
    # it learns: over 5 seeds (model and mining) the second epoch's loss was 0.71-0.78 of the
    # first's; with optimiser steps that do nothing (the observers still calibrate) 1.00
    assert epochs[-1].loss < 0.9 * epochs[0].loss, [e.loss for e in epochs]
    assert len(quantized_convs(int8)) == CONVS["alexnet"] - 2
    with torch.no_grad():
        simulated, found = trained["fake_quantized"](images), int8(images)
    tuned = trained["fake_quantized"].encoder.get_submodule("10").weight
    assert not torch.allclose(tuned, model.encoder[10].weight)  # the fine-tune trained it
    torch.testing.assert_close(found.norm(dim=1), torch.ones(len(found)))
    # the int8 model computes what fake quantization simulated during the fine-tune
    assert (simulated * found).sum(dim=1).min() > 0.99

    path = save_checkpoint(tmp_path / "qat.pth.tar", compressed_checkpoint(
        int8, "quantize", settings, ModelShape.of("alexnet", "netvlad", {"num_clusters": 4})))
    loaded, _, _, _ = model_from_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(loaded(images), found)


def test_float_layers_choose_the_convs_kept_in_float(feed, images):
    model = float_model("alexnet", images)
    every = quantize.validate({"mode": "ptq-int8", "float_layers": []}, model)
    int8, _ = quantize.apply(model, every, context(feed))
    assert len(quantized_convs(int8)) == CONVS["alexnet"]
    # a checkpoint of the version before float_layers existed rebuilds with every conv int8
    before = {key: value for key, value in every.items() if key != "float_layers"}
    rebuilt = quantize.rebuild(build_model("alexnet", "netvlad", 4, weights="none"), before,
                               int8.state_dict(), {})
    rebuilt.load_state_dict(int8.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(images), int8(images))
    with pytest.raises(UserError, match="float_layers must list encoder conv indices"):
        quantize.validate({"mode": "ptq-int8", "float_layers": [1]}, model)  # a ReLU


def test_qat_int8_without_fine_tuning_epochs_is_calibrated(feed, images):
    model = float_model("alexnet", images)
    settings = quantize.validate({"mode": "qat-int8"}, model)
    int8, _ = quantize.apply(model, settings, context(feed, lambda prepared, _: prepared))
    with torch.no_grad():
        assert (model(images) * int8(images)).sum(dim=1).mean() > 0.95


def test_a_pruned_encoder_quantizes_and_its_rebuild_loads_back(feed, images):
    """prune (channels) then quantize: `rebuild` gets prune's narrower float model."""
    def narrow(model: PlaceModel) -> PlaceModel:
        model.encoder[8] = nn.Conv2d(384, 200, kernel_size=3, padding=1)  # 56 filters fewer
        model.encoder[10] = nn.Conv2d(200, 256, kernel_size=3, padding=1)
        return model

    pruned = narrow(float_model("alexnet", images))
    settings = quantize.validate({"mode": "ptq-int8"}, pruned)
    int8, _ = quantize.apply(pruned, settings, context(feed))
    rebuilt = quantize.rebuild(narrow(build_model("alexnet", "netvlad", 4, weights="none")),
                               settings, int8.state_dict(), {})
    rebuilt.load_state_dict(int8.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(images), int8(images))


@pytest.mark.parametrize("settings, fix", [
    ({"mode": "int4"}, "--mode ptq-int8 or qat-int8"),
    ({"mode": None}, "--mode ptq-int8 or qat-int8"),
    ({"mode": "ptq-int8", "bits": 8}, "pass only --mode"),
    ({"mode": "ptq-int8", "calibration_images": 0}, "leave it out"),
    ({"mode": "ptq-int8", "backend": "qnnpack"}, "leave it out"),
])
def test_bad_settings_are_one_clear_user_error(settings, fix):
    with pytest.raises(UserError) as error:
        quantize.validate(settings, build_model("alexnet", "netvlad", 4, weights="none"))
    assert fix in str(error.value) and "\n" not in str(error.value)


def test_models_it_cannot_quantize_are_refused_before_any_work(feed):
    model = build_model("alexnet", "netvlad", 4, weights="none")
    whitened = copy.deepcopy(model)
    whitened.pool = nn.Sequential(model.pool, nn.Linear(model.output_dim, 16))
    with pytest.raises(UserError, match="NetVLAD, max or avg"):
        quantize.validate({"mode": "ptq-int8"}, whitened)

    int8, _ = quantize.apply(model, quantize.validate({"mode": "ptq-int8"}, model),
                             context(feed))
    for compressed in (copy.deepcopy(model).half(), int8):
        with pytest.raises(UserError, match="quantize the float checkpoint"):
            quantize.validate({"mode": "ptq-int8"}, compressed)

    def finetune(*_):
        raise AssertionError("no fine-tune may start")

    with pytest.raises(UserError, match="--precision fp32"):
        quantize.apply(model, quantize.validate({"mode": "qat-int8"}, model),
                       context(feed, finetune, precision="bf16"))
    with pytest.raises(UserError, match="quantize the float checkpoint again"):
        quantize.rebuild(build_model("alexnet", "netvlad", 4, weights="none"),
                         {"mode": "int4"}, int8.state_dict(), {})
