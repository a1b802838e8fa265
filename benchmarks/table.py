"""`python -m benchmarks table [--markdown] [FILE ...]`: the JSON lines of the other verbs as
one table.

Reads files (or standard input), keeps the lines that are JSON objects with a "benchmark"
key, and prints one row per measurement with the figures that matter for it; `--markdown`:
one Markdown table per kind of measurement instead (as README.md shows them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# per benchmark (and side), the fields shown, in order
COLUMNS = {
    "extract": ("arch", "aggregator", "descriptor_dim", "image_size", "precision", "decode",
                "image_store",
                "eval_path_images_per_s", "bare_forward_images_per_s", "ratio_eval_to_bare",
                "image_path_images_per_s", "eval_path_without_store_images_per_s",
                "eval_path_cpu_decode_images_per_s", "eval_path_store_images_per_s"),
    "extract_variant": ("precision", "memory_format", "batch_size", "compiled",
                        "bare_forward_images_per_s", "compile_seconds"),
    "train/this_project": ("arch", "aggregator", "precision", "frozen_features",
                           "cluster_seconds",
                           "startup_seconds", "train_steps_per_s", "bare_steps_per_s",
                           "train_step_ratio_to_bare", "bare_steps_after_frozen_per_s",
                           "train_step_ratio_to_bare_after_frozen"),
    "train/reference_loop": ("cluster_seconds", "total_seconds"),
    "train/summary": ("cluster_plus_epochs_seconds", "reference_cluster_plus_epochs_seconds",
                      "speedup_cluster_plus_epochs", "best_epoch_seconds",
                      "reference_best_epoch_seconds", "speedup_epoch",
                      "train_step_ratio_to_bare", "train_step_ratio_to_bare_after_frozen"),
    "epoch": ("arch", "database", "queries", "image_size", "precision", "frozen_features",
              "cluster_seconds", "startup_seconds", "frozen_features_seconds",
              "cache_refresh_seconds", "mining_seconds",
              "training_steps_seconds", "validation_seconds", "epoch_seconds",
              "end_to_end_seconds", "peak_host_memory_gb", "peak_gpu_memory_gb",
              "mining_service_gb_per_trial"),
    "train/place_batches": ("loss", "arch", "aggregator", "batch_images", "steps",
                            "train_steps_per_s", "bare_steps_per_s", "train_step_ratio_to_bare"),
    "aggregators": ("arch", "aggregator", "descriptor_dim", "image_size", "optim", "lr",
                    "loss_first_epoch", "loss_last_epoch", "recall@1_untrained",
                    "recall@1_untrained_bn", "recall@1_trained", "recall@5_untrained",
                    "recall@5_untrained_bn", "recall@5_trained", "seconds"),
    "compress": ("arch", "image_size", "batch_size", "method", "float32_forward_ms",
                 "variant_forward_ms", "speedup", "checkpoint_shrink"),
}

# --markdown: the columns of a kind where they differ from the above
MARKDOWN_COLUMNS = {
    "extract": ("arch", "aggregator", "descriptor_dim", "image_size", "precision",
                "bare_forward_images_per_s", "eval_path_images_per_s", "ratio_eval_to_bare",
                "ratio_best_eval_to_best_bare"),
}


def kind(record: dict) -> str:
    """The benchmark's name, with its side or record where it has one ("train/summary")."""
    name = record["benchmark"]
    key = f"{name}/{record['side']}" if "side" in record else name
    return f"{name}/{record['record']}" if "record" in record else key


def fields_of(record: dict, chosen: dict = COLUMNS) -> tuple:
    key = kind(record)
    return chosen.get(key) or chosen.get(record["benchmark"]) or \
        COLUMNS.get(key) or COLUMNS.get(record["benchmark"]) or _numbers(record)


def row(record: dict) -> str:
    key = kind(record)
    fields = fields_of(record)
    shown = [f"{field}={record[field]}" for field in fields if record.get(field) is not None]
    device = record.get("gpu") or record.get("device", "")
    return f"{key:<22} {device:<22} " + "  ".join(shown)


def _numbers(record: dict) -> tuple:
    return tuple(k for k, v in record.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool))


def markdown(found: list[dict]) -> str:
    """One Markdown table per kind of record, in the order the kinds first come, with the
    columns any of its records has."""
    kinds: dict[str, list[dict]] = {}
    for record in found:
        kinds.setdefault(kind(record), []).append(record)
    tables = []
    for group in kinds.values():
        columns = [f for f in fields_of(group[0], MARKDOWN_COLUMNS)
                   if any(r.get(f) is not None for r in group)]
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(f)) for f in columns) + " |" for r in group]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10000:
        return f"{value:,}"
    return str(value)


def records(lines) -> list[dict]:
    found = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and "benchmark" in value:
                found.append(value)
    return found


def main(argv: list[str]) -> None:
    as_markdown = "--markdown" in argv
    names = [name for name in argv if name != "--markdown"]
    lines = []
    for name in names:
        lines.extend(Path(name).read_text().splitlines())
    if not names:
        lines = sys.stdin.read().splitlines()
    found = records(lines)
    if as_markdown:
        print(markdown(found))
        return
    for record in found:
        print(row(record))
