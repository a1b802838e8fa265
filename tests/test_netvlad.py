import numpy as np
import torch
import torch.nn.functional as F

from vpr_core.models.netvlad import NetVLAD


def loop_netvlad(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    """The reference's forward, with its Python loop over clusters."""
    n, c = x.shape[:2]
    x = F.normalize(x, p=2, dim=1)
    soft = F.softmax(layer.conv(x).view(n, layer.num_clusters, -1), dim=1)
    flat = x.view(n, c, -1)
    vlad = torch.zeros(n, layer.num_clusters, c, dtype=x.dtype)
    for k in range(layer.num_clusters):
        residual = flat.unsqueeze(0).permute(1, 0, 2, 3) - \
            layer.centroids[k:k + 1, :].expand(flat.size(-1), -1, -1).permute(1, 2, 0).unsqueeze(0)
        residual = residual * soft[:, k:k + 1, :].unsqueeze(2)
        vlad[:, k:k + 1, :] = residual.sum(dim=-1)
    vlad = F.normalize(vlad, p=2, dim=2).view(n, -1)
    return F.normalize(vlad, p=2, dim=1)


def test_vectorised_forward_equals_the_per_cluster_loop():
    torch.manual_seed(0)
    layer = NetVLAD(num_clusters=8, dim=32)
    x = torch.randn(3, 32, 5, 7)
    rng = np.random.default_rng(0)
    layer.init_params(rng.normal(size=(8, 32)).astype(np.float32),
                      rng.normal(size=(200, 32)).astype(np.float32))
    ours, reference = layer(x), loop_netvlad(layer, x)
    assert ours.shape == (3, 8 * 32)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(3), atol=1e-5)


def test_state_dict_keys_and_shapes_are_the_reference_ones():
    state = NetVLAD(num_clusters=64, dim=512).state_dict()
    assert list(state) == ["centroids", "conv.weight"]
    assert state["centroids"].shape == (64, 512)
    assert state["conv.weight"].shape == (64, 512, 1, 1)


def test_init_params_follows_the_alpha_rule():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(4, 16)).astype(np.float32)
    descriptors = rng.normal(size=(300, 16)).astype(np.float32)
    layer = NetVLAD(num_clusters=4, dim=16)
    layer.init_params(centroids, descriptors)
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    dots = np.sort(unit @ descriptors.T, axis=0)[::-1]
    alpha = -np.log(0.01) / np.mean(dots[0] - dots[1])
    assert np.isclose(layer.alpha, alpha, rtol=1e-5)
    assert np.allclose(layer.conv.weight.detach().numpy()[:, :, 0, 0], alpha * unit, rtol=1e-5)
    assert np.allclose(layer.centroids.detach().numpy(), centroids)
    assert layer.conv.bias is None
