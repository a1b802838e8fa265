"""`benchmark`: several models on several test sets, one tracked MLflow experiment.

Every input is checked before anything is evaluated or logged: each checkpoint is found (an
MLflow run's is downloaded) and loaded as `eval` loads it, each test set is opened, and each
model's image size is checked against each test set. Then every cell is one `eval` (the same
code, so the same Recall@N), logged as a child of the benchmark's parent run.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vpr_core.config import EvalConfig, format_image_size
from vpr_core.data import Split
from vpr_core.errors import UserError
from vpr_core.log import log

from .benchmark_spec import BenchmarkSpec, ModelEntry

GENERIC_FILES = ("checkpoint", "model_best")  # a run's files, named after their run instead


@dataclass(frozen=True)
class BenchmarkModel:
    """A checked model: its row `label`, the checkpoint as given (`source`: a file or
    runs:/...), the local `checkpoint` file, its format (`family`) and `architecture`."""

    label: str
    source: str
    checkpoint: Path
    family: str
    architecture: str


@dataclass(frozen=True)
class TestSet:
    """A checked test set: its column `label`, its root, which .mat, and the opened split."""

    label: str
    root: Path
    dataset: str | None
    split: Split


@dataclass(frozen=True)
class Plan:
    """`label`: the benchmark's name (its runs' tag); `name`: the parent run's, with its time;
    `base`: what every cell is evaluated with, before its model and data are added."""

    label: str
    name: str
    base: EvalConfig
    models: tuple
    test_sets: tuple

    def cell_config(self, model: BenchmarkModel, test_set: TestSet) -> EvalConfig:
        return dataclasses.replace(self.base, resume=model.checkpoint, data_root=test_set.root,
                                   dataset=test_set.dataset)


def prepare(spec: BenchmarkSpec, runs_store: Callable, scratch: Path) -> Plan:
    """The checked plan of `spec`. MLflow runs' checkpoints are found in `runs_store()` (the
    tracking store, which must exist then) and downloaded into `scratch`."""
    from vpr_core.stages.evaluate import open_test_split

    model_entries, test_set_entries = spec.model_entries(), spec.test_set_entries()
    _no_repeats([str(e.root) for e in test_set_entries], "--data-root")
    base = spec.eval_config()
    checked = base.validate()  # the runtime settings, before any file is read
    labels: set[str] = set()
    test_sets = []
    for entry in test_set_entries:
        dataset = entry.dataset or base.dataset
        split = open_test_split(dataclasses.replace(checked, data_root=entry.root,
                                                    dataset=dataset))
        test_sets.append(TestSet(_unique(entry.label or split.dataset, labels), entry.root,
                                 dataset, split))
    located = [(entry, *_locate(entry.source, base.ckpt, runs_store, scratch))
               for entry in model_entries]
    _no_repeats([source for _, source, _, _ in located], "--resume")
    labels.clear()
    models = tuple(_checked_model(*found, base, test_sets, labels) for found in located)
    label = spec.name or "benchmark"
    return Plan(label, f"{label}-{datetime.now():%Y%m%d-%H%M%S}", base, models,
                tuple(test_sets))


def _checked_model(entry: ModelEntry, source: str, path: Path, run_name: str | None,
                   base: EvalConfig, test_sets: list, labels: set) -> BenchmarkModel:
    """Load the checkpoint `path` as `eval` does and check its image size on every test set;
    the model itself is let go (each cell loads it again)."""
    from vpr_core.models.onnx_model import is_onnx
    from vpr_core.models.recognise import family_of
    from vpr_core.stages.evaluate import checkpoint_image_size
    from vpr_core.stages.starting_model import model_from_checkpoint

    label = _unique(entry.label or run_name or _file_label(path), labels)
    config = dataclasses.replace(base, resume=path).validate()
    if is_onnx(path):
        return _checked_export(label, source, path, config)
    loaded = model_from_checkpoint(path)
    for test_set in test_sets:
        checkpoint_image_size(config, loaded, test_set.split)
    return BenchmarkModel(label, source, path,
                          family_of(loaded.checkpoint, path, loaded.shape.aggregator),
                          loaded.shape.label)


def _checked_export(label: str, source: str, path: Path, config: EvalConfig
                    ) -> BenchmarkModel:
    """An exported ONNX file, opened by onnxruntime as `eval` opens it, its image size
    checked; a row beside the checkpoints, of family 'ONNX'."""
    from vpr_core.models.onnx_model import OnnxModel
    from vpr_core.stages.evaluate import exported_image_size

    model = OnnxModel(path)
    exported_image_size(config, model)
    meta = model.metadata
    architecture = meta.shape(path).label if meta else path.name
    if meta and meta.precision != "fp32":
        architecture += f" {meta.precision}"
    return BenchmarkModel(label, source, path, "ONNX", architecture)


def _locate(given: str, ckpt: str, runs_store: Callable, scratch: Path
            ) -> tuple[str, Path, str | None]:
    """(the checkpoint as logged, the local file, the MLflow run's name or None)."""
    from vpr_core.models.checkpoints import checkpoint_file
    from vpr_tracking.names import MODELS_SCHEME, is_model_reference
    from vpr_tracking.run_checkpoint import run_checkpoint, run_reference

    if is_model_reference(given):  # a registered model, labelled NAME@ALIAS or NAME/N
        from vpr_tracking.model_refs import model_checkpoint

        return given, model_checkpoint(given, runs_store()), given[len(MODELS_SCHEME):]
    path = Path(given).expanduser().absolute()
    reference = None if path.exists() else run_reference(given)
    if reference is None:
        if not path.exists():
            raise UserError(f"--resume {given} does not exist; pass a checkpoint file, a run "
                            f"folder, an MLflow run (runs:/RUN_ID) or a registered model "
                            f"(models:/NAME@ALIAS)")
        found = checkpoint_file(path, ckpt)
        return str(found), found, None
    found = run_checkpoint(runs_store(), *reference)
    folder = scratch / f"model{len(list(scratch.iterdir()))}"
    folder.mkdir()
    return found.source, found.fetch(folder), found.run.name or None


def _file_label(path: Path) -> str:
    """A checkpoint's row label: its file name without suffixes, or its run folder's name
    for a run's checkpoint.pth.tar / model_best.pth.tar."""
    stem = path.name.split(".")[0]
    if path.suffix == ".onnx":
        return f"{stem} (ONNX)"  # beside the checkpoint it was exported from
    if stem not in GENERIC_FILES:
        return stem
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run.name


def _unique(label: str, taken: set) -> str:
    found, i = label, 1
    while found in taken:
        i += 1
        found = f"{label} ({i})"
    taken.add(found)
    return found


def _no_repeats(items: list[str], flag: str) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise UserError(f"{flag} lists {item} twice; list each once")
        seen.add(item)


def evaluate_all(plan: Plan, tracker) -> tuple[str, list]:
    """Every model on every test set, each a child run of one parent; returns (the parent
    run's id, the `BenchmarkResult`s by model then test set)."""
    from vpr_core.data.description import of_split
    from vpr_core.stages import evaluate
    from vpr_tracking.benchmark import protocol_params

    settings = plan.base.validate()
    given_size = format_image_size(settings.image_size) if settings.image_size else None
    params = protocol_params(settings.split, settings.positive_dist,
                             {m.label: m.source for m in plan.models},
                             {t.label: t.root for t in plan.test_sets},
                             {"image_size": given_size, "precision": settings.precision})
    results, total = [], len(plan.models) * len(plan.test_sets)
    described = {t.label: of_split(t.split) for t in plan.test_sets}  # each digested once
    with tracker.benchmark_run(plan.name, plan.label, params,
                               list(described.values())) as parent:
        for model in plan.models:
            for test_set in plan.test_sets:
                done = evaluate.run(plan.cell_config(model, test_set))
                result = result_of(model, test_set, done)
                run_id = tracker.log_benchmark_result(parent, plan.label, result, done,
                                                      model.source, described[test_set.label])
                results.append(dataclasses.replace(result, run_id=run_id))
                recalls = "  ".join(f"R@{n} {100 * r:.1f}" for n, r in result.recalls.items())
                log.info(f"[{len(results)}/{total}] {model.label} on {test_set.label}: "
                         f"{recalls} ({done.result.seconds:.1f} s)")
    return parent, results


def result_of(model: BenchmarkModel, test_set: TestSet, done):
    """The `BenchmarkResult` of one cell's `Evaluated`."""
    from vpr_tracking.benchmark import BenchmarkResult

    result = done.result
    images = result.num_database + result.num_queries
    return BenchmarkResult(
        model.label, test_set.label, dict(sorted(result.recalls.items())), model.family,
        model.architecture, int(result.descriptors.shape[1]), done.descriptor_bytes,
        1000 * result.extract_seconds / images, format_image_size(done.image_size),
        result.seconds)
