"""Where a run stands: the epoch done, the best validation so far, patience used, the last
recalls; read from a checkpoint to resume, written into each new one."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Standing:
    """The run's standing after `epoch` epochs (changes as the run goes on)."""

    epoch: int = 0
    best_score: float = 0.0  # the best validation Recall@5
    best_epoch: int = 0
    not_improved: int = 0  # validations since the best
    recalls: dict = field(default_factory=dict)  # the last validation's {N: fraction}
    stopped_early: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> Standing:
        """What a checkpoint of this project (or of the reference: no `best_epoch`,
        `not_improved`) says of its run."""
        epoch = int(checkpoint.get("epoch", 0))
        return cls(epoch=epoch, best_score=float(checkpoint.get("best_score", 0.0)),
                   best_epoch=int(checkpoint.get("best_epoch", epoch)),
                   not_improved=int(checkpoint.get("not_improved", 0)),
                   recalls={int(k): float(v) for k, v in checkpoint.get("recalls", {}).items()})

    def validated(self, epoch: int, recalls: dict) -> bool:
        """Take in a validation of `epoch`; True when it is the best so far (by Recall@5)."""
        self.recalls = dict(recalls)
        if recalls[5] > self.best_score:
            self.best_score, self.best_epoch, self.not_improved = recalls[5], epoch, 0
            return True
        self.not_improved += 1
        return False

    def checkpoint_fields(self) -> dict:
        """The reference's keys (epoch, recalls, best_score) and this project's."""
        return {"epoch": self.epoch, "recalls": {n: float(r) for n, r in self.recalls.items()},
                "best_score": float(self.best_score), "best_epoch": self.best_epoch,
                "not_improved": self.not_improved}
