"""Encoders: AlexNet and VGG16 cut at conv5, their layouts, weights and frozen layers."""
from __future__ import annotations

import http.client
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .catalog import ARCHES

# How many of the cut feature layers stay trainable when starting from pretrained weights
# (the reference freezes layers[:-5] of VGG16, i.e. up to conv4_3, and layers[:-1] of AlexNet).
TRAINABLE_TAIL = {"alexnet": 1, "vgg16": 5}
# torchvision's ImageNet weights (IMAGENET1K_V1), the reference's starting point
IMAGENET_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
# torchvision's `features` layouts: (out_channels, kernel, stride, padding) per conv, "M" for
# max-pooling (AlexNet: 3x3 stride 2; VGG: 2x2 stride 2); a ReLU follows every conv.
FEATURE_LAYOUTS = {
    "alexnet": [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1),
                (256, 3, 1, 1), "M"],
    "vgg16": [(64, 3, 1, 1), (64, 3, 1, 1), "M", (128, 3, 1, 1), (128, 3, 1, 1), "M",
              (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M", (512, 3, 1, 1),
              (512, 3, 1, 1), (512, 3, 1, 1), "M", (512, 3, 1, 1), (512, 3, 1, 1),
              (512, 3, 1, 1), "M"],
}


def check_arch(arch: str) -> str:
    if arch not in ARCHES:
        raise UserError(f"unknown arch {arch!r}; use one of {', '.join(ARCHES)}")
    return arch


def encoder_layers(arch: str) -> list[nn.Module]:
    """The reference's cut: `features[:-2]`, ending at the last conv before its ReLU.

    The layers are torchvision's AlexNet / VGG16 `features` with torchvision's initialisation
    (PyTorch's default for AlexNet; He-normal, fan-out, zero bias for VGG), built here so
    that neither torchvision nor the classifier (most of the weights) is built for nothing.
    """
    layers: list[nn.Module] = []
    channels = 3
    pool = 3 if check_arch(arch) == "alexnet" else 2
    for item in FEATURE_LAYOUTS[arch]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=pool, stride=2))
            continue
        out, kernel, stride, padding = item
        conv = nn.Conv2d(channels, out, kernel_size=kernel, stride=stride, padding=padding)
        if arch == "vgg16":
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = out
    return layers[:-2]


def save_fresh_weights(arch: str, path: Path) -> Path:
    """A freshly initialised `arch` encoder saved as a weight file in torchvision's layout
    (`features.N.*`). `--weights PATH` loads it and freezes the layers ImageNet weights
    freeze: the reference's default training, without a download (benchmarks, tests)."""
    layers = nn.Sequential(*encoder_layers(arch))
    torch.save({f"features.{k}": v for k, v in layers.state_dict().items()}, path)
    return path


def build_encoder(arch: str, weights: str = "imagenet", aggregator: str = "netvlad"
                  ) -> nn.Sequential:
    """Encoder of `arch` (cut where `aggregator` takes its map) with `weights` 'imagenet',
    'none' or a path to a local weight file.

    With pretrained weights only the last conv layers train, as in the reference.
    """
    layers = encoder_layers(arch)
    encoder = nn.Sequential(*layers)
    if weights == "none":
        return encoder
    state = _imagenet_state(arch) if weights == "imagenet" else _file_state(arch, Path(weights))
    try:
        missing, _ = encoder.load_state_dict(state, strict=False)
    except RuntimeError:  # tensors of other shapes: another architecture's weights
        raise UserError(f"--weights {weights} does not fit the {arch} encoder (its tensors have "
                        f"other shapes); pass weights of a {arch} model") from None
    if missing:
        raise UserError(f"--weights {weights} has no weights for {arch} layers "
                        f"({', '.join(missing[:3])}...); pass weights of a {arch} model")
    freeze_pretrained_layers(encoder, arch)
    return encoder


def freeze_pretrained_layers(encoder: nn.Sequential, arch: str) -> None:
    """Freeze all but the last conv layer(s), as the reference does for pretrained encoders."""
    for layer in list(encoder.children())[: -TRAINABLE_TAIL[arch]]:
        for parameter in layer.parameters():
            parameter.requires_grad = False


def feature_map_size(arch: str, image_size: tuple[int, int], aggregator: str = "netvlad"
                     ) -> tuple[int, int]:
    """(H', W') of the encoder's output (for `aggregator`) for images of `image_size` (H, W).

    Computed on the meta device, so no memory or time is spent. Raises `UserError` when the
    images are too small for the encoder.
    """
    height, width = image_size
    with torch.device("meta"):
        encoder = nn.Sequential(*encoder_layers(arch))
        try:
            out = encoder(torch.empty(1, 3, height, width))
        except RuntimeError:
            out = None
    if out is None or out.shape[-1] < 1 or out.shape[-2] < 1:
        raise UserError(f"images of {height}x{width} are too small for the {arch} encoder; "
                        f"pass a larger --image-size (at least 64x64 works for both encoders)")
    return int(out.shape[-2]), int(out.shape[-1])


def _imagenet_state(arch: str) -> dict:
    url = IMAGENET_URLS[arch]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        try:
            torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True,
                                               weights_only=True)
        except (OSError, http.client.HTTPException) as error:  # no network: URLError, HTTP...
            raise UserError(
                f"ImageNet weights for {arch} are not in the torch cache ({cached}) and cannot be "
                f"downloaded ({type(error).__name__}); pass --weights none, or --weights PATH to a "
                f"local {Path(url).name}") from None
        except RuntimeError as error:  # torch.hub's hash check: what came is not the file
            if not str(error).startswith("invalid hash value"):
                raise
            raise UserError(f"what {url} sent is not {Path(url).name} (a proxy's page?), and "
                            f"was not kept; check the network, or pass --weights PATH to a "
                            f"local copy") from None
    return _features_only(torch.load(cached, map_location="cpu", weights_only=True))


def _file_state(arch: str, path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--weights {path} does not exist; pass imagenet, none or an existing file")
    state = _read_weight_file(path, arch)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint of this project or of the reference
    if not isinstance(state, dict):
        raise UserError(f"--weights {path} does not hold a state_dict; pass a torchvision "
                        f"{arch} state_dict")
    return _features_only(state)


# How a file torch.save wrote begins: a zip archive (torch >= 1.6) or a pickle, protocol 2 or more
TORCH_FILE_HEADS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
# What torch.load raises for a damaged torch file: its archive reader's RuntimeError, the
# unpickler's errors on a damaged or disallowed pickle, EOFError when it is cut short.
TORCH_FILE_ERRORS = (OSError, EOFError, RuntimeError, pickle.UnpicklingError, UnicodeDecodeError)


def _read_weight_file(path: Path, arch: str) -> object:
    """What torch.save wrote to `path` (tensors and plain containers only); `UserError` when the
    file is not a torch file or is damaged."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if not head.startswith(TORCH_FILE_HEADS):  # text, an image...: the unpickler would
            # fail on it in any way at all (KeyError, IndexError...)
            raise UserError(f"--weights {path} is not a torch weight file (neither a zip "
                            f"archive nor a pickle); pass a torchvision {arch} state_dict")
        return torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_FILE_ERRORS as error:
        raise UserError(f"--weights {path} is not a readable torch weight file "
                        f"({type(error).__name__}); pass a torchvision {arch} state_dict"
                        ) from None


def _features_only(state: dict) -> dict:
    """Encoder keys 'N.weight' from torchvision ('features.N.*') or NetVLAD ('encoder.N.*') keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("features.", "encoder.module.", "encoder.", "module.features."):
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
                break
    return out
