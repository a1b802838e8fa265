"""Where results are tracked: the MLflow URI rules shared by the orchestrator (which writes)
and the dashboards (which read). Plain string and path logic: MLflow is not imported here."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from .errors import UserError

SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def metric_key(name: str) -> str:
    """MLflow's name for a metric: 'recall@5' -> 'recall_at_5' (MLflow refuses '@')."""
    return name.replace("@", "_at_")


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}"


def check_tracking_uri(uri: str | None, must_exist: bool = False) -> str:
    """An absolute tracking URI MLflow accepts, or a `UserError` naming the fix.

    Relative sqlite paths become absolute (trials run in other working directories). With
    `must_exist` (for readers), a sqlite database must already exist: opening a missing one
    would create an empty store.
    """
    uri = uri or default_tracking_uri()
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise UserError(f"--tracking-uri {uri} names no database file; write "
                            f"sqlite:////absolute/path/mlflow.db")
        path = Path(path).absolute()
        if must_exist and not path.is_file():
            raise UserError(f"no MLflow database at {path}; pass the --tracking-uri the runs "
                            f"were logged to (sqlite:////abs/mlflow.db or http://host:port)")
        return f"sqlite:///{path}"
    if scheme in ("file", ""):
        raise UserError(f"--tracking-uri {uri}: MLflow no longer accepts file stores; use "
                        f"sqlite:///{Path('mlflow.db').absolute()} or an http:// server")
    if scheme not in SCHEMES:
        raise UserError(f"--tracking-uri {uri} has the unknown scheme '{scheme}'; use sqlite:///"
                        f"PATH, http(s)://HOST:PORT, postgresql://, mysql:// or databricks")
    return uri
