"""Int8 quantization of the encoder for CPU inference (`quantize --mode ptq-int8|qat-int8`).

The encoder's convs, ReLUs and max-pools become int8 modules of PyTorch's FX graph mode
quantization on the x86 engine (weights per output channel, activations per tensor), except
the convs of `float_layers` (by default the first, which sees the raw image, and the last,
whose output NetVLAD's residuals are taken from: the two whose rounding costs recall most,
for a few percent of the arithmetic); its output is dequantized, so `pool` (NetVLAD, whose
softmax and normalisations need float, or max/avg) stays float32 and the model still maps
float images [N, 3, H, W] to float descriptors [N, D].

- `ptq-int8`: post-training quantization; the observers are calibrated on training database
  images, then the encoder is converted.
- `qat-int8`: quantization-aware training; the encoder gets fake-quantization modules whose
  ranges are calibrated as ptq's, the caller fine-tunes the model with the triplet loss
  (`context.finetune`), then it is converted.

A quantized state dict holds int8 weights (`torch.qint8` tensors that carry their own
per-channel scales and zero points), float biases and the activations' scales and zero points
as plain tensors: all of it loads under `torch.load(weights_only=True)`. `rebuild` makes the
same structure from a float model (the graph does not depend on the images' size or values),
and `load_state_dict` then puts the saved weights, scales and zero points in.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

from ..errors import UserError
from ..models.catalog import CNNS
from ..models.netvlad import NetVLAD
from ..models.place_model import PlaceModel

NAME = "quantize"
CPU_ONLY = True
MODES = ("ptq-int8", "qat-int8")
DEFAULTS = {"mode": "ptq-int8"}
LABEL_KEYS = ("mode",)
BACKEND = "x86"  # fbgemm or oneDNN kernels, chosen per op by PyTorch
CALIBRATION_IMAGES = 256  # training database images that set the int8 ranges (both modes)
# what prepare_fx traces with: the graph is the same for any image size, 64x64 fits both encoders
TRACE_SHAPE = (1, 3, 64, 64)
# torch's notices about its own deprecations, which a user of this command cannot act on
_TORCH_NOTICES = (r"torch\.ao\.quantization is deprecated", r"Please use quant_min and quant_max",
                  r"torch\.quantize_per_tensor, torch\.quantize_per_channel")


def validate(settings: dict, model: PlaceModel) -> dict:
    """The settings, complete and JSON-able: `mode` (required), `calibration_images` (ptq;
    None or absent: 256), `float_layers` (encoder indices of convs kept in float; None or
    absent: the first and the last) and `backend` ('x86', recorded for `rebuild`). Raises
    `UserError` for anything else, and for a model that is not a `PlaceModel` pooled by
    NetVLAD, max or avg with a float32 encoder (pruned or not)."""
    unknown = sorted(set(settings) - {"mode", "calibration_images", "backend", "float_layers"})
    if unknown:
        raise UserError(f"quantize takes no setting {', '.join(unknown)}; pass only --mode "
                        f"{' or '.join(MODES)}")
    mode = settings.get("mode", DEFAULTS["mode"])
    if mode not in MODES:
        raise UserError(f"quantize --mode {mode!r} is not known; pass --mode "
                        f"{' or '.join(MODES)}")
    count = settings.get("calibration_images")
    count = CALIBRATION_IMAGES if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"quantize calibration_images must be a whole number of at least 1, "
                        f"got {count!r}; leave it out for {CALIBRATION_IMAGES}")
    if settings.get("backend") not in (None, BACKEND):
        raise UserError(f"quantize backend {settings['backend']!r} is not supported; leave it "
                        f"out for {BACKEND}")
    _check_model(model)
    return {"mode": mode, "calibration_images": count, "backend": BACKEND,
            "float_layers": _float_layers(settings.get("float_layers"), model.encoder)}


def _float_layers(given, encoder: nn.Sequential) -> list[int]:
    """The encoder indices of the convs that stay float: `given`, or the first and the last."""
    convs = [i for i, layer in enumerate(encoder) if isinstance(layer, nn.Conv2d)]
    if given is None:
        return sorted({convs[0], convs[-1]})
    if not isinstance(given, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i in convs for i in given):
        raise UserError(f"quantize float_layers must list encoder conv indices (of {convs}), "
                        f"got {given!r}; leave it out for the first and the last")
    return sorted(set(given))


def apply(model: PlaceModel, settings: dict, context) -> tuple[PlaceModel, dict]:
    """(a copy of the model with an int8 encoder, on the CPU and in eval mode, {}).

    Both modes first calibrate the quantization ranges on up to `calibration_images`
    training database images; qat-int8 then fine-tunes through `context.finetune(model,
    None)` (fp32, fake quantization; with no fine-tuning epochs it is ptq with moving-average
    ranges) before converting.
    """
    _check_model(model)
    if settings["mode"] == "qat-int8" and context.precision != "fp32":
        raise UserError(f"qat-int8 fine-tunes with fake quantization in fp32, not "
                        f"{context.precision}; pass --precision fp32")
    _use_backend()
    model = copy.deepcopy(model).cpu()  # the caller's float model stays as it was
    example = torch.zeros(TRACE_SHAPE)
    model.encoder = _prepared(model.encoder, settings["mode"], example,
                              settings["float_layers"])
    _calibrate(model.encoder, context, settings["calibration_images"])
    if settings["mode"] == "qat-int8":
        model = context.finetune(model, None).cpu()
    return _converted(model), {}


def rebuild(model: PlaceModel, settings: dict, state_dict: dict, extra: dict) -> PlaceModel:
    """A freshly built float `model` (of prune's widths, when pruned first) given the int8
    encoder structure, the same for both modes, ready for `load_state_dict(state_dict)`,
    which restores the saved weights, scales and zero points (the calibration here only lets
    the conversion run)."""
    if settings.get("mode") not in MODES or settings.get("backend") not in (None, BACKEND):
        raise UserError(f"the checkpoint's quantize settings {settings!r} are not ones this "
                        f"version makes; quantize the float checkpoint again")
    _use_backend()
    model = model.cpu()
    example = torch.zeros(TRACE_SHAPE)
    # checkpoints from before float_layers have every conv in int8
    model.encoder = _prepared(model.encoder, "ptq-int8", example,
                              settings.get("float_layers", []))
    with torch.no_grad():
        model.encoder.eval()(torch.randn(TRACE_SHAPE, generator=torch.Generator().manual_seed(0)))
    return _converted(model)


def _check_model(model: nn.Module) -> None:
    """A `UserError` unless `model` is a float `PlaceModel` whose pool is NetVLAD, max or avg."""
    pool = getattr(model, "pool", None)
    if isinstance(model, PlaceModel) and model.arch not in CNNS:
        raise UserError(f"quantize (int8) works on AlexNet and VGG16 encoders; {model.arch} + "
                        f"{model.aggregator} is not one: compress it with pca-whiten, pq, half "
                        f"or prune")
    standard = isinstance(pool, NetVLAD) or (
        isinstance(pool, nn.Sequential) and len(pool) > 0
        and isinstance(pool[0], (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)))
    if not isinstance(model, PlaceModel) or not standard:
        raise UserError(f"quantize works on a model pooled by NetVLAD, max or avg, not by "
                        f"{type(pool).__name__}; quantize the uncompressed checkpoint")
    # a pruned encoder (narrower float32 convs) is fine: `rebuild` runs after prune's
    floats = all(t.dtype == torch.float32 for t in model.encoder.state_dict().values())
    if not isinstance(model.encoder, nn.Sequential) or not floats:
        raise UserError("the model's encoder is already quantized or halved; quantize the "
                        "float checkpoint it was made from")


def _use_backend() -> None:
    """Quantized kernels of the x86 engine (packed weights are made for the engine in use)."""
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise UserError(f"this PyTorch build has no {BACKEND} quantized engine (it has "
                        f"{', '.join(torch.backends.quantized.supported_engines)}); run on an "
                        f"x86 CPU with the standard PyTorch wheel")
    torch.backends.quantized.engine = BACKEND


@contextlib.contextmanager
def _quiet():
    """Hide torch's notices about its quantization API's own deprecation (see `_TORCH_NOTICES`)."""
    with warnings.catch_warnings():
        for notice in _TORCH_NOTICES:
            warnings.filterwarnings("ignore", message=notice)
        yield


def _prepared(encoder: nn.Sequential, mode: str, example: torch.Tensor,
              float_layers: list[int]) -> nn.Module:
    """The encoder traced with observers (ptq, eval mode) or fake quantization (qat, train
    mode) after each conv(+ReLU) and max-pool but those of `float_layers`; convs and their
    ReLUs are fused."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    qat = mode == "qat-int8"
    with _quiet():
        mapping = (get_default_qat_qconfig_mapping if qat else get_default_qconfig_mapping)(
            BACKEND)
        for index in float_layers:
            mapping.set_module_name(str(index), None)
        if qat:
            return prepare_qat_fx(encoder.train(), mapping, example_inputs=(example,))
        return prepare_fx(encoder.eval(), mapping, example_inputs=(example,))


@torch.no_grad()
def _calibrate(encoder: nn.Module, context, count: int) -> None:
    """Run the observed encoder over `count` training database images (see
    `CompressionContext.calibration_batches`), on the CPU, in eval mode (qat's fake
    quantization still observes)."""
    encoder.eval()
    for images in context.calibration_batches(count):
        encoder(images.cpu())


def _converted(model: PlaceModel) -> PlaceModel:
    """`model` with its observed encoder converted to int8 modules, on the CPU, in eval mode."""
    from torch.ao.quantization.quantize_fx import convert_fx

    model = model.cpu().eval()
    with _quiet():
        model.encoder = convert_fx(model.encoder)
    return model
