"""The typed settings of each stage."""
from .common import *  # noqa: F401,F403
