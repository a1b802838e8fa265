"""A run's folder: `checkpoints/{checkpoint.pth.tar, model_best.pth.tar, flags.json}`, written
atomically; a run that fails before its first checkpoint leaves no folder behind."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..fileio import missing_ancestors, remove_created, write_atomic, write_json_atomic
from ..models.checkpoints import BEST_FILE, CHECKPOINT_DIR, FLAGS_FILE, LATEST_FILE, save_checkpoint


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINT_DIR
        self.created: list[Path] = []  # the folders this run made (removed if it fails early)

    def start(self, flags: dict) -> None:
        """Make the folder (noting what did not exist) and write flags.json."""
        self.created = missing_ancestors(self.path)
        write_json_atomic(self.checkpoints / FLAGS_FILE, flags)

    def abandon(self) -> None:
        """Remove what `start` made, when no checkpoint was written."""
        if self.created:
            remove_created(self.created + [self.checkpoints], (self.checkpoints / FLAGS_FILE,))

    def save(self, epoch: int, checkpoint: dict, is_best: bool) -> Path:
        """Write the epoch's checkpoint (and model_best when `is_best`); a full disk or lost
        permissions is a `UserError` that says how to go on (the old files are intact)."""
        resumable = (self.checkpoints / LATEST_FILE).is_file()
        try:
            latest = save_checkpoint(self.checkpoints / LATEST_FILE, checkpoint)
            if is_best:
                write_atomic(self.checkpoints / BEST_FILE,
                             lambda tmp: shutil.copyfile(latest, tmp))
        except OSError as error:
            then = f"continue with --resume {self.path}" if resumable else \
                "run the command again (no checkpoint of this run was written)"
            raise UserError(f"cannot write the checkpoint of epoch {epoch} in "
                            f"{self.checkpoints} ({error.strerror or error}); free disk space, "
                            f"then {then}") from None
        return latest
