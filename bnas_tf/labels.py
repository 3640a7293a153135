"""Label checks of a supernet's data: before `fit`, and inside each step.

A label a `SuperNet` cannot score (negative, or `>= num_classes`) would end in
TensorFlow's InvalidArgumentError from deep inside the loss. These checks turn
it into one `bnas_tf.errors.DataError` that names the label, the network's
`num_classes` and the fix:

* Before the first step. `bnas_tf.data.search_pairs` and `make_dataset`
  attach the range of their labels to the dataset they return
  (`attach_label_range`); `SuperNet.fit` compares it, and the labels of
  `validation_data=(x, y)` arrays, with `num_classes` (`check_fit_data`).
* In every step. The training and validation steps pass their labels through
  `checked`: a min/max reduction and an `Assert` op that gates the labels, so
  a pipeline without an attached range (a foreign tf.data pipeline, or one
  mapped after `search_pairs`) stops at its first bad batch; `fit` turns
  that failure into the same DataError (`translate_errors`).

Only sparse labels (class indices, the default loss) are checked.

Example:
    >>> net = bn.SuperNet("lce", num_classes=10)
    >>> net.compile()
    >>> net.fit(bn.data.search_pairs(cifar100, batch_size=64))  # doctest: +SKIP
    DataError: Label 99 (the largest) in the search data is outside the SuperNet's classes ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from bnas_tf.errors import DataError

__all__ = ["LabelRange", "attach_label_range", "attached_label_range", "check_fit_data",
           "checked", "is_sparse_loss", "out_of_range_message", "translate_errors"]

_ATTRIBUTE = "_bnas_tf_label_range"
_MARKER = "bnas_tf: labels out of range"
_ASSERTION = re.compile(re.escape(_MARKER) + r"\] \[([^\]]*)\] \[(-?\d+)\] \[(-?\d+)\]")
# what the CPU kernel of sparse cross-entropy reports when no check ran before it
_TF_LABEL_ERROR = re.compile(r"Received a label value of (-?\d+) which is outside the valid "
                             r"range of \[0, (\d+)\)")


@dataclasses.dataclass(frozen=True)
class LabelRange:
    """The labels a dataset yields.

    Attributes:
        low, high: the smallest and largest label (None: not known).
        num_classes: the classes of the data the labels come from (None: not known).
    """

    low: int | None = None
    high: int | None = None
    num_classes: int | None = None


def attach_label_range(dataset: tf.data.Dataset, labels: np.ndarray | None = None,
                       num_classes: int | None = None) -> tf.data.Dataset:
    """Record on `dataset` the range of `labels` (and the data's class count); return it.

    A transformation of the dataset (`map`, `take`, ...) returns a new one
    without the record; the in-step check still catches bad labels.

    Example:
        >>> ds = attach_label_range(tf.data.Dataset.range(3), np.array([0, 4, 2]))
        >>> attached_label_range(ds)
        LabelRange(low=0, high=4, num_classes=None)
    """
    low = high = None
    if labels is not None and len(labels):
        low, high = int(np.min(labels)), int(np.max(labels))
    setattr(dataset, _ATTRIBUTE, LabelRange(low, high, num_classes))
    return dataset


def attached_label_range(dataset) -> LabelRange | None:
    """The `LabelRange` `attach_label_range` recorded on `dataset`, or None."""
    return getattr(dataset, _ATTRIBUTE, None)


def is_sparse_loss(loss) -> bool:
    """Whether `loss` takes class indices (sparse categorical cross-entropy)."""
    if isinstance(loss, str):
        return "sparse_categorical" in loss
    return (isinstance(loss, tf.keras.losses.SparseCategoricalCrossentropy)
            or loss is tf.keras.losses.sparse_categorical_crossentropy)


def out_of_range_message(label: int, num_classes: int, where: str, *,
                         data_classes: int | None = None, largest: bool = True) -> str:
    """The DataError message for `label` outside `[0, num_classes)` found in `where`.

    Example:
        >>> out_of_range_message(12, 10, "the search data")[:44]
        'Label 12 (the largest) in the search data is'
    """
    valid = f"num_classes={num_classes} (labels 0..{num_classes - 1})"
    if label < 0:
        return (f"Label {label} in {where} is negative: the SuperNet has {valid}. Fix the "
                "labels: they must be class indices, which start at 0.")
    needed = max(label + 1, data_classes or 0)
    reason = (f"the data's {data_classes} classes, e.g. num_classes=data.num_classes"
              if data_classes else f"the largest label {label} + 1, or data.num_classes")
    return (f"Label {label}{' (the largest)' if largest else ''} in {where} is outside the "
            f"SuperNet's classes: it has {valid}. Build the SuperNet with "
            f"num_classes={needed} from the data ({reason}).")


def _check_range(found: LabelRange, num_classes: int, where: str) -> None:
    if found.low is not None and found.low < 0:
        raise DataError(out_of_range_message(found.low, num_classes, where,
                                             data_classes=found.num_classes))
    high = found.high if found.high is not None else (
        found.num_classes - 1 if found.num_classes is not None else None)
    if high is not None and high >= num_classes:
        raise DataError(out_of_range_message(high, num_classes, where,
                                             data_classes=found.num_classes))


def _array_labels(validation_data) -> np.ndarray | None:
    """The labels of `validation_data=(x, y[, sample_weight])` given as arrays, else None."""
    if not isinstance(validation_data, tuple) or len(validation_data) not in (2, 3):
        return None
    y = validation_data[1]
    if not isinstance(y, np.ndarray | list) and not tf.is_tensor(y):
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number):
        return None
    return y


def check_fit_data(num_classes: int, x, validation_data=None) -> None:
    """Raise a DataError before any step for labels known to be outside `[0, num_classes)`.

    Reads the range attached to `x` and to a `validation_data` dataset, and the
    labels of `validation_data` arrays; data without either are checked in
    the step.

    Example:
        >>> check_fit_data(10, bn.data.search_pairs(cifar100, batch_size=64))  # doctest: +SKIP
        DataError: Label 99 (the largest) in the search data is outside the SuperNet's classes ...
    """
    found = attached_label_range(x)
    if found is not None:
        _check_range(found, num_classes, "the search data")
    if isinstance(validation_data, tf.data.Dataset):
        found = attached_label_range(validation_data)
    else:
        y = _array_labels(validation_data)
        found = None if y is None or not len(y) else LabelRange(int(y.min()), int(y.max()))
    if found is not None:
        _check_range(found, num_classes, "the validation_data")


def _sparse(y: tf.Tensor | None) -> bool:
    """Class-index labels: rank 1, or a trailing axis of 1 (not one-hot, not boolean)."""
    return (y is not None and y.shape.rank is not None and y.dtype != tf.bool
            and (y.shape.rank == 1 or (y.shape.rank == 2 and y.shape[-1] == 1)))


def checked(num_classes: int, *labels: tf.Tensor | None,
            where: str = "training batch") -> tuple[tf.Tensor | None, ...]:
    """`labels`, gated by one in-graph assertion that they lie in `[0, num_classes)`.

    Class-index labels (rank 1, or a trailing axis of 1) are checked; others
    (one-hot) and None pass unchanged. A failed assertion raises TensorFlow's
    InvalidArgumentError, which `translate_errors` turns into a DataError.

    Example:
        >>> y_train, y_val = checked(10, y_train, y_val)   # inside a train_step
    """
    sparse = [tf.cast(y, tf.int64) for y in labels if _sparse(y)]
    if not sparse:
        return labels
    low = tf.reduce_min(tf.stack([tf.reduce_min(y) for y in sparse]))
    high = tf.reduce_max(tf.stack([tf.reduce_max(y) for y in sparse]))
    ok = tf.debugging.Assert(tf.logical_and(low >= 0, high < num_classes),
                             [_MARKER, where, low, high])
    with tf.control_dependencies([ok]):
        return tuple(tf.identity(y) if _sparse(y) else y for y in labels)


@contextlib.contextmanager
def translate_errors(num_classes: int) -> Iterator[None]:
    """Turn a failed label check (or TensorFlow's own label error) into a DataError.

    Example:
        >>> with translate_errors(net.num_classes):
        ...     tf.keras.Model.fit(net, pairs)             # doctest: +SKIP
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = error.message or ""
        match = _ASSERTION.search(message)
        if match:
            where, low, high = match.group(1), int(match.group(2)), int(match.group(3))
            label = low if low < 0 else high
            raise DataError(out_of_range_message(label, num_classes, f"a {where}")
                            + " (Found during fit: the data carry no label range, so the "
                              "labels were checked batch by batch.)") from None
        match = _TF_LABEL_ERROR.search(message)
        if match:
            raise DataError(out_of_range_message(int(match.group(1)), int(match.group(2)),
                                                 "a batch", largest=False)) from None
        raise
