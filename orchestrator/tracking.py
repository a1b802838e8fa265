"""What the orchestrator logs to MLflow: the runs of training, evaluation and compression.

Everything is logged from one process through the store's one client (no global active run):
the sweep's driver for trials, the command's own process for `train`, `eval` and `compress`.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from vpr_core.data.description import DataDescription
from vpr_core.errors import first_line
from vpr_core.evaluation import named_recalls
from vpr_core.fileio import sha256_of
from vpr_core.log import log
from vpr_core.models.checkpoints import BEST_FILE, FLAGS_FILE
from vpr_tracking.benchmark import result_params
from vpr_tracking.datasets import training_inputs
from vpr_tracking.names import (
    CHECKPOINT_FOLDER,
    CONFIG_FOLDER,
    DEFAULT_EXPERIMENT,
    FAILED,
    FINISHED,
    KILLED,
    ORIGINAL_VARIANT,
    Context,
    Kind,
    Tag,
)
from vpr_tracking.params import evaluation_params, training_params
from vpr_tracking.store import Store, store_at


class Tracker:
    """One experiment of one tracking store (made when missing), at a checked URI."""

    def __init__(self, uri: str, experiment: str | None = None):
        self.store: Store = store_at(uri)
        self.experiment_name = experiment or DEFAULT_EXPERIMENT
        self.experiment_id = self.store.experiment_id(self.experiment_name, create=True)

    # ---- runs of this experiment --------------------------------------------------------
    def create_run(self, name: str, params: dict, tags: dict) -> str:
        return self.store.create_run(self.experiment_id, name, params, tags)

    def find_run(self, **tags) -> str | None:
        return self.store.find_run(self.experiment_id, **tags)

    # ---- stages -------------------------------------------------------------------------
    def log_evaluation(self, config, result, checkpoint: Path | None, tags: dict | None = None,
                       measured_on: DataDescription | None = None) -> str:
        """One run for one evaluation: the checkpoint (path, sha256), model, split, recalls,
        and the split as its evaluation dataset input."""
        sha256 = sha256_of(checkpoint) if checkpoint else None
        name = f"eval-{config.arch}-{result.dataset}-{result.split}"
        run_id = self.create_run(name, evaluation_params(config, result, checkpoint, sha256),
                                 {Tag.KIND: Kind.EVALUATION, **(tags or {})})
        self.store.log_datasets(run_id, evaluated_on(measured_on))
        self.store.log_metrics(run_id, dict(named_recalls(result.recalls),
                                            eval_seconds=result.seconds), step=0)
        self.store.end(run_id, FINISHED)
        return run_id

    def log_compression(self, study: str, result) -> tuple[str, str]:
        """A compression study: one parent per `study`, one child per variant and one for the
        original (logged once per study); returns (parent, variant) run ids."""
        source = {"source": str(result.source), "source_sha256": sha256_of(result.source)}
        parent = self.find_run(**{Tag.KIND: Kind.COMPRESSION_STUDY, Tag.STUDY: study}) or \
            self.create_run(study, source, {Tag.KIND: Kind.COMPRESSION_STUDY, Tag.STUDY: study})
        tags = {Tag.KIND: Kind.COMPRESSION_VARIANT, Tag.STUDY: study, Tag.PARENT: parent}
        original = dict(tags, **{Tag.VARIANT: ORIGINAL_VARIANT})
        inputs = evaluated_on(result.measured_on)
        measured = dict(source, image_size=result.image_size)  # a registered variant's input
        if self.find_run(**{k: v for k, v in original.items() if k != Tag.PARENT}) is None:
            self._log_variant(result.original, original, measured, None, inputs)
        variant = self._log_variant(result.variant, dict(tags, **{Tag.VARIANT:
                                                                  result.variant.label}),
                                    dict(measured, run_dir=str(result.run_dir)),
                                    result.checkpoint.parent / FLAGS_FILE, inputs)
        self.store.end(parent, FINISHED)
        return parent, variant

    def _log_variant(self, figures, tags: dict, params: dict, flags: Path | None,
                     inputs: list) -> str:
        settings = {f"setting_{k}": v for k, v in figures.settings.items()}
        run_id = self.create_run(figures.label, dict(params, method=figures.method,
                                                     eval_device=figures.eval_device,
                                                     **settings), tags)
        self.store.log_datasets(run_id, inputs)
        self.store.log_metrics(run_id, figures.metrics(), step=0)
        self.store.log_file(run_id, flags, CONFIG_FOLDER)
        self.store.end(run_id, FINISHED)
        return run_id

    @contextlib.contextmanager
    def benchmark_run(self, name: str, label: str, params: dict, test_sets: list):
        """A benchmark's parent run `name` (tag `benchmark` = `label`), its `test_sets`
        (`DataDescription`s) logged as evaluation inputs: yields its id; ends FINISHED, or
        FAILED (KILLED on Ctrl-C) when the benchmark stops early."""
        parent = self.create_run(name, params, {Tag.KIND: Kind.BENCHMARK, Tag.BENCHMARK: label})
        self.store.log_datasets(parent, [(d, Context.EVALUATION) for d in test_sets])
        try:
            yield parent
        except BaseException as error:
            status = KILLED if isinstance(error, KeyboardInterrupt) else FAILED
            try:
                self.store.end(parent, status)
            except Exception as store_error:  # noqa: BLE001 - the benchmark's error goes first
                log.warning(f"MLflow run {parent} was not ended {status} "
                            f"({type(store_error).__name__}); the benchmark's own error follows")
            raise
        self.store.end(parent, FINISHED)

    def log_benchmark_result(self, parent: str, label: str, result, evaluated, source: str,
                             measured_on: DataDescription | None = None) -> str:
        """One model on one test set (a `BenchmarkResult` of the `Evaluated` it came from) as
        a child of the benchmark `parent`; `source`: the checkpoint as the user named it;
        `measured_on`: the test set, its evaluation dataset input."""
        checkpoint = evaluated.checkpoint
        evaluation = evaluation_params(evaluated.config, evaluated.result, checkpoint,
                                       sha256_of(checkpoint) if checkpoint else None)
        run_id = self.create_run(f"{result.model} on {result.test_set}",
                                 result_params(evaluation, result, source),
                                 {Tag.KIND: Kind.BENCHMARK_RESULT, Tag.PARENT: parent,
                                  Tag.BENCHMARK: label, Tag.MODEL: result.model,
                                  Tag.TEST_SET: result.test_set})
        self.store.log_datasets(run_id, evaluated_on(measured_on))
        self.store.log_metrics(run_id, result.metrics(), step=0)
        self.store.end(run_id, FINISHED)
        return run_id

    @contextlib.contextmanager
    def train_run(self, run):
        """A run for a `TrainingRun`: yields `log(epoch_result)`; ends FINISHED/FAILED/KILLED.
        A resumed run continues the MLflow run of its run folder when this experiment has one
        (so each epoch is logged once, under one run), else it starts a new one."""
        config = run.config
        params = training_params(config, run.train_split.dataset, run.image_size)
        tags = {Tag.KIND: Kind.TRAINING, Tag.RUN_DIR: str(run.run_dir)}
        run_id = self._continued_training(run, tags)
        history: list[dict] = []
        if run_id is None:
            run_id = self.create_run(run.run_dir.name, params, tags)
        else:
            self.store.log_params(run_id, params)  # the settings the first part had not set
            history = [h for h in self.store.history(run_id) if h["epoch"] <= run.standing.epoch]
        self._log_inputs(run_id, lambda: run_inputs(run.data))

        def log_epoch(epoch_result) -> None:
            metrics = epoch_result.metrics()
            history.append({"epoch": epoch_result.epoch, **metrics})
            self.store.log_metrics(run_id, metrics, step=epoch_result.epoch)

        try:
            yield log_epoch
        except BaseException as error:
            status = KILLED if isinstance(error, KeyboardInterrupt) else FAILED
            try:
                self._close_training(run_id, run, history, status)
            except Exception as store_error:  # noqa: BLE001 - the training's error goes first
                log.warning(f"MLflow run {run_id} was not ended {status} "
                            f"({type(store_error).__name__}: "
                            f"{first_line(store_error, 200)}); the "
                            f"training's own error follows")
            raise
        self._close_training(run_id, run, history, FINISHED)

    def _continued_training(self, run, tags: dict) -> str | None:
        """The run a resumed training run continues (the newest of its run folder), marked
        RUNNING again; None for a new run or when its folder was never logged here."""
        if run.resumed_from is None:
            return None
        run_id = self.find_run(**tags)
        if run_id is not None:
            self.store.start(run_id)
            log.info(f"continuing MLflow run {run_id} of {run.run_dir}")
        return run_id

    def _log_inputs(self, run_id: str, inputs) -> None:
        """Log the dataset inputs `inputs()` describes; a description that fails is a warning,
        as a refused input is (see `Store.log_datasets`): a dataset never costs a run."""
        try:
            described = inputs()
        except Exception as error:  # noqa: BLE001 - the run's results come first
            log.warning(f"the datasets of MLflow run {run_id} were not described "
                        f"({type(error).__name__}: {error})")
            return
        self.store.log_datasets(run_id, described)

    def _close_training(self, run_id: str, run, history: list[dict], status: str) -> None:
        """Log a training run's files and end it `status` (ended even when the files fail)."""
        try:
            log_run_files(self.store, run_id, run.folder.checkpoints, run.centroids_path,
                          history, run.config.arch, run.run_dir.name)
        finally:
            self.store.end(run_id, status)


def run_inputs(data) -> list:
    """The inputs of a training run of `data` (a `TrainingData`): its places or its training
    split, and its validation split."""
    training = data.places if data.places is not None else data.train_split
    return training_inputs(training, data.val_split, data.train_split.split)


def evaluated_on(measured_on: DataDescription | None) -> list:
    """The inputs of a run measured on `measured_on` (none when it is not known)."""
    return [] if measured_on is None else [(measured_on, Context.EVALUATION)]


def log_run_files(store: Store, run_id: str, checkpoints: Path | None, centroids: Path | None,
                  history: list[dict], arch: str | None, title: str) -> None:
    """Best checkpoint and flags.json (from the folder `checkpoints`), the centroid file and
    the recall curve of a trained run."""
    if checkpoints is not None:
        store.log_file(run_id, Path(checkpoints) / BEST_FILE, CHECKPOINT_FOLDER)
        store.log_file(run_id, Path(checkpoints) / FLAGS_FILE, CONFIG_FOLDER)
    if centroids:
        store.log_file(run_id, Path(centroids), "centroids")
    if history:
        from dashboards.plots import learning_curves, save

        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "recall_curve.png"
            save(learning_curves(history, title, arch), path)
            store.log_file(run_id, path, "plots")

