"""`pca-whiten --dim d`: NetVLAD's own compression (Arandjelović et al. 2016, section 5):
PCA of the training database's descriptors, with whitening, down to d dimensions, then L2
normalisation, appended to the model as a layer (`PlaceModel.whiten`).

Without whitening the layer is a projection onto the top principal directions, not centred:
at full rank it is a rotation, which keeps every norm and distance, so nearest neighbours do
not change. With whitening (the default) the descriptors are centred and each direction is
scaled to unit variance.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

NAME = "pca-whiten"
CPU_ONLY = False
DEFAULTS = {"whiten": True}
LABEL_KEYS = ("dim",)  # what a variant's name shows of its settings
EPSILON = 1e-9  # keeps the whitening finite along directions with (almost) no variance


class PCAWhiten(nn.Module):
    """descriptors [N, D] -> [N, d]: ((x - mean) @ projection.T), L2-normalised.

    State: `mean` [D] (zeros without whitening) and `projection` [d, D] (the principal
    directions as rows, divided by their standard deviations when whitening).
    """

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.output_dim = output_dim
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("projection", torch.zeros(output_dim, input_dim))

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        projected = (descriptors.float() - self.mean) @ self.projection.T
        return F.normalize(projected, p=2, dim=1)


def validate(settings: dict, model) -> dict:
    if getattr(model, "whiten", None) is not None:
        raise UserError("the checkpoint is already PCA-compressed; compress the original")
    dim, whiten = settings.get("dim"), bool(settings.get("whiten", DEFAULTS["whiten"]))
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise UserError(f"--dim must be a positive integer, got {dim!r}")
    if dim > model.output_dim:
        raise UserError(f"--dim {dim} is above the descriptor's {model.output_dim} dimensions; "
                        f"pass a smaller --dim")
    return {"dim": dim, "whiten": whiten}


def fit(descriptors: np.ndarray, dim: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [dim, D]) of `descriptors` [N, D].

    The principal directions come from the N x N Gram matrix of the centred descriptors
    (N is the smaller side for NetVLAD: 10,000 images of 32,768 dimensions).
    """
    count = len(descriptors)
    if dim > count - 1:
        raise UserError(f"--dim {dim} needs more than the {count} training descriptors (at "
                        f"most {count - 1} principal directions); lower --dim")
    x = torch.from_numpy(np.asarray(descriptors, dtype=np.float64))
    mean = x.mean(dim=0)
    centred = x - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)  # ascending
    eigenvalues = eigenvalues.flip(0)[:dim].clamp_min(0)
    eigenvectors = eigenvectors.flip(1)[:, :dim]
    # direction i = centred.T @ u_i / sqrt(lambda_i): unit vectors in descriptor space
    directions = (centred.T @ eigenvectors) / eigenvalues.sqrt().clamp_min(EPSILON)
    projection = directions.T  # [dim, D]
    if whiten:
        std = (eigenvalues / max(count - 1, 1)).sqrt()
        projection = projection / (std[:, None] + EPSILON)
    else:
        mean = torch.zeros_like(mean)
    return mean.float().numpy(), projection.float().numpy()


def apply(model, settings: dict, context):
    """Fit on the training database's descriptors (encoded by `model`) and append the layer."""
    descriptors = context.training_descriptors(model, "pca: training descriptors")
    mean, projection = fit(descriptors, settings["dim"], settings["whiten"])
    layer = PCAWhiten(descriptors.shape[1], settings["dim"])
    layer.mean.copy_(torch.from_numpy(mean))
    layer.projection.copy_(torch.from_numpy(projection))
    model.whiten = layer.to(next(model.pool.parameters(), layer.mean).device)
    return model, {}


def rebuild(model, settings: dict, state_dict: dict, extra: dict):
    model.whiten = PCAWhiten(model.output_dim, settings["dim"])
    return model
