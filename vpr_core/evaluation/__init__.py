"""How good descriptors are: Recall@N (`recall`), the exact nearest-neighbour search behind it
(`search`), and a model's descriptors of a feed's images (`extraction`)."""
from .recall import RECALL_NS, EvalResult, evaluate, named_recalls, recall_at_n, recall_name

__all__ = ["RECALL_NS", "EvalResult", "evaluate", "named_recalls", "recall_at_n", "recall_name"]
