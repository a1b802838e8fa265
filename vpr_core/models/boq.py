"""Bag-of-Queries aggregation (Ali-bey et al., CVPR 2024), parameters and keys as in
amaralibey/Bag-of-Queries (`src/boq.py`, the model its torch.hub entry loads).

The map is projected by a 3x3 conv, read as h*w tokens, and refined by `num_layers` blocks in
cascade; each block's learned queries read the refined tokens by cross-attention, and the
queries' outputs of all blocks, concatenated, are projected to `row_dim` rows per channel.
Any map size works (there is no positional encoding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

# The settings a user chooses, with the released ResNet-50 model's values (512 x 32 = 16,384-d;
# the released DINOv2 model has proj_channels 384, the rest the same: 12,288-d).
SETTINGS = {"proj_channels": 512, "num_queries": 64, "num_layers": 2, "row_dim": 32}
HEAD_DIM = 64  # every attention has proj_channels // 64 heads, as the authors' hub model


class BoQBlock(nn.Module):
    """One block: tokens [N, L, D] -> (refined tokens [N, L, D], query outputs [N, Q, D]).

    The tokens pass a post-norm transformer encoder layer (`encoder`: self-attention, ReLU
    feed-forward of 4*D, dropout 0). The learned `queries` [1, Q, D] attend to each other
    (`self_attn`, residual, `norm_q`), then to the refined tokens (`cross_attn`, no residual),
    and `norm_out` normalises the result.
    """

    def __init__(self, dim: int, num_queries: int, num_heads: int):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=4 * dim,
                                                  dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(tokens)
        # the queries' self-attention does not depend on the image: done once, then broadcast
        queries = self.queries
        queries = self.norm_q(queries + self.self_attn(queries, queries, queries,
                                                       need_weights=False)[0])
        queries = queries.expand(tokens.shape[0], -1, -1)
        out = self.cross_attn(queries, tokens, tokens, need_weights=False)[0]
        return tokens, self.norm_out(out)


class BoQ(nn.Module):
    """A [N, in_channels, h, w] feature map -> an L2-normalised [N, proj_channels*row_dim]
    descriptor.

    `proj_c` (3x3 conv, padding 1) maps the channels to D = proj_channels; the h*w positions,
    row-major, become tokens normalised by `norm_input`; `boqs.{i}` are the blocks; `fc`
    [row_dim, num_layers*num_queries] projects the concatenated query outputs along the query
    axis, so the descriptor is channel-major (index d*row_dim + r).
    """

    def __init__(self, in_channels: int, proj_channels: int = 512, num_queries: int = 64,
                 num_layers: int = 2, row_dim: int = 32):
        super().__init__()
        if proj_channels < HEAD_DIM or proj_channels % HEAD_DIM:
            raise UserError(f"BoQ's proj_channels must be a positive multiple of {HEAD_DIM} "
                            f"(attention heads of {HEAD_DIM} channels), got {proj_channels}")
        for name, value in (("in_channels", in_channels), ("num_queries", num_queries),
                            ("num_layers", num_layers), ("row_dim", row_dim)):
            if value < 1:
                raise UserError(f"BoQ's {name} must be at least 1, got {value}")
        self.in_channels, self.proj_channels = in_channels, proj_channels
        self.num_queries, self.num_layers, self.row_dim = num_queries, num_layers, row_dim
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        heads = proj_channels // HEAD_DIM
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries, heads)
                                  for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    @property
    def output_dim(self) -> int:
        return self.proj_channels * self.row_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, in_channels, h, w] -> descriptors [N, proj_channels*row_dim]."""
        tokens = self.norm_input(self.proj_c(features).flatten(2).transpose(1, 2))  # [N, hw, D]
        outs = []
        for block in self.boqs:
            tokens, out = block(tokens)
            outs.append(out)
        rows = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # [N, D, row_dim]
        return F.normalize(rows.flatten(1), p=2, dim=1)
