"""A checkpoint logged as an MLflow 3 logged model (the pyfunc of `descriptor_model`), through
the store's client: no global tracking URI, no active run."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .descriptor_model import save_descriptor_model
from .store import Store

MODEL_NAME = "descriptor_model"  # the logged model's name, on its run's page


def log_descriptor_model(store: Store, experiment_id: str, run_id: str | None,
                         checkpoint: Path, flags: Path | None, image_size: tuple[int, int],
                         dim: int, tags: dict) -> tuple[str, str]:
    """Log the pyfunc model of `checkpoint` in `experiment_id` as an output of run `run_id`
    (None: of no run); returns (its model id, where its files are). A model left half-logged
    is marked FAILED."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    client = store.client
    logged = store._call("a new logged model", client.create_logged_model, experiment_id,
                         name=MODEL_NAME, source_run_id=run_id, tags=tags)
    status = LoggedModelStatus.FAILED
    try:
        record = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                       run_id=run_id, model_id=logged.model_id)
        with tempfile.TemporaryDirectory(prefix="pyfunc-") as scratch:
            folder = Path(scratch) / "model"
            save_descriptor_model(folder, checkpoint, flags, image_size, dim, record)
            store._call(f"logged model {logged.model_id}", client.log_model_artifacts,
                        logged.model_id, str(folder))
        if run_id is not None:
            store._call(f"run {run_id}", client.log_outputs, run_id,
                        [LoggedModelOutput(logged.model_id, step=0)])
        status = LoggedModelStatus.READY
    finally:
        store._call(f"logged model {logged.model_id}", client.finalize_logged_model,
                    logged.model_id, status)
    return logged.model_id, logged.artifact_location
