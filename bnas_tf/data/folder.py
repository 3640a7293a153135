"""Image folders `DIR/{train,test}/<class>/<image>`: streamed (default) or loaded into memory."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf.data import checks
from bnas_tf.data.core import ImageData, StreamingData
from bnas_tf.data.normalization import channel_stats, parse_stats
from bnas_tf.data.transforms import decode
from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
STATS_SAMPLE = 500
"""Training images decoded to estimate normalization statistics of a streamed folder."""

_LISTED = 10


@dataclass(frozen=True, eq=False)
class FileList:
    """A split of a streamed image folder: file paths and their labels.

    Attributes:
        paths: file paths (numpy array of str).
        labels: int64 labels.
        where: the folder, for messages.
        bad_files: "raise" or "skip": what an image that fails to decode during
            the epoch does (it passed the load-time check, so this is rare).
    """

    paths: np.ndarray
    labels: np.ndarray
    where: str = ""
    bad_files: str = "raise"

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: np.ndarray) -> FileList:
        indices = np.asarray(indices, np.int64)
        return FileList(self.paths[indices], self.labels[indices], self.where, self.bad_files)

    def describe(self) -> str:
        return self.where

    def images(
        self,
        load: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        *,
        shuffle: bool,
        seed: int,
        shard: tuple[int, int] | None,
    ) -> tf.data.Dataset:
        """`(image, label)` pairs read, decoded (in parallel) and checked as the epoch runs.

        The epoch order is a stateless permutation of the file list, keyed by
        a per-epoch seed, so a failed image can be named without keeping any
        state: decoding errors are dropped (`ignore_errors`), a `scan` notices
        the missing position and recomputes which file sat there, then raises
        (or, with `bad_files="skip"`, prints a warning naming the file).
        """
        paths, labels = self.paths, self.labels
        if shard is not None:
            count, index = shard
            paths, labels = paths[index::count], labels[index::count]
        n = len(paths)
        if n == 0:
            raise DataError(f"No images to read in {self.where} (after sharding).")
        paths_t = tf.constant(paths.tolist(), tf.string)
        labels_t = tf.constant(labels, tf.int64)
        base_seed = tf.constant(seed, tf.int64)
        skip = self.bad_files == "skip"

        def order(epoch_seed: tf.Tensor) -> tf.Tensor:
            index = tf.range(n, dtype=tf.int64)
            if not shuffle:
                return index
            key = tf.stack([epoch_seed, base_seed])
            return tf.random.experimental.stateless_shuffle(index, seed=key)

        def read(epoch_seed, position, index):
            seeds = tf.stack([
                tf.stack([epoch_seed, 2 * position]),
                tf.stack([epoch_seed, 2 * position + 1]),
            ])  # fmt: skip
            image = load(tf.io.read_file(tf.gather(paths_t, index)), seeds)
            return image, tf.gather(labels_t, index), position

        def check(epoch_seed, expected, element):
            _, _, position = element
            ok = tf.equal(position, expected)

            def report():
                missing = tf.gather(order(epoch_seed), tf.range(expected, position))
                names = tf.strings.reduce_join(
                    tf.gather(paths_t, missing[:_LISTED]), separator=", "
                )
                count = tf.strings.as_string(position - expected)
                if skip:
                    done = tf.print(tf.strings.join([
                        "WARNING bnas_tf.data: skipped ", count, " image file(s) in ", self.where,
                        " that could not be read or decoded: ", names,
                    ]), output_stream=sys.stderr)  # fmt: skip
                else:
                    message = tf.strings.join([
                        "bnas_tf.data: could not read or decode ", count, " image file(s) in ",
                        self.where, ": ", names, " (they passed the header check at load "
                        "time). Remove or re-save them; load with verify='decode' to find every "
                        "broken file up front, or with bad_files='skip' to leave such files out.",
                    ])  # fmt: skip
                    done = tf.debugging.Assert(ok, [message], summarize=1)
                with tf.control_dependencies([done]):
                    return tf.identity(position + 1)

            following = tf.cond(ok, lambda: position + 1, report)
            return following, element

        def epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
            positions = tf.data.Dataset.from_tensor_slices(
                (tf.range(n, dtype=tf.int64), order(epoch_seed))
            )
            decoded = positions.map(
                lambda position, index: read(epoch_seed, position, index),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            ).ignore_errors()
            spec = decoded.element_spec[0]
            end = tf.data.Dataset.from_tensors(
                (tf.zeros(spec.shape, spec.dtype), tf.constant(-1, tf.int64),
                 tf.constant(n, tf.int64))
            )  # fmt: skip
            checked = decoded.concatenate(end).scan(
                tf.constant(0, tf.int64), lambda expected, e: check(epoch_seed, expected, e)
            )
            return checked.filter(lambda image, label, position: position < n).map(
                lambda image, label, position: (image, label)
            )

        epochs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        return epochs.flat_map(epoch)


def _first_size(path: str) -> tuple[int, int] | None:
    """(height, width) from the header of the first training file, if it tells."""
    info, _ = checks.sniff(path)
    return (info.height, info.width) if info is not None and info.height else None


def _list_split(split_dir: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    folders = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        raise DataError(
            f"{split_dir} has class folders {unknown} that train/ lacks. "
            "Give train/ and test/ the same class folders."
        )
    label_of = {name: i for i, name in enumerate(class_names)}
    paths, labels = [], []
    for name in folders:
        files = sorted(
            e.name
            for e in os.scandir(split_dir / name)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
        paths += [os.path.join(split_dir, name, f) for f in files]
        labels += [label_of[name]] * len(files)
    if not paths:
        raise DataError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of "
            f"{split_dir}. Expected {split_dir}/<class>/<image>."
        )
    return np.asarray(paths, dtype=object), np.asarray(labels, np.int64)


@dataclass(frozen=True)
class _Folder:
    train: FileList
    test: FileList
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    channels: int


def _scan_folder(
    directory, *, image_size, verify: str, bad_files: str
) -> _Folder:
    """List, check and size an image folder (see `stream_image_folder`)."""
    checks.check_choice(verify, checks.VERIFY_MODES, "verify")
    checks.check_choice(bad_files, checks.BAD_FILE_POLICIES, "bad_files")
    image_size = checks.check_image_size(image_size)
    root = Path(directory).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(
                f"Expected an image folder {root / split} (layout: {root}/train/<class>/*.jpg "
                f"and {root}/test/<class>/*.jpg). Point data_dir at the folder holding both."
            )
    class_names = sorted(e.name for e in os.scandir(root / "train") if e.is_dir())
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        raise DataError(
            f"Expected at least 2 class folders in {root / 'train'}, found {found}. An image "
            "classifier needs one folder per class (train/<class>/<image>): add a folder for "
            "each other class."
        )
    splits, mismatch = {}, None
    reference = None if image_size is not None else "first"
    for split in ("train", "test"):
        paths, labels = _list_split(root / split, class_names)
        if reference == "first":
            reference = _first_size(str(paths[0]))
        bad, keep = {}, np.ones(len(paths), bool)
        if verify == "decode":
            bad = checks.decode_failures(paths.tolist(), 3)
        elif verify == "header":
            for i, info, problem in checks.scan_files(paths):
                if problem is not None:
                    error = checks.decode_error(paths[i], 3)
                    if error is not None:
                        bad[paths[i]] = f"{problem}; TensorFlow: {error}"
                        continue
                if (mismatch is None and reference is not None and info is not None
                        and info.height and (info.height, info.width) != reference):
                    mismatch = (paths[i], (info.height, info.width))
        if bad:
            checks.report_bad_files(bad, bad_files, str(root / split))
            keep = np.array([p not in bad for p in paths])
        where = str(root / split)
        splits[split] = FileList(paths[keep], labels[keep], where, bad_files)
        if not len(splits[split]):
            raise DataError(f"No decodable images left in {where}.")
    train, test = splits["train"], splits["test"]
    checks.check_class_counts(train.labels, class_names, str(root / "train"))
    first = str(train.paths[0])
    try:
        image = decode(tf.io.read_file(first), 0)
    except tf.errors.OpError as e:
        raise DataError(f"Could not decode {first}: {checks.tf_message(e)}. Remove or re-save "
                        "it.") from e
    channels = 1 if image.shape[-1] in (1, 2) else 3  # gray(+alpha) -> 1, else RGB
    if image_size is None:
        image_size = (int(image.shape[0]), int(image.shape[1]))
        if mismatch is not None:
            path, (height, width) = mismatch
            raise DataError(
                f"{path} is {width}x{height} but the first image is "
                f"{image_size[1]}x{image_size[0]}. Pass image_size=(height, width) to "
                "resize all images."
            )
    return _Folder(train, test, tuple(class_names), image_size, channels)


def stream_image_folder(
    directory: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    verify: str = "header",
    bad_files: str = "raise",
    stats=None,
    seed: int = 0,
) -> StreamingData:
    """Describe `directory/{train,test}/<class>/<image>` for streaming; decode nothing yet.

    Class names are the sorted subfolder names of `train/` (labels follow that
    order); `test/` may hold the same classes or a subset. Images (jpg, jpeg,
    png, bmp, gif) are listed class by class, files sorted by name. Channels
    follow the first training image: grayscale gives 1 channel, anything else
    3 (RGB).

    Args:
        directory: folder with `train/` and `test/` subfolders.
        image_size: `(height, width)` (or one int) the pipelines resize or crop
            images to. None: the size of the first training image, and every
            header must show that size.
        verify: "header" (default) checks each file's header and end marker
            without decoding it, decoding only suspicious files; "decode"
            decodes every file (slow for large folders); "none" only lists.
        bad_files: "raise" (default) a DataError naming undecodable files, or
            "skip" them with a warning that lists them.
        stats: per-channel normalization: None estimates it from
            `STATS_SAMPLE` training images (seeded), a dataset name uses its
            standard constants ("imagenet", "cifar10", ...), or a
            `(mean, std)` pair.
        seed: seed of the statistics sample.

    Returns:
        A `StreamingData` named "folder".

    Raises:
        DataError: missing folders, fewer than 2 classes, no images, unknown
            test classes, undecodable files (unless skipped), images of
            different sizes without `image_size`.

    Example:
        >>> data = stream_image_folder("flowers", image_size=64)  # doctest: +SKIP
        >>> data.input_shape
        (64, 64, 3)
    """
    folder = _scan_folder(directory, image_size=image_size, verify=verify, bad_files=bad_files)
    if stats is None:
        sample = folder.train.take(_sample(len(folder.train), seed))
        from bnas_tf.data.pipeline import decoded_arrays

        mean, std = channel_stats(
            decoded_arrays(sample, folder.image_size, folder.channels, batch=64, as_batches=True)
        )
    else:
        mean, std = parse_stats(stats, folder.channels)
    return StreamingData(
        folder.train, folder.test, name="folder", class_names=folder.class_names,
        image_size=folder.image_size, channels=folder.channels, mean=mean, std=std,
    )


def _sample(n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:STATS_SAMPLE])


def load_image_folder(
    directory: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    bad_files: str = "raise",
) -> ImageData:
    """Load `directory/{train,test}/<class>/<image>` into memory.

    The same layout and checks as `stream_image_folder`, but every image is
    decoded now into an `ImageData` (stored class by class, files sorted by
    name), with statistics computed from `x_train`. For folders that do not
    fit in memory use `stream_image_folder` (what `load("folder", ...)` does).

    Args:
        directory: folder with `train/` and `test/` subfolders.
        image_size: `(height, width)` (or one int) to resize every image to.
            None requires all images to have the size of the first training
            image.
        bad_files: "raise" or "skip", as for `stream_image_folder`.

    Returns:
        The dataset, named "folder".

    Raises:
        DataError: as `stream_image_folder`.

    Example:
        >>> load_image_folder("flowers", image_size=(64, 64)).input_shape  # doctest: +SKIP
        (64, 64, 3)
    """
    from bnas_tf.data.pipeline import decoded_arrays

    folder = _scan_folder(directory, image_size=image_size, verify="header", bad_files=bad_files)
    x_train, y_train = decoded_arrays(folder.train, folder.image_size, folder.channels)
    x_test, y_test = decoded_arrays(folder.test, folder.image_size, folder.channels)
    return ImageData(
        x_train, y_train, x_test, y_test, name="folder", class_names=folder.class_names
    )
