"""Subsets of a dataset: fixed small subsets (`limit`) and a held-out validation split."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from bnas_tf.data import checks
from bnas_tf.data.core import ImageData, StreamingData
from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_HOLDOUT_FRACTION = 0.1
"""Share of each class's training images that `holdout` keeps for validation (CIFAR-10: 5,000)."""

Dataset = ImageData | StreamingData


def holdout(
    data: Dataset, fraction: float = DEFAULT_HOLDOUT_FRACTION, *, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split a held-out validation set off the training data, stratified per class.

    Each class keeps `round(fraction * n)` of its `n` training images for
    validation (at least 1, and at least 1 for training), chosen by a seeded
    shuffle: the same seed gives the same split, and the two parts are
    disjoint. Use the validation part for every selection (tuner objectives,
    early stopping, `val_*` metrics) and the test split only for the final
    accuracy.

    Args:
        data: an `ImageData` or `StreamingData`. For a TFDS dataset the labels
            are read once (a pass over the records without decoding images).
        fraction: share held out, 0 < fraction < 1; default 0.1.
        seed: seed of the choice.

    Returns:
        `(train, validation)`, both of the type of `data` and with its class
        names and normalization statistics. `train` has the remaining training
        images and the original test split; `validation` has the held-out
        images as *both* its splits, so `make_dataset(validation)` (test split
        by default) and `make_dataset(validation, split="train")` both give
        them, and the test images cannot leak into a selection through it.

    Raises:
        DataError: a class has fewer than 2 training images, or a bad fraction.

    Example:
        >>> data = synthetic(100, 20, num_classes=4)
        >>> train, val = holdout(data, 0.2)
        >>> len(train.y_train), len(val.y_test), len(train.y_test)
        (80, 20, 20)
    """
    fraction = checks.check_fraction(fraction)
    labels = data.y_train
    chosen = stratified_indices(labels, fraction, seed, data.class_names)
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    if isinstance(data, ImageData):
        x_val, y_val = data.x_train[chosen], data.y_train[chosen]
        train = dataclasses.replace(data, x_train=data.x_train[rest], y_train=data.y_train[rest])
        validation = dataclasses.replace(
            data, x_train=x_val, y_train=y_val, x_test=x_val, y_test=y_val
        )
        return train, validation
    held = data.train.take(chosen)
    return (
        dataclasses.replace(data, train=data.train.take(rest)),
        dataclasses.replace(data, train=held, test=held),
    )


def stratified_indices(
    labels: np.ndarray, fraction: float, seed: int, class_names
) -> np.ndarray:
    """Sorted indices of `round(fraction * n_c)` images of each class (1..n_c - 1)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=len(class_names))
    few = [c for c in range(len(counts)) if counts[c] == 1]
    if few:
        listed = ", ".join(f"{class_names[c]!r} (label {c})" for c in few[:10])
        raise DataError(
            f"{len(few)} class(es) have a single training image: {listed}. A held-out "
            f"split (fraction={fraction}) needs at least 2 images per class, one to train on "
            "and one to validate. Add images of those classes, load more data (a larger "
            "limit), or drop those classes."
        )
    chosen = []
    for c in range(len(counts)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        k = min(max(1, int(np.floor(fraction * len(members) + 0.5))), len(members) - 1)
        chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def subset(data: Dataset, limit: int, seed: int) -> Dataset:
    """Keep `limit` train and `limit // 5` test images of a seeded, class-balanced shuffle."""
    rng = np.random.default_rng(seed)
    train = balanced_indices(data.y_train, limit, rng)
    test = balanced_indices(data.y_test, limit // 5, rng)
    if len(train) < limit:
        log.warning("limit=%d exceeds the %d training images of %s.", limit, len(train), data.name)
    if isinstance(data, ImageData):
        return dataclasses.replace(
            data,
            x_train=data.x_train[train],
            y_train=data.y_train[train],
            x_test=data.x_test[test],
            y_test=data.y_test[test],
        )
    return dataclasses.replace(
        data, train=data.train.take(np.sort(train)), test=data.test.take(np.sort(test))
    )


def balanced_indices(y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """First `count` indices of a random permutation re-ordered to take classes in turn."""
    perm = rng.permutation(len(y))
    labels = y[perm]
    rank = np.empty(len(y), np.int64)  # k-th occurrence of its class within perm
    for c in np.unique(labels):
        where = labels == c
        rank[where] = np.arange(where.sum())
    chosen = np.sort(np.argsort(rank, kind="stable")[:count])
    return perm[chosen]
