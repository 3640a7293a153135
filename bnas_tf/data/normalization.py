"""Per-channel normalization: standard constants, statistics of arrays, `normalize`."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from bnas_tf.data import checks
from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

Stats = tuple[tuple[float, ...], tuple[float, ...]]

STANDARD_STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Per-channel (mean, std) of the training sets, on pixels scaled to [0, 1]."""


def standard_stats(name: str) -> Stats | None:
    """The standard statistics of a dataset name (any "imagenet*" name: ImageNet's)."""
    key = name.lower().replace("-", "_").split("/")[0].split(":")[0]
    if key in STANDARD_STATS:
        return STANDARD_STATS[key]
    if key.startswith("imagenet") or key == "imagenette":
        return STANDARD_STATS["imagenet"]
    return None


def normalize(x: np.ndarray | tf.Tensor, data) -> np.ndarray | tf.Tensor:
    """Scale uint8 pixels to [0, 1] and standardize each channel.

    `(x / 255 - mean) / std`, with `mean`/`std` from `data` (an `ImageData`,
    a `StreamingData` or a `(mean, std)` pair of per-channel sequences).

    Args:
        x: images `(..., channels)`, uint8 (or any numeric type in [0, 255]).
        data: where the statistics come from.

    Returns:
        float32 array (a tensor if `x` is a tensor).

    Raises:
        DataError: the number of channels does not match the statistics.

    Example:
        >>> import numpy as np
        >>> normalize(np.full((1, 1, 1, 1), 255, np.uint8), ((0.5,), (0.5,))).item()
        1.0
    """
    mean, std = resolve_stats(data, channels=int(x.shape[-1]))
    if tf.is_tensor(x):
        return (tf.cast(x, tf.float32) / 255.0 - mean) / std
    return (np.asarray(x, np.float32) / np.float32(255.0) - mean) / std


def resolve_stats(data, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, std) arrays from a dataset or a `(mean, std)` pair."""
    if hasattr(data, "mean") and hasattr(data, "std") and hasattr(data, "class_names"):
        mean, std = data.mean, data.std
    else:
        try:
            mean, std = data
        except (TypeError, ValueError) as e:
            raise DataError(
                f"Expected an ImageData, a StreamingData or a (mean, std) pair for "
                f"normalization, got {data!r}."
            ) from e
    mean, std = checks.check_stats(mean, std, channels)
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def channel_stats(x, chunk_values: int = 1 << 22) -> Stats:
    """Per-channel mean and std of uint8 images scaled to [0, 1], in float64 chunks.

    `x` is an array `(N, H, W, C)` or an iterable of such arrays (batches).
    Arrays are read `chunk_values` pixel values at a time (32 MB as float64),
    whatever the image size.
    """
    if hasattr(x, "shape"):
        chunk = max(1, chunk_values // max(1, int(np.prod(x.shape[1:]))))
        batches = (x[i : i + chunk] for i in range(0, len(x), chunk))
    else:
        batches = x
    total, acc, acc_sq = 0, None, None
    for batch in batches:
        batch = np.asarray(batch)
        pixels = batch.reshape(-1, batch.shape[-1]).astype(np.float64)
        pixels /= 255.0
        if acc is None:
            acc, acc_sq = np.zeros(pixels.shape[1]), np.zeros(pixels.shape[1])
        total += len(pixels)
        acc += pixels.sum(axis=0)
        acc_sq += np.square(pixels).sum(axis=0)
    if not total:
        raise DataError("Cannot compute normalization statistics from an empty image set.")
    mean = acc / total
    std = np.sqrt(np.maximum(acc_sq / total - mean**2, 0.0))
    if np.any(std < 1e-6):
        log.warning("A channel is constant; using std=1 for it to avoid dividing by zero.")
        std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def stats_for_arrays(x: np.ndarray, normalization) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float32 arrays for uint8 images; None for float images (used as given)."""
    channels = int(x.shape[-1])
    if x.dtype != np.uint8:
        if normalization is not None:
            log.warning("Images are already float; the given normalization is not applied.")
        return None
    if normalization is None:
        normalization = channel_stats(x)
    return resolve_stats(normalization, channels)


def parse_stats(stats, channels: int) -> Stats:
    """(mean, std) from a dataset name with standard constants or a `(mean, std)` pair."""
    if isinstance(stats, str):
        found = standard_stats(stats)
        if found is None:
            raise DataError(
                f"No standard statistics for {stats!r}. Pass one of "
                "'imagenet', 'cifar10', 'cifar100', 'mnist', 'fashion_mnist', a (mean, std) "
                "pair, or None to estimate them from a sample."
            )
        stats = found
    try:
        mean, std = stats
    except (TypeError, ValueError) as e:
        raise DataError(f"Expected stats as a name or a (mean, std) pair, got {stats!r}.") from e
    return checks.check_stats(mean, std, channels)
