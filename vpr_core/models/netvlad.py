"""NetVLAD pooling (Arandjelović et al., CVPR 2016), parameters and keys as in pytorch-NetVlad."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class NetVLAD(nn.Module):
    """Soft-assignment VLAD pooling of a [N, D, H, W] feature map into a [N, K*D] descriptor.

    State: `centroids` [K, D] and `conv.weight` [K, D, 1, 1] (no bias), the reference's keys.
    The output is cluster-major (index k*D + d), intra-normalised, then L2-normalised.
    """

    def __init__(self, num_clusters: int = 64, dim: int = 128, normalize_input: bool = True):
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.alpha = 0.0  # set by init_params; not part of the state, as in the reference
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=(1, 1), bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    def init_params(self, centroids: np.ndarray, descriptors: np.ndarray) -> None:
        """Initialise from k-means `centroids` [K, D] of local `descriptors` [M, D].

        The assignment weights are the unit centroids scaled by alpha, chosen so that on average
        the best cluster gets 100 times the weight of the second best (the reference's rule).
        """
        centroids = np.asarray(centroids, dtype=np.float32)
        unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True).clip(min=1e-12)
        if self.num_clusters > 1:
            dots = unit @ np.asarray(descriptors, dtype=np.float32).T  # [K, M]
            top2 = -np.partition(-dots, 1, axis=0)[:2]  # best and second best per descriptor
            gap = float(np.mean(top2[0] - top2[1]))
            self.alpha = -math.log(0.01) / max(gap, 1e-12)
        else:
            self.alpha = 1.0  # one cluster: the softmax is 1 whatever alpha is
        self.centroids = nn.Parameter(torch.from_numpy(centroids.copy()))
        weight = torch.from_numpy(self.alpha * unit).float()[:, :, None, None]
        self.conv.weight = nn.Parameter(weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, D, H, W] -> descriptors [N, K*D], float32.

        Under bf16 autocast the two matrix products (soft assignment, aggregation) run in bf16
        and everything else in float32: the normalisations, the softmax and the residuals.
        """
        n, d = features.shape[:2]
        features = features.float()
        if self.normalize_input:
            features = F.normalize(features, p=2, dim=1)
        logits = self.conv(features).float().view(n, self.num_clusters, -1)
        assignment = F.softmax(logits, dim=1)  # [N, K, L]
        flat = features.view(n, d, -1)  # [N, D, L]
        # sum_l a[k,l] (x[l] - c[k]) = sum_l a[k,l] x[l] - c[k] sum_l a[k,l], for all k at once
        vlad = torch.bmm(assignment, flat.transpose(1, 2)).float()  # [N, K, D]
        vlad = vlad - assignment.sum(dim=2, keepdim=True) * self.centroids.float()
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation
        vlad = vlad.reshape(n, -1)
        return F.normalize(vlad, p=2, dim=1)
