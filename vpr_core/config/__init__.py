"""The typed settings of each stage, every setting declared once (see `vpr_core.settings`)."""
from .cluster import ClusterConfig
from .common import MODEL_SETTINGS, CommonConfig, format_image_size, parse_image_size
from .compress import CompressConfig
from .evaluate import EvalConfig
from .export import ExportConfig
from .train import OPTIMIZERS, SGD_DEFAULTS, TrainConfig

__all__ = ["MODEL_SETTINGS", "OPTIMIZERS", "SGD_DEFAULTS", "ClusterConfig", "CommonConfig",
           "CompressConfig", "EvalConfig", "ExportConfig", "TrainConfig", "format_image_size",
           "parse_image_size"]
