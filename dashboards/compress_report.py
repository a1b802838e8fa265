"""`compress-report`: a compression study's variants, Recall@5 against model size, CPU latency
and descriptor bytes.

One point per variant (each a child run of the study's parent, logged by `python -m
orchestrator compress`), the original marked with a star; `--json` gives the table drawn.
"""
from __future__ import annotations

from pathlib import Path

from vpr_core.errors import UserError
from vpr_tracking.names import DEFAULT_METRIC, ORIGINAL_VARIANT, Kind, Tag, metric_key
from vpr_tracking.store import RunRecord, Store, as_store, children_filter

SIZE_METRIC, RECALL_METRIC = "size_mb", metric_key(DEFAULT_METRIC)
LATENCY_METRIC = "latency_cpu_b1_ms"  # the slowest case, and one every machine measures
BYTES_METRIC = "descriptor_bytes"


def study_runs(store: Store, study: str | None) -> tuple[RunRecord, list[RunRecord]]:
    """(the study's parent run, its variants, the original first); the latest study when
    `study` is None."""
    parent = store.latest(Kind.COMPRESSION_STUDY, **({Tag.STUDY: study} if study else {}))
    if parent is None:
        what = f"named {study!r}" if study else "at all"
        raise UserError(f"no compression study {what} in {store.uri}; run `python -m "
                        f"orchestrator compress ... --tracking-uri {store.uri}` first")
    children = store.search(parent.experiment_id, children_filter(parent.run_id),
                            with_history=False)
    children.sort(key=lambda run: run.tags.get(Tag.VARIANT) != ORIGINAL_VARIANT)
    return parent, children


def rows_of(variants: list[RunRecord]) -> list[dict]:
    return [{"variant": run.tags.get(Tag.VARIANT, run.name), "run_id": run.run_id,
             DEFAULT_METRIC: run.metrics.get(RECALL_METRIC),
             SIZE_METRIC: run.metrics.get(SIZE_METRIC),
             LATENCY_METRIC: run.metrics.get(LATENCY_METRIC),
             BYTES_METRIC: run.metrics.get(BYTES_METRIC)} for run in variants]


def draw(rows: list[dict], title: str):
    """Three panels: Recall@5 against model size, CPU latency per image, descriptor bytes."""
    from .plots import plt
    from .style import percent_axis

    figure, axes = plt.subplots(1, 3, figsize=(17, 5))
    panels = ((SIZE_METRIC, "model size on disk (MB)"),
              (LATENCY_METRIC, "CPU forward, ms per image (batch 1)"),
              (BYTES_METRIC, "bytes per database image"))
    for axis, (key, label) in zip(axes, panels):
        for row in rows:
            if row[key] is None or row[DEFAULT_METRIC] is None:  # (the store keeps no NaN)
                continue
            original = row["variant"] == ORIGINAL_VARIANT
            axis.scatter(row[key], row[DEFAULT_METRIC], s=160 if original else 60,
                         marker="*" if original else "o",
                         color="#222222" if original else "#1f77b4", zorder=3)
            axis.annotate(row["variant"], (row[key], row[DEFAULT_METRIC]), fontsize="small",
                          xytext=(5, 4), textcoords="offset points")
        axis.set(xlabel=label, ylabel="Recall@5", title=f"Recall@5 against {label.split(',')[0]}")
        if key == BYTES_METRIC:
            axis.set_xscale("log")  # PQ and PCA shrink it a hundredfold
        percent_axis(axis)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def compress_report(tracking_uri: str | None, study: str | None, out: Path) -> dict:
    """Draw the study's variants into the PNG `out`; returns what was drawn."""
    from .plots import save

    parent, variants = study_runs(as_store(tracking_uri), study)
    rows = rows_of(variants)
    if not any(row["variant"] == ORIGINAL_VARIANT for row in rows):
        raise UserError(f"compression study {parent.name} has no original run to compare with")
    save(draw(rows, f"compression study {parent.tags.get(Tag.STUDY, parent.name)}"), out)
    return {"out": str(out), "study": parent.tags.get(Tag.STUDY), "parent_run_id": parent.run_id,
            "variants": rows}
