"""DINOv2 ViT encoders (Oquab et al., 2023): the torch hub's `dinov2_vit{s,b,l,g}14`.

Parameter names are the hub's (`cls_token`, `pos_embed`, `mask_token`, `patch_embed.proj.*`,
`blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp,ls2}.*`, `norm.*`), so a hub state dict loads
with strict=True. The hub builds these models with `block_chunks=0` (blocks not chunked),
LayerScale (`init_values=1.0`), no register tokens, `interpolate_offset=0.1` and
`interpolate_antialias=False`; ViT-g uses the SwiGLU FFN (`mlp.w12`, `mlp.w3`).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

PATCH_SIZE = 14
LAYER_NORM_EPS = 1e-6
# The hub's positional-embedding resampling: bicubic with scale factor (grid + 0.1) / 37,
# a historical offset (facebookresearch/dino#8) kept for compatibility; no antialiasing.
INTERPOLATE_OFFSET = 0.1
INTERPOLATE_ANTIALIAS = False


@dataclass(frozen=True)
class ViTConfig:
    """A DINOv2 ViT's shape. `image_size` fixes the stored positional grid: (518 // 14)^2 = 37^2
    patch positions plus the class token's, for every hub model."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (fc1, GELU, fc2) or "swiglu" (w12, SiLU-gate, w3)
    mlp_ratio: float = 4.0
    image_size: int = 518

    @property
    def grid(self) -> int:
        return self.image_size // PATCH_SIZE

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":  # the hub's SwiGLUFFNFused: 2/3 of it, rounded up to 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden


CONFIGS = {
    "dinov2_vits14": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
    "dinov2_vitg14": ViTConfig(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}
# The hub's LVD-142M weights (torch.hub keeps them as <hub dir>/checkpoints/<file name>)
PRETRAINED_URLS = {name: f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"
                   for name in CONFIGS}


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] -> patch tokens [N, H/14 * W/14, C], row-major."""
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        # [N, L, 3, heads, head_dim] -> three [N, heads, L, head_dim]
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """`w12` holds both input projections, the SiLU-gated half first."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class Block(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, config.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = (SwiGLU if config.ffn == "swiglu" else Mlp)(dim, config.ffn_hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """A DINOv2 ViT/14: images [N, 3, H, W] -> (feature map [N, C, H/14, W/14], class token [N, C]).

    `name` is a hub model (`CONFIGS`) or a `ViTConfig` (small models for tests). Both outputs are
    the tokens after the final LayerNorm `norm`, as SALAD and MegaLoc take them; with
    `final_norm=False` they are the last block's tokens (BoQ takes those, without the class token).
    """

    def __init__(self, name: str | ViTConfig = "dinov2_vitb14", final_norm: bool = True):
        super().__init__()
        if isinstance(name, ViTConfig):
            config = name
        elif name in CONFIGS:
            config = CONFIGS[name]
        else:
            raise UserError(f"unknown DINOv2 model {name!r}; use one of {', '.join(CONFIGS)}")
        if config.ffn not in ("mlp", "swiglu"):
            raise UserError(f"unknown DINOv2 FFN {config.ffn!r}; use 'mlp' or 'swiglu'")
        self.config = config
        self.final_norm = final_norm
        self.num_channels = config.embed_dim
        self.patch_size = PATCH_SIZE
        self.frozen_blocks: int | None = None  # set by freeze_all_but_last
        dim = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid ** 2 + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # iBOT's; unused here, kept for keys
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """The hub's initialisation (only matters without pretrained weights)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def freeze_all_but_last(self, n_blocks: int) -> None:
        """Train only the last `n_blocks` blocks and the final `norm`, as SALAD does (4 blocks):
        the patch embedding, the class and positional embeddings and the earlier blocks stay
        fixed, and run without autograd."""
        if not 0 <= n_blocks <= len(self.blocks):
            raise UserError(f"the number of trained DINOv2 blocks must be 0 to "
                            f"{len(self.blocks)}, got {n_blocks}")
        self.frozen_blocks = len(self.blocks) - n_blocks
        frozen = [self.cls_token, self.pos_embed, self.mask_token,
                  *self.patch_embed.parameters()]
        for block in self.blocks[: self.frozen_blocks]:
            frozen += block.parameters()
        for parameter in self.parameters():
            parameter.requires_grad = True
        for parameter in frozen:
            parameter.requires_grad = False

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int,
                                 dtype: torch.dtype) -> torch.Tensor:
        """The positional embedding [1, 1 + grid_h * grid_w, C] for a grid_h x grid_w patch grid:
        the stored one at the stored grid, else its patch part resampled as the hub does."""
        stored = self.config.grid
        if (grid_h, grid_w) == (stored, stored):
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        dim = pos_embed.shape[-1]
        patch_pos = pos_embed[:, 1:].reshape(1, stored, stored, dim).permute(0, 3, 1, 2)
        # a scale factor, not a size: the kernel samples at positions the factor sets
        scale = ((grid_h + INTERPOLATE_OFFSET) / stored, (grid_w + INTERPOLATE_OFFSET) / stored)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic",
                                  antialias=INTERPOLATE_ANTIALIAS)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([pos_embed[:, :1], patch_pos], dim=1).to(dtype)

    def check_image_size(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid (H/14, W/14); `UserError` unless both are whole and at least 1."""
        if height % PATCH_SIZE or width % PATCH_SIZE or min(height, width) < PATCH_SIZE:
            fit = (max(1, round(height / PATCH_SIZE)) * PATCH_SIZE,
                   max(1, round(width / PATCH_SIZE)) * PATCH_SIZE)
            raise UserError(f"images of {height}x{width}: DINOv2 needs a height and width that "
                            f"are multiples of {PATCH_SIZE}; pass --image-size {fit[0]}x{fit[1]} "
                            f"(SALAD's authors evaluate at 322x322)")
        return height // PATCH_SIZE, width // PATCH_SIZE

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, 3, H, W], H and W multiples of 14 -> (feature map [N, C, H/14, W/14],
        class token [N, C])."""
        n = images.shape[0]
        grid_h, grid_w = self.check_image_size(*images.shape[-2:])
        frozen = self.frozen_blocks or 0
        with torch.no_grad() if self.frozen_blocks is not None else nullcontext():
            tokens = self.patch_embed(images)
            tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1)
            tokens = tokens + self.interpolate_pos_encoding(grid_h, grid_w, tokens.dtype)
            for block in self.blocks[:frozen]:
                tokens = block(tokens)
        for block in self.blocks[frozen:]:
            tokens = block(tokens)
        if self.final_norm:
            tokens = self.norm(tokens)
        feature_map = tokens[:, 1:].reshape(n, grid_h, grid_w, -1).permute(0, 3, 1, 2)
        return feature_map, tokens[:, 0]


def config_of(state_dict: dict, prefix: str = "") -> str | None:
    """The hub model (a `CONFIGS` name) whose parameters `state_dict` holds under `prefix`, read
    from the embedding width, the number of blocks and the FFN; None when none fits."""
    cls_token = state_dict.get(prefix + "cls_token")
    if cls_token is None or cls_token.dim() != 3:
        return None
    depth = 0
    while f"{prefix}blocks.{depth}.norm1.weight" in state_dict:
        depth += 1
    ffn = "swiglu" if f"{prefix}blocks.0.mlp.w12.weight" in state_dict else "mlp"
    for name, config in CONFIGS.items():
        if (config.embed_dim, config.depth, config.ffn) == (cls_token.shape[-1], depth, ffn):
            return name
    return None
