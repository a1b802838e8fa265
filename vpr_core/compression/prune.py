"""Pruning the encoder: its smallest weights set to zero, or its weakest filters removed.

`unstructured`: the `amount` share of all encoder conv weights with the smallest |w| (one
threshold over every layer together) become exactly zero; shapes, file size and speed stay
the same, and fine-tuning keeps the zeros (a boolean mask per conv weight, re-applied after
every optimiser step).

`channels`: in every encoder conv but the last, the `amount` share of output filters with the
smallest L1 norm is removed (at least one kept), and the next conv loses the matching input
channels; unless `refit` is False, that next conv is then refitted to give the original
model's output from what is left (`vpr_core.compression.refit`, on calibration images of the
training database). The convs are rebuilt narrower in the same `nn.Sequential` positions,
so the keys stay the reference's `encoder.N.weight/bias` with smaller shapes: a smaller file
and a faster forward. The last conv keeps its width, NetVLAD's D, and `pool.*` is never
touched (its 1x1 conv is the soft assignment).

Both keep plain tensors in the state dict (no `torch.nn.utils.prune` reparametrisation).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError
from ..models.catalog import AGGREGATORS, CNNS, RESNETS
from ..models.place_model import PlaceModel
from .refit import Refitter, activation_bytes

STRUCTURES = ("unstructured", "channels")
NAME = "prune"
CPU_ONLY = False
DEFAULTS = {"structure": "unstructured"}  # refit: True for channels
LABEL_KEYS = ("amount", "structure")
CALIBRATION_IMAGES = 128  # training database images the refit of channel pruning samples
MIN_CALIBRATION_IMAGES = 16  # ... however large they are
REFIT_MEMORY_GB = 2.0  # for the activations the refit keeps (fewer images when larger)


def validate(settings: dict, model: nn.Module) -> dict:
    """`{"amount": float in (0, 1), "structure": "unstructured" | "channels"}`, checked, with
    `"refit": bool` (default True) for channels.

    `structure` defaults to unstructured. Raises `UserError` for an amount outside (0, 1), an
    unknown structure, another setting, or a model that is not an encoder + pool."""
    settings = {key: value for key, value in dict(settings).items() if value is not None}
    unknown = sorted(set(settings) - {"amount", "structure", "refit"})
    if unknown:
        flags = " ".join(f"--{name.replace('_', '-')}" for name in unknown)
        raise UserError(f"prune takes --amount and --structure, not {flags}; leave it out")
    amount = _amount(settings.get("amount"))
    structure = str(settings.get("structure", DEFAULTS["structure"])).lower()
    if structure not in STRUCTURES:
        raise UserError(f"--structure {settings['structure']!r} is not a pruning structure; use "
                        f"{' or '.join(STRUCTURES)}")
    if isinstance(model, PlaceModel) and model.arch not in CNNS + RESNETS:
        raise UserError(f"prune zeroes or removes conv filters, and a {model.arch} has almost "
                        f"none (it is a ViT); compress it with pca-whiten, pq or half")
    if isinstance(model, PlaceModel) and model.arch in RESNETS and structure == "channels":
        raise UserError(f"prune --structure channels removes filters along a plain chain of "
                        f"convs (AlexNet, VGG16); {model.arch}'s residual connections tie its "
                        f"channels together: use --structure unstructured")
    if not isinstance(model, PlaceModel) or model.aggregator not in AGGREGATORS or \
            not isinstance(model.encoder, nn.Sequential) or model.whiten is not None:
        raise UserError(f"prune needs a trained encoder + pool model, not a "
                        f"{type(model).__name__}; pass a checkpoint of train (not a compressed "
                        f"variant)")
    if structure == "unstructured":
        if "refit" in settings:
            raise UserError("--no-refit applies to --structure channels (unstructured pruning "
                            "refits nothing); leave it out")
        return {"amount": amount, "structure": structure}
    return {"amount": amount, "structure": structure, "refit": bool(settings.get("refit", True))}


def apply(model: PlaceModel, settings: dict, context) -> tuple[PlaceModel, dict]:
    """(a pruned copy of `model`, fine-tuned through `context.finetune` when given, {}).

    `model` itself is left as it was. Images [N, 3, H, W] -> descriptors [N, D'] as before."""
    pruned = copy.deepcopy(model)
    if settings["structure"] == "unstructured":
        after_step = KeepZeros(pruned.encoder, prune_smallest_weights(pruned.encoder,
                                                                      settings["amount"]))
    else:
        refit = settings.get("refit") and context is not None
        prune_weakest_filters(pruned.encoder, settings["amount"],
                              _refitter(model, pruned, context) if refit else None)
        after_step = None
    if context is not None and context.finetune is not None:
        pruned = context.finetune(pruned, after_step)
        if after_step is not None:  # on the model returned, whatever the fine-tuning did last
            KeepZeros(pruned.encoder, after_step.masks)()
    return pruned, {}


def rebuild(model: PlaceModel, settings: dict, state_dict: dict, extra: dict) -> PlaceModel:
    """`model` (freshly built, full width) with each encoder conv resized to the in/out
    channels of `state_dict["encoder.N.weight"]` [out, in, kh, kw]; unstructured pruning
    changes no shape, so its model comes back as it was."""
    for index, conv in _convs(model.encoder):
        weight = state_dict.get(f"encoder.{index}.weight")
        if weight is None or weight.dim() != 4 or tuple(weight.shape[:2]) == \
                (conv.out_channels, conv.in_channels):
            continue  # a missing or odd tensor is reported by load_state_dict
        model.encoder[index] = _resized_conv(conv, int(weight.shape[1]), int(weight.shape[0]))
    return model


# ---- unstructured -----------------------------------------------------------------------
def prune_smallest_weights(encoder: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """Set the `amount` share of the encoder's conv weights with the smallest |w| (over all
    layers together, a ResNet's inside its blocks too) to zero, in place; ties broken by
    position, so exactly round(amount * total) are zeroed.

    Returns {the conv's name in the encoder: boolean mask shaped like its weight [out, in, kh,
    kw], True where the weight is kept}. Biases are not pruned."""
    convs = [(name, module) for name, module in encoder.named_modules()
             if isinstance(module, nn.Conv2d)]
    with torch.no_grad():
        magnitudes = torch.cat([conv.weight.detach().abs().flatten().float().cpu()
                                for _, conv in convs])  # [total]
        count = round(amount * magnitudes.numel())
        keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
        keep[torch.argsort(magnitudes, stable=True)[:count]] = False
        masks = {}
        for (index, conv), mask in zip(convs, keep.split([c.weight.numel() for _, c in convs])):
            masks[index] = mask.view_as(conv.weight)
            conv.weight.masked_fill_(~masks[index].to(conv.weight.device), 0.0)
    return masks


class KeepZeros:
    """`after_step`: re-zeroes the pruned weights of `encoder`'s convs after an optimiser
    step (SGD's momentum and weight decay would otherwise revive them).

    Holds the conv modules, not their tensors, so it follows the model to another device."""

    def __init__(self, encoder: nn.Module, masks: dict[str, torch.Tensor]):
        self.encoder = encoder
        self.masks = masks

    def __call__(self) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                weight = self.encoder.get_submodule(name).weight
                if mask.device != weight.device:
                    self.masks[name] = mask = mask.to(weight.device)
                weight.masked_fill_(~mask, 0.0)


# ---- channels ---------------------------------------------------------------------------
def prune_weakest_filters(encoder: nn.Sequential, amount: float,
                          refit: Callable[[int], None] | None = None) -> None:
    """Remove from every conv but the last the `amount` share of its output filters with the
    smallest L1 norm (at least one kept), and the matching input channels of the next conv,
    in place: each conv is replaced, at its index, by a narrower one; then `refit(index)` of
    that next conv, when given.

    The layers between two convs (ReLU, max-pooling) act per channel, so removing a channel
    from both sides leaves every other channel's activations as they were."""
    convs = _convs(encoder)
    for (index, _), (next_index, _) in zip(convs, convs[1:]):
        conv = encoder[index]  # already narrowed on its input side by the previous step
        removed = min(round(amount * conv.out_channels), conv.out_channels - 1)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))  # [out]
        kept = torch.sort(torch.topk(norms, conv.out_channels - removed).indices).values
        encoder[index] = _sliced_conv(conv, outputs=kept)
        encoder[next_index] = _sliced_conv(encoder[next_index], inputs=kept)
        if refit is not None:
            refit(next_index)


def _refitter(original: PlaceModel, pruned: PlaceModel, context) -> Refitter:
    """A `Refitter` of the pruned encoder against the original, on up to CALIBRATION_IMAGES
    training database images spread over the database (read once, kept on the device), as
    many as REFIT_MEMORY_GB of kept activations allow (at least MIN_CALIBRATION_IMAGES)."""
    device = next(pruned.encoder.parameters()).device
    probe = torch.zeros(1, 3, *context.train_feed.size, device=device)
    per_image = activation_bytes(original.encoder, probe)
    count = max(MIN_CALIBRATION_IMAGES, min(CALIBRATION_IMAGES,
                                            int(REFIT_MEMORY_GB * 1e9 // per_image)))
    images = [batch.to(device) for batch in context.calibration_batches(count)]
    return Refitter(pruned.encoder, original.encoder, images,
                    torch.Generator().manual_seed(context.seed))


def _sliced_conv(conv: nn.Conv2d, outputs: torch.Tensor | None = None,
                 inputs: torch.Tensor | None = None) -> nn.Conv2d:
    """A copy of `conv` keeping the output filters `outputs` and input channels `inputs`
    (index tensors; None keeps all): weight [len(outputs), len(inputs), kh, kw]."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if outputs is not None:
        outputs = outputs.to(weight.device)
        weight = weight[outputs]
        bias = bias[outputs] if bias is not None else None
    if inputs is not None:
        weight = weight[:, inputs.to(weight.device)]
    narrow = _resized_conv(conv, weight.shape[1], weight.shape[0])
    with torch.no_grad():
        narrow.weight.copy_(weight)
        if bias is not None:
            narrow.bias.copy_(bias)
    return narrow


def _resized_conv(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """An `nn.Conv2d` like `conv` (kernel, stride, padding, bias, device, dtype, which
    parameters train) with other widths; its values are uninitialised."""
    if conv.groups != 1:
        raise ValueError("grouped convolutions cannot be narrowed here")
    resized = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation,
                        bias=conv.bias is not None, padding_mode=conv.padding_mode,
                        device=conv.weight.device, dtype=conv.weight.dtype)
    resized.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        resized.bias.requires_grad_(conv.bias.requires_grad)
    return resized


# ---- shared -----------------------------------------------------------------------------
def _convs(encoder: nn.Sequential) -> list[tuple[int, nn.Conv2d]]:
    """(index in the Sequential, conv) of every conv layer, in order."""
    return [(index, layer) for index, layer in enumerate(encoder) if isinstance(layer, nn.Conv2d)]


def _amount(value) -> float:
    """`--amount` as a float in (0, 1)."""
    if value is None:
        raise UserError("prune needs --amount A, the share of weights to remove (e.g. 0.3)")
    try:
        amount = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise UserError(f"--amount {value!r} is not a number; pass the share of weights to "
                        f"remove, between 0 and 1 (e.g. 0.3)") from None
    if not 0.0 < amount < 1.0:  # also refuses NaN
        raise UserError(f"--amount {value} must be between 0 and 1 (exclusive), the share of "
                        f"weights to remove")
    return amount
