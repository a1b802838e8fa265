"""The MLflow flags of the commands that log or read runs."""
from __future__ import annotations

LOG_URI_HELP = "log to MLflow at URI (e.g. sqlite:////abs/mlflow.db or http://host:5000)"
READ_URI_HELP = ("the MLflow store a models:/NAME/VERSION or models:/NAME@ALIAS is read from "
                 "(default sqlite:///$PWD/mlflow.db)")


def add_tracking(parser, uri_help: str = LOG_URI_HELP,
                 experiment_help: str | None = "MLflow experiment name") -> None:
    """--tracking-uri and, unless `experiment_help` is None, --experiment."""
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracking-uri", metavar="URI", help=uri_help)
    if experiment_help is not None:
        group.add_argument("--experiment", metavar="NAME", help=experiment_help)
