import inspect
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vpr_core.errors import UserError
from vpr_core.models import boq, mixvpr
from vpr_core.models.boq import BoQ
from vpr_core.models.formats import boq as boq_format
from vpr_core.models.formats import mixvpr as mixvpr_format
from vpr_core.models.mixvpr import MixVPR, map_settings

RESNET_CUT = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")


# ---------------------------------------------------------------- references in plain torch ops

def layer_norm(x, state, prefix):
    return F.layer_norm(x, x.shape[-1:], state[prefix + "weight"], state[prefix + "bias"], 1e-5)


def linear(x, state, prefix):
    return x @ state[prefix + "weight"].T + state[prefix + "bias"]


def mixvpr_reference(state: dict, x: torch.Tensor) -> torch.Tensor:
    """amaralibey/MixVPR's forward, written out: mixers over each channel's h*w values, the
    channel projection on the channel axis, the row projection on the h*w axis."""
    n, c = x.shape[:2]
    x = x.reshape(n, c, -1)
    depth = sum(1 for key in state if key.endswith(".mix.0.weight"))
    for i in range(depth):
        mixer = f"mix.{i}.mix."
        hidden = torch.relu(linear(layer_norm(x, state, mixer + "0."), state, mixer + "1."))
        x = x + linear(hidden, state, mixer + "3.")
    x = torch.einsum("nch,oc->noh", x, state["channel_proj.weight"]) \
        + state["channel_proj.bias"][None, :, None]  # [N, out_channels, hw]
    x = linear(x, state, "row_proj.").reshape(n, -1)  # [N, out_channels*out_rows]
    return x / x.norm(dim=1, keepdim=True)


def attention(queries, keys, state, prefix, heads):
    """Multi-head scaled dot-product attention with packed q/k/v projections."""
    n, lq, d = queries.shape
    wq, wk, wv = state[prefix + "in_proj_weight"].chunk(3)
    bq, bk, bv = state[prefix + "in_proj_bias"].chunk(3)

    def split(t):
        return t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)

    q, k, v = split(queries @ wq.T + bq), split(keys @ wk.T + bk), split(keys @ wv.T + bv)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, lq, d)
    return linear(out, state, prefix + "out_proj.")


def boq_reference(state: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """amaralibey/Bag-of-Queries' forward, written out (post-norm encoder layer, queries'
    self-attention with residual, cross-attention without, outputs concatenated, fc on the
    query axis)."""
    tokens = F.conv2d(x, state["proj_c.weight"], state["proj_c.bias"], padding=1)
    n, d = tokens.shape[:2]
    tokens = layer_norm(tokens.reshape(n, d, -1).transpose(1, 2), state, "norm_input.")
    outs = []
    num_layers = len({key.split(".")[1] for key in state if key.startswith("boqs.")})
    for i in range(num_layers):
        block, enc = f"boqs.{i}.", f"boqs.{i}.encoder."
        tokens = layer_norm(tokens + attention(tokens, tokens, state, enc + "self_attn.", heads),
                            state, enc + "norm1.")
        feed = linear(torch.relu(linear(tokens, state, enc + "linear1.")), state, enc + "linear2.")
        tokens = layer_norm(tokens + feed, state, enc + "norm2.")
        queries = state[block + "queries"].expand(n, -1, -1)
        queries = layer_norm(queries + attention(queries, queries, state, block + "self_attn.",
                                                 heads), state, block + "norm_q.")
        outs.append(layer_norm(attention(queries, tokens, state, block + "cross_attn.", heads),
                               state, block + "norm_out."))
    out = torch.cat(outs, dim=1)  # [N, L*Q, D]
    rows = torch.einsum("nkd,rk->ndr", out, state["fc.weight"]) + state["fc.bias"]
    rows = rows.reshape(n, -1)
    return rows / rows.norm(dim=1, keepdim=True)


def randomised(module: nn.Module) -> dict:
    """Random values for every parameter (norm weights and biases too), loaded into `module`."""
    torch.manual_seed(1)
    state = {key: torch.randn_like(value) * 0.5 for key, value in module.state_dict().items()}
    module.load_state_dict(state)
    return state


# ---------------------------------------------------------------- the aggregators

def test_mixvpr_equals_the_written_out_reference():
    layer = MixVPR(**map_settings(8, (3, 5)), out_channels=6, mix_depth=2, mlp_ratio=2,
                   out_rows=3)
    state = randomised(layer)
    x = torch.randn(4, 8, 3, 5)
    for mode in (layer.eval, layer.train):
        mode()
        ours = layer(x)
        assert ours.shape == (4, 18) == (4, layer.output_dim)
        assert torch.allclose(ours, mixvpr_reference(state, x), atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(4), atol=1e-5)


def test_mixvpr_keys_are_the_authors():
    state = MixVPR(1024, 20, 20).state_dict()
    first = {key: tuple(value.shape) for key, value in state.items() if key.startswith("mix.0.")}
    assert first == {
        "mix.0.mix.0.weight": (400,), "mix.0.mix.0.bias": (400,),
        "mix.0.mix.1.weight": (400, 400), "mix.0.mix.1.bias": (400,),
        "mix.0.mix.3.weight": (400, 400), "mix.0.mix.3.bias": (400,)}
    assert state["channel_proj.weight"].shape == (1024, 1024)
    assert state["row_proj.weight"].shape == (4, 400)
    assert len([key for key in state if key.endswith("mix.0.weight")]) == 4


def test_settings_are_the_signature_defaults():
    for module, cls in ((mixvpr, MixVPR), (boq, BoQ)):
        defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        assert defaults == module.SETTINGS
    assert MixVPR(**map_settings(1024, (20, 20))).output_dim == 4096
    assert BoQ(1024).output_dim == 16384


def test_mixvpr_refuses_another_map_size():
    layer = MixVPR(**map_settings(8, (3, 5)), out_channels=4, mix_depth=1)
    with pytest.raises(UserError, match="3x5"):
        layer(torch.randn(1, 8, 5, 3))


def test_boq_equals_the_written_out_reference():
    layer = BoQ(16, proj_channels=128, num_queries=5, num_layers=2, row_dim=3)  # 2 heads
    state = randomised(layer)
    x = torch.randn(3, 16, 4, 6)
    for mode in (layer.eval, layer.train):
        mode()
        with torch.no_grad():  # the encoder layer's inference fast path, as in evaluation
            ours = layer(x)
        assert ours.shape == (3, 128 * 3) == (3, layer.output_dim)
        assert torch.allclose(ours, boq_reference(state, x, heads=2), atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(3), atol=1e-5)


def test_boq_refuses_channels_that_are_not_whole_heads():
    with pytest.raises(UserError, match="multiple of 64"):
        BoQ(16, proj_channels=96)


# ---------------------------------------------------------------- released files, hand-written

def zeros(shape):
    return torch.zeros(()).expand(shape)  # a shape without the memory, for recognition only


@pytest.fixture(scope="module")
def resnet50_state():
    """torchvision's ResNet-50 state, random, keyed by torchvision's names."""
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


def resnet_cut(state: dict) -> nn.Sequential:
    """conv1 .. layer3 of a torchvision ResNet-50 in an nn.Sequential (indices 0..6)."""
    net = torchvision.models.resnet50()
    return nn.Sequential(*(getattr(net, name) for name in RESNET_CUT))


def mixvpr_backbone(resnet50_state, layers=("conv1", "bn1", "layer1", "layer2", "layer3")):
    return {f"backbone.model.{key}": value for key, value in resnet50_state.items()
            if key.split(".")[0] in layers}


def mixvpr_aggregator(side, out_channels, mix_depth, out_rows, make=torch.randn):
    hw = side * side
    shapes = {"channel_proj.weight": (out_channels, 1024), "channel_proj.bias": (out_channels,),
              "row_proj.weight": (out_rows, hw), "row_proj.bias": (out_rows,)}
    for i in range(mix_depth):
        shapes.update({f"mix.{i}.mix.0.weight": (hw,), f"mix.{i}.mix.0.bias": (hw,),
                       f"mix.{i}.mix.1.weight": (hw, hw), f"mix.{i}.mix.1.bias": (hw,),
                       f"mix.{i}.mix.3.weight": (hw, hw), f"mix.{i}.mix.3.bias": (hw,)})
    return {f"aggregator.{key}": make(shape) for key, shape in shapes.items()}


def boq_aggregator(in_channels, d, num_queries, num_layers, row_dim, make=torch.randn):
    shapes = {"proj_c.weight": (d, in_channels, 3, 3), "proj_c.bias": (d,),
              "norm_input.weight": (d,), "norm_input.bias": (d,),
              "fc.weight": (row_dim, num_layers * num_queries), "fc.bias": (row_dim,)}
    for i in range(num_layers):
        block = f"boqs.{i}."
        for attn in ("encoder.self_attn.", "self_attn.", "cross_attn."):
            shapes.update({block + attn + "in_proj_weight": (3 * d, d),
                           block + attn + "in_proj_bias": (3 * d,),
                           block + attn + "out_proj.weight": (d, d),
                           block + attn + "out_proj.bias": (d,)})
        for norm in ("encoder.norm1.", "encoder.norm2.", "norm_q.", "norm_out."):
            shapes.update({block + norm + "weight": (d,), block + norm + "bias": (d,)})
        shapes.update({block + "encoder.linear1.weight": (4 * d, d),
                       block + "encoder.linear1.bias": (4 * d,),
                       block + "encoder.linear2.weight": (d, 4 * d),
                       block + "encoder.linear2.bias": (d,),
                       block + "queries": (1, num_queries, d)})
    return {f"aggregator.{key}": make(shape) for key, shape in shapes.items()}


def dinov2_vitb14_hub_keys(make=zeros):
    """The torch.hub dinov2_vitb14 model's state, as the BoQ file holds it under backbone.dino."""
    shapes = {"cls_token": (1, 1, 768), "pos_embed": (1, 1370, 768), "mask_token": (1, 768),
              "patch_embed.proj.weight": (768, 3, 14, 14), "patch_embed.proj.bias": (768,),
              "norm.weight": (768,), "norm.bias": (768,)}
    for i in range(12):
        for key, shape in {"norm1.weight": (768,), "norm1.bias": (768,),
                           "attn.qkv.weight": (2304, 768), "attn.qkv.bias": (2304,),
                           "attn.proj.weight": (768, 768), "attn.proj.bias": (768,),
                           "ls1.gamma": (768,), "norm2.weight": (768,), "norm2.bias": (768,),
                           "mlp.fc1.weight": (3072, 768), "mlp.fc1.bias": (3072,),
                           "mlp.fc2.weight": (768, 3072), "mlp.fc2.bias": (768,),
                           "ls2.gamma": (768,)}.items():
            shapes[f"blocks.{i}.{key}"] = shape
    return {key: make(shape) for key, shape in shapes.items()}


def load_strictly(released, encoder: nn.Module, pool: nn.Module) -> None:
    model = nn.Module()
    model.encoder, model.pool = encoder, pool
    model.load_state_dict(released.state_dict, strict=True)


def test_mixvpr_file_is_recognised_and_loads(resnet50_state):
    state = {**mixvpr_backbone(resnet50_state), **mixvpr_aggregator(2, 8, 2, 2)}
    released = mixvpr_format.recognise(state)
    assert (released.family, released.arch, released.aggregator) == ("mixvpr", "resnet50",
                                                                      "mixvpr")
    assert released.settings == {"out_channels": 8, "mix_depth": 2, "mlp_ratio": 1,
                                 "out_rows": 2}
    assert released.image_size == (32, 32) and released.descriptor_dim == 16
    # torchvision names -> indices, the tensors themselves
    assert released.state_dict["encoder.0.weight"] is state["backbone.model.conv1.weight"]
    assert released.state_dict["encoder.6.5.conv3.weight"] \
        is state["backbone.model.layer3.5.conv3.weight"]
    pool = MixVPR(**map_settings(1024, (2, 2)), **released.settings)
    load_strictly(released, resnet_cut(resnet50_state), pool)
    assert torch.equal(pool.row_proj.weight, state["aggregator.row_proj.weight"])


@pytest.mark.parametrize("channels,rows,dim", [(1024, 4, 4096), (256, 2, 512), (64, 2, 128)])
def test_mixvpr_released_shapes_are_recognised(resnet50_state, channels, rows, dim):
    state = {**mixvpr_backbone(resnet50_state), **mixvpr_aggregator(20, channels, 4, rows, zeros)}
    released = mixvpr_format.recognise(state)
    assert released.settings == {"out_channels": channels, "mix_depth": 4, "mlp_ratio": 1,
                                 "out_rows": rows}
    assert released.image_size == (320, 320) and released.descriptor_dim == dim


def test_boq_resnet50_file_is_recognised_and_loads(resnet50_state):
    backbone = {f"backbone.net.{index}.{key.partition('.')[2]}": value
                for key, value in resnet50_state.items()
                for index, name in enumerate(RESNET_CUT) if key.split(".")[0] == name}
    state = {**backbone, **boq_aggregator(1024, 64, 4, 2, 4)}
    released = boq_format.recognise(state)
    assert (released.family, released.arch, released.aggregator) == ("boq", "resnet50", "boq")
    assert released.settings == {"proj_channels": 64, "num_queries": 4, "num_layers": 2,
                                 "row_dim": 4}
    assert released.image_size == (384, 384) and released.descriptor_dim == 256
    assert released.state_dict["encoder.4.0.conv1.weight"] \
        is state["backbone.net.4.0.conv1.weight"]
    load_strictly(released, resnet_cut(resnet50_state), BoQ(1024, **released.settings))


def test_boq_released_shapes_are_recognised(resnet50_state):
    backbone = {f"backbone.net.{index}.{key.partition('.')[2]}": value
                for key, value in resnet50_state.items()
                for index, name in enumerate(RESNET_CUT) if key.split(".")[0] == name}
    released = boq_format.recognise({**backbone, **boq_aggregator(1024, 512, 64, 2, 32, zeros)})
    assert released.settings == {"proj_channels": 512, "num_queries": 64, "num_layers": 2,
                                 "row_dim": 32}
    assert released.descriptor_dim == 16384 and released.image_size == (384, 384)

    hub = dinov2_vitb14_hub_keys()
    state = {**{f"backbone.dino.{key}": value for key, value in hub.items()},
             **boq_aggregator(768, 384, 64, 2, 32, zeros)}
    released = boq_format.recognise(state)
    assert (released.family, released.arch) == ("boq", "dinov2_vitb14")
    assert released.settings == {"proj_channels": 384, "num_queries": 64, "num_layers": 2,
                                 "row_dim": 32}
    assert released.image_size == (322, 322) and released.descriptor_dim == 12288
    encoder_keys = {key for key in released.state_dict if key.startswith("encoder.")}
    assert encoder_keys == {f"encoder.{key}" for key in hub}  # the hub's names, norm included
    pool = BoQ(768, **released.settings)
    pool.load_state_dict({key[len("pool."):]: value for key, value in
                          released.state_dict.items() if key.startswith("pool.")}, strict=True)


def test_other_files_are_not_recognised(resnet50_state):
    mixvpr_file = {**mixvpr_backbone(resnet50_state), **mixvpr_aggregator(2, 8, 1, 2, zeros)}
    backbone = {f"backbone.net.{index}.{key.partition('.')[2]}": value
                for key, value in resnet50_state.items()
                for index, name in enumerate(RESNET_CUT) if key.split(".")[0] == name}
    boq_file = {**backbone, **boq_aggregator(1024, 64, 2, 1, 2, zeros)}
    netvlad = {"encoder.0.weight": zeros((64, 3, 3, 3)), "pool.centroids": zeros((64, 512)),
               "pool.conv.weight": zeros((64, 512, 1, 1))}
    no_row_bias = {key: value for key, value in mixvpr_file.items()
                   if key != "aggregator.row_proj.bias"}
    with_layer4 = {**mixvpr_file, **mixvpr_backbone(resnet50_state, ("layer4",))}
    non_square = {**mixvpr_backbone(resnet50_state), **mixvpr_aggregator(2, 8, 1, 2, zeros)}
    non_square["aggregator.row_proj.weight"] = zeros((2, 6))
    dino_aggregator_on_resnet = {**backbone, **boq_aggregator(768, 64, 2, 1, 2, zeros)}
    salad_like = {**{f"backbone.model.{key}": v for key, v in dinov2_vitb14_hub_keys().items()},
                  "aggregator.cluster_features.0.weight": zeros((512, 768, 1, 1))}
    not_tensors = {key: 0 for key in mixvpr_file}
    for recognise, own, others in (
            (mixvpr_format.recognise, mixvpr_file, [boq_file, no_row_bias, with_layer4,
                                                    non_square]),
            (boq_format.recognise, boq_file, [mixvpr_file, dino_aggregator_on_resnet])):
        assert recognise(own) is not None
        for state in others + [netvlad, salad_like, not_tensors, {}, []]:
            assert recognise(state) is None
