"""The backbone keys and shapes that released files hold, in this project's encoder names.

Private to the format modules until `vpr_core.models.resnet` and `vpr_core.models.dinov2` land
(then their modules give these): ResNet as `nn.Sequential(conv1, bn1, relu, maxpool, layer1,
layer2, layer3[, layer4])`, so torchvision's names become indices; DINOv2 as the torch.hub ViT
with the hub's own parameter names.
"""
from __future__ import annotations

# torchvision ResNet child -> its index in the encoder's nn.Sequential
RESNET_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


def resnet_index_key(torchvision_key: str) -> str | None:
    """`layer3.5.conv3.weight` -> `6.5.conv3.weight`; None for a name outside the cut
    (`fc.*`) or not a ResNet's."""
    head, _, rest = torchvision_key.partition(".")
    return f"{RESNET_INDEX[head]}.{rest}" if head in RESNET_INDEX and rest else None


def resnet50_shapes(last_layer: int = 3) -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet-50 from conv1 to layer`last_layer`: {index key: shape}, buffers
    included (BatchNorm running statistics and `num_batches_tracked`)."""
    import torch
    import torchvision

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        net = torchvision.models.resnet50(weights=None)
    shapes = {}
    for key, value in net.state_dict().items():
        index_key = resnet_index_key(key)
        if index_key is not None and int(index_key.split(".")[0]) <= 3 + last_layer:
            shapes[index_key] = tuple(value.shape)
    return shapes


def dinov2_vitb14_shapes() -> dict[str, tuple[int, ...]]:
    """The torch.hub `dinov2_vitb14` model's state: {hub key: shape} (ViT-B/14: 768 channels,
    12 blocks with LayerScale, 37x37 + 1 position embeddings for 518x518, no registers)."""
    dim, depth, patch, positions = 768, 12, 14, (518 // 14) ** 2 + 1
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, positions, dim),
              "mask_token": (1, dim), "patch_embed.proj.weight": (dim, 3, patch, patch),
              "patch_embed.proj.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,)}
    for block in range(depth):
        layers = {"norm1.weight": (dim,), "norm1.bias": (dim,),
                  "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
                  "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "ls1.gamma": (dim,),
                  "norm2.weight": (dim,), "norm2.bias": (dim,),
                  "mlp.fc1.weight": (4 * dim, dim), "mlp.fc1.bias": (4 * dim,),
                  "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,), "ls2.gamma": (dim,)}
        shapes.update({f"blocks.{block}.{key}": shape for key, shape in layers.items()})
    return shapes


def shapes_of(state_dict: dict) -> dict[str, tuple[int, ...] | None]:
    """{key: shape}; None for a value that is not a tensor."""
    import torch

    return {key: tuple(value.shape) if isinstance(value, torch.Tensor) else None
            for key, value in state_dict.items()}


def with_prefix(state_dict: dict, prefix: str) -> dict:
    """The entries under `prefix`, with it removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items()
            if key.startswith(prefix)}
