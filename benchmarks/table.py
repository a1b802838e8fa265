"""`python -m benchmarks table [FILE ...]`: the JSON lines of the other verbs as one table.

Reads files (or standard input), keeps the lines that are JSON objects with a "benchmark"
key, and prints one row per measurement with the figures that matter for it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# per benchmark (and side), the fields shown, in order
COLUMNS = {
    "extract": ("arch", "image_size", "precision", "decode", "image_store",
                "eval_path_images_per_s", "bare_forward_images_per_s", "ratio_eval_to_bare",
                "image_path_images_per_s", "eval_path_without_store_images_per_s",
                "eval_path_cpu_decode_images_per_s", "eval_path_store_images_per_s"),
    "extract_variant": ("precision", "memory_format", "batch_size", "compiled",
                        "bare_forward_images_per_s", "compile_seconds"),
    "train/this_project": ("arch", "precision", "frozen_features", "cluster_seconds",
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
    "compress": ("arch", "image_size", "batch_size", "method", "float32_forward_ms",
                 "variant_forward_ms", "speedup", "checkpoint_shrink"),
}


def row(record: dict) -> str:
    name = record["benchmark"]
    key = f"{name}/{record['side']}" if "side" in record else name
    key = f"{name}/{record['record']}" if "record" in record else key
    fields = COLUMNS.get(key) or COLUMNS.get(name) or _numbers(record)
    shown = [f"{field}={record[field]}" for field in fields if record.get(field) is not None]
    device = record.get("gpu") or record.get("device", "")
    return f"{key:<22} {device:<22} " + "  ".join(shown)


def _numbers(record: dict) -> tuple:
    return tuple(k for k, v in record.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool))


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
    lines = []
    for name in argv:
        lines.extend(Path(name).read_text().splitlines())
    if not argv:
        lines = sys.stdin.read().splitlines()
    for record in records(lines):
        print(row(record))
