"""Backups of a run in progress, for `--resume`: Keras' BackupAndRestore, made atomic and
step-aware, and where a resumed run starts."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import keras

from textgen.errors import TextgenError
from textgen.store import artifacts
from textgen.training.callbacks import BudgetStop

BACKUP_DIR = "backup"
BACKUP_METADATA = "training_metadata.json"  # Keras' name; we add "steps" to it
BACKUP_SECONDS = 600.0  # without --backup-every: within an epoch, a backup every 10 minutes


class RunBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, kept after training, with these changes:

    - every finished epoch is backed up, and within epochs every `every_steps` steps (Keras'
      `save_freq`) or, without it, every `every_seconds` of training, so that long epochs lose
      little to a crash while short ones are not slowed by saving;
    - an epoch cut short by the budget is recorded as unfinished: `--resume` runs that epoch
      again in full instead of counting its few steps as a whole epoch;
    - each backup records the optimizer's step count, so that an endless-data run resumes
      where its data left off (`backup_position`), and is written atomically.

    A resumed run starts the interrupted epoch again from its first batch (Keras cannot start an
    epoch in the middle), with the weights and optimizer state of the last backup.
    """

    def __init__(self, backup_dir: Path, budget: BudgetStop, every_steps: int | None = None,
                 every_seconds: float | None = BACKUP_SECONDS):
        super().__init__(str(backup_dir), save_freq=every_steps or "epoch", delete_checkpoint=False,
                         double_checkpoint=True)
        self.budget = budget
        self.every_seconds = None if every_steps else every_seconds
        self._saved_at = time.monotonic()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)  # the `save_freq` steps
        if self.every_seconds is not None:
            self._last_batch_seen = batch
            if time.monotonic() - self._saved_at >= self.every_seconds:
                self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # marks the epoch finished; saves unless steps are counted
        if self.budget.cut_epoch:
            self._current_epoch = epoch
            self._save_model()
        elif self.save_freq != "epoch":
            self._save_model()

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights, metadata = Path(self._weights_path), Path(self._training_metadata_path)
        if self.double_checkpoint and weights.exists():
            shutil.copyfile(weights, self._prev_weights_path)
            if metadata.exists():
                shutil.copyfile(metadata, self._prev_training_metadata_path)
        saving = backup / "saving.weights.h5"
        self.model.save_weights(saving, overwrite=True)
        digest = _sha256(saving)
        saving.replace(weights)
        # The metadata names the weights it goes with: after a crash between the two writes,
        # `_load_model` sees new weights beside old metadata and falls back to the previous pair.
        artifacts.write_json_atomic(metadata, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "steps": optimizer_steps(self.model), "weights_sha256": digest})
        self._saved_at = time.monotonic()

    def _load_model(self):
        """Restore the newest backup whose weights and metadata belong together, or start afresh."""
        pairs = _backup_pairs(self)
        complete = _newest_complete_pair(pairs)
        if complete is None:  # train from the start rather than pair weights with another epoch
            for path in (path for pair in pairs for path in pair):
                path.unlink(missing_ok=True)
        elif complete != pairs[0]:
            shutil.copyfile(complete[0], pairs[0][0])
            shutil.copyfile(complete[1], pairs[0][1])
        super()._load_model()


def _backup_pairs(backup: keras.callbacks.BackupAndRestore) -> list[tuple[Path, Path]]:
    """The (weights, metadata) files Keras names for a backup: the newest pair, then the previous."""
    return [(Path(backup._weights_path), Path(backup._training_metadata_path)),
            (Path(backup._prev_weights_path), Path(backup._prev_training_metadata_path))]


def _newest_complete_pair(pairs: list[tuple[Path, Path]]) -> tuple[Path, Path] | None:
    """The first (weights, metadata) pair whose metadata records those very weights, if any."""
    return next((pair for pair in pairs if _matching_pair(*pair)), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matching_pair(weights: Path, metadata: Path) -> bool:
    try:
        recorded = json.loads(metadata.read_text(encoding="utf-8")).get("weights_sha256")
        return recorded is not None and recorded == _sha256(weights)
    except (OSError, ValueError, AttributeError):
        return False


def optimizer_steps(model: keras.Model) -> int:
    """Training steps applied to the weights, as the optimizer counts them (under any strategy)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class BackupPosition(NamedTuple):
    epoch: int  # the epoch a resumed run starts with (Keras' initial_epoch)
    steps: int  # the training steps behind the backed-up weights


def backup_position(backup_dir: Path) -> BackupPosition:
    """Where the backup a resumed run restores leaves off (the start without one)."""
    complete = _newest_complete_pair(_backup_pairs(keras.callbacks.BackupAndRestore(str(backup_dir))))
    if complete is None:
        return BackupPosition(0, 0)
    recorded = json.loads(complete[1].read_text(encoding="utf-8"))
    return BackupPosition(int(recorded["epoch"]), int(recorded["steps"]))


def copy_unfinished_run(model_dir: Path, scratch_model_dir: Path) -> None:
    """Give a non-chief worker the chief's backup to resume from, as every worker must restore it.

    This runs before the worker joins the cluster, and the chief writes nothing until all have
    joined; temporary files (dot names, a weights file being saved) are left out all the same.
    """
    shared = artifacts.work_dir(model_dir)
    if not (shared / artifacts.CONFIG_FILE).is_file():
        raise TextgenError(f"this worker cannot see the unfinished run {shared}: to resume a multi-worker "
                           "run, --output-dir must be a folder all workers share")
    shutil.copytree(shared, artifacts.work_dir(scratch_model_dir),
                    ignore=lambda folder, names: [n for n in names if n.startswith((".", "saving."))])
