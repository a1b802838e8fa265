"""Where results are tracked: the MLflow URI rules of every command that writes or reads runs.
Plain string and path logic: MLflow is not imported here. Each command checks its URI once and
passes the checked URI on."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from vpr_core.errors import UserError

SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


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


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_file(uri: str) -> Path | None:
    """The database file of a checked sqlite URI, None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def ui_command(uri: str) -> str:
    """The command that opens these runs in the MLflow UI."""
    if is_server(uri):
        return f"open {uri} in a browser"
    # this project's `ui` opens each experiment on its runs table (MLflow's own `mlflow ui`
    # lands on its GenAI pages) and stops its server when it stops
    return f"python -m orchestrator ui --tracking-uri {uri}"
