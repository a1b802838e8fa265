"""The tracking vocabulary: run kinds, tag names, statuses and metric names.

MLflow params are named after the settings they record (`TrainConfig`'s field names); the
search space's own params are named in `search_space`.
"""
from __future__ import annotations

# declared with the evaluation in vpr_core, named here beside the rest of the vocabulary
from vpr_core.evaluation import RECALL_NS, recall_name
from vpr_core.models.checkpoints import BEST_FILE, FLAGS_FILE

DEFAULT_EXPERIMENT = "netvlad"
CHECKPOINT_FOLDER = "checkpoints"  # the artifact folder of a run's best checkpoint
CHECKPOINT_ARTIFACT = f"{CHECKPOINT_FOLDER}/{BEST_FILE}"
CONFIG_FOLDER = "config"  # the artifact folder of a run's flags.json
FLAGS_ARTIFACT = f"{CONFIG_FOLDER}/{FLAGS_FILE}"


class Kind:
    """The value of the tag `Tag.KIND`: what a run is."""

    SWEEP = "sweep"  # a sweep's parent run
    TRIAL = "trial"  # one trial of a sweep (a child run)
    TRAINING = "training"  # `python -m orchestrator train`
    EVALUATION = "evaluation"  # `eval`, or an evaluation spec
    COMPRESSION_STUDY = "compression-study"  # a study's parent run
    COMPRESSION_VARIANT = "compression-variant"  # the original or a variant of a study
    BENCHMARK = "benchmark"  # a benchmark's parent run: models x test sets
    BENCHMARK_RESULT = "benchmark-result"  # one model on one test set of a benchmark


TRAINED_KINDS = (Kind.TRIAL, Kind.TRAINING)


class Tag:
    KIND = "kind"
    PARENT = "mlflow.parentRunId"  # MLflow's own: nests a child run under its parent
    EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's own: what an experiment holds
    SWEEP = "sweep"  # the sweep's name, on its parent and its trials
    TRIAL_ID = "trial_id"
    ARCH = "arch"
    STOP_REASON = "stop_reason"
    EPOCHS_RUN = "epochs_run"
    WORKER_FAILURES = "worker_failures"
    BEST_TRIAL = "best_trial"
    BEST_RUN_ID = "best_run_id"
    BEST_ARCH = "best_arch"
    RUN_DIR = "run_dir"
    SPEC = "spec"
    STUDY = "study"
    VARIANT = "variant"
    GIT_COMMIT = "git_commit"
    MINER_DEVICE = "miner_device"  # where the sweep's mining service searched (cpu, cuda)
    BENCHMARK = "benchmark"  # the benchmark's name, on its parent and its results
    MODEL = "model"  # a benchmark result's row: the model's label
    TEST_SET = "test_set"  # a benchmark result's column: the test set's label
    REGISTERED_MODEL = "registered_model"  # a sweep's: models:/NAME/VERSION of its best trial


class Context:
    """What a run did with a dataset input: the value of its input tag `DATASET_CONTEXT`."""

    TRAINING = "training"  # the images it trained on
    VALIDATION = "validation"  # the split its per-epoch recalls were measured on
    EVALUATION = "evaluation"  # the split its recalls were measured on (eval, benchmark, ...)


MEASURED_CONTEXTS = (Context.VALIDATION, Context.EVALUATION)  # where a run's recalls come from
DATASET_CONTEXT = "mlflow.data.context"  # MLflow's own input tag: what the UI and filters read

# MLflow's words for an experiment of trained models (not GenAI traces)
MODEL_EXPERIMENT = "custom_model_development"
# a run's status when it ends; RUNNING is never left behind
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
ORIGINAL_VARIANT = "original"


def recall_n(name: str) -> int:
    """'recall@5' -> 5."""
    return int(name.split("@")[-1])


def metric_key(name: str) -> str:
    """MLflow's name for a metric: 'recall@5' -> 'recall_at_5' (MLflow refuses '@')."""
    return name.replace("@", "_at_")


RECALL_NAMES = tuple(recall_name(n) for n in RECALL_NS)
DEFAULT_METRIC = recall_name(5)
# what a trial or a training run logs per epoch
EPOCH_METRICS = RECALL_NAMES + ("loss", "triplets", "negatives", "batches", "skipped_batches",
                                "lr", "epoch_seconds", "caches_republished")
# what the dashboards draw of a run's history
CURVE_METRICS = RECALL_NAMES + ("loss", "epoch_seconds")


# ---- the Model Registry ------------------------------------------------------------------
MODELS_SCHEME = "models:/"  # models:/NAME/VERSION, models:/NAME@ALIAS


def is_model_reference(text) -> bool:
    """Whether `text` names a registered model (models:/NAME/VERSION or models:/NAME@ALIAS)."""
    return str(text).startswith(MODELS_SCHEME)

CHAMPION = "champion"  # the alias of a registered model's best version (see `registry`)
MODEL_ARTIFACTS = "artifacts"  # the pyfunc model's folder of its checkpoint and flags.json


class VersionTag:
    """Tags of a registered model version (its recalls are tagged `recall@N`)."""

    METRIC = "metric"  # the recall the champion alias compares, e.g. recall@5
    DATASET = "dataset"  # what the recalls were measured on
    SPLIT = "split"
    DATA_ROOT = "data_root"
    DATASET_DIGEST = "dataset_digest"  # of the split's file list, when the run logged it
    ARCH = "arch"
    AGGREGATOR = "aggregator"
    DIM = "descriptor_dim"
    IMAGE_SIZE = "image_size"  # HxW of the input example and the signature
    GIT_COMMIT = "git_commit"
    SOURCE_RUN = "source_run_id"
    SWEEP_RUN = "sweep_run_id"
    CHECKPOINT_SHA256 = "checkpoint_sha256"
