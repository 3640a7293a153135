"""Keras callbacks: temperature schedules, the search history, weight-flip diagnostics.

`FlipFlopRatio` and `ChangeToInitRatio` (AdamBNN's FF-ratio and C2I-ratio)
live in `bnas_tf.flips`, `ArchitectureBoard` (op-probability histograms and
cell diagrams in TensorBoard) in `bnas_tf.board`; all are re-exported here.

Example:
    >>> net.fit(pairs, epochs=50, callbacks=[
    ...     bn.callbacks.TemperatureScheduler.anneal(1.0, 0.2, epochs=50),
    ...     bn.callbacks.SearchHistory("RUN/history.json"),
    ... ])
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bnas_tf._io import atomic_write_text
from bnas_tf.board import ArchitectureBoard
from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio

__all__ = ["TemperatureScheduler", "SearchHistory", "FlipFlopRatio", "ChangeToInitRatio",
           "ArchitectureBoard"]

log = logging.getLogger(__name__)


def _supernet_arch(model):
    arch = getattr(model, "arch", None)
    if arch is None or not hasattr(arch, "temperature"):
        raise ValueError(f"Expected a bnas_tf.SuperNet, got {type(model).__name__}; this "
                         "callback reads and sets its architecture parameters.")
    return arch


class TemperatureScheduler(tf.keras.callbacks.Callback):
    """Set the supernet's softmax temperature T from `schedule(epoch)` each epoch.

    The value goes into `logs["temperature"]`. T lives in a non-trainable
    variable, so the traced `train_step` sees every change.

    Args:
        schedule: `epoch (int, from 0) -> T (float > 0)`.
        verbose: log each new value.

    Example:
        >>> bn.callbacks.TemperatureScheduler(lambda epoch: max(0.2, 0.9 ** epoch))
    """

    def __init__(self, schedule: Callable[[int], float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"Expected a callable schedule(epoch) -> T, got {schedule!r}.")
        self.schedule, self.verbose = schedule, verbose

    @classmethod
    def anneal(cls, start: float = 1.0, end: float = 0.2, epochs: int = 50,
               verbose: int = 0) -> TemperatureScheduler:
        """Exponential annealing from `start` at epoch 0 to `end` at epoch `epochs − 1`."""
        if start <= 0 or end <= 0 or epochs < 1:
            raise ValueError(f"Expected start > 0, end > 0, epochs >= 1; got {start}, {end}, "
                             f"{epochs}.")
        ratio = end / start

        def schedule(epoch: int) -> float:
            return start * ratio ** min(1.0, epoch / max(1, epochs - 1))

        return cls(schedule, verbose)

    def on_epoch_begin(self, epoch, logs=None):
        value = float(self.schedule(epoch))
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"The temperature schedule returned {value!r} at epoch {epoch}; "
                             "it must be a positive number.")
        _supernet_arch(self.model).temperature.assign(value)
        if self.verbose:
            log.info("Epoch %d: temperature %.4g", epoch + 1, value)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = float(_supernet_arch(self.model).temperature.numpy())


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class SearchHistory(tf.keras.callbacks.Callback):
    """Record per-epoch logs, op probabilities and genotype; optionally as JSON.

    The file is a JSON object `{"op_names": [...], "space": {...}, "schedule":
    {...}, "epochs": [{"epoch", "logs", "op_probabilities": {"normal",
    "reduce"}, "decision", "genotype"}, ...]}`, rewritten atomically after
    every epoch, so an interrupted search leaves a valid file of its finished
    epochs. `decision` holds each edge's margin (`bnas_tf.decision`).

    Args:
        path: JSON file to write, or None to keep the record in memory only.
        resume: keep the entries of an existing file for epochs before the
            first one this run trains (for resumed searches).
        schedule: the search's schedule (`bnas_tf.search_run.search_schedule`),
            written with the epochs.
    """

    def __init__(self, path: str | os.PathLike | None = None, resume: bool = False,
                 schedule: dict | None = None):
        super().__init__()
        self.path = None if path is None else os.fspath(path)
        self.resume = resume
        self.schedule = schedule
        self.epochs: list[dict] = []

    def on_train_begin(self, logs=None):
        if self.resume and self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.epochs = json.load(f).get("epochs", [])

    def on_epoch_end(self, epoch, logs=None):
        arch = _supernet_arch(self.model)
        probs = {kind: np.round(p, 6).tolist()
                 for kind, p in self.model.op_probabilities().items()}
        genotype = self.model.genotype(warn=False)
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch]
        self.epochs.append({
            "epoch": int(epoch),
            "logs": {k: _to_float(v) for k, v in (logs or {}).items()},
            "temperature": float(arch.temperature.numpy()),
            "op_probabilities": probs,
            "decision": genotype.decision,
            "genotype": genotype.to_dict(),
        })
        if self.path:
            self.write(self.path)

    def to_dict(self) -> dict:
        space = self.model.space
        out = {"op_names": list(space.op_names), "space": space.get_config(),
               "epochs": self.epochs}
        if self.schedule is not None:
            out["schedule"] = self.schedule
        return out

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
