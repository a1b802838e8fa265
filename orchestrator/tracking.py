"""MLflow tracking: where runs go, and the runs of training, evaluation and sweeps.

Everything is logged from one process through `MlflowClient` (no global active run): the
sweep's driver for trials, the command's own process for `train` and `eval`. SQLite stores get
their artifacts in `mlruns/` beside the database file, whatever the working directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import subprocess
import tempfile
import time
from pathlib import Path

from vpr_core.errors import UserError
from vpr_core.tracking_uri import check_tracking_uri, metric_key

DEFAULT_EXPERIMENT = "netvlad"
# one status per run at its end; RUNNING is never left behind
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"








def ui_command(uri: str) -> str:
    """The command that opens these runs in the MLflow UI."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    # this project's `ui` opens each experiment on its runs table (MLflow's own `mlflow ui`
    # lands on its GenAI pages) and stops its server when it stops
    return f"python -m orchestrator ui --tracking-uri {uri}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Tracker:
    """One experiment in one tracking store."""

    def __init__(self, uri: str, experiment: str):
        import mlflow
        from mlflow import MlflowClient

        self.mlflow = mlflow
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_name = experiment
        # MLflow's own words for "training runs of a model", not GenAI traces: MLflow's tools
        # read the tag to tell the two kinds of experiment apart rather than guess
        kind_tag, kind = "mlflow.experimentKind", "custom_model_development"
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=self._artifact_location(),
                    tags={kind_tag: kind})
            else:
                self.experiment_id = found.experiment_id
                if kind_tag not in found.tags:  # made before the tag was set: fix it now
                    self.client.set_experiment_tag(self.experiment_id, kind_tag, kind)
        except Exception as error:  # an unreachable server, a damaged database
            raise UserError(f"cannot use the MLflow store {uri} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:160]}); check --tracking-uri") from None

    @classmethod
    def connect(cls, uri: str | None, experiment: str | None) -> "Tracker":
        uri = check_tracking_uri(uri)
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return cls(uri, experiment or DEFAULT_EXPERIMENT)

    def _artifact_location(self) -> str | None:
        if not self.uri.startswith("sqlite:///"):
            return None  # a server decides (its artifact proxy)
        return (Path(self.uri[len("sqlite:///"):]).parent / "mlruns").absolute().as_uri()

    # ---- runs ---------------------------------------------------------------------------
    def create_run(self, name: str, params: dict, tags: dict) -> str:
        tags = {k: str(v) for k, v in tags.items() if v is not None}
        commit = git_commit()
        if commit:
            tags.setdefault("git_commit", commit)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_run(self, **tags) -> str | None:
        """The newest run whose tags equal `tags` (for resumed work: no duplicates)."""
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=clauses,
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items()
               if v is not None and k not in existing]
        if new:
            self.client.log_batch(run_id, params=new)

    def log_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict) -> None:
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(run_id, key, str(value)[:5000])

    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if path is not None and Path(path).is_file():
            self.client.log_artifact(run_id, str(path), folder)

    def log_figure(self, run_id: str, figure, name: str, folder: str = "plots") -> None:
        from dashboards.plots import save

        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            save(figure, path)
            self.log_file(run_id, path, folder)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # ---- stages -------------------------------------------------------------------------
    def log_evaluation(self, config, result, checkpoint: Path | None, tags: dict | None = None
                       ) -> str:
        """One run for one evaluation: the checkpoint (path, sha256), model, split, recalls."""
        params = {"checkpoint": str(checkpoint) if checkpoint else "untrained",
                  "checkpoint_sha256": sha256_of(checkpoint) if checkpoint else None,
                  "arch": config.arch, "num_clusters": config.num_clusters,
                  "pooling": config.pooling, "split": result.split, "dataset": result.dataset,
                  "data_root": str(config.data_root), "num_queries": result.num_queries,
                  "num_database": result.num_database,
                  "image_size": _size(config.image_size), "weights": config.weights,
                  "precision": config.precision}
        name = f"eval-{config.arch}-{result.dataset}-{result.split}"
        run_id = self.create_run(name, params, {"kind": "evaluation", **(tags or {})})
        self.log_metrics(run_id, {f"recall@{n}": r for n, r in result.recalls.items()}, step=0)
        self.log_metrics(run_id, {"eval_seconds": result.seconds}, step=0)
        self.end(run_id, FINISHED)
        return run_id

    def log_compression(self, study: str, result) -> tuple[str, str]:
        """A compression study: one parent per `study`, one child per variant and one for the
        original (logged once per study); returns (parent, variant) run ids."""
        source = {"source": str(result.source), "source_sha256": sha256_of(result.source)}
        parent = self.find_run(kind="compression-study", study=study) or self.create_run(
            study, source, {"kind": "compression-study", "study": study})
        tags = {"kind": "compression-variant", "study": study, "mlflow.parentRunId": parent}
        if self.find_run(kind="compression-variant", study=study, variant="original") is None:
            self._log_variant(result.original, dict(tags, variant="original"), source, None)
        variant = self._log_variant(result.variant, dict(tags, variant=result.variant.label),
                                    dict(source, run_dir=str(result.run_dir)),
                                    result.checkpoint.parent / "flags.json")
        self.end(parent, FINISHED)
        return parent, variant

    def _log_variant(self, figures, tags: dict, params: dict, flags: Path | None) -> str:
        settings = {f"setting_{k}": v for k, v in figures.settings.items()}
        run_id = self.create_run(figures.label, dict(params, method=figures.method,
                                                     eval_device=figures.eval_device,
                                                     **settings), tags)
        self.log_metrics(run_id, figures.metrics(), step=0)
        self.log_file(run_id, flags, "config")
        self.end(run_id, FINISHED)
        return run_id

    @contextlib.contextmanager
    def train_run(self, run):
        """A run for a `TrainingRun`: yields `log(epoch_result)`; ends FINISHED/FAILED/KILLED."""
        config = run.config
        params = training_params(config, run.train_split.dataset, run.image_size)
        run_id = self.create_run(run.run_dir.name, params,
                                 {"kind": "training", "run_dir": str(run.run_dir)})
        history: list[dict] = []

        def log(epoch_result) -> None:
            metrics = epoch_result.metrics()
            history.append({"epoch": epoch_result.epoch, **metrics})
            self.log_metrics(run_id, metrics, step=epoch_result.epoch)

        status = FAILED
        try:
            yield log
            status = FINISHED
        except KeyboardInterrupt:
            status = KILLED
            raise
        finally:
            self.log_run_files(run_id, run.run_dir / "checkpoints", run.centroids_path, history,
                               config.arch, run.run_dir.name)
            self.end(run_id, status)

    def log_run_files(self, run_id: str, checkpoints: Path | None, centroids: Path | None,
                      history: list[dict], arch: str | None, title: str) -> None:
        """Best checkpoint and flags.json (from the folder `checkpoints`), the centroid file
        and the recall curve of a run."""
        if checkpoints is not None:
            self.log_file(run_id, Path(checkpoints) / "model_best.pth.tar", "checkpoints")
            self.log_file(run_id, Path(checkpoints) / "flags.json", "config")
        if centroids:
            self.log_file(run_id, Path(centroids), "centroids")
        if history:
            from dashboards.plots import learning_curves

            self.log_figure(run_id, learning_curves(history, title, arch), "recall_curve.png")


def training_params(config, dataset: str, image_size) -> dict:
    return {"arch": config.arch, "num_clusters": config.num_clusters, "margin": config.margin,
            "lr": config.lr, "optim": config.optim, "epochs": config.epochs,
            "batch_size": config.batch_size, "image_size": _size(image_size),
            "dataset": dataset, "data_root": str(config.data_root), "weights": config.weights,
            "seed": config.seed, "pooling": config.pooling,
            "cache_refresh_rate": config.cache_refresh_rate,
            "num_negatives": config.num_negatives, "precision": config.precision}


def _size(size) -> str:
    return "native" if size is None else f"{size[0]}x{size[1]}"

