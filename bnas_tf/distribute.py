"""tf.distribute for searches and training: strategies by name, chief-only output.

`get_strategy("mirrored")` replicates over all local GPUs (or CPUs),
`get_strategy("multi_worker")` over the machines listed in `TF_CONFIG`.
Build and compile the model inside `strategy.scope()`, then `fit` as usual:

Example:
    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     net = bn.SuperNet(space, num_classes=10, layers=5, channels=16)
    ...     net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3))
    >>> net.fit(bn.data.search_pairs(data, batch_size=64 * strategy.num_replicas_in_sync))

The batch size given to the dataset is the *global* batch; each replica gets
`batch_size / num_replicas_in_sync` examples. Losses are means over the
global batch: Keras' `compiled_loss` divides each replica's mean by the number
of replicas, and `SuperNet` scales its architecture regularizers the same way
(`scale_for_replicas`), so the all-reduced gradients equal one device's.

Batch normalization: a layer built while a strategy with more than one replica
is active normalizes with statistics over the global batch
(`synchronized=True`, see `sync_batch_norm`), so a replicated run computes
what one device would with the same global batch. This costs one all-reduce
per layer and pass; across machines, `get_strategy(...,
sync_batch_norm=False)` (CLI `--no-sync-batch-norm`) keeps per-replica
statistics instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import tensorflow as tf

__all__ = ["STRATEGY_NAMES", "get_strategy", "is_chief", "task_info", "worker_dir",
           "cleanup_worker_dir", "scale_for_replicas", "sync_batch_norm", "num_replicas",
           "local_batch_norm", "thread_flag"]

log = logging.getLogger(__name__)

STRATEGY_NAMES = ("default", "mirrored", "multi_worker")
"""Names accepted by `get_strategy`."""


def get_strategy(name: str | tf.distribute.Strategy | None = "default", *,
                 devices: list[str] | None = None,
                 sync_batch_norm: bool = True) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name`.

    Args:
        name: "default" (no distribution: one device), "mirrored" (all local
            GPUs, or `devices`; synchronous all-reduce) or "multi_worker"
            (`MultiWorkerMirroredStrategy` over the cluster in the `TF_CONFIG`
            environment variable). A `Strategy` is returned unchanged, None
            means "default".
        devices: for "mirrored": device names such as `["/gpu:0", "/gpu:1"]`
            (default: all GPUs, else the CPU).
        sync_batch_norm: batch norm layers built in the strategy's scope
            normalize with global-batch statistics (one all-reduce per layer
            and pass). False keeps per-replica statistics: much less
            communication between machines, but results then depend on the
            number of replicas.

    Returns:
        The strategy. Create "multi_worker" at the start of the program, before
        other TensorFlow operations run (a TensorFlow requirement).

    Raises:
        ValueError: an unknown name, `devices` with another strategy, or
            "multi_worker" with a malformed `TF_CONFIG`.
    """
    if isinstance(name, tf.distribute.Strategy):
        return _with_sync_batch_norm(name, sync_batch_norm)
    if name is None:
        name = "default"
    if not isinstance(name, str) or name not in STRATEGY_NAMES:
        raise ValueError(f"Expected a strategy name in {', '.join(STRATEGY_NAMES)}, got "
                         f"{name!r}.")
    if devices is not None and name != "mirrored":
        raise ValueError(f"`devices` applies to the 'mirrored' strategy only, got it with "
                         f"{name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _with_sync_batch_norm(tf.distribute.MirroredStrategy(devices), sync_batch_norm)
    task_info()  # validate TF_CONFIG before TensorFlow reads it
    return _with_sync_batch_norm(tf.distribute.MultiWorkerMirroredStrategy(), sync_batch_norm)


def _with_sync_batch_norm(strategy: tf.distribute.Strategy, sync: bool
                          ) -> tf.distribute.Strategy:
    if strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy():
        strategy._bnas_tf_sync_batch_norm = bool(sync)  # read by `sync_batch_norm()`
    return strategy


def task_info() -> tuple[str | None, int | None, dict]:
    """`(task_type, task_id, cluster)` from the `TF_CONFIG` environment variable.

    Returns `(None, None, {})` when `TF_CONFIG` is unset.

    Raises:
        ValueError: `TF_CONFIG` is not JSON or lacks `cluster`/`task`.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None, None, {}
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        return task["type"], int(task["index"]), cluster
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            "Expected TF_CONFIG to be JSON such as {\"cluster\": {\"worker\": [\"host1:port\", "
            "\"host2:port\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}, got "
            f"{text!r} ({error}).") from None


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's output (Keras' multi-worker convention).

    True without a cluster, for the `chief` task, and for worker 0 when the
    cluster has no `chief`. Other workers must still take part in saving
    (checkpoints read replicated variables collectively) but into a
    `worker_dir`.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and getattr(resolver, "task_type", None) is not None:
        task_type, task_id = resolver.task_type, resolver.task_id
        cluster = resolver.cluster_spec().as_dict()
    else:
        task_type, task_id, cluster = task_info()
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_dir(output_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None = None
               ) -> Path:
    """Where this process writes: `output_dir` on the chief, a fresh temporary folder elsewhere.

    Remove a worker's folder with `cleanup_worker_dir` when the run ends.
    """
    if is_chief(strategy):
        return Path(output_dir)
    task_type, task_id, _ = task_info()
    return Path(tempfile.mkdtemp(prefix=f"bnas_tf-{task_type}{task_id}-"))


def cleanup_worker_dir(path: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Delete a non-chief's temporary `worker_dir` (never the real output folder)."""
    if Path(path).resolve() != Path(output_dir).resolve():
        shutil.rmtree(path, ignore_errors=True)


def num_replicas() -> int:
    """Replicas of the current strategy (1 outside any strategy)."""
    context = tf.distribute.get_replica_context()
    if context is not None:
        return int(context.num_replicas_in_sync)
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def scale_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """`loss / num_replicas` in a replica context, else `loss` unchanged.

    Gradients are summed over replicas; a term computed once per replica
    (a regularizer on replicated variables) must be divided by their number
    to enter the global objective once, as Keras does for `model.losses`.
    """
    n = num_replicas()
    if n == 1 or tf.distribute.in_cross_replica_context():
        return loss
    return loss * (1.0 / n)


_LOCAL = threading.local()


@contextlib.contextmanager
def thread_flag(store: threading.local, name: str):
    """Set `store.<name>` to True for this thread within the block, then restore it.

    Example:
        >>> flags = threading.local()
        >>> with thread_flag(flags, "on"):
        ...     assert flags.on
    """
    previous = getattr(store, name, False)
    setattr(store, name, True)
    try:
        yield
    finally:
        setattr(store, name, previous)


def local_batch_norm():
    """Batch norms built in this block keep per-replica statistics (`sync_batch_norm()` False).

    For layers that run inside control flow, where a synchronized batch norm's
    all-reduce cannot run (single-path mixing, `bnas_tf.mixing`).
    """
    return thread_flag(_LOCAL, "local")


def sync_batch_norm() -> bool:
    """True while a strategy with more than one replica is active (`strategy.scope()`).

    Batch norm layers built then use `synchronized=True`: statistics over the
    global batch, so the result does not depend on how it is split. A strategy
    from `get_strategy(..., sync_batch_norm=False)` and `local_batch_norm()`
    turn this off.
    """
    if not tf.distribute.has_strategy() or getattr(_LOCAL, "local", False):
        return False
    strategy = tf.distribute.get_strategy()
    return (strategy.num_replicas_in_sync > 1
            and getattr(strategy, "_bnas_tf_sync_batch_norm", True))
