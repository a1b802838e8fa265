import copy

import pytest
import torch
from torch import nn

from vpr_core.compression import CompressionContext, compressed_checkpoint, measure, prune
from vpr_core.config import TrainConfig
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import save_checkpoint
from vpr_core.models.encoders import freeze_pretrained_layers
from vpr_core.models.place_model import build_model
from vpr_core.models.shape import ModelShape
from vpr_core.stages.starting_model import fresh_model, model_from_checkpoint
from vpr_core.stages.train import training_run

CPU = torch.device("cpu")
IMAGE_SIZE = (64, 80)  # synth_root's images


def context(root, finetune=lambda model, after_step: model) -> CompressionContext:
    feed = ImageFeed(open_split(root, "train"), IMAGE_SIZE, CPU)
    return CompressionContext(train_feed=feed, device=CPU, batch_size=24, precision="fp32",
                              seed=0, finetune=finetune)


def conv_weights(model) -> dict:
    return {name: value for name, value in model.state_dict().items()
            if name.startswith("encoder.") and name.endswith(".weight")}


def conv_widths(model) -> list:
    return [(layer.in_channels, layer.out_channels) for layer in model.encoder
            if isinstance(layer, nn.Conv2d)]


def zero_share(model) -> float:
    weights = conv_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def reload(model, settings, spec, path):
    """The model as `compress` would save it and `eval --resume` would read it."""
    save_checkpoint(path, compressed_checkpoint(model, "prune", settings, spec))
    return model_from_checkpoint(path)[0].eval()


def multiply_adds(model, images) -> int:
    """Multiply-adds of the encoder's convs in a forward of `images`, counted by hooks from the
    weights each conv really holds [out, in, kh, kw] and the outputs it really makes."""
    counts = []

    def count(conv, inputs, output):
        counts.append(output.numel() * conv.weight[0].numel())

    hooks = [layer.register_forward_hook(count) for layer in model.encoder
             if isinstance(layer, nn.Conv2d)]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return sum(counts)


def pruned_30(root, arch: str, structure: str):
    """(a seeded untrained model, its settings, 30% of it pruned, the extras), in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, "netvlad", 4, weights="none").eval()
    settings = prune.validate({"amount": 0.3, "structure": structure}, model)
    pruned, extra = prune.apply(model, settings, context(root))
    return model, settings, pruned.eval(), extra


def test_unstructured_zeroes_the_smallest_share_of_encoder_weights(synth_root, tmp_path):
    model, settings, pruned, extra = pruned_30(synth_root, "alexnet", "unstructured")

    assert extra == {} and zero_share(model) == 0.0  # the original is left as it was
    assert abs(zero_share(pruned) - 0.3) <= 0.01
    assert measure.zero_share(pruned) == zero_share(pruned)  # what compress reports
    before, after = conv_weights(model), conv_weights(pruned)
    survivors = torch.cat([after[k][after[k] != 0].abs() for k in after])
    removed = torch.cat([before[k][after[k] == 0].abs() for k in after])
    assert removed.max() <= survivors.min()  # one threshold over all layers together
    assert all((after[k] == 0).any() for k in after)  # every layer lost some
    assert pruned.state_dict().keys() == model.state_dict().keys()  # plain reference keys
    for key in ("pool.centroids", "pool.conv.weight"):
        assert torch.equal(pruned.state_dict()[key], model.state_dict()[key])

    images = torch.randn(3, 3, *IMAGE_SIZE)
    with torch.no_grad():
        descriptors = pruned(images)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(3), atol=1e-5)
    spec = ModelShape.of("alexnet", "netvlad", {"num_clusters": 4})
    reloaded = reload(pruned, settings, spec, tmp_path / "pruned.pth.tar")
    with torch.no_grad():
        assert torch.equal(reloaded(images), descriptors)


def test_channels_make_a_smaller_file_and_fewer_multiply_adds(synth_root, tmp_path):
    """What makes the pruned forward faster: narrower convs, so about half the multiply-adds
    (`python -m benchmarks compress` times it: 1.6-1.7x faster on 2 CPUs)."""
    model, settings, pruned, _ = pruned_30(synth_root, "vgg16", "channels")

    widths = conv_widths(pruned)
    assert widths[0] == (3, 45) and widths[-1] == (358, 512)  # round(0.3 * 64) = 19 removed
    assert all(a[1] == b[0] for a, b in zip(widths, widths[1:]))
    assert [type(layer) for layer in pruned.encoder] == [type(layer) for layer in model.encoder]
    assert pruned.state_dict().keys() == model.state_dict().keys()
    for key in ("pool.centroids", "pool.conv.weight"):
        assert torch.equal(pruned.state_dict()[key], model.state_dict()[key])

    spec = ModelShape.of("vgg16", "netvlad", {"num_clusters": 4})
    full = save_checkpoint(tmp_path / "full.pth.tar", {"state_dict": model.state_dict()})
    reloaded = reload(pruned, settings, spec, tmp_path / "pruned.pth.tar")
    assert (tmp_path / "pruned.pth.tar").stat().st_size < 0.6 * full.stat().st_size

    images = torch.randn(2, 3, *IMAGE_SIZE)
    # 30% fewer filters on both sides of the inner convs: 0.7^2 of their multiply-adds (0.50)
    assert multiply_adds(pruned, images) < 0.55 * multiply_adds(model, images)
    parameters = [sum(p.numel() for p in m.encoder.parameters()) for m in (pruned, model)]
    assert parameters[0] < 0.55 * parameters[1]  # 0.52: conv5_3 keeps its 512 filters
    with torch.no_grad():
        descriptors = pruned(images)
        assert torch.equal(reloaded(images), descriptors)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5)
    assert conv_widths(reloaded) == widths


def test_channels_keep_at_least_one_filter_and_which_layers_train():
    model = build_model("alexnet", "max", weights="none")
    freeze_pretrained_layers(model.encoder, "alexnet")  # as for ImageNet weights: conv5 trains
    settings = prune.validate({"amount": 0.999, "structure": "channels"}, model)
    pruned, _ = prune.apply(model, settings, None)
    assert conv_widths(pruned) == [(3, 1), (1, 1), (1, 1), (1, 1), (1, 256)]
    trains = [layer.weight.requires_grad for layer in pruned.encoder
              if isinstance(layer, nn.Conv2d)]
    assert trains == [False, False, False, False, True]
    assert pruned(torch.randn(2, 3, *IMAGE_SIZE)).shape == (2, 256)


@pytest.mark.parametrize("structure", ["unstructured", "channels"])
def test_finetuning_lowers_the_triplet_loss_and_keeps_the_pruning(synth_root, tmp_path,
                                                                  structure):
    config = TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=4, weights="none",
                         cache_dir=tmp_path / "cache", run_dir=tmp_path / "run", epochs=3,
                         workers=0, show_progress=False, lr=1e-3, seed=0).validate()
    model, _ = fresh_model(config, open_split(synth_root, "train"))
    losses, trained = [], {}

    def finetune(model, after_step):
        run = training_run(config, model=model, after_step=after_step)
        losses.extend(result.loss for result in run.epochs())
        trained.update({k: w.clone() for k, w in conv_weights(run.model).items()})
        return run.model

    settings = prune.validate({"amount": 0.5, "structure": structure}, model)
    pruned_only, _ = prune.apply(model, settings, None)
    tuned, _ = prune.apply(model, settings, context(synth_root, finetune))

    assert len(losses) == 3 and losses[-1] < losses[0], losses
    changed = [not torch.equal(trained[k], conv_weights(pruned_only)[k]) for k in trained]
    assert all(changed)  # fine-tuning did train every conv
    assert all(torch.equal(conv_weights(tuned)[k], trained[k]) for k in trained)
    if structure == "unstructured":  # as training left them, before `apply` re-zeroes
        for key, weight in trained.items():
            assert torch.equal(weight == 0, conv_weights(pruned_only)[key] == 0), key
    else:
        assert conv_widths(tuned) == conv_widths(pruned_only) == \
            [(3, 32), (32, 96), (96, 192), (192, 128), (128, 256)]


@pytest.mark.parametrize("settings, words", [
    ({"amount": 1.5, "structure": "unstructured"}, "--amount 1.5 must be between 0 and 1"),
    ({"amount": 0, "structure": "channels"}, "--amount 0 must be between 0 and 1"),
    ({"amount": "lots"}, "--amount 'lots' is not a number"),
    ({"structure": "channels"}, "prune needs --amount"),
    ({"amount": 0.3, "structure": "filters"}, "--structure 'filters' is not a pruning"),
    ({"amount": 0.3, "bits": 8}, "prune takes --amount and --structure, not --bits"),
    ({"amount": 0.3, "refit": False}, "--no-refit applies to --structure channels"),
])
def test_bad_settings_are_one_clear_user_error(settings, words):
    model = build_model("alexnet", "netvlad", 4, weights="none")
    with pytest.raises(UserError) as error:
        prune.validate(settings, model)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_model_without_an_encoder_and_pool_is_refused():
    with pytest.raises(UserError, match="prune needs a trained encoder \\+ pool model"):
        prune.validate({"amount": 0.3}, nn.Linear(4, 4))


def test_validate_normalises_the_settings():
    model = build_model("alexnet", "avg", weights="none")
    assert prune.validate({"amount": "0.25", "structure": "Channels"}, model) == \
        {"amount": 0.25, "structure": "channels", "refit": True}
    assert prune.validate({"amount": 0.25, "structure": "channels", "refit": False}, model) == \
        {"amount": 0.25, "structure": "channels", "refit": False}
    assert prune.validate({"amount": 0.1, "structure": None}, model) == \
        {"amount": 0.1, "structure": "unstructured"}


def test_refitting_brings_each_pruned_conv_closer_to_the_original(synth_root, monkeypatch):
    """Each conv that lost input channels is refitted, in turn: right after its refit, its
    output (still at full width) is checked against the original conv's, on images the refit
    never saw (it samples the training database). Measured over 4 seeds: each refit took the
    error to 0.40-0.51 of what it was, and the whole encoder's to 0.33-0.39 of slicing alone;
    refitting only the last conv gets the latter to 0.37-0.43 too, so only the per-conv check
    tells them apart."""
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none").eval()
    images = next(ImageFeed(open_split(synth_root, "val"), IMAGE_SIZE, CPU).batches([range(24)]))

    def error(pruned: nn.Sequential, depth: int) -> float:
        """Relative error of the pruned encoder's first `depth` layers' output."""
        with torch.no_grad():
            target = model.encoder[:depth](images)
            return float((pruned[:depth](images) - target).norm() / target.norm())

    errors, real_refitter = {}, prune._refitter

    def measured_refitter(original, pruned, context):
        refit = real_refitter(original, pruned, context)

        def measured(index: int) -> None:
            before = error(pruned.encoder, index + 1)
            refit(index)
            errors[index] = (before, error(pruned.encoder, index + 1))
        return measured

    monkeypatch.setattr(prune, "_refitter", measured_refitter)
    half = {"amount": 0.5, "structure": "channels"}
    refitted, _ = prune.apply(model, prune.validate(half, model), context(synth_root))
    sliced, _ = prune.apply(model, prune.validate({**half, "refit": False}, model),
                            context(synth_root))
    assert conv_widths(refitted) == conv_widths(sliced)
    successors = [index for index, layer in enumerate(model.encoder)
                  if isinstance(layer, nn.Conv2d)][1:]
    assert sorted(errors) == successors == [3, 6, 8, 10]
    for index, (before, after) in errors.items():
        assert after < 0.6 * before, (index, before, after)
    whole = len(model.encoder)
    assert error(refitted.encoder, whole) < 0.5 * error(sliced.encoder, whole)


def test_the_refit_recovers_a_conv_that_lost_no_input_from_its_outputs(monkeypatch):
    """A conv of other weights, refitted without the ridge's pull, becomes the original's."""
    from vpr_core.compression import refit

    monkeypatch.setattr(refit, "RIDGE", 0.0)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, 2, 1))
    refitted = nn.Sequential(*[layer for layer in encoder])
    refitted[2] = nn.Conv2d(6, 5, 3, 2, 1)  # a fresh initialisation, far from encoder[2]
    assert not torch.allclose(refitted[2].weight, encoder[2].weight, atol=1e-2)
    refit.Refitter(refitted, encoder, [torch.randn(4, 3, 12, 10)], torch.Generator())(2)
    assert torch.allclose(refitted[2].weight, encoder[2].weight, atol=1e-5)
    assert torch.allclose(refitted[2].bias, encoder[2].bias, atol=1e-5)


def test_the_refit_sizes_its_calibration_set_to_its_memory(synth_root, monkeypatch):
    """As many images as REFIT_MEMORY_GB of kept activations allow, at least 16."""
    torch.manual_seed(0)
    model = build_model("alexnet", "netvlad", 4, weights="none").eval()
    per_image = 2 * 64 * 15 * 19 * 4  # both encoders' largest activation: conv1's, 64x15x19
    monkeypatch.setattr(prune, "REFIT_MEMORY_GB", 20 * per_image / 1e9)
    refit = prune._refitter(model, copy.deepcopy(model), context(synth_root))
    assert sum(len(batch) for batch in refit.pruned_inputs) == 20
    monkeypatch.setattr(prune, "REFIT_MEMORY_GB", 1e-9)
    refit = prune._refitter(model, copy.deepcopy(model), context(synth_root))
    assert sum(len(batch) for batch in refit.pruned_inputs) == 16
