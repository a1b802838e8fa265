"""Training with triplets and hard-negative mining: the run and its epochs (`run`), the
mining rule behind one `Miner` interface (`mining`), and the frozen layers' output computed
once (`frozen_features`)."""
from .run import TrainingRun

__all__ = ["TrainingRun"]
