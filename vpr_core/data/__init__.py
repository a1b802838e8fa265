"""Where images come from: the datasets of both layouts (`open_split` -> `Split`), the one
image path to the device (`ImageFeed`), the decoded-image store, and generated datasets."""
from .datasets import detect_layout, open_split, resolve_image_size
from .split import Split

__all__ = ["Split", "detect_layout", "open_split", "resolve_image_size"]
