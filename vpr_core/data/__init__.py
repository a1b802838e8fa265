"""Where images come from: the datasets of every layout (`open_split` -> `Split`,
`open_places` -> `PlaceSet`), the one image path to the device (`ImageFeed`), the
decoded-image store, and generated datasets."""
from .datasets import detect_layout, open_places, open_split, resolve_image_size
from .places import PlaceSet
from .split import Split

__all__ = ["PlaceSet", "Split", "detect_layout", "open_places", "open_split",
           "resolve_image_size"]
