"""The compression methods by name: each a module with `NAME`, `validate`, `apply`, `rebuild`,
`CPU_ONLY`, its settings' `DEFAULTS` and the `LABEL_KEYS` a variant's name shows (see the
package's docstring)."""
from __future__ import annotations

from . import half, pca, pq, prune, quantize

METHODS = {module.NAME: module for module in (pca, prune, quantize, half, pq)}


def method(name: str):
    """The module implementing method `name`."""
    return METHODS[name]


def label(name: str, settings: dict, finetune_epochs: int = 0, finetune_lr: float = 1e-4) -> str:
    """A variant's short name: 'pca-whiten 4096', 'pq 64 B', 'prune 0.3 channels +2 ep lr
    0.0001'."""
    module = METHODS[name]
    settings = {**module.DEFAULTS, **settings}
    values = " ".join(str(settings[key]) for key in module.LABEL_KEYS if key in settings)
    if name == "pca-whiten" and not settings.get("whiten", True):
        values += " (no whitening)"
    if name == "prune" and settings.get("refit") is False:
        values += " (no refit)"
    tuned = f" +{finetune_epochs} ep lr {finetune_lr:g}" if finetune_epochs else ""
    return f"{name} {values}" + (" B" if name == "pq" else "") + tuned
