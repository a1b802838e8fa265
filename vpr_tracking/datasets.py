"""Datasets as MLflow knows them: a run's `DataDescription`s logged as its dataset inputs (what
the runs table's Dataset column shows and `dataset.name = '...'` filters read), each with its
context (training, validation, evaluation), and read back.

An input is MLflow's dataset entity: name 'pitts30k-val', the file list's digest, the root
folder as a local source, and the rest of the description (dataset, split, layout, counts) as
its JSON profile, which the UI's dataset panel shows and which is read back from here.
"""
from __future__ import annotations

import json

from vpr_core.data import PlaceSet, Split
from vpr_core.data.description import DataDescription, describe

from .names import DATASET_CONTEXT, MEASURED_CONTEXTS, Context

SOURCE_TYPE = "local"  # MLflow's type of a source that is a path ({"uri": path})
PROFILE_FIELDS = ("dataset", "split", "layout", "counts")  # of a description, in the profile


def training_inputs(training: Split | PlaceSet, validation: Split, split: str = "train"
                    ) -> list[tuple[DataDescription, str]]:
    """The inputs of a trained run: what it trained on (a split, or places named as the split
    `split`) and the split it validated on."""
    return [(describe(training, split), Context.TRAINING),
            (describe(validation), Context.VALIDATION)]


def dataset_input(description: DataDescription, context: str):
    """The MLflow `DatasetInput` of `description` used as `context`."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    profile = {name: getattr(description, name) for name in PROFILE_FIELDS}
    dataset = Dataset(name=description.name, digest=description.digest,
                      source_type=SOURCE_TYPE, source=json.dumps({"uri": description.source}),
                      profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT, context)])


def described(logged) -> tuple[DataDescription, str]:
    """(the description, the context) of one of a run's MLflow `DatasetInput`s. An input
    logged by other code (no profile of ours) keeps its name as the dataset, split ''."""
    dataset = logged.dataset
    context = next((tag.value for tag in logged.tags if tag.key == DATASET_CONTEXT), "")
    profile = _json(dataset.profile)
    source = _json(dataset.source).get("uri", dataset.source or "")
    description = DataDescription(
        dataset=str(profile.get("dataset", dataset.name)), split=str(profile.get("split", "")),
        layout=str(profile.get("layout", "")), counts=dict(profile.get("counts") or {}),
        digest=dataset.digest, source=str(source))
    return description, context


def in_measured_order(inputs: list[tuple[DataDescription, str]]
                      ) -> list[tuple[DataDescription, str]]:
    """`inputs` with the measured ones (validation, evaluation) first: MLflow keeps one input
    per (name, digest) in a run, the first, so a split that was both trained and validated on
    is recorded as the one the recalls were measured on."""
    return sorted(inputs, key=lambda pair: pair[1] not in MEASURED_CONTEXTS)


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
