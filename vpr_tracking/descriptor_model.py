"""A checkpoint as an MLflow pyfunc model: `predict(images)` -> descriptors.

Input: float32 [N, 3, H, W] RGB in [0, 1] (H x W: the size the model was measured at, as the
signature says); the ImageNet normalisation is done inside. Output: float32 [N, D]. The
checkpoint and its flags.json are the model's artifacts, side by side, and are loaded by the
project's one loader (`model_from_checkpoint`, torch.load with weights_only=True). The model is
logged as code (`pyfunc_entry.py`), not as a pickle: loading it needs this project's code
installed, and the packages of `REQUIREMENTS`.
"""
from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import numpy as np

ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # builds the model when MLflow loads it
# what the model's environment needs: this project's runtime (its own code imports them)
REQUIREMENTS = ("torch", "torchvision", "numpy", "faiss-cpu", "h5py", "scipy", "mlflow")


class DescriptorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of a checkpoint (artifacts `checkpoint` and `flags`)."""

    # the signature checks the input; MLflow's type-hint checks would only warn of their absence
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from vpr_core.export.graph import DescriptorGraph
        from vpr_core.stages.starting_model import model_from_checkpoint

        loaded = model_from_checkpoint(Path(context.artifacts["checkpoint"]))
        self.network = DescriptorGraph(loaded.model).eval()

    def predict(self, context, model_input, params=None):
        """float32 [N, 3, H, W] in [0, 1] -> float32 [N, D] descriptors."""
        import torch

        images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.network(images).numpy()


def pinned_requirements() -> list[str]:
    """`REQUIREMENTS` at the versions installed here (no inference by MLflow: it is slow)."""
    found = []
    for name in REQUIREMENTS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def signature_of(image_size: tuple[int, int], dim: int):
    """Images float32 [-1, 3, H, W] in, descriptors float32 [-1, D] out (unnamed tensors: a
    plain array in, a plain array out)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    height, width = image_size
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, height, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]))


def save_descriptor_model(folder: Path, checkpoint: Path, flags: Path | None,
                          image_size: tuple[int, int], dim: int, mlflow_model=None) -> None:
    """Write the pyfunc model of `checkpoint` (and its `flags`) into the new folder `folder`;
    `mlflow_model`: MLflow's record of the logged model it becomes."""
    artifacts = {"checkpoint": str(checkpoint)}
    if flags is not None and Path(flags).is_file():
        artifacts["flags"] = str(flags)
    example = np.full((1, 3, *image_size), 0.5, dtype=np.float32)  # a grey image
    # MLflow announces its check of the example against the signature at INFO: a line in
    # every sweep's output that says nothing to its user (a failed check still raises)
    announcer = logging.getLogger("mlflow.pyfunc")
    level = announcer.level
    announcer.setLevel(logging.WARNING)
    try:
        mlflow.pyfunc.save_model(str(folder), python_model=str(ENTRY), artifacts=artifacts,
                                 signature=signature_of(image_size, dim), input_example=example,
                                 pip_requirements=pinned_requirements(),
                                 mlflow_model=mlflow_model)
    finally:
        announcer.setLevel(level)
