"""tf.data pipelines: `make_dataset` (fit/evaluate batches) and `search_pairs` (bilevel search).

Both take an `ImageData`, a `StreamingData` or arrays `(x, y)`. In-memory
images are sliced from the arrays (the fast path for CIFAR/MNIST-sized data);
streamed images are read, decoded and preprocessed in parallel as the epoch
runs, with only the next batches prefetched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from bnas_tf import labels
from bnas_tf.data import checks
from bnas_tf.data.core import ImageData, Split, StreamingData
from bnas_tf.data.normalization import resolve_stats, stats_for_arrays
from bnas_tf.data.transforms import PREPROCESSING_STYLES, decode, resize, transform
from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

Normalization = ImageData | StreamingData | tuple[Sequence[float], Sequence[float]]


def make_dataset(
    data_or_x: ImageData | StreamingData | np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 64,
    training: bool = False,
    augment: bool | None = None,
    seed: int = 0,
    split: str | None = None,
    normalization: Normalization | None = None,
    num_classes: int | None = None,
    drop_remainder: bool = False,
    image_size: int | tuple[int, int] | None = None,
    preprocessing: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of `(normalized float32 images, int64 labels)` for fit/evaluate.

    uint8 images are normalized with `normalization` (default: the dataset's
    statistics, or statistics computed from `x`); float images are used as
    given. Training data are reshuffled every epoch (seeded). Preprocessing
    follows `preprocessing` (see `bnas_tf.data.transforms`): "cifar" pads by
    4 pixels and crops at random, "imagenet" takes a random-resized crop for
    training and a center crop for evaluation; both flip RGB images at random
    when augmenting (1-channel images are not flipped).

    Args:
        data_or_x: an `ImageData`, a `StreamingData`, or images
            `(N, height, width, channels)`.
        y: labels `(N,)` when `data_or_x` is an array; omit otherwise.
        batch_size: images per batch (the global batch under a strategy).
        training: shuffle (and by default augment).
        augment: random crops and flips; None means `training`.
        seed: seed of the shuffle and the augmentation.
        split: "train" or "test" for a dataset; default "train" if `training`
            else "test".
        normalization: a dataset or `(mean, std)` per channel.
        num_classes: label range to check for arrays (a dataset knows it).
        drop_remainder: drop the last partial batch (static batch shape).
        image_size: `(height, width)` (or one int) to resize/crop to; default
            the stored size (arrays) or the dataset's `image_size` (streamed).
        preprocessing: "cifar" or "imagenet"; default "cifar" for arrays and
            `ImageData`, "imagenet" for `StreamingData`.
        input_context: from `strategy.distribute_datasets_from_function`: read
            only this input pipeline's share of the images (streamed data:
            its share of the files) and batch per replica.

    Returns:
        A prefetched `tf.data.Dataset`.

    Raises:
        DataError: bad image rank or dtype, non-finite pixels, labels out of
            range or mismatched, no images, bad sizes or names.

    Example:
        >>> data = synthetic(64, 16, image_shape=(8, 8, 3))
        >>> ds = make_dataset(data, batch_size=16, training=True)
        >>> [tuple(t.shape) for t in next(iter(ds))]
        [(16, 8, 8, 3), (16,)]
    """
    batch_size = checks.check_batch_size(batch_size)
    size = checks.check_image_size(image_size)
    augment = training if augment is None else bool(augment)
    split = split or ("train" if training else "test")
    per_batch, shard = _distribution(batch_size, input_context)
    if isinstance(data_or_x, StreamingData):
        data = _check_dataset_args(data_or_x, y, split)
        part = data.train if split == "train" else data.test
        return labels.attach_label_range(_stream(
            part, data, batch_size=per_batch, shuffle=training, augment=augment, seed=seed,
            stats=resolve_stats(normalization or data, data.channels),
            size=size or data.image_size, style=_style(preprocessing, "imagenet"),
            drop_remainder=drop_remainder, shard=shard,
        ), num_classes=data.num_classes)
    x, y, normalization = _arrays(data_or_x, y, split, num_classes, normalization)
    if training and len(np.unique(y)) < 2:
        log.warning("All %d training labels are %d: a single class trains nothing useful.",
                    len(y), y[0])
    return labels.attach_label_range(_array_pipeline(
        x, y, batch_size=per_batch, shuffle=training, augment=augment, seed=seed,
        stats=stats_for_arrays(x, normalization), size=size,
        style=_style(preprocessing, "cifar"), drop_remainder=drop_remainder, shard=shard,
    ), y, _classes(data_or_x, num_classes))


def search_pairs(
    x: ImageData | StreamingData | np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 64,
    num_classes: int | None = None,
    normalization: Normalization | None = None,
    augment: bool = False,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    preprocessing: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Paired batches `((x_train, y_train), (x_val, y_val))` for a bilevel search.

    The training data are split (seeded) into two disjoint halves: weights
    train on the first, architecture parameters on the second, as in DARTS.
    One epoch is one pass over a half; both halves are reshuffled every epoch
    and batched with `drop_remainder=True`, so batch shapes are static.

    Args:
        x: an `ImageData` or `StreamingData` (its training split is used) or
            images `(N, height, width, channels)`: uint8 (normalized here) or
            float (used as given).
        y: labels `(N,)`; omit for a dataset.
        batch_size: images per batch in each half.
        num_classes: label range to check for arrays.
        normalization: a dataset or `(mean, std)`; default: the dataset's
            statistics, or statistics computed from `x`.
        augment: augment both halves as `make_dataset` does.
        seed: seed of the split, shuffles and augmentation.
        image_size: as in `make_dataset`.
        preprocessing: as in `make_dataset`.
        input_context: as in `make_dataset`.

    Returns:
        A prefetched `tf.data.Dataset` of nested tuples, carrying the range of
        its labels, which `SuperNet.fit` checks before its first step
        (`bnas_tf.labels`).

    Raises:
        DataError: a half holds fewer than `batch_size` samples, or as in
            `make_dataset`.

    Example:
        >>> data = synthetic(64, 16, image_shape=(8, 8, 3))
        >>> (xt, yt), (xv, yv) = next(iter(search_pairs(data, batch_size=16)))
        >>> xt.shape, xv.shape
        (TensorShape([16, 8, 8, 3]), TensorShape([16, 8, 8, 3]))
    """
    batch_size = checks.check_batch_size(batch_size)
    size = checks.check_image_size(image_size)
    per_batch, shard = _distribution(batch_size, input_context)
    if isinstance(x, StreamingData):
        data = _check_dataset_args(x, y, "train")
        count = len(data.train)
    else:
        num_classes = _classes(x, num_classes)
        x, y, normalization = _arrays(x, y, "train", num_classes, normalization)
        count = len(x)
    half = count // 2
    if half < batch_size:
        raise DataError(
            f"search_pairs splits the data into two halves of {half} samples, fewer than "
            f"batch_size={batch_size}. Use a batch_size <= {max(half, 1)} or more data "
            f"(at least {2 * batch_size} samples)."
        )
    order = np.random.default_rng(seed).permutation(count)
    if isinstance(x, StreamingData):
        halves_idx = (np.sort(order[:half]), np.sort(order[half : 2 * half]))
        stats = resolve_stats(normalization or data, data.channels)
        halves = [
            _stream(
                data.train.take(idx), data, batch_size=per_batch, shuffle=True, augment=augment,
                seed=seed + k, stats=stats, size=size or data.image_size,
                style=_style(preprocessing, "imagenet"), drop_remainder=True, shard=shard,
                prefetch=False,
            )
            for k, idx in enumerate(halves_idx)
        ]
    else:
        stats = stats_for_arrays(x, normalization)
        halves = [
            _array_pipeline(
                x[idx],
                y[idx],
                batch_size=per_batch, shuffle=True, augment=augment, seed=seed + k,
                stats=stats, size=size, style=_style(preprocessing, "cifar"),
                drop_remainder=True, shard=shard, prefetch=False,
            )
            for k, idx in enumerate((order[:half], order[half : 2 * half]))  # as before: unsorted
        ]
    pairs = tf.data.Dataset.zip(tuple(halves)).prefetch(tf.data.AUTOTUNE)
    # the label range SuperNet.fit checks against its num_classes before the first step
    if isinstance(x, StreamingData):  # its labels are indices of its classes
        return labels.attach_label_range(pairs, num_classes=data.num_classes)
    return labels.attach_label_range(pairs, y[order[: 2 * half]], num_classes)


def decoded_arrays(
    part: Split,
    size: tuple[int, int],
    channels: int,
    *,
    batch: int = 256,
    as_batches: bool = False,
) -> tuple[np.ndarray, np.ndarray] | Iterator[np.ndarray]:
    """Decode a split resized to `size` into uint8 arrays (or, `as_batches`, yield image batches)."""

    def load(contents, seeds):
        return tf.ensure_shape(resize(decode(contents, channels), size), (*size, channels))

    ds = part.images(load, shuffle=False, seed=0, shard=None).batch(batch)
    ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y))
    if as_batches:
        return (x for x, _ in _batches(ds, part))
    x = np.empty((len(part), *size, channels), np.uint8)
    y = np.empty(len(part), np.int64)
    filled = 0
    for xb, yb in _batches(ds, part):
        x[filled : filled + len(xb)] = xb
        y[filled : filled + len(yb)] = yb
        filled += len(xb)
    return x[:filled], y[:filled]


def _batches(ds: tf.data.Dataset, part: Split) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate in Python, turning a failed read or decode into a DataError naming the file."""
    iterator = ds.as_numpy_iterator()
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            message = checks.tf_message(e)
            if "image file(s)" not in message:  # not our own message naming the files
                message = f"Could not decode an image of {part.describe()}: {message}"
            raise DataError(message) from None


# --------------------------------------------------------------------------- internals


def _style(preprocessing: str | None, default: str) -> str:
    return checks.check_choice(preprocessing or default, PREPROCESSING_STYLES, "preprocessing")


def _distribution(batch_size: int, input_context) -> tuple[int, tuple[int, int] | None]:
    if input_context is None:
        return batch_size, None
    per_replica = input_context.get_per_replica_batch_size(batch_size)
    shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
    return per_replica, (shard if shard[0] > 1 else None)


def _check_dataset_args(data, y, split: str):
    if y is not None:
        raise DataError("Pass labels only with image arrays; a dataset carries its own.")
    checks.check_choice(split, ("train", "test"), "split")
    return data


def _arrays(data_or_x, y, split: str, num_classes: int | None, normalization):
    """Resolve (x, y, normalization) from an ImageData or from arrays, validated."""
    if isinstance(data_or_x, ImageData):
        data = _check_dataset_args(data_or_x, y, split)
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        normalization = normalization if normalization is not None else data
    else:
        if y is None:
            raise DataError("Expected labels y with image arrays (or pass an ImageData).")
        num_classes = checks.check_num_classes(num_classes)
        x = checks.check_images(data_or_x)
        y = checks.check_labels(y, len(x), num_classes)
    if len(x) == 0:
        raise DataError(f"No images in the {split} data: pass at least one image.")
    return x, y, normalization


def _classes(data_or_x, num_classes: int | None) -> int | None:
    """The class count of a dataset, or the `num_classes` given with arrays (checked)."""
    if isinstance(data_or_x, ImageData):
        return data_or_x.num_classes
    return checks.check_num_classes(num_classes)


def _seeds(seed: int) -> tf.data.Dataset:
    """Two stateless seeds per element, new every epoch: int64 `(2, 2)`."""
    random = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return random.batch(4).map(lambda s: tf.reshape(s, (2, 2)))


def _normalizer(stats):
    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if stats is not None:
            images = (images / 255.0 - stats[0]) / stats[1]
        return images, labels

    return to_float


def _array_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray] | None,
    size: tuple[int, int] | None,
    style: str,
    drop_remainder: bool,
    shard: tuple[int, int] | None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    if style == "imagenet" and size is None:
        size = tuple(int(d) for d in x.shape[1:3])
    if size == tuple(x.shape[1:3]) and style == "cifar":
        size = None  # already the right size
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shard is not None:
        ds = ds.shard(*shard)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment or size is not None or style == "imagenet":
        flip = x.shape[-1] == 3
        ds = tf.data.Dataset.zip((ds, _seeds(seed))).map(
            lambda xy, s: (
                transform(xy[0], s, style=style, size=size, training=augment, flip=flip),
                xy[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(_normalizer(stats), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def _stream(
    part: Split,
    data: StreamingData,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray],
    size: tuple[int, int],
    style: str,
    drop_remainder: bool,
    shard: tuple[int, int] | None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    if len(part) == 0:
        raise DataError(f"No images in {part.describe()}.")
    channels = data.channels

    def load(contents: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        image = decode(contents, channels)
        image = transform(image, seeds, style=style, size=size, training=augment,
                          flip=channels == 3)
        return tf.ensure_shape(image, (*size, channels))

    ds = part.images(load, shuffle=shuffle, seed=seed, shard=shard)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(_normalizer(stats), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Images are read by file name inside a map, so tf.data cannot shard by file: shard by
    # element (each worker keeps its share); pass input_context to shard the file list instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds
