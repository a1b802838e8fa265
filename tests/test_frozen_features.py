"""The frozen layers' output, computed once per run (vpr_core.training.frozen_features)."""
from pathlib import Path

import pytest
import torch
from torch import nn

from vpr_core.config import TrainConfig
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.errors import UserError
from vpr_core.models.backbones import save_fresh_weights
from vpr_core.models.place_model import build_model
from vpr_core.runtime import autocast, memory_format, prepare_model
from vpr_core.stages.train import training_run
from vpr_core.training.frozen_features import FromLayer, FrozenFeatures, frozen_layers

pytestmark = pytest.mark.timeout(240)
CPU = torch.device("cpu")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the trunk's output under autocast


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict:
    """Random encoder weights in torchvision's layout: loading them freezes the layers that
    ImageNet weights would (the tests have no network)."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for arch in ("alexnet", "vgg16"):
        torch.manual_seed(1)
        files[arch] = save_fresh_weights(arch, folder / f"{arch}.pth")
    return files


def config(root, tmp_path: Path, weights, **overrides) -> TrainConfig:
    values = dict(data_root=root, arch="alexnet", num_clusters=4, weights=str(weights),
                  cache_dir=tmp_path / "cache", run_dir=tmp_path / "run", epochs=2,
                  workers=0, show_progress=False, lr=0.01, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def test_the_frozen_layers_are_those_pretrained_weights_freeze(weight_files):
    assert frozen_layers(build_model("alexnet", weights=str(weight_files["alexnet"]))) == 10
    assert frozen_layers(build_model("vgg16", weights=str(weight_files["vgg16"]))) == 24
    assert frozen_layers(build_model("alexnet", weights="none")) == 0  # all of it trains
    unfrozen_first = build_model("alexnet", weights=str(weight_files["alexnet"]))
    unfrozen_first.encoder[0].weight.requires_grad_(True)
    assert frozen_layers(unfrozen_first) == 0


def test_the_rest_of_the_model_on_frozen_features_is_the_whole_model(synth_root, weight_files):
    model = build_model("alexnet", num_clusters=4, weights=str(weight_files["alexnet"])).eval()
    split = open_split(synth_root, "val")
    feed = ImageFeed(split, split.native_size, torch.device("cpu"))
    features = FrozenFeatures.build(model, feed, budget=10**9, batch_size=8, precision="fp32")
    groups = [[0, 5, 2], [len(split.all_paths) - 1]]
    with torch.no_grad():
        for images, rows in zip(feed.batches(groups), features.batches(groups)):
            assert torch.allclose(FromLayer(model, 10)(rows), model(images), atol=1e-6)
    assert features.nbytes == len(split.all_paths) * rows[0].numel() * 4


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_channels_last_features_keep_each_row_in_its_place(synth_root, weight_files,
                                                           precision):
    """The channels-last path (CUDA, and bf16 on the CPU; here fp32 too, by asking the feed
    for it): rows are kept [h, w, C] and read back [C, h, w]. The feature maps are 3 x 4 (64 x
    80 images), so a row kept or read back transposed has the wrong shape and conv5 sees its
    positions mirrored."""
    model = prepare_model(build_model("alexnet", num_clusters=4,
                                      weights=str(weight_files["alexnet"])), CPU, precision)
    model.eval()
    split = open_split(synth_root, "val")
    feed = ImageFeed(split, split.native_size, CPU, memory_format=torch.channels_last)
    assert memory_format(CPU, "bf16") == torch.channels_last  # what bf16 training feeds
    features = FrozenFeatures.build(model, feed, budget=10**9, batch_size=8,
                                    precision=precision)
    assert features.channels_last and features.storage.dtype == DTYPES[precision]
    groups = [[0, 5, 2], [len(split.all_paths) - 1]]
    with torch.no_grad(), autocast(CPU, precision):
        for images, rows in zip(feed.batches(groups), features.batches(groups)):
            trunk = model.encoder[:10](images)  # [G, 256, 3, 4]
            assert trunk.shape[2] != trunk.shape[3]  # a transposed row cannot fit
            assert rows.shape == trunk.shape and rows.dtype == trunk.dtype
            torch.testing.assert_close(rows, trunk, rtol=0, atol=1e-5)
            torch.testing.assert_close(FromLayer(model, 10)(rows), model(images),
                                       rtol=0, atol=1e-5)


def images_through(model) -> dict:
    """{"conv1": n, "conv5": n}: how many images the model's first conv (frozen) and its
    last (trained) have run on since this call, counted by forward hooks."""
    seen = {"conv1": 0, "conv5": 0}
    for name, index in (("conv1", 0), ("conv5", 10)):
        def count(module, inputs, output, name=name):
            seen[name] += len(inputs[0])
        model.encoder[index].register_forward_hook(count)
    return seen


def test_training_on_frozen_features_equals_training_on_images(synth_root, tmp_path,
                                                               weight_files):
    kept = training_run(config(synth_root, tmp_path / "kept", weight_files["alexnet"]))
    recomputed = training_run(config(synth_root, tmp_path / "off", weight_files["alexnet"],
                                    frozen_cache_gb=0))
    kept_images, recomputed_images = images_through(kept.model), images_through(recomputed.model)
    with_features, without = kept.run(), recomputed.run()
    assert with_features.frozen_features == ("train", "val")
    assert without.frozen_features == ()
    # the frozen layers ran once per image (and on one probe image per split, for the shape),
    # the layers after them on what the whole model ran on in the run without features
    images = len(kept.train_split.all_paths) + len(kept.data.val_split.all_paths)
    assert images <= kept_images["conv1"] <= images + 2, kept_images
    assert recomputed_images["conv1"] == recomputed_images["conv5"] > 2 * images
    assert kept_images["conv5"] == recomputed_images["conv5"]
    assert len(with_features.epochs) == len(without.epochs) == 2
    for a, b in zip(with_features.epochs, without.epochs):
        assert a.triplets == b.triplets and a.batches == b.batches > 0
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.recalls == b.recalls
    trained = kept.model.state_dict()
    for key, value in recomputed.model.state_dict().items():
        assert torch.allclose(trained[key], value, atol=1e-5), key
    changed = kept.model.encoder[10].weight  # conv5, the trained layer
    assert not torch.equal(changed, build_model("alexnet", num_clusters=4, weights=str(
        weight_files["alexnet"])).encoder[10].weight)


def test_the_budget_keeps_the_training_split_first(synth_root, tmp_path, weight_files):
    probe = training_run(config(synth_root, tmp_path / "probe", weight_files["vgg16"],
                               arch="vgg16", epochs=1))
    probe._choose_inputs()
    train_bytes = probe.train_input.source.nbytes
    assert probe.frozen_splits == ("train", "val")

    tight = training_run(config(synth_root, tmp_path / "tight", weight_files["vgg16"],
                               arch="vgg16", epochs=1, frozen_cache_gb=(train_bytes + 1) / 1e9))
    tight._choose_inputs()
    assert tight.frozen_splits == ("train",)
    assert tight.val_input.forward is tight.model
    too_small = training_run(config(synth_root, tmp_path / "small", weight_files["vgg16"],
                                   arch="vgg16", epochs=1,
                                   frozen_cache_gb=(train_bytes - 1) / 1e9))
    too_small._choose_inputs()
    assert too_small.frozen_splits == () and too_small.train_input.forward is too_small.model


def test_a_model_trained_from_scratch_keeps_reading_images(synth_root, tmp_path):
    run = training_run(config(synth_root, tmp_path, "none", epochs=1))
    assert run.run().frozen_features == ()


def test_a_negative_budget_is_refused(synth_root, tmp_path, weight_files):
    with pytest.raises(UserError, match="--frozen-cache-gb must be 0"):
        config(synth_root, tmp_path, weight_files["alexnet"], frozen_cache_gb=-1).validate()


def test_only_plain_layers_count_as_frozen(weight_files):
    model = build_model("alexnet", weights=str(weight_files["alexnet"]))
    model.encoder[1] = nn.Dropout()  # behaves differently in training: not computable once
    assert frozen_layers(model) == 1


def test_sweep_trials_side_by_side_share_the_default_budget(synth_root, tmp_path, monkeypatch):
    """Two 1-CPU trials on a 2-CPU host keep half the default each; a given budget stays.
    (The trial context is a stand-in: a real one exists only inside a running trial.)"""
    from types import SimpleNamespace

    from orchestrator import trainer
    from vpr_core.training.frozen_features import budget_bytes

    context = SimpleNamespace(get_trial_resources=lambda: SimpleNamespace(
        required_resources={"CPU": 1.0}))
    monkeypatch.setattr(trainer.os, "cpu_count", lambda: 2)
    shared = config(synth_root, tmp_path, "none").validate()
    shared = trainer._share_frozen_budget(shared, context)
    whole = budget_bytes(None, torch.device("cpu"))
    assert shared.frozen_cache_gb == pytest.approx(whole / 2 / 1e9)
    given = config(synth_root, tmp_path, "none", frozen_cache_gb=3.0).validate()
    given = trainer._share_frozen_budget(given, context)
    assert given.frozen_cache_gb == 3.0
