"""`python -m benchmarks extract|models|train|aggregators|mine|sweep|epoch|compress|digest|table
[options]`."""
from __future__ import annotations

import importlib
import sys

VERBS = {
    "extract": "eval path (images on disk -> descriptors) vs a bare forward pass",
    "models": "the same for every backbone x aggregator pair (CPU by default, small images)",
    "train": "triplet training steps vs bare forward+backward; epoch vs a reference-style loop",
    "aggregators": "each aggregator trained 2 epochs on the synthetic street: loss, recall "
                   "before/after",
    "mine": "batched hard-negative mining vs the reference's per-query kNN fits",
    "sweep": "Ray Tune + MLflow overhead per trial, as a share of the trial's compute",
    "epoch": "one training epoch timed per stage (add --pitts30k-size for the scale test)",
    "compress": "channel-pruned and int8 forwards vs float32 on the CPU; checkpoint sizes",
    "digest": "a dataset input's digest of a 500k-image file list (every tracked run's cost)",
    "table": "read JSON lines (files or stdin) and print them as one table",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        width = max(map(len, VERBS))
        lines = [f"  {verb:<{width}}  {text}" for verb, text in VERBS.items()]
        print("usage: python -m benchmarks VERB [options]\n\n" + "\n".join(lines),
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    module.main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
