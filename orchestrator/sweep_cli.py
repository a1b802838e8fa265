"""`python -m orchestrator sweep` flags (the sweep itself is in sweep.py)."""
from __future__ import annotations


def add_parser(verbs) -> None:
    verbs.add_parser("sweep", help="a Ray Tune + Optuna sweep tracked in MLflow")


def run(args) -> None:
    raise NotImplementedError
