"""The two dataset descriptions: `ImageData` (arrays in memory) and `StreamingData`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import tensorflow as tf

from bnas_tf.data import checks
from bnas_tf.data.normalization import channel_stats
from bnas_tf.errors import DataError


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """An image-classification dataset held in memory.

    Arrays are validated (and labels converted to int64) at construction, so a
    malformed dataset fails here rather than inside a training step.

    Attributes:
        x_train: uint8 images, shape `(N, height, width, channels)`.
        y_train: int64 labels in `[0, num_classes)`, shape `(N,)`.
        x_test: uint8 images with the same height, width and channels.
        y_test: int64 labels, shape `(M,)`.
        name: dataset name, e.g. `"cifar10"`.
        class_names: one name per class, in label order (at least 2).
        mean: per-channel mean of pixels scaled to [0, 1]; computed from
            `x_train` when None.
        std: per-channel standard deviation, likewise.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((4, 8, 8, 3), np.uint8)
        >>> d = ImageData(x, np.array([0, 1, 0, 1]), x[:2], np.array([1, 0]),
        ...               name="tiny", class_names=("a", "b"))
        >>> d.num_classes, d.input_shape
        (2, (8, 8, 3))
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalize fields once, here
        set_(self, "x_train", checks.check_uint8_images(self.x_train, "x_train"))
        set_(self, "x_test", checks.check_uint8_images(self.x_test, "x_test"))
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(
                f"Expected x_test images of shape {self.x_train.shape[1:]} like x_train, "
                f"got {self.x_test.shape[1:]}. Resize one split to match the other."
            )
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        n = checks.check_num_classes(len(self.class_names), "len(class_names)")
        set_(self, "y_train", checks.check_labels(self.y_train, len(self.x_train), n, "y_train"))
        set_(self, "y_test", checks.check_labels(self.y_test, len(self.x_test), n, "y_test"))
        if self.mean is None or self.std is None:
            mean, std = channel_stats(self.x_train)
            set_(self, "mean", self.mean if self.mean is not None else mean)
            set_(self, "std", self.std if self.std is not None else std)
        mean, std = checks.check_stats(self.mean, self.std, self.x_train.shape[-1])
        set_(self, "mean", mean)
        set_(self, "std", std)

    @property
    def num_classes(self) -> int:
        """Number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, `(height, width, channels)`."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def arrays(self, split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(uint8 images, int64 labels)` of a split, the first `limit` of them.

        Works the same on a `StreamingData` (which decodes them), so code that
        needs a few images as arrays accepts both kinds of dataset.
        """
        checks.check_choice(split, ("train", "test"), "split")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return x[:limit], y[:limit]

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


class Split(Protocol):
    """One split of a `StreamingData`: a list of encoded images and their labels."""

    labels: np.ndarray  # int64, one per image (may be read lazily)

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> Split:
        """The images at `indices` (sorted, unique)."""

    def images(
        self,
        load: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        *,
        shuffle: bool,
        seed: int,
        shard: tuple[int, int] | None,
    ) -> tf.data.Dataset:
        """`(image, label)` pairs, `load(contents, seeds)` applied to each encoded image.

        `seeds` is int64 `(2, 2)`, different for every image and epoch; `shard`
        is `(num_shards, index)` to read only every `num_shards`-th image.
        """

    def describe(self) -> str:
        """Where the images come from, for messages."""


@dataclass(frozen=True, eq=False, repr=False)
class StreamingData:
    """An image-classification dataset read and decoded by tf.data as the epoch runs.

    Only file names (or record indices) and labels are held in memory, so
    memory does not grow with the number of images. `bnas_tf.data.load`
    returns one for "folder" and "tfds:NAME"; `make_dataset`, `search_pairs`
    and `holdout` accept it wherever they accept an `ImageData`.

    Attributes:
        train: the training split (a file list or TFDS records).
        test: the test split.
        name: dataset name.
        class_names: one name per class, in label order (at least 2).
        image_size: `(height, width)` images are resized or cropped to.
        channels: 1 (gray) or 3 (RGB).
        mean: per-channel mean of pixels scaled to [0, 1].
        std: per-channel standard deviation.

    Example:
        >>> data = bnas_tf.data.load("folder", "DIR", image_size=64)  # doctest: +SKIP
        >>> data.input_shape
        (64, 64, 3)
        >>> train = bnas_tf.data.make_dataset(data, batch_size=64, training=True)  # doctest: +SKIP
    """

    train: Split
    test: Split
    name: str
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        checks.check_num_classes(len(self.class_names), "len(class_names)")
        set_(self, "image_size", checks.check_image_size(self.image_size))
        if self.channels not in (1, 3):
            raise DataError(f"Expected 1 or 3 channels, got {self.channels}.")
        mean, std = checks.check_stats(self.mean, self.std, self.channels)
        set_(self, "mean", mean)
        set_(self, "std", std)

    @property
    def num_classes(self) -> int:
        """Number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image, `(height, width, channels)`."""
        return (*self.image_size, self.channels)

    @property
    def y_train(self) -> np.ndarray:
        """Labels of the training split (read on first use for TFDS)."""
        return self.train.labels

    @property
    def y_test(self) -> np.ndarray:
        """Labels of the test split."""
        return self.test.labels

    def arrays(self, split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode the first `limit` images of a split: `(uint8 images, int64 labels)`.

        Images are resized to `image_size` (no crop). Everything asked for is
        held in memory: keep `limit` small for large datasets.
        """
        from bnas_tf.data.pipeline import decoded_arrays

        checks.check_choice(split, ("train", "test"), "split")
        part = self.train if split == "train" else self.test
        if limit is not None:
            part = part.take(np.arange(min(int(limit), len(part))))
        return decoded_arrays(part, self.image_size, self.channels)

    def to_memory(self) -> ImageData:
        """Decode every image into an `ImageData` (for datasets that fit in memory)."""
        x_train, y_train = self.arrays("train")
        x_test, y_test = self.arrays("test")
        return ImageData(
            x_train, y_train, x_test, y_test, name=self.name, class_names=self.class_names,
            mean=self.mean, std=self.std,
        )

    def __repr__(self) -> str:
        return (
            f"StreamingData(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )
