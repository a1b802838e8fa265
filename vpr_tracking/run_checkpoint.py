"""A checkpoint logged to an MLflow run, named as MLflow names it (`runs:/RUN_ID/PATH`) or by
the run's id: found and checked without downloading, fetched on demand."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .names import CHECKPOINT_ARTIFACT
from .store import RunRecord, Store

RUNS_SCHEME = "runs:/"
RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's run ids look like


@dataclass(frozen=True)
class RunCheckpoint:
    """`source`: runs:/RUN_ID/PATH; `run`: the run (its params say how it was trained);
    `fetch(folder)`: downloads the file into `folder` and returns its path."""

    source: str
    run: RunRecord
    fetch: Callable[[Path], Path]


def run_reference(text: str) -> tuple[str, str] | None:
    """(run id, artifact path) of 'runs:/RUN_ID[/PATH]' or of a bare run id (PATH: the best
    checkpoint a training run or trial logs); None for anything else (a file path)."""
    text = str(text)
    if text.startswith(RUNS_SCHEME):
        run_id, _, path = text[len(RUNS_SCHEME):].strip("/").partition("/")
        return run_id, path or CHECKPOINT_ARTIFACT
    if RUN_ID.fullmatch(text):
        return text, CHECKPOINT_ARTIFACT
    return None


def run_checkpoint(store: Store, run_id: str, artifact: str = CHECKPOINT_ARTIFACT
                   ) -> RunCheckpoint:
    """The checkpoint `artifact` of run `run_id`: a `UserError` when the run or the file is
    not there; nothing is downloaded until `fetch` is called."""
    run = store.run(run_id, with_history=False)
    store.require_artifact(run_id, artifact)
    return RunCheckpoint(f"{RUNS_SCHEME}{run_id}/{artifact}", run,
                         lambda folder: store.download(run_id, artifact, folder))
