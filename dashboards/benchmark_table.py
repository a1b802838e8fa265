"""A benchmark as papers print it: a row per model, per test set a group of Recall@N columns,
the best value of each column marked. Shared by the terminal (`orchestrator benchmark`), the
HTML page and the PNG (`dashboards benchmark`)."""
from __future__ import annotations

from dataclasses import dataclass

from vpr_tracking.benchmark import BenchmarkResult

TERMINAL_NS = (1, 5)  # the columns a terminal has room for; pages show (1, 5, 10)
PAGE_NS = (1, 5, 10)


@dataclass(frozen=True)
class BenchmarkTable:
    """`models` (rows) and `test_sets` (column groups) in the benchmark's order; `results`
    {(model, test set): BenchmarkResult}, a cell missing where a run is missing."""

    models: tuple
    test_sets: tuple
    results: dict

    @classmethod
    def of(cls, results: list[BenchmarkResult]) -> BenchmarkTable:
        """Rows and columns in the order they first appear in `results`."""
        models = tuple(dict.fromkeys(r.model for r in results))
        test_sets = tuple(dict.fromkeys(r.test_set for r in results))
        return cls(models, test_sets, {(r.model, r.test_set): r for r in results})

    def recall(self, model: str, test_set: str, n: int) -> float | None:
        result = self.results.get((model, test_set))
        return None if result is None else result.recalls.get(n)

    def best(self, test_set: str, n: int) -> float | None:
        """The highest Recall@N of any model on `test_set`."""
        values = [self.recall(m, test_set, n) for m in self.models]
        return max((v for v in values if v is not None), default=None)

    def is_best(self, model: str, test_set: str, n: int) -> bool:
        """Whether the cell holds its column's best value (ties are all best), to one
        decimal of a percent, as printed."""
        value, best = self.recall(model, test_set, n), self.best(test_set, n)
        return value is not None and round(100 * value, 1) == round(100 * best, 1)

    def model_facts(self, model: str) -> BenchmarkResult | None:
        """A result of `model` (family, architecture and descriptor are the same on every
        test set)."""
        return next((self.results[(model, t)] for t in self.test_sets
                     if (model, t) in self.results), None)


def percent(value: float | None) -> str:
    """0.6812 -> '68.1'; None -> '-'."""
    return "-" if value is None else f"{100 * value:.1f}"


def text_lines(table: BenchmarkTable, ns=TERMINAL_NS) -> list[str]:
    """The table for a terminal: a row per model (its format, architecture and descriptor
    dimensions), per test set Recall@N in percent, the best of each column starred."""
    facts = [("model", "format", "architecture", "dim")] + [_facts(table, m)
                                                           for m in table.models]
    widths = [max(len(row[i]) for row in facts) for i in range(4)]
    cell, gap = 7, "   "
    group = cell * len(ns)
    left = "  ".join(f"{text:<{width}}" for text, width in zip(facts[0][:3], widths)) + \
        f"  {facts[0][3]:>{widths[3]}}"
    titles = " " * len(left) + "".join(f"{gap}{t[:group]:^{group}}" for t in table.test_sets)
    header = left + "".join(gap + "".join(f"{'R@' + str(n) + ' ':>{cell}}" for n in ns)
                            for _ in table.test_sets)
    lines = [titles.rstrip(), header.rstrip(), "-" * len(header)]
    starred = len(table.models) > 1
    for model, row in zip(table.models, facts[1:]):
        text = "  ".join(f"{value:<{width}}" for value, width in zip(row[:3], widths)) + \
            f"  {row[3]:>{widths[3]}}"
        for test_set in table.test_sets:
            marks = ["*" if starred and table.is_best(model, test_set, n) else " " for n in ns]
            text += gap + "".join(f"{percent(table.recall(model, test_set, n)) + mark:>{cell}}"
                                  for n, mark in zip(ns, marks))
        lines.append(text.rstrip())
    if starred:
        lines.append("Recall@N in %; * the best of its column")
    return lines


def _facts(table: BenchmarkTable, model: str) -> tuple[str, str, str, str]:
    """(model, format, architecture, descriptor dimensions) of a row."""
    facts = table.model_facts(model)
    if facts is None:
        return model, "-", "-", "-"
    dim = "-" if facts.descriptor_dim is None else str(facts.descriptor_dim)
    return model, facts.family, facts.architecture, dim
