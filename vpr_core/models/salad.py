"""SALAD pooling (Izquierdo & Civera, CVPR 2024): optimal-transport assignment of DINOv2 tokens.

Parameters and keys as in serizba/salad (`token_features.{0,2}.*`, `cluster_features.{0,3}.*`,
`score.{0,3}.*`, `dust_bin`), so its `aggregator.*` keys load under another prefix.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

HIDDEN = 512  # the width of the three MLPs
SINKHORN_ITERATIONS = 3
TRAINED_BLOCKS = 4  # SALAD trains DINOv2's last 4 blocks (and its final norm)
# The settings besides `in_channels`, at the values of the released `dino_salad.ckpt`:
# 64 * 128 + 256 = 8,448 dimensions.
SETTINGS = {"num_clusters": 64, "cluster_dim": 128, "token_dim": 256, "dropout": 0.3}


def log_optimal_transport(scores: torch.Tensor, dust_bin: torch.Tensor,
                          iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Log-domain Sinkhorn over scores [N, K, L] of L tokens for K clusters plus a dust bin.

    The dust bin is a row of constant score `dust_bin`. Every cluster row and every token column
    has mass 1 / (L + K) and the dust bin (L - K) / (L + K), so that both sides sum to
    L / (L + K). Returns log(P * (L + K)) [N, K + 1, L], the dust bin last: each token's
    assignment, which sums to 1 over the K + 1 rows when the iterations have converged.
    """
    n, k, length = scores.shape
    if length <= k:
        raise UserError(f"SALAD needs more image patches than clusters, got {length} patches for "
                        f"{k} clusters; pass a larger --image-size (at least "
                        f"{math.ceil(math.sqrt(k + 1)) * 14} pixels a side)")
    log_p = torch.cat([scores, dust_bin.to(scores.dtype).expand(n, 1, length)], dim=1)
    log_mass = -math.log(length + k)
    log_rows = torch.full((k + 1,), log_mass, dtype=scores.dtype, device=scores.device)
    log_rows[-1] += math.log(length - k)
    log_cols = torch.full((length,), log_mass, dtype=scores.dtype, device=scores.device)
    u = torch.zeros(n, k + 1, dtype=scores.dtype, device=scores.device)
    v = torch.zeros(n, length, dtype=scores.dtype, device=scores.device)
    for _ in range(iterations):
        u = log_rows - torch.logsumexp(log_p + v[:, None, :], dim=2)  # rows to their mass
        v = log_cols - torch.logsumexp(log_p + u[:, :, None], dim=1)  # then the columns
    return log_p + u[:, :, None] + v[:, None, :] - log_mass


class SALAD(nn.Module):
    """Pooling of (feature map [N, C, H, W], class token [N, C]) into [N, token_dim + K * D].

    K = `num_clusters`, D = `cluster_dim`. Each of the H*W tokens is assigned to the clusters and
    a dust bin by optimal transport on learned scores; each cluster sums its tokens' D-dimensional
    features by the assignment and is L2-normalised. The output is the L2-normalised
    `token_dim` projection of the class token, then the clusters at index d * K + k (the
    authors' order), the whole L2-normalised.
    """

    def __init__(self, in_channels: int = 768, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3):
        super().__init__()
        self.in_channels = in_channels
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.token_dim = token_dim
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_features = nn.Sequential(
            nn.Linear(in_channels, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, token_dim))
        self.cluster_features = nn.Sequential(
            nn.Conv2d(in_channels, HIDDEN, 1), drop, nn.ReLU(), nn.Conv2d(HIDDEN, cluster_dim, 1))
        self.score = nn.Sequential(
            nn.Conv2d(in_channels, HIDDEN, 1), drop, nn.ReLU(), nn.Conv2d(HIDDEN, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    @property
    def output_dim(self) -> int:
        return self.token_dim + self.num_clusters * self.cluster_dim

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(feature map [N, C, H, W], class token [N, C]) -> descriptors [N, token_dim + K*D],
        float32 (the transport and the normalisations run in float32 under autocast)."""
        feature_map, cls_token = inputs
        features = self.cluster_features(feature_map).flatten(2).float()  # [N, D, L]
        scores = self.score(feature_map).flatten(2).float()  # [N, K, L]
        token = self.token_features(cls_token).float()  # [N, token_dim]
        assignment = log_optimal_transport(scores, self.dust_bin.float()).exp()[:, :-1]
        clusters = torch.einsum("ndl,nkl->ndk", features, assignment)  # [N, D, K]
        clusters = F.normalize(clusters, p=2, dim=1).flatten(1)
        descriptor = torch.cat([F.normalize(token, p=2, dim=1), clusters], dim=1)
        return F.normalize(descriptor, p=2, dim=1)
