"""The compression methods by name: each a module with `validate`, `apply`, `rebuild` and
`CPU_ONLY` (see the package's docstring)."""
from __future__ import annotations


def method(name: str):
    """The module implementing method `name`."""
    from . import half, pca, pq, prune, quantize

    return {"pca-whiten": pca, "prune": prune, "quantize": quantize, "half": half,
            "pq": pq}[name]
