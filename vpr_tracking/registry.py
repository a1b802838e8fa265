"""The Model Registry: a run's checkpoint registered as a version of a named model, and the
`champion` alias.

A version is the pyfunc model of the checkpoint (see `descriptor_model`) with tags: its
Recall@N (`recall_at_N`), the metric the alias compares, the dataset and split they were
measured on (`measured_on`), the model (arch, aggregator, descriptor dimension, input size),
the git commit, the source run and the sweep's parent run. The alias rule (`champion_move`):
the first version takes `champion`; a later one takes it only when it was measured on the same
dataset and split as the holder and its recall by the metric is higher.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vpr_core.config.common import format_image_size, parse_image_size
from vpr_core.errors import UserError
from vpr_core.fileio import sha256_of
from vpr_core.models.checkpoints import BEST_FILE, FLAGS_FILE

from .measured_on import UNKNOWN, MeasuredOn, measured_on
from .names import (
    CHAMPION,
    CHECKPOINT_ARTIFACT,
    CONFIG_FOLDER,
    DEFAULT_METRIC,
    FLAGS_ARTIFACT,
    VersionTag,
    metric_key,
    recall_n,
    recall_name,
)
from .store import Store, git_commit

FALLBACK_IMAGE_SIZE = (480, 640)  # the input size of a model trained on images of mixed sizes
NAME = re.compile(r"[\w.\- ]+")  # what a registered model's name may hold here


@dataclass
class Registration:
    """A registered version and what became of the alias: `champion` is the version that
    holds it now; `moved`: whether this version took it; `reason`: why, in a sentence."""

    name: str
    version: str
    champion: str
    moved: bool
    reason: str
    tags: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "uri": self.uri,
                "champion": self.champion, "champion_moved": self.moved,
                "reason": self.reason, "tags": self.tags}


def check_name(name: str) -> str:
    if not name or not NAME.fullmatch(name):
        raise UserError(f"--register {name!r} is not a model name; use letters, digits, "
                        f"'.', '-', '_' and spaces")
    return name


def register_run(store: Store, name: str, run_id: str, metric: str = DEFAULT_METRIC,
                 sweep_run_id: str | None = None, checkpoint: Path | None = None
                 ) -> Registration:
    """Register run `run_id`'s model as a new version of `name` (made when missing) and move
    `champion` by the rule. `checkpoint`: the local file to register (flags.json beside it);
    default: the best checkpoint the run logged."""
    check_name(name)
    run = store.run(run_id)
    recalls = run.best_recalls(metric)
    if recall_n(metric) not in recalls:
        raise UserError(f"run {run_id} logged no {metric}; register a run that was evaluated")
    with tempfile.TemporaryDirectory(prefix="register-") as scratch:
        checkpoint = _download_checkpoint(store, run_id, Path(scratch)) if checkpoint is None \
            else _staged(Path(checkpoint), Path(scratch))
        on = measured_on(store, run_id)
        model_tags, image_size, dim = _model_tags(checkpoint, run.params)
        tags = {VersionTag.METRIC: metric, **{metric_key(recall_name(n)): f"{r:.6f}"
                                              for n, r in recalls.items()},
                VersionTag.DATASET: on.dataset, VersionTag.SPLIT: on.split,
                VersionTag.DATA_ROOT: on.data_root, VersionTag.DATASET_DIGEST: on.digest,
                **model_tags,
                VersionTag.GIT_COMMIT: git_commit(), VersionTag.SOURCE_RUN: run_id,
                VersionTag.SWEEP_RUN: sweep_run_id,
                VersionTag.CHECKPOINT_SHA256: sha256_of(checkpoint)}
        tags = {k: str(v) for k, v in tags.items() if v not in (None, "")}
        from .logged_model import log_descriptor_model

        model_id, location = log_descriptor_model(store, run.experiment_id, run_id, checkpoint,
                                        checkpoint.parent / FLAGS_FILE, image_size, dim, tags)
    _ensure_registered_model(store, name)
    version = store._call(f"registered model {name}", store.client.create_model_version, name,
                          location, run_id=run_id, tags=tags, model_id=model_id)
    new = float(tags[metric_key(metric)])  # the recall as the version's tag holds it
    champion, moved, reason = champion_move(store, name, str(version.version), new, on, metric)
    return Registration(name, str(version.version), str(champion), moved, reason, tags)


def _download_checkpoint(store: Store, run_id: str, folder: Path) -> Path:
    """The run's best checkpoint and its flags.json, side by side in `folder`."""
    store.require_artifact(run_id, CHECKPOINT_ARTIFACT)
    path = store.download(run_id, CHECKPOINT_ARTIFACT, folder)
    listed = store._call(f"run {run_id}", store.client.list_artifacts, run_id, CONFIG_FOLDER)
    if FLAGS_ARTIFACT in {item.path for item in listed}:
        flags = store.download(run_id, FLAGS_ARTIFACT, folder)
        flags.rename(path.parent / FLAGS_FILE)
    return path


def _staged(checkpoint: Path, folder: Path) -> Path:
    """A local checkpoint and its flags.json copied into `folder`, under the names a
    registered version's files have."""
    path = folder / BEST_FILE
    shutil.copyfile(checkpoint, path)
    if (checkpoint.parent / FLAGS_FILE).is_file():
        shutil.copyfile(checkpoint.parent / FLAGS_FILE, folder / FLAGS_FILE)
    return path


def _model_tags(checkpoint: Path, params: dict) -> tuple[dict, tuple[int, int], int]:
    """(tags of the model, its input size (H, W), its descriptor dimension D): the checkpoint
    loaded by the project's loader and run once on a grey image of the input size."""
    import torch

    from vpr_core.export.graph import DescriptorGraph
    from vpr_core.models.checkpoints import read_flags
    from vpr_core.stages.starting_model import model_from_checkpoint

    loaded = model_from_checkpoint(checkpoint)
    flags = read_flags(checkpoint)
    size = parse_image_size(params.get("image_size")) or loaded.image_size \
        or parse_image_size(flags.get("image_size")) or FALLBACK_IMAGE_SIZE
    with torch.no_grad():
        dim = DescriptorGraph(loaded.model).eval()(torch.full((1, 3, *size), 0.5)).shape[1]
    return ({VersionTag.ARCH: loaded.shape.arch, VersionTag.AGGREGATOR: loaded.shape.aggregator,
             VersionTag.DIM: dim, VersionTag.IMAGE_SIZE: format_image_size(size)},
            tuple(size), int(dim))


def _ensure_registered_model(store: Store, name: str) -> None:
    if not registered_models(store, name):
        store._call(f"registered model {name}", store.client.create_registered_model, name)


def registered_models(store: Store, name: str | None = None) -> list:
    """The registered models (only `name`, when given), by name."""
    found = store._call("registered models", store.client.search_registered_models,
                        filter_string=f"name = '{name}'" if name else None)
    return sorted(found, key=lambda model: model.name)


def aliases(store: Store, name: str) -> dict[str, str]:
    """{alias: version} of the registered model `name` ({} when there is no such model)."""
    return aliases_of(registered_models(store, name))


def aliases_of(models: list) -> dict[str, str]:
    """{alias: version} of registered models already found."""
    return {alias: str(version) for model in models for alias, version in model.aliases.items()}


def champion_move(store: Store, name: str, version: str, new: float, on: MeasuredOn,
                  metric: str) -> tuple[str, bool, str]:
    """Give `champion` to `version` (whose `metric` is `new`, measured `on`) when the rule
    says so; returns (the holder now, whether it moved, why)."""
    client = store.client
    holder = aliases(store, name).get(CHAMPION)
    if holder is None:
        store._call(f"registered model {name}", client.set_registered_model_alias, name,
                    CHAMPION, version)
        return version, True, f"{CHAMPION} -> version {version} (the first; {metric} {new:.4f}" \
                              f" on {on})"
    held = _version(store, name, holder)
    held_on = MeasuredOn(held.tags.get(VersionTag.DATASET, UNKNOWN),
                         held.tags.get(VersionTag.SPLIT, UNKNOWN),
                         digest=held.tags.get(VersionTag.DATASET_DIGEST, ""))
    if not on.same_data(held_on):
        return holder, False, (f"{CHAMPION} stays on version {holder}: it was measured on "
                               f"{held_on}, this version on {on}; only a version measured on "
                               f"the same dataset and split can take it")
    old = held.tags.get(metric_key(metric))
    if old is None:
        return holder, False, f"{CHAMPION} stays on version {holder}: it has no {metric}"
    if new > float(old):
        store._call(f"registered model {name}", client.set_registered_model_alias, name,
                    CHAMPION, version)
        return version, True, (f"{CHAMPION} -> version {version}: {metric} {new:.4f} > "
                               f"{float(old):.4f} of version {holder} on {on}")
    return holder, False, (f"{CHAMPION} stays on version {holder}: {metric} {new:.4f} is not "
                           f"higher than its {float(old):.4f} on {on}")


def _version(store: Store, name: str, version: str):
    return store._call(f"version {version} of {name}", store.client.get_model_version, name,
                       str(version))
