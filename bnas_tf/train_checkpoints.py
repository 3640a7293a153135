"""Per-stage checkpoints of two-stage training: what `bnas-tf train --resume` continues from.

`train_two_stage(..., checkpoint_dir=DIR)` (and `run_training`, with
`TRAIN/checkpoints`) keeps one folder per stage:

* `stageN/ckpt-E.*`, `stageN/checkpoint` – after epoch E of stage N: the
  network's weights (batch-norm statistics included) and the optimizer's
  state, whose step count drives the stage's linear learning-rate decay; the
  last two are kept (`tf.train.CheckpointManager`),
* `stageN/history.json` – the logs of every finished epoch (losses,
  accuracies, `val_*`, learning rate, FF- and C2I-ratio); written just before
  the checkpoint and cut back to the checkpoint's epoch when read, so the two
  always agree,
* `stageN/c2i_reference.npz` – the signs of the binarized kernels at the
  start of the stage: the C2I-ratio's reference, so that it still measures
  against the stage's start after a resume.

A run killed at any moment loses at most the epoch it was in. A finished
stage (as many checkpointed epochs as it has) is restored, not trained again:
stage 2 starts from the restored stage-1 weights. The FF-ratio needs nothing
saved: its reference signs are the restored weights, which are the weights
before the first step of the resumed epoch.

Example:
    >>> checkpoints = TrainingCheckpoints("TRAIN/checkpoints")
    >>> checkpoints.epochs_done(1), checkpoints.epochs_done(2)
    (3, 1)
    >>> [e["val_accuracy"] for e in checkpoints.stage(1).history()]  # the finished epochs
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf._io import atomic_write_bytes, atomic_write_text

__all__ = ["TrainingCheckpoints", "StageCheckpoints", "STAGES"]

STAGES = (1, 2)
"""The stages of two-stage training, `stage1` and `stage2` in the checkpoint folder."""

_PREFIX = "ckpt"


class StageCheckpoints:
    """The checkpoints of one stage: restore, then save after every epoch.

    Args:
        directory: where this stage's checkpoints are written (`.../stageN`).
        restore_from: where they are read (default `directory`; a multi-worker
            run's other workers read the chief's), or None to start afresh.
        max_to_keep: checkpoints kept (the newest ones).

    Example:
        >>> stage = TrainingCheckpoints("TRAIN/checkpoints").stage(1)
        >>> done = stage.restore(model, optimizer)     # epochs already trained
        >>> stage.save(done, {"loss": 0.7})            # after the next epoch
    """

    def __init__(self, directory: str | os.PathLike, *,
                 restore_from: str | os.PathLike | None = None, max_to_keep: int = 2):
        self.directory = Path(directory)
        self.restore_from = None if restore_from is None else Path(restore_from)
        self.max_to_keep = max_to_keep
        self._manager: tf.train.CheckpointManager | None = None
        self.entries: list[dict] = []

    @property
    def epochs_done(self) -> int:
        """Epochs of the newest stored checkpoint (0: none, or not restoring)."""
        latest = self._latest()
        return 0 if latest is None else int(latest.rsplit("-", 1)[-1])

    def _latest(self) -> str | None:
        if self.restore_from is None or not self.restore_from.is_dir():
            return None
        return tf.train.latest_checkpoint(str(self.restore_from))

    def history(self) -> list[dict]:
        """The logs of the stored epochs, one dict per epoch (with its `epoch`), oldest first.

        Raises:
            ValueError: `history.json` is unreadable or has fewer epochs than the
                checkpoint.
        """
        done = self.epochs_done
        if not done:
            return []
        path = self.restore_from / "history.json"
        try:
            entries = json.loads(path.read_text())["epochs"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"Cannot read the per-epoch logs {path} of the checkpoint "
                             f"after epoch {done}: {error}") from None
        if len(entries) < done:
            raise ValueError(f"{path} holds {len(entries)} epochs, but the newest checkpoint "
                             f"beside it is after epoch {done}; the folder was changed by hand.")
        return entries[:done]

    def restore(self, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> int:
        """Track `model` and `optimizer`; load the newest checkpoint into them if there is one.

        Variables that do not exist yet (the optimizer's slots before its first
        step) are filled when they are created. Call in the strategy's scope.

        Returns:
            The number of epochs the restored state has trained (0 if none).
        """
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self._manager = tf.train.CheckpointManager(checkpoint, str(self.directory),
                                                   max_to_keep=self.max_to_keep,
                                                   checkpoint_name=_PREFIX)
        latest = self._latest()
        self.entries = self.history()
        if latest is None:
            return 0
        checkpoint.restore(latest).expect_partial()
        return self.epochs_done

    def save(self, epoch: int, logs: dict) -> None:
        """Record the logs of `epoch` (0-based), then checkpoint the state after it."""
        if self._manager is None:
            raise RuntimeError("Call restore(model, optimizer) before save().")
        self.entries = [*self.entries[:epoch],
                         {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}]
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / "history.json",
                          json.dumps({"epochs": self.entries}, indent=1) + "\n")
        self._manager.save(checkpoint_number=epoch + 1)

    def reference(self, variables: Sequence[tf.Variable]) -> list[np.ndarray]:
        """The signs (+1/-1, int8) of `variables` at the stage's start.

        Read from `c2i_reference.npz` when a checkpoint is restored; otherwise
        taken from `variables` now (the stage is starting) and saved.
        """
        path = None if self.restore_from is None else self.restore_from / "c2i_reference.npz"
        if self.epochs_done and path is not None and path.is_file():
            with np.load(path) as stored:
                return [stored[f"arr_{i}"] for i in range(len(stored.files))]
        signs = [np.where(np.asarray(v.numpy()) >= 0, 1, -1).astype(np.int8) for v in variables]
        buffer = io.BytesIO()
        np.savez(buffer, *signs)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / "c2i_reference.npz", buffer.getvalue())
        return signs


class TrainingCheckpoints:
    """The checkpoint folder of a two-stage training run: `stage1/`, `stage2/`.

    Args:
        directory: where checkpoints are written (`TRAIN/checkpoints`).
        restore: continue from the checkpoints found in `restore_from`.
        restore_from: where to read them (default `directory`).

    Example:
        >>> checkpoints = TrainingCheckpoints("TRAIN/checkpoints")
        >>> result = bn.train_two_stage(model, train, val, epochs=(30, 30),
        ...                             checkpoint_dir=checkpoints)
    """

    def __init__(self, directory: str | os.PathLike, *, restore: bool = True,
                 restore_from: str | os.PathLike | None = None):
        self.directory = Path(directory)
        self.restore_from = None if not restore else Path(restore_from or directory)
        self._stages: dict[int, StageCheckpoints] = {}

    def stage(self, stage: int) -> StageCheckpoints:
        """The checkpoints of `stage` (1 or 2)."""
        if stage not in STAGES:
            raise ValueError(f"Expected stage 1 or 2, got {stage!r}.")
        if stage not in self._stages:
            name = f"stage{stage}"
            self._stages[stage] = StageCheckpoints(
                self.directory / name,
                restore_from=None if self.restore_from is None else self.restore_from / name)
        return self._stages[stage]

    def epochs_done(self, stage: int) -> int:
        """Epochs of `stage` in its newest stored checkpoint (0: none)."""
        return self.stage(stage).epochs_done
