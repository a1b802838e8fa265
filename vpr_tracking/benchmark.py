"""A benchmark in MLflow: one parent run (kind `benchmark`) holding the protocol as params, and
one child run (kind `benchmark-result`) per model and test set holding its figures; read back
as `BenchmarkResult` rows in the order the benchmark listed its models and test sets."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from vpr_core.errors import UserError

from .names import RECALL_NS, Kind, Tag, metric_key, recall_name
from .store import RunRecord, Store, children_filter

# Recall@N's denominator: every query of the split, those with no database image within the
# positive distance too (they count as misses), as the reference and the field's papers count
QUERIES = "all queries of the split (those without a positive count as misses)"
MODELS, MODEL_SOURCES, TEST_SETS, DATA_ROOTS = "models", "model_sources", "test_sets", \
    "data_roots"  # the parent's params that list them, as JSON
DEFAULT_EXPERIMENT = "benchmarks"
FIGURES = ("descriptor_dim", "descriptor_bytes", "ms_per_image", "image_height", "image_width",
           "eval_seconds")  # a result's metrics besides Recall@N


@dataclass(frozen=True)
class BenchmarkResult:
    """One model (`model`, the table's row) on one test set (`test_set`, its column).

    `recalls`: {N: fraction}; `architecture`: 'resnet50 + gem (fc_dim=2048)'; `family`: the
    checkpoint's format ('cosplace', 'vpr-sweeps', ...); `image_size`: 'HxW' the images were
    brought to; `ms_per_image`: reading an image and computing its descriptor.
    """

    model: str
    test_set: str
    recalls: dict
    family: str = "?"
    architecture: str = "?"
    descriptor_dim: int | None = None
    descriptor_bytes: float | None = None
    ms_per_image: float | None = None
    image_size: str | None = None
    eval_seconds: float | None = None
    run_id: str | None = field(default=None, compare=False)

    def metrics(self) -> dict:
        """Recall@N and the figures, in this project's metric names."""
        height, width = (int(side) for side in self.image_size.split("x")) \
            if self.image_size else (None, None)
        figures = dict(descriptor_dim=self.descriptor_dim,
                       descriptor_bytes=self.descriptor_bytes, ms_per_image=self.ms_per_image,
                       image_height=height, image_width=width, eval_seconds=self.eval_seconds)
        return {**{recall_name(n): r for n, r in sorted(self.recalls.items())},
                **{k: v for k, v in figures.items() if v is not None}}

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(recalls={recall_name(n): r for n, r in sorted(self.recalls.items())})
        return out

    @classmethod
    def from_run(cls, run: RunRecord) -> BenchmarkResult:
        def number(name: str):
            return run.metrics.get(metric_key(name))

        recalls = {n: number(recall_name(n)) for n in RECALL_NS
                   if number(recall_name(n)) is not None}
        dim = number("descriptor_dim")
        return cls(run.tags.get(Tag.MODEL, run.name), run.tags.get(Tag.TEST_SET, "?"), recalls,
                   run.params.get("family", "?"), run.params.get("architecture", "?"),
                   None if dim is None else int(dim), number("descriptor_bytes"),
                   number("ms_per_image"), run.params.get("image_size"),
                   number("eval_seconds"), run.run_id)


def protocol_params(split: str, positive_dist: float, models: dict, test_sets: dict,
                    settings: dict) -> dict:
    """The parent's params: the protocol, the models {label: source} and the test sets
    {label: root} in the table's order, and the evaluation's settings that were given."""
    return {"split": split, "positive_dist": positive_dist, "queries": QUERIES,
            MODELS: json.dumps(list(models)), MODEL_SOURCES: json.dumps(list(models.values())),
            TEST_SETS: json.dumps(list(test_sets)),
            DATA_ROOTS: json.dumps([str(root) for root in test_sets.values()]),
            **{name: value for name, value in settings.items() if value is not None}}


def result_params(evaluation: dict, result: BenchmarkResult, source: str) -> dict:
    """A result's params: its evaluation's (see `params.evaluation_params`), with the model
    and test set it is in the table, the checkpoint as given (a file, or runs:/...), and the
    image size it ran at."""
    return dict(evaluation, model=result.model, test_set=result.test_set, family=result.family,
                architecture=result.architecture, checkpoint=source,
                image_size=result.image_size)


def listed(parent: RunRecord, param: str) -> list[str]:
    """A JSON list the parent logged as `param` (models, test sets), [] when missing."""
    try:
        value = json.loads(parent.params.get(param, "[]"))
    except ValueError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


def find_benchmark(store: Store, experiment_ids: list[str] | None, name: str | None = None,
                   parent_run_id: str | None = None) -> RunRecord:
    """The parent run `parent_run_id`, else the latest benchmark (named `name`) of the
    experiments (None: all); a `UserError` naming the fix when there is none."""
    if parent_run_id is not None:
        parent = store.run(parent_run_id, with_history=False)
        if parent.kind != Kind.BENCHMARK:
            raise UserError(f"run {parent_run_id} is a {parent.kind or 'untagged'} run, not a "
                            f"benchmark; pass a benchmark's parent run id")
        return parent
    parent = store.latest(Kind.BENCHMARK, experiment_ids,
                          **({Tag.BENCHMARK: name} if name else {}))
    if parent is None:
        what = f"named {name!r} " if name else ""
        raise UserError(f"no benchmark {what}in {store.uri}; run `python -m orchestrator "
                        f"benchmark --resume ... --data-root ... --tracking-uri {store.uri}` "
                        f"first")
    return parent


def results_of(store: Store, parent: RunRecord) -> list[BenchmarkResult]:
    """The benchmark's results, by model then test set in the order it listed them."""
    runs = store.search(parent.experiment_id, children_filter(parent.run_id),
                        with_history=False)
    results = [BenchmarkResult.from_run(run) for run in runs
               if run.kind == Kind.BENCHMARK_RESULT]
    models, test_sets = listed(parent, MODELS), listed(parent, TEST_SETS)

    def order(result: BenchmarkResult) -> tuple:
        return (_position(models, result.model), _position(test_sets, result.test_set))

    return sorted(results, key=order)


def _position(names: list[str], name: str) -> int:
    return names.index(name) if name in names else len(names)
