"""Pretrained encoder weights: the authors' files (torchvision's ImageNet AlexNet, VGG16 and
ResNets; DINOv2's pretraining) from torch's hub cache, downloaded there on first use when the
network allows (never in tests or CI), or a local file; read with `weights_only=True` and
mapped onto the encoder's keys."""
from __future__ import annotations

import http.client
import pickle
from pathlib import Path

import torch

from ..errors import UserError
from . import backbones, dinov2, resnet
from .catalog import CNNS, DINOV2S, RESNETS

PRETRAINED_URLS = {**backbones.IMAGENET_URLS, **resnet.IMAGENET_URLS, **dinov2.PRETRAINED_URLS}
# How a file torch.save wrote begins: a zip archive (torch >= 1.6) or a pickle, protocol 2 or more
TORCH_FILE_HEADS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
# What torch.load raises for a damaged torch file: its archive reader's RuntimeError, the
# unpickler's errors on a damaged or disallowed pickle, EOFError when it is cut short.
TORCH_FILE_ERRORS = (OSError, EOFError, RuntimeError, pickle.UnpicklingError, UnicodeDecodeError)


def encoder_state(arch: str, weights: str) -> dict:
    """The state dict `weights` ('imagenet': the authors' pretrained file; else a file's path)
    gives `arch`'s encoder, in the encoder's own keys."""
    if weights == "imagenet":
        return _encoder_keys(arch, _pretrained(arch))
    return _encoder_keys(arch, _file(arch, Path(weights)))


def _pretrained(arch: str) -> dict:
    url = PRETRAINED_URLS[arch]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        try:
            torch.hub.load_state_dict_from_url(url, progress=True, check_hash=arch in CNNS,
                                               weights_only=True)
        except (OSError, http.client.HTTPException) as error:  # no network: URLError, HTTP...
            raise UserError(
                f"pretrained weights for {arch} are not in the torch cache ({cached}) and cannot "
                f"be downloaded ({type(error).__name__}); pass --weights none, or --weights PATH "
                f"to a local {Path(url).name}") from None
        except RuntimeError as error:  # torch.hub's hash check: what came is not the file
            if not str(error).startswith("invalid hash value"):
                raise
            raise UserError(f"what {url} sent is not {Path(url).name} (a proxy's page?), and "
                            f"was not kept; check the network, or pass --weights PATH to a "
                            f"local copy") from None
    return torch.load(cached, map_location="cpu", weights_only=True)


def _file(arch: str, path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--weights {path} does not exist; pass imagenet, none or an existing file")
    state = _read_weight_file(path, arch)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint of this project or of the reference
    if not isinstance(state, dict):
        raise UserError(f"--weights {path} does not hold a state_dict; pass {_expected(arch)}")
    return state


def _read_weight_file(path: Path, arch: str) -> object:
    """What torch.save wrote to `path` (tensors and plain containers only); `UserError` when the
    file is not a torch file or is damaged."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if not head.startswith(TORCH_FILE_HEADS):  # text, an image...: the unpickler would
            # fail on it in any way at all (KeyError, IndexError...)
            raise UserError(f"--weights {path} is not a torch weight file (neither a zip "
                            f"archive nor a pickle); pass {_expected(arch)}")
        return torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_FILE_ERRORS as error:
        raise UserError(f"--weights {path} is not a readable torch weight file "
                        f"({type(error).__name__}); pass {_expected(arch)}") from None


def _expected(arch: str) -> str:
    source = "the DINOv2 hub's" if arch in DINOV2S else "a torchvision"
    return f"{source} {arch} state_dict"


def _encoder_keys(arch: str, state: dict) -> dict:
    """The encoder's keys from the authors' (torchvision's `features.N.*` or `conv1.*`, the
    DINOv2 hub's own) or from this project's checkpoints (`encoder.*`)."""
    ours = {key[len("encoder."):]: value for key, value in state.items()
            if key.startswith("encoder.")}
    if ours:
        return ours
    if arch in RESNETS:
        return resnet.to_encoder_keys(state)
    if arch in DINOV2S:
        return dict(state)
    out = {}
    for key, value in state.items():  # AlexNet / VGG16: torchvision's `features`
        for prefix in ("features.", "module.features."):
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
                break
    return out
