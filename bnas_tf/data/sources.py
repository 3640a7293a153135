"""Dataset sources: `load` by name, the standard array layouts, a synthetic set.

In memory (`ImageData`): CIFAR-10/100 from the official python layouts,
(Fashion-)MNIST from IDX files or Keras' `mnist.npz`, and `synthetic`.
Streamed (`StreamingData`): image folders (`bnas_tf.data.folder`) and
TensorFlow Datasets (`bnas_tf.data.tfds_source`).
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
from pathlib import Path

import numpy as np

from bnas_tf.data import checks
from bnas_tf.data import download as layouts
from bnas_tf.data.core import ImageData, StreamingData
from bnas_tf.data.folder import load_image_folder, stream_image_folder
from bnas_tf.data.normalization import STANDARD_STATS
from bnas_tf.data.splits import subset
from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "mnist", "folder", "synthetic")
"""Names accepted by `load`, besides "tfds:NAME" (any TensorFlow Datasets name)."""

TFDS_PREFIX = "tfds:"

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    download: bool = True,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    in_memory: bool = False,
    verify: str = "header",
    bad_files: str = "raise",
    stats=None,
) -> ImageData | StreamingData:
    """Load a dataset by name, optionally a small fixed subset of it.

    CIFAR, (Fashion-)MNIST and "synthetic" are loaded into memory
    (`ImageData`). An image "folder" and "tfds:NAME" are described for
    streaming (`StreamingData`): files are listed and checked now, images are
    decoded by tf.data while the epoch runs, so memory does not grow with the
    number of images. `make_dataset`, `search_pairs` and `holdout` accept both.

    Args:
        name: one of `DATASET_NAMES`: "cifar10", "cifar100", "fashion_mnist",
            "mnist", "folder" (see `stream_image_folder`), "synthetic" (see
            `synthetic`), or "tfds:NAME" for a TensorFlow Datasets dataset
            prepared in `data_dir` (see `load_tfds`).
        data_dir: where to look for (and download) the data; each loader
            documents its default. Required for "folder"; ignored for
            "synthetic".
        limit: keep `limit` training and `limit // 5` test images, chosen by a
            seeded shuffle that takes the classes in turn (same subset every
            time, classes balanced as far as the data allows); for "tfds:" the
            first records of each split (TFDS stores them shuffled). None
            keeps all.
        download: download missing files from the official origin (for
            "tfds:", run the TFDS builder's `download_and_prepare`).
        seed: seed of the subset (and of the synthetic images).
        image_size: `(height, width)` (or one int) that "folder" and "tfds:"
            images are resized or cropped to; default the stored size.
        in_memory: decode a "folder" or "tfds:" dataset into an `ImageData`
            now (the behaviour of `load("folder")` before streaming).
        verify: how "folder" files are checked now: "header" (every file's
            header and end marker, no decoding), "decode" (decode every file)
            or "none". See `bnas_tf.data`.
        bad_files: "raise" (a DataError naming undecodable files) or "skip"
            (leave them out, with a warning listing them).
        stats: normalization of streamed data: None (standard constants when
            the dataset has them, else estimated from a sample), a dataset
            name such as "imagenet", or a `(mean, std)` pair.

    Returns:
        An `ImageData` or a `StreamingData`.

    Raises:
        DataError: unknown name, missing or malformed data, bad `limit`,
            unreadable image files, fewer than 2 classes.

    Example:
        >>> data = load("synthetic", limit=50)
        >>> len(data.x_train), len(data.x_test)
        (50, 10)
    """
    text = str(name)
    key = text.lower().replace("-", "_")
    is_tfds = key.startswith(TFDS_PREFIX)
    if key not in DATASET_NAMES and not is_tfds:
        raise DataError(
            f"Unknown dataset {name!r}. Expected one of {', '.join(DATASET_NAMES)}, or "
            "tfds:NAME for a TensorFlow Datasets dataset; for your own images use 'folder' "
            "with data_dir holding train/ and test/."
        )
    streamed = is_tfds or key == "folder"
    if image_size is not None and not streamed:
        raise DataError(
            f"image_size applies only to 'folder' and 'tfds:' datasets, got it with {key!r}. "
            "Drop image_size, or pass it to make_dataset/search_pairs to resize there."
        )
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 5):
        raise DataError(
            f"Expected limit >= 5 (it keeps limit training and limit // 5 test images), "
            f"got {limit!r}. Pass a larger limit, or None for the whole dataset."
        )
    checks.check_choice(bad_files, checks.BAD_FILE_POLICIES, "bad_files")
    if key == "synthetic":
        if limit is None:
            return synthetic(seed=seed)
        return synthetic(limit, limit // 5, seed=seed)
    if is_tfds:
        from bnas_tf.data.tfds_source import load_tfds

        data = load_tfds(
            text[len(TFDS_PREFIX):], data_dir, image_size=image_size, limit=limit,
            download=download, stats=stats,
        )
        return data.to_memory() if in_memory else data
    if key == "folder":
        if data_dir is None:
            raise DataError(
                "The 'folder' dataset needs data_dir: a directory with train/<class>/ "
                "and test/<class>/ image folders. Pass data_dir (--data-dir)."
            )
        if in_memory:
            data = load_image_folder(data_dir, image_size=image_size, bad_files=bad_files)
        else:
            data = stream_image_folder(
                data_dir, image_size=image_size, verify=verify, bad_files=bad_files,
                stats=stats, seed=seed,
            )
    else:
        loaders = {
            "cifar10": load_cifar10,
            "cifar100": load_cifar100,
            "fashion_mnist": load_fashion_mnist,
            "mnist": load_mnist,
        }
        data = loaders[key](data_dir, download=download)
    return data if limit is None else subset(data, limit, seed)


# --------------------------------------------------------------------------- CIFAR


def load_cifar10(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> ImageData:
    """Load CIFAR-10 from the official python layout `cifar-10-batches-py/`.

    The layout (data_batch_1..5, test_batch, batches.meta) is found at
    `data_dir/cifar-10-batches-py` or in `data_dir` itself. When missing and
    `download` is True, `cifar-10-python.tar.gz` is downloaded from the
    official origin with `tf.keras.utils.get_file` and unpacked into `data_dir`.

    Args:
        data_dir: folder holding (or to receive) the layout; default
            `~/.keras/datasets`, where Keras keeps it too.
        download: download the archive when the layout is missing.

    Returns:
        50,000 train and 10,000 test images of shape (32, 32, 3).

    Raises:
        DataError: the layout is missing (and could not be downloaded) or a
            batch file is missing or malformed.

    Example:
        >>> load_cifar10("~/data").x_train.shape  # doctest: +SKIP
        (50000, 32, 32, 3)
    """
    root = layouts.resolve_root(data_dir, layouts.keras_cache_dir())
    folder = layouts.obtain(layouts.CIFAR10, root, download)
    parts = [_read_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _read_cifar_batch(folder / "test_batch", "labels")
    names = _read_pickle(folder / "batches.meta").get(b"label_names", CIFAR10_CLASSES)
    mean, std = STANDARD_STATS["cifar10"]
    return ImageData(
        np.concatenate([x for x, _ in parts]),
        np.concatenate([y for _, y in parts]),
        x_test,
        y_test,
        name="cifar10",
        class_names=tuple(_text(n) for n in names),
        mean=mean,
        std=std,
    )


def load_cifar100(
    data_dir: str | os.PathLike | None = None,
    *,
    label_mode: str = "fine",
    download: bool = True,
) -> ImageData:
    """Load CIFAR-100 from the official python layout `cifar-100-python/`.

    Same rules as `load_cifar10`, for the files train, test and meta.

    Args:
        data_dir: folder holding (or to receive) the layout; default
            `~/.keras/datasets`.
        label_mode: "fine" (100 classes) or "coarse" (20 superclasses).
        download: download `cifar-100-python.tar.gz` when the layout is missing.

    Returns:
        50,000 train and 10,000 test images of shape (32, 32, 3).

    Raises:
        DataError: bad `label_mode`, missing or malformed files.

    Example:
        >>> load_cifar100("~/data", label_mode="coarse").num_classes  # doctest: +SKIP
        20
    """
    if label_mode not in ("fine", "coarse"):
        raise DataError(f'Expected label_mode "fine" or "coarse", got {label_mode!r}.')
    root = layouts.resolve_root(data_dir, layouts.keras_cache_dir())
    folder = layouts.obtain(layouts.CIFAR100, root, download)
    key = f"{label_mode}_labels"
    x_train, y_train = _read_cifar_batch(folder / "train", key)
    x_test, y_test = _read_cifar_batch(folder / "test", key)
    meta = _read_pickle(folder / "meta")
    names = meta.get(f"{label_mode}_label_names".encode())
    if names is None:
        raise DataError(
            f"{folder / 'meta'} has no {label_mode}_label_names; unpack the archive again."
        )
    mean, std = STANDARD_STATS["cifar100"]
    return ImageData(
        x_train,
        y_train,
        x_test,
        y_test,
        name="cifar100",
        class_names=tuple(_text(n) for n in names),
        mean=mean,
        std=std,
    )


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            content = pickle.load(f, encoding="bytes")
    except Exception as e:  # unpickling can fail in many ways; all mean a bad file
        raise DataError(f"Could not read {path} ({e}); unpack the official archive again.") from e
    if not isinstance(content, dict):
        raise DataError(f"Expected a pickled dict in {path}, got {type(content).__name__}.")
    return content


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle: rows of 3072 bytes (R, G, B planes) -> NHWC uint8, int64 labels."""
    batch = _read_pickle(path)
    rows, labels = batch.get(b"data"), batch.get(label_key.encode())
    if rows is None or labels is None:
        raise DataError(
            f"{path} lacks the 'data' or '{label_key}' entry of a CIFAR batch; "
            "unpack the official archive again."
        )
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32 or len(rows) != len(labels):
        raise DataError(
            f"Expected {path} to hold N rows of 3072 pixels and N labels, got data of shape "
            f"{rows.shape} and {len(labels)} labels; unpack the official archive again."
        )
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- (Fashion-)MNIST


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> ImageData:
    """Load Fashion-MNIST from its IDX files (gzipped or not).

    The four files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`)
    are found at `data_dir/fashion-mnist` or in `data_dir` itself. Missing
    files are downloaded from Keras' origin into `data_dir/fashion-mnist`.

    Args:
        data_dir: default `/usr/share/datasets/fashion-mnist` when it exists
            (Debian package `dataset-fashion-mnist`), else `~/.keras/datasets`.
        download: download the files when missing.

    Returns:
        60,000 train and 10,000 test images of shape (28, 28, 1).

    Raises:
        DataError: files missing (and not downloadable) or malformed.

    Example:
        >>> load_fashion_mnist().x_train.shape   # doctest: +SKIP
        (60000, 28, 28, 1)
    """
    system = Path("/usr/share/datasets/fashion-mnist")
    root = layouts.resolve_root(data_dir, system if system.is_dir() else layouts.keras_cache_dir())
    folder = layouts.obtain(layouts.FASHION_MNIST, root, download)
    return _idx_dataset(folder, "fashion_mnist", FASHION_MNIST_CLASSES)


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> ImageData:
    """Load MNIST from IDX files or from Keras' cache file `mnist.npz`.

    Looks for the four IDX files (as for `load_fashion_mnist`) at
    `data_dir/mnist` or in `data_dir`, then for `data_dir/mnist.npz`; when
    neither exists, downloads `mnist.npz` from Keras' origin into `data_dir`.

    Args:
        data_dir: default `~/.keras/datasets`.
        download: download `mnist.npz` when no local copy exists.

    Returns:
        60,000 train and 10,000 test images of shape (28, 28, 1).

    Raises:
        DataError: files missing (and not downloadable) or malformed.

    Example:
        >>> load_mnist().input_shape   # doctest: +SKIP
        (28, 28, 1)
    """
    root = layouts.resolve_root(data_dir, layouts.keras_cache_dir())
    folder = layouts.locate(layouts.MNIST_IDX, root)
    if folder is not None:
        return _idx_dataset(folder, "mnist", MNIST_CLASSES)
    path = layouts.obtain(layouts.MNIST_NPZ, root, download) / "mnist.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"Could not read {path} ({e}); delete it and download again.") from e
    mean, std = STANDARD_STATS["mnist"]
    return ImageData(
        arrays[0][..., None],
        arrays[1],
        arrays[2][..., None],
        arrays[3],
        name="mnist",
        class_names=MNIST_CLASSES,
        mean=mean,
        std=std,
    )


def _idx_dataset(folder: Path, name: str, class_names: tuple[str, ...]) -> ImageData:
    x_train, y_train, x_test, y_test = (
        _read_idx(layouts.find_file(folder, f, gz_optional=True)) for f in layouts.IDX_FILES
    )
    mean, std = STANDARD_STATS[name]
    return ImageData(
        x_train[..., None],
        y_train,
        x_test[..., None],
        y_test,
        name=name,
        class_names=class_names,
        mean=mean,
        std=std,
    )


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (magic 0x0000 08 <ndim>, big-endian int32 dims).

    Gzip is recognized by content, not name: browsers sometimes unpack `.gz`
    downloads but keep the suffix.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"Could not read {path} ({e}); download it again.") from e
    ndim = raw[3] if len(raw) >= 4 else 0
    if raw[:3] != b"\x00\x00\x08" or ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file (bad header {raw[:4]!r}); download it again."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{path} is truncated: header says {dims} = {int(np.prod(dims))} values, "
            f"file holds {data.size}. Download it again."
        )
    return data.reshape(dims)

# --------------------------------------------------------------------------- synthetic


def synthetic(
    num_train: int = 512,
    num_test: int = 128,
    *,
    image_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
) -> ImageData:
    """A learnable synthetic dataset: a fixed template per class plus noise.

    Each class has a random blocky template (4x4-pixel blocks, so convolutions
    and pooling see structure, not only a dense layer); an image is its class
    template plus Gaussian noise (sigma 40), clipped to uint8. A small network
    learns it within a few dozen steps, which makes it a smoke test for
    training code that needs no files.

    Args:
        num_train: number of training images.
        num_test: number of test images.
        image_shape: `(height, width, channels)`.
        num_classes: number of classes (>= 2); labels are balanced.
        seed: same seed, same data.

    Returns:
        The dataset, named "synthetic".

    Raises:
        DataError: non-positive sizes or fewer than 2 classes.

    Example:
        >>> data = synthetic(64, 16, image_shape=(8, 8, 1), num_classes=4)
        >>> data.x_train.shape, data.num_classes
        ((64, 8, 8, 1), 4)
    """
    if num_train < 1 or num_test < 1 or num_classes < 2:
        raise DataError(
            f"Expected num_train >= 1, num_test >= 1 and num_classes >= 2, got "
            f"{num_train}, {num_test}, {num_classes}."
        )
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise DataError(f"Expected image_shape=(height, width, channels), got {image_shape!r}.")
    rng = np.random.default_rng(seed)
    height, width, channels = image_shape
    coarse = rng.uniform(0, 255, (num_classes, -(-height // 4), -(-width // 4), channels))
    templates = coarse.repeat(4, axis=1).repeat(4, axis=2)[:, :height, :width]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = templates[y] + rng.normal(0.0, 40.0, (n, *image_shape))
        return np.clip(np.round(x), 0, 255).astype(np.uint8), y

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return ImageData(
        x_train,
        y_train,
        x_test,
        y_test,
        name="synthetic",
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
    )

