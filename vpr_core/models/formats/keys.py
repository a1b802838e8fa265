"""What the format modules share: renaming the authors' key prefixes to this project's, and
checking a converted state dict against modules built on the meta device (shapes only)."""
from __future__ import annotations

import torch
from torch import nn


def with_prefix(state_dict: dict, prefix: str) -> dict:
    """The entries under `prefix`, with it removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items()
            if key.startswith(prefix)}


def renamed(state_dict: dict, prefixes: dict[str, str]) -> dict | None:
    """`state_dict` with each key's prefix replaced by its value in `prefixes` (the first that
    matches); None when a key has none of them."""
    out = {}
    for key, value in state_dict.items():
        old = next((prefix for prefix in prefixes if key.startswith(prefix)), None)
        if old is None:
            return None
        out[prefixes[old] + key[len(old):]] = value
    return out


def fits(state_dict: dict, encoder: nn.Module, pool: nn.Module) -> bool:
    """Whether `state_dict` has exactly the keys and shapes of `encoder.*` and `pool.*`."""
    expected = {f"{prefix}.{key}": tuple(value.shape)
                for prefix, module in (("encoder", encoder), ("pool", pool))
                for key, value in module.state_dict().items()}
    return (set(state_dict) == set(expected)
            and all(isinstance(state_dict[key], torch.Tensor)
                    and tuple(state_dict[key].shape) == shape for key, shape in expected.items()))


def shapes_of(state_dict: dict) -> dict[str, tuple[int, ...] | None]:
    """{key: shape}; None for a value that is not a tensor."""
    return {key: tuple(value.shape) if isinstance(value, torch.Tensor) else None
            for key, value in state_dict.items()}
