"""DINOv2, SALAD, MegaLoc and their released formats, against computations written here with
plain torch ops on the state dicts, and key lists written from the authors' files."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vpr_core.errors import UserError
from vpr_core.models.dinov2 import PRETRAINED_URLS, DinoV2, ViTConfig
from vpr_core.models.formats import megaloc as megaloc_format
from vpr_core.models.formats import salad as salad_format
from vpr_core.models.megaloc import MegaLoc
from vpr_core.models.salad import SALAD, log_optimal_transport

TINY = ViTConfig(embed_dim=64, depth=2, num_heads=2, image_size=56)  # a 4x4 stored grid


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random, LayerScale and LayerNorm scales around 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            scale = name.endswith("gamma") or ("norm" in name and name.endswith("weight"))
            parameter.copy_(1 + 0.3 * noise if scale else 0.1 * noise)
    return module.eval()


# ---- independent computations -------------------------------------------------------------

def reference_vit(state: dict, images: torch.Tensor, num_heads: int, norm: bool = True):
    """DINOv2's forward on a hub state dict: (feature map [N, C, h, w], class token [N, C])."""
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=14)
    n, dim, h, w = x.shape
    x = torch.cat([state["cls_token"].expand(n, 1, dim), x.flatten(2).transpose(1, 2)], dim=1)
    stored = math.isqrt(state["pos_embed"].shape[1] - 1)
    grid = state["pos_embed"][:, 1:].reshape(1, stored, stored, dim).permute(0, 3, 1, 2)
    if (h, w) != (stored, stored):  # the hub: scale factors (h + 0.1) / M, (w + 0.1) / M
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / stored, (w + 0.1) / stored),
                             mode="bicubic", antialias=False)
    x = x + torch.cat([state["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    head_dim = dim // num_heads
    for i in range(depth):
        p = {key[len(f"blocks.{i}."):]: value for key, value in state.items()
             if key.startswith(f"blocks.{i}.")}
        y = F.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        qkv = (y @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]).reshape(n, -1, 3, num_heads,
                                                                         head_dim)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # [N, heads, L, head_dim]
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(n, -1, dim)
        x = x + p["ls1.gamma"] * (out @ p["attn.proj.weight"].T + p["attn.proj.bias"])
        y = F.layer_norm(x, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        if "mlp.w12.weight" in p:
            hidden = y @ p["mlp.w12.weight"].T + p["mlp.w12.bias"]
            half = hidden.shape[-1] // 2
            hidden = F.silu(hidden[..., :half]) * hidden[..., half:]
            y = hidden @ p["mlp.w3.weight"].T + p["mlp.w3.bias"]
        else:
            hidden = F.gelu(y @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
            y = hidden @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
        x = x + p["ls2.gamma"] * y
    if norm:
        x = F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    return x[:, 1:].transpose(1, 2).reshape(n, dim, h, w), x[:, 0]


def sinkhorn_probabilities(scores: torch.Tensor, dust_bin: float, iterations: int = 3):
    """Sinkhorn-Knopp in the probability domain, for one image: scores [K, L] ->
    assignment [K + 1, L] scaled by L + K (the dust bin last)."""
    k, length = scores.shape
    plan = torch.exp(torch.cat([scores, torch.full((1, length), dust_bin)]).double())
    rows = torch.full((k + 1,), 1.0 / (length + k), dtype=torch.float64)
    rows[-1] = (length - k) / (length + k)
    cols = torch.full((length,), 1.0 / (length + k), dtype=torch.float64)
    for _ in range(iterations):
        plan = plan * (rows / plan.sum(dim=1))[:, None]
        plan = plan * (cols / plan.sum(dim=0))[None, :]
    return (plan * (length + k)).float()


def reference_salad(state: dict, feature_map: torch.Tensor, cls_token: torch.Tensor):
    """SALAD's descriptor, one image at a time, one cluster at a time."""
    def mlp(x, first, second):  # x [L, C]: Linear / 1x1 conv, ReLU, Linear / 1x1 conv
        hidden = torch.relu(x @ state[first + ".weight"].flatten(1).T + state[first + ".bias"])
        return hidden @ state[second + ".weight"].flatten(1).T + state[second + ".bias"]

    out = []
    for image, token in zip(feature_map, cls_token):
        tokens = image.flatten(1).T  # [L, C]
        features = mlp(tokens, "cluster_features.0", "cluster_features.3")  # [L, D]
        scores = mlp(tokens, "score.0", "score.3").T  # [K, L]
        assignment = sinkhorn_probabilities(scores, float(state["dust_bin"]))[:-1]
        clusters = torch.stack([F.normalize(features.T @ row, dim=0) for row in assignment],
                               dim=1)  # [D, K]: flattened d-major, index d * K + k
        global_token = mlp(token[None], "token_features.0", "token_features.2")[0]
        descriptor = torch.cat([F.normalize(global_token, dim=0), clusters.flatten()])
        out.append(F.normalize(descriptor, dim=0))
    return torch.stack(out)


def reference_megaloc(state: dict, feature_map, cls_token):
    agg = {key[4:]: value for key, value in state.items() if key.startswith("agg.")}
    projected = reference_salad(agg, feature_map, cls_token) @ state["linear.weight"].T
    return F.normalize(projected + state["linear.bias"], dim=1)


# ---- the hub's and the authors' key names and shapes, as their files hold them --------------

def hub_vit_shapes(dim: int, depth: int, hidden: int, swiglu: bool = False,
                   mask_token: bool = True) -> dict:
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, 37 * 37 + 1, dim)}
    if mask_token:
        shapes["mask_token"] = (1, dim)
    shapes.update({"patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,)})
    ffn = ({"mlp.w12.weight": (2 * hidden, dim), "mlp.w12.bias": (2 * hidden,),
            "mlp.w3.weight": (dim, hidden), "mlp.w3.bias": (dim,)} if swiglu else
           {"mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,)})
    for i in range(depth):
        block = {"norm1.weight": (dim,), "norm1.bias": (dim,),
                 "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
                 "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "ls1.gamma": (dim,),
                 "norm2.weight": (dim,), "norm2.bias": (dim,), **ffn, "ls2.gamma": (dim,)}
        shapes.update({f"blocks.{i}.{key}": shape for key, shape in block.items()})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def salad_shapes(channels: int, clusters: int, cluster_dim: int, token_dim: int) -> dict:
    return {"dust_bin": (),
            "token_features.0.weight": (512, channels), "token_features.0.bias": (512,),
            "token_features.2.weight": (token_dim, 512), "token_features.2.bias": (token_dim,),
            "cluster_features.0.weight": (512, channels, 1, 1), "cluster_features.0.bias": (512,),
            "cluster_features.3.weight": (cluster_dim, 512, 1, 1),
            "cluster_features.3.bias": (cluster_dim,),
            "score.0.weight": (512, channels, 1, 1), "score.0.bias": (512,),
            "score.3.weight": (clusters, 512, 1, 1), "score.3.bias": (clusters,)}


def tensors(shapes: dict, prefix: str = "", device: str = "meta", seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if device == "meta":
        return {prefix + key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    out = {}
    for key, shape in shapes.items():
        scale = key.endswith("gamma") or ("norm" in key and key.endswith("weight"))
        noise = torch.randn(shape, generator=generator)
        out[prefix + key] = 1 + 0.3 * noise if scale else 0.1 * noise
    return out


def salad_file(device="meta", vit=(768, 12, 3072), settings=(64, 128, 256)) -> dict:
    """`dino_salad.ckpt`'s layout: `backbone.model.*` (the hub's ViT), `aggregator.*`."""
    return {**tensors(hub_vit_shapes(*vit), "backbone.model.", device),
            **tensors(salad_shapes(vit[0], *settings), "aggregator.", device, seed=1)}


def megaloc_file(device="meta", vit=(768, 12, 3072), settings=(64, 256, 256), out=8448,
                 v1=False) -> dict:
    """MegaLoc's layouts: `backbone.*` (no mask_token) or, v1.0, `backbone.model.*`."""
    channels, clusters, cluster_dim, token_dim = vit[0], *settings
    head = {"linear.weight": (out, token_dim + clusters * cluster_dim), "linear.bias": (out,)}
    backbone = "backbone.model." if v1 else "backbone."
    return {**tensors(hub_vit_shapes(*vit, mask_token=v1), backbone, device),
            **tensors(salad_shapes(channels, *settings), "aggregator.agg.", device, seed=1),
            **tensors(head, "aggregator.", device, seed=2)}


class Model(nn.Module):  # this project's `encoder.*` / `pool.*` layout
    def __init__(self, encoder: nn.Module, pool: nn.Module):
        super().__init__()
        self.encoder, self.pool = encoder, pool

    def forward(self, images):
        return self.pool(self.encoder(images))


# ---- (a) DINOv2 ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(56, 70), (56, 56), (42, 84)])
@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_vit_equals_the_computation_written_out(size, ffn):
    vit = randomised(DinoV2(ViTConfig(64, 2, 2, ffn=ffn, image_size=56)))
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        feature_map, cls_token = vit(images)
        expected_map, expected_cls = reference_vit(vit.state_dict(), images, num_heads=2)
    assert feature_map.shape == (2, 64, size[0] // 14, size[1] // 14)
    assert cls_token.shape == (2, 64) and vit.num_channels == 64
    assert torch.allclose(feature_map, expected_map, atol=1e-5)
    assert torch.allclose(cls_token, expected_cls, atol=1e-5)


def test_vit_resamples_positions_by_scale_factor_and_can_skip_the_final_norm():
    vit = randomised(DinoV2(TINY, final_norm=False))
    images = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        feature_map, cls_token = vit(images)
        expected_map, expected_cls = reference_vit(vit.state_dict(), images, 2, norm=False)
        by_size = F.interpolate(vit.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2),
                                size=(4, 5), mode="bicubic")
        by_scale = vit.interpolate_pos_encoding(4, 5, torch.float32)[:, 1:]
    assert torch.allclose(feature_map, expected_map, atol=1e-5)
    assert torch.allclose(cls_token, expected_cls, atol=1e-5)
    # the +0.1 offset's scale factor samples elsewhere than an output size would
    assert (by_scale - by_size.flatten(2).transpose(1, 2)).abs().max() > 1e-3


@pytest.mark.parametrize("name, dim, depth, hidden, swiglu", [
    ("dinov2_vits14", 384, 12, 1536, False), ("dinov2_vitb14", 768, 12, 3072, False),
    ("dinov2_vitl14", 1024, 24, 4096, False), ("dinov2_vitg14", 1536, 40, 4096, True)])
def test_hub_sizes_have_the_hubs_parameter_names_and_shapes(name, dim, depth, hidden, swiglu):
    with torch.device("meta"):
        vit = DinoV2(name)
    shapes = {key: tuple(value.shape) for key, value in vit.state_dict().items()}
    assert shapes == hub_vit_shapes(dim, depth, hidden, swiglu)
    assert vit.num_channels == dim and vit.config.num_heads == dim // 64
    assert PRETRAINED_URLS[name] == f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"


def test_freezing_keeps_the_last_blocks_and_the_norm_trainable():
    vit = randomised(DinoV2(ViTConfig(64, 3, 2, image_size=56)))
    images = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        before = vit(images)[0]
    vit.freeze_all_but_last(1)
    trainable = {name for name, parameter in vit.named_parameters() if parameter.requires_grad}
    assert trainable == {name for name, _ in vit.named_parameters()
                         if name.startswith(("blocks.2.", "norm."))}
    feature_map, cls_token = vit(images)
    (feature_map.sum() + cls_token.sum()).backward()
    assert torch.allclose(feature_map, before, atol=1e-6)
    assert all((parameter.grad is not None) == (name in trainable)
               for name, parameter in vit.named_parameters())
    with pytest.raises(UserError, match="0 to 3"):
        vit.freeze_all_but_last(4)


def test_vit_refuses_sizes_that_are_not_multiples_of_14_and_unknown_names():
    vit = DinoV2(TINY)
    with pytest.raises(UserError, match="multiples of 14.*56x70"):
        vit(torch.randn(1, 3, 60, 72))
    with pytest.raises(UserError, match="dinov2_vitb14"):
        DinoV2("dinov2_vitb16")


# ---- (b) SALAD and MegaLoc ----------------------------------------------------------------

def test_salad_equals_the_computation_written_out():
    pool = randomised(SALAD(in_channels=32, num_clusters=8, cluster_dim=16, token_dim=12))
    feature_map, cls_token = torch.randn(3, 32, 4, 5), torch.randn(3, 32)
    with torch.no_grad():
        ours = pool((feature_map, cls_token))
    expected = reference_salad(pool.state_dict(), feature_map, cls_token)
    assert ours.shape == (3, 12 + 8 * 16) == (3, pool.output_dim)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(3), atol=1e-5)


def test_the_transport_plan_is_sinkhorn_knopps_scaled_by_tokens_plus_clusters():
    scores = torch.randn(2, 6, 20)
    plan = log_optimal_transport(scores, torch.tensor(0.5)).exp()  # [N, K + 1, L]
    for image, expected in zip(plan, scores):
        assert torch.allclose(image, sinkhorn_probabilities(expected, 0.5), atol=1e-5)
    # the last step scales the columns: each token's assignment sums to 1 exactly
    assert torch.allclose(plan.sum(dim=1), torch.ones(2, 20), atol=1e-5)


def test_salad_keys_defaults_and_too_few_patches():
    pool = SALAD()
    shapes = {key: tuple(value.shape) for key, value in pool.state_dict().items()}
    assert shapes == salad_shapes(768, 64, 128, 256) and pool.output_dim == 8448
    with pytest.raises(UserError, match="more image patches than clusters"):
        pool((torch.randn(1, 768, 8, 8), torch.randn(1, 768)))  # 64 patches, 64 clusters


def test_megaloc_equals_the_computation_written_out():
    pool = randomised(MegaLoc(in_channels=32, num_clusters=8, cluster_dim=16, token_dim=12,
                              output_dim=24))
    feature_map, cls_token = torch.randn(2, 32, 4, 5), torch.randn(2, 32)
    with torch.no_grad():
        ours = pool((feature_map, cls_token))
    assert ours.shape == (2, 24) and pool.output_dim == 24
    assert torch.allclose(ours, reference_megaloc(pool.state_dict(), feature_map, cls_token),
                          atol=1e-5)
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in MegaLoc().state_dict().items()}
    assert shapes["linear.weight"] == (8448, 64 * 256 + 256) and shapes["agg.dust_bin"] == ()


# ---- (c) released formats -----------------------------------------------------------------

def loads_strictly(released) -> Model:
    pool_class = SALAD if released.aggregator == "salad" else MegaLoc
    with torch.device("meta"):
        encoder = DinoV2(released.arch)
        model = Model(encoder, pool_class(encoder.num_channels, **released.settings))
    model.load_state_dict(released.state_dict, strict=True, assign=True)
    return model


def test_salad_release_is_recognised_and_loads_strictly():
    file = salad_file()
    released = salad_format.recognise(file)
    assert (released.family, released.arch, released.aggregator) == ("salad", "dinov2_vitb14",
                                                                      "salad")
    assert released.settings == {"num_clusters": 64, "cluster_dim": 128, "token_dim": 256}
    assert released.image_size == (322, 322) and released.descriptor_dim == 8448
    renames = {"backbone.model.": "encoder.", "aggregator.": "pool."}
    for key, value in file.items():
        prefix = next(p for p in renames if key.startswith(p))
        assert released.state_dict[renames[prefix] + key[len(prefix):]] is value
    assert loads_strictly(released).pool.output_dim == 8448


@pytest.mark.parametrize("v1", [False, True])
def test_megaloc_releases_are_recognised_and_load_strictly(v1):
    file = megaloc_file(v1=v1)
    released = megaloc_format.recognise(file)
    assert (released.family, released.arch, released.aggregator) == ("megaloc",
                                                                      "dinov2_vitb14", "megaloc")
    assert released.settings == {"num_clusters": 64, "cluster_dim": 256, "token_dim": 256,
                                 "output_dim": 8448}
    assert released.image_size is None and released.descriptor_dim == 8448
    backbone = "backbone.model." if v1 else "backbone."
    assert released.state_dict["encoder.blocks.11.ls2.gamma"] is file[
        backbone + "blocks.11.ls2.gamma"]
    assert released.state_dict["pool.linear.weight"] is file["aggregator.linear.weight"]
    assert released.state_dict["pool.agg.dust_bin"] is file["aggregator.agg.dust_bin"]
    assert released.state_dict["encoder.mask_token"].shape == (1, 768)
    loads_strictly(released)


def test_converted_weights_compute_what_the_files_weights_compute():
    """A SALAD and a MegaLoc file on ViT-S with small heads, real values: the converted state
    dict in this project's modules gives what the file's own weights give."""
    images = torch.randn(1, 3, 56, 70)
    for file, recognise, reference in [
            (salad_file("cpu", (384, 12, 1536), (8, 16, 12)), salad_format.recognise,
             lambda state, x: reference_salad(state, *x)),
            (megaloc_file("cpu", (384, 12, 1536), (8, 16, 12), out=24), megaloc_format.recognise,
             lambda state, x: reference_megaloc(state, *x))]:
        released = recognise(file)
        assert released.arch == "dinov2_vits14"
        backbone = "backbone.model." if "backbone.model.cls_token" in file else "backbone."
        vit_state = {key[len(backbone):]: value for key, value in file.items()
                     if key.startswith(backbone)}
        pool_state = {key[11:]: value for key, value in file.items()
                      if key.startswith("aggregator.")}
        with torch.no_grad():
            ours = loads_strictly(released).eval()(images)
            expected = reference(pool_state, reference_vit(vit_state, images, num_heads=6))
        assert torch.allclose(ours, expected, atol=1e-5)


# ---- (d) other files ----------------------------------------------------------------------

def without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize("recognise", [salad_format.recognise, megaloc_format.recognise])
def test_other_files_are_not_recognised(recognise):
    salad, megaloc = salad_file(), megaloc_file()
    hub = tensors(hub_vit_shapes(768, 12, 3072))
    tiny = {**{f"backbone.model.{key}": value for key, value in DinoV2(TINY).state_dict().items()},
            **tensors(salad_shapes(64, 8, 16, 12), "aggregator.")}
    netvlad = {"encoder.0.weight": torch.zeros(64, 3, 3, 3), "pool.centroids": torch.zeros(8, 4),
               "pool.conv.weight": torch.zeros(8, 4, 1, 1)}
    own = megaloc if recognise is salad_format.recognise else salad
    mine = salad if recognise is salad_format.recognise else megaloc
    short_pos = dict(mine)
    prefix = "backbone.model." if "backbone.model.cls_token" in mine else "backbone."
    short_pos[prefix + "pos_embed"] = torch.empty(1, 16 * 16 + 1, 768, device="meta")
    for state in ({}, hub, tiny, netvlad, own, short_pos, without(mine, prefix + "norm.bias"),
                  {**mine, "aggregator.extra": torch.zeros(1)}):
        assert recognise(state) is None
