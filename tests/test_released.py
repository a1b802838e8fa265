"""The field's released checkpoints through `eval --resume FILE` with no other model flag: each
file is written here from a hand-built state dict with the authors' key names and shapes (never
from this project's modules), recognised, evaluated at its authors' image size, and its saved
descriptors equal a computation written out in the tests (torchvision's ResNets and plain
torch operations)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from cli_helpers import assert_user_error, run_main
from test_dinov2_salad import (
    megaloc_file,
    reference_megaloc,
    reference_salad,
    reference_vit,
    salad_file,
)
from test_mixvpr_boq import (
    boq_aggregator,
    boq_reference,
    mixvpr_aggregator,
    mixvpr_backbone,
    mixvpr_reference,
)
from test_resnet_gem import cosplace_file, torchvision_forward

from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.data.synthetic import SynthConfig, write_synthetic

pytestmark = pytest.mark.timeout(240)
VIT_S = (384, 12, 1536)  # the smallest hub size: recognition takes hub sizes only


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """12 database images and 2 queries per split: few images at the authors' sizes."""
    out = tmp_path_factory.mktemp("released") / "data"
    write_synthetic(SynthConfig(out=out, places=12, queries=2, image_size=(64, 80), seed=3,
                                show_progress=False))
    return out


def evaluated(file_state: dict, tiny_root, tmp_path, capsys, monkeypatch, *flags) -> tuple:
    """(eval's --json result, its saved descriptors [N + M, D]) of the file holding
    `file_state`, evaluated with no model flag."""
    path = tmp_path / "released.pth"
    torch.save(file_state, path)
    done = run_main(["eval", "--resume", path, "--data-root", tiny_root, "--split", "val",
                     "--workers", 0, "--quiet", "--json", tmp_path / "r.json",
                     "--save-descriptors", tmp_path / "d", *flags], capsys, monkeypatch,
                    tmp_path)
    assert done.returncode == 0, done.stderr
    descriptors = np.concatenate([np.load(tmp_path / "d" / f"{name}_descriptors.npy")
                                  for name in ("database", "queries")])
    return json.loads((tmp_path / "r.json").read_text()), torch.from_numpy(descriptors)


def images(tiny_root, size) -> torch.Tensor:
    """The split's images as eval reads them (database first), [N + M, 3, H, W]."""
    split = open_split(tiny_root, "val")
    feed = ImageFeed(split, size, torch.device("cpu"))
    return next(feed.batches([list(range(len(split.all_paths)))]))


def close(ours: torch.Tensor, expected: torch.Tensor) -> None:
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected.float(), atol=2e-5), (ours - expected).abs().max()


def test_cosplace(tiny_root, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    state = cosplace_file(net, fc_dim=32)
    result, ours = evaluated(state, tiny_root, tmp_path, capsys, monkeypatch)
    with torch.no_grad():
        x = F.normalize(torchvision_forward(net, images(tiny_root, (64, 80)), True), dim=1)
        p = state["aggregation.1.p"]
        x = x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
        expected = F.normalize(F.linear(x, state["aggregation.3.weight"],
                                        state["aggregation.3.bias"]), dim=1)
    close(ours, expected)
    assert {"recall@1", "recall@5"} <= set(result)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


def resnet50_cut(net, x):
    return torchvision_forward(net, x, keep_last_block=False)


def test_mixvpr_at_its_authors_320(resnet50, tiny_root, tmp_path, capsys, monkeypatch):
    aggregator = mixvpr_aggregator(20, 64, 2, 2, make=lambda s: 0.05 * torch.randn(s))
    state = {**mixvpr_backbone(resnet50.state_dict()), **aggregator}
    _, ours = evaluated(state, tiny_root, tmp_path, capsys, monkeypatch)
    with torch.no_grad():
        x = resnet50_cut(resnet50, images(tiny_root, (320, 320)))
        expected = mixvpr_reference({k[len("aggregator."):]: v for k, v in aggregator.items()},
                                    x)
    close(ours, expected)


def test_boq_resnet50_at_its_authors_384(resnet50, tiny_root, tmp_path, capsys, monkeypatch):
    aggregator = boq_aggregator(1024, 128, 8, 2, 4, make=lambda s: 0.05 * torch.randn(s))
    backbone = {f"backbone.net.{index}.{rest}": value
                for key, value in resnet50.state_dict().items()
                for name, index in (("conv1", 0), ("bn1", 1), ("layer1", 4), ("layer2", 5),
                                    ("layer3", 6))
                for rest in [key[len(name) + 1:]] if key.startswith(name + ".")}
    _, ours = evaluated({**backbone, **aggregator}, tiny_root, tmp_path, capsys, monkeypatch)
    with torch.no_grad():
        x = resnet50_cut(resnet50, images(tiny_root, (384, 384)))
        expected = boq_reference({k[len("aggregator."):]: v for k, v in aggregator.items()},
                                 x, heads=2)
    close(ours, expected)


def test_salad_at_its_authors_322(tiny_root, tmp_path, capsys, monkeypatch):
    state = salad_file("cpu", vit=VIT_S, settings=(16, 32, 64))
    _, ours = evaluated(state, tiny_root, tmp_path, capsys, monkeypatch)
    backbone = {k[len("backbone.model."):]: v for k, v in state.items()
                if k.startswith("backbone.model.")}
    with torch.no_grad():
        feature_map, cls = reference_vit(backbone, images(tiny_root, (322, 322)), num_heads=6)
        expected = reference_salad({k[len("aggregator."):]: v for k, v in state.items()
                                    if k.startswith("aggregator.")}, feature_map, cls)
    close(ours, expected)


def test_megaloc_on_whole_patches_of_the_images_own_size(tiny_root, tmp_path, capsys,
                                                         monkeypatch):
    state = megaloc_file("cpu", vit=VIT_S, settings=(8, 16, 16), out=32)
    _, ours = evaluated(state, tiny_root, tmp_path, capsys, monkeypatch)
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    with torch.no_grad():  # 64x80 images: 70x84, the nearest whole patches
        feature_map, cls = reference_vit(backbone, images(tiny_root, (70, 84)), num_heads=6)
        expected = reference_megaloc({k[len("aggregator."):]: v for k, v in state.items()
                                      if k.startswith("aggregator.")}, feature_map, cls)
    close(ours, expected)


def test_a_file_that_is_none_of_them_is_one_line(tiny_root, tmp_path, capsys, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"head.weight": torch.zeros(4, 4), "head.bias": torch.zeros(4)}, path)
    done = run_main(["eval", "--resume", path, "--data-root", tiny_root], capsys, monkeypatch,
                    tmp_path)
    assert_user_error(done, "holds no model this version knows", "head.weight")


def test_train_resume_fine_tunes_a_released_file(tiny_root, tmp_path, capsys, monkeypatch):
    """`train --resume FILE` takes the model from a released file (no flags.json to restore it
    from): no --arch needed, one that disagrees or an aggregator setting is refused."""
    torch.manual_seed(0)
    path = tmp_path / "cosplace.pth"
    torch.save(cosplace_file(torchvision.models.resnet18(), fc_dim=32), path)
    train = ["train", "--resume", path, "--data-root", tiny_root, "--epochs", 1, "--workers", 0,
             "--quiet", "--cache-dir", tmp_path / "cache"]
    assert_user_error(run_main(train + ["--arch", "vgg16", "--run-dir", tmp_path / "a"], capsys,
                               monkeypatch, tmp_path), "holds a model of arch resnet18")
    assert_user_error(run_main(train + ["--gem-p", 2, "--run-dir", tmp_path / "a"], capsys,
                               monkeypatch, tmp_path), "--gem-p does not apply with --resume")
    assert not (tmp_path / "a").exists()
    done = run_main(train + ["--run-dir", tmp_path / "ft", "--json", tmp_path / "t.json"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    flags = json.loads((tmp_path / "ft" / "checkpoints" / "flags.json").read_text())
    assert (flags["arch"], flags["aggregator"], flags["gem_fc_dim"]) == ("resnet18", "gem", 32)
    tuned = torch.load(tmp_path / "ft" / "checkpoints" / "checkpoint.pth.tar",
                       weights_only=True)["state_dict"]
    assert tuned["pool.3.weight"].shape == (32, 512)  # the FC to 32 dimensions
