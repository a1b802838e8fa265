"""An MLflow sqlite store for a test, made by copying an empty one: creating a store runs
MLflow's schema migrations (about 1.5 s a store here), which the suite's tests would otherwise
pay once each. The copy is a real store, as the product would have made it."""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _empty_store() -> Path:
    """One store made by MLflow itself, once per test process."""
    from mlflow import MlflowClient

    path = Path(tempfile.mkdtemp(prefix="mlflow-template-")) / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def store_uri(path: Path) -> str:
    """sqlite:/// URI of the store at `path`, copied from the empty store when missing."""
    path = Path(path).absolute()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_store(), path)
    return f"sqlite:///{path}"
