"""The file MLflow runs to load a registered version ("models from code"): the pyfunc is built
from this project's code, not unpickled."""
import mlflow.models

from vpr_tracking.descriptor_model import DescriptorModel

mlflow.models.set_model(DescriptorModel())
