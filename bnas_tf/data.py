"""Image-classification datasets for architecture search and training.

Loaders read the standard local layouts that users already have (and download
them the way Keras does when they are missing):

* CIFAR-10 / CIFAR-100: the official python layouts `cifar-10-batches-py/`
  and `cifar-100-python/` that the `*-python.tar.gz` archives unpack to.
* Fashion-MNIST / MNIST: the IDX files (`train-images-idx3-ubyte[.gz]`, ...);
  for MNIST also Keras' cache file `mnist.npz`.
* An image folder `DIR/{train,test}/<class>/*.{jpg,png,...}`.
* A learnable synthetic set for tests and smoke runs.

Every loader returns an `ImageData` (uint8 NHWC images, int64 labels, class
names and the per-channel normalization statistics). `make_dataset` turns one
into batches for `fit`/`evaluate`; `search_pairs` yields the
`((x_train, y_train), (x_val, y_val))` pairs of a bilevel (DARTS-style) search
from two disjoint halves of the data.

Example:
    >>> import bnas_tf
    >>> data = bnas_tf.data.load("synthetic", limit=100)
    >>> data.x_train.shape, data.x_test.shape
    ((100, 32, 32, 3), (20, 32, 32, 3))
    >>> ds = bnas_tf.data.search_pairs(data, batch_size=10)
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "ImageData",
    "load",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_mnist",
    "load_image_folder",
    "synthetic",
    "normalize",
    "make_dataset",
    "search_pairs",
]

log = logging.getLogger(__name__)

DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "mnist", "folder", "synthetic")
"""Names accepted by `load`."""

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))

# Per-channel statistics of the training sets, on pixels scaled to [0, 1].
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
}

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_CROP_PADDING = 4
_KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# --------------------------------------------------------------------------- ImageData


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
        class_names: one name per class, in label order.
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
        set_(self, "x_train", _check_uint8_images(self.x_train, "x_train"))
        set_(self, "x_test", _check_uint8_images(self.x_test, "x_test"))
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(
                f"Expected x_test images of shape {self.x_train.shape[1:]} like x_train, "
                f"got {self.x_test.shape[1:]}. Resize one split to match the other."
            )
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        n = len(self.class_names)
        set_(self, "y_train", _check_labels(self.y_train, len(self.x_train), n, "y_train"))
        set_(self, "y_test", _check_labels(self.y_test, len(self.x_test), n, "y_test"))
        if self.mean is None or self.std is None:
            mean, std = _channel_stats(self.x_train)
            set_(self, "mean", self.mean if self.mean is not None else mean)
            set_(self, "std", self.std if self.std is not None else std)
        mean, std = _check_stats(self.mean, self.std, self.x_train.shape[-1])
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

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------- load


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    download: bool = True,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
) -> ImageData:
    """Load a dataset by name, optionally a small fixed subset of it.

    Args:
        name: one of `DATASET_NAMES`: "cifar10", "cifar100", "fashion_mnist",
            "mnist", "folder" (an image folder, see `load_image_folder`) or
            "synthetic" (see `synthetic`).
        data_dir: where to look for (and download) the data; each loader
            documents its default. Required for "folder"; ignored for
            "synthetic".
        limit: keep `limit` training and `limit // 5` test images, chosen by a
            seeded shuffle that takes the classes in turn (same subset every
            time, classes balanced as far as the data allows). None keeps all.
        download: download missing files from the official origin.
        seed: seed of the subset (and of the synthetic images).
        image_size: `(height, width)` to resize folder images to; only for
            "folder".

    Returns:
        The dataset as an `ImageData`.

    Raises:
        DataError: unknown name, missing or malformed data, bad `limit`.

    Example:
        >>> data = load("synthetic", limit=50)
        >>> len(data.x_train), len(data.x_test)
        (50, 10)
    """
    key = str(name).lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise DataError(
            f"Unknown dataset {name!r}. Expected one of {', '.join(DATASET_NAMES)}; "
            "for your own images use 'folder' with data_dir holding train/ and test/."
        )
    if image_size is not None and key != "folder":
        raise DataError(
            f"image_size applies only to the 'folder' dataset, got it with {key!r}. "
            "Drop image_size, or load an image folder."
        )
    if limit is not None and (int(limit) != limit or limit < 5):
        raise DataError(
            f"Expected limit >= 5 (it keeps limit training and limit // 5 test images), "
            f"got {limit!r}. Pass a larger limit, or None for the whole dataset."
        )
    if key == "synthetic":
        if limit is None:
            return synthetic(seed=seed)
        return synthetic(limit, limit // 5, seed=seed)
    if key == "folder":
        if data_dir is None:
            raise DataError(
                "The 'folder' dataset needs data_dir: a directory with train/<class>/ "
                "and test/<class>/ image folders. Pass data_dir (--data-dir)."
            )
        data = load_image_folder(data_dir, image_size=image_size)
    else:
        loaders = {
            "cifar10": load_cifar10,
            "cifar100": load_cifar100,
            "fashion_mnist": load_fashion_mnist,
            "mnist": load_mnist,
        }
        data = loaders[key](data_dir, download=download)
    return data if limit is None else _subset(data, limit, seed)


def _subset(data: ImageData, limit: int, seed: int) -> ImageData:
    """Keep `limit` train and `limit // 5` test images of a seeded, class-balanced shuffle."""
    rng = np.random.default_rng(seed)
    train = _balanced_indices(data.y_train, limit, rng)
    test = _balanced_indices(data.y_test, limit // 5, rng)
    if len(train) < limit:
        log.warning("limit=%d exceeds the %d training images of %s.", limit, len(train), data.name)
    return dataclasses.replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_test[test],
        y_test=data.y_test[test],
    )


def _balanced_indices(y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """First `count` indices of a random permutation re-ordered to take classes in turn."""
    perm = rng.permutation(len(y))
    labels = y[perm]
    rank = np.empty(len(y), np.int64)  # k-th occurrence of its class within perm
    for c in np.unique(labels):
        where = labels == c
        rank[where] = np.arange(where.sum())
    chosen = np.sort(np.argsort(rank, kind="stable")[:count])
    return perm[chosen]


# --------------------------------------------------------------------------- locating / downloading


@dataclass(frozen=True)
class _Source:
    """Where a dataset lives on disk and where to download it from."""

    title: str
    dirname: str  # folder name of the layout inside data_dir ("." for data_dir itself)
    files: tuple[str, ...]  # files the layout must hold
    urls: tuple[str, ...]  # downloads; a single .tar.gz is unpacked into data_dir
    sha256: str | None = None
    gz_optional: bool = False  # files may also be stored gzipped as <name>.gz
    alternative: str = ""  # another accepted layout, for error messages

    @property
    def is_archive(self) -> bool:
        return len(self.urls) == 1 and self.urls[0].endswith(".tar.gz")


_CIFAR10 = _Source(
    "CIFAR-10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
_CIFAR100 = _Source(
    "CIFAR-100",
    "cifar-100-python",
    ("train", "test", "meta"),
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
)
_FASHION_MNIST = _Source(
    "Fashion-MNIST",
    "fashion-mnist",
    _IDX_FILES,
    tuple(f"{_KERAS_ORIGIN}{f}.gz" for f in _IDX_FILES),
    gz_optional=True,
)
_MNIST_IDX = _Source("MNIST", "mnist", _IDX_FILES, (), gz_optional=True)
_MNIST_NPZ = _Source(
    "MNIST",
    ".",
    ("mnist.npz",),
    (f"{_KERAS_ORIGIN}mnist.npz",),
    "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    alternative=f"the IDX files {', '.join(_IDX_FILES)} (each optionally .gz) in <data_dir>/mnist",
)


def _keras_cache_dir() -> Path:
    return Path("~/.keras/datasets").expanduser()


def _find_file(folder: Path, name: str, gz_optional: bool) -> Path | None:
    for candidate in (name, name + ".gz") if gz_optional else (name,):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _locate(source: _Source, root: Path) -> Path | None:
    """The layout folder: root/<dirname> if it exists, else root if it holds the files."""
    nested = root / source.dirname
    if source.dirname != "." and nested.is_dir():
        folder = nested
    elif any(_find_file(root, f, source.gz_optional) for f in source.files):
        folder = root
    else:
        return None
    missing = [f for f in source.files if _find_file(folder, f, source.gz_optional) is None]
    if missing:
        raise DataError(
            f"{source.title} folder {folder} is incomplete: missing {', '.join(missing)}. "
            f"It must hold {', '.join(source.files)}. Unpack the full archive "
            f"({source.urls[0] if source.urls else 'the official files'}) there again."
        )
    return folder


def _expected(source: _Source, root: Path) -> str:
    where = root if source.dirname == "." else f"{root / source.dirname} or directly in {root}"
    also = f", or {source.alternative}" if source.alternative else ""
    return f"{source.title} not found: expected {', '.join(source.files)} in {where}{also}"


def _manual_fix(source: _Source, root: Path) -> str:
    target = root if source.dirname == "." else root / source.dirname
    if source.is_archive:
        archive = source.urls[0].rsplit("/", 1)[-1]
        how = f"download {archive} from {source.urls[0]} and unpack it into {root}"
    else:
        how = f"download {', '.join(source.urls)} into {target}"
    return (
        f"Fix: pass data_dir (--data-dir on the command line) pointing to a folder "
        f"containing {source.dirname if source.dirname != '.' else source.files[0]}, or {how}."
    )


def _obtain(source: _Source, root: Path, download: bool) -> Path:
    """Return the layout folder, downloading it into `root` when missing and allowed."""
    folder = _locate(source, root)
    if folder is not None:
        return folder
    if not download:
        raise DataError(
            f"{_expected(source, root)}. download=False, so nothing was downloaded. "
            + _manual_fix(source, root)
        )
    _download(source, root)
    folder = _locate(source, root)
    if folder is None:
        raise DataError(
            f"{_expected(source, root)}, even after downloading {source.urls[0]}. "
            + _manual_fix(source, root)
        )
    return folder


def _download(source: _Source, root: Path) -> None:
    """Fetch `source.urls` with Keras' `get_file` (cached, hash-checked) into `root`."""
    target = root if source.is_archive or source.dirname == "." else root / source.dirname
    target = target.expanduser().resolve()
    for url in source.urls:
        log.info("Downloading %s from %s into %s", source.title, url, target)
        try:
            path = tf.keras.utils.get_file(
                fname=url.rsplit("/", 1)[-1],
                origin=url,
                file_hash=source.sha256,
                cache_dir=str(target),
                cache_subdir=str(target),  # absolute: the file lands in target itself
            )
        except Exception as e:  # get_file raises a bare Exception on network errors
            raise DataError(
                f"{_expected(source, root)}, and the download from {url} failed "
                f"({type(e).__name__}: {e}). " + _manual_fix(source, root)
            ) from e
        if source.is_archive:
            _extract(Path(path), target)


def _extract(archive: Path, target: Path) -> None:
    """Unpack a tarball into `target` via a staging folder.

    Unlike `get_file(extract=True)`, which deletes the whole extraction folder
    when unpacking fails, this never removes anything already in `target`.
    """
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # Python < 3.10.12 has no extraction filters: check paths ourselves
                for member in tar.getmembers():
                    if Path(member.name).is_absolute() or ".." in Path(member.name).parts:
                        raise DataError(f"Refusing unsafe path {member.name!r} in {archive}.")
                tar.extractall(staging)
        for item in staging.iterdir():
            if not (target / item.name).exists():
                os.replace(item, target / item.name)
    except (tarfile.TarError, OSError) as e:
        raise DataError(
            f"Could not unpack {archive} into {target} ({e}). Delete the archive so it is "
            "downloaded again, or unpack it by hand."
        ) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    root = _root(data_dir, _keras_cache_dir())
    folder = _obtain(_CIFAR10, root, download)
    parts = [_read_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _read_cifar_batch(folder / "test_batch", "labels")
    names = _read_pickle(folder / "batches.meta").get(b"label_names", CIFAR10_CLASSES)
    mean, std = _STATS["cifar10"]
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
    root = _root(data_dir, _keras_cache_dir())
    folder = _obtain(_CIFAR100, root, download)
    key = f"{label_mode}_labels"
    x_train, y_train = _read_cifar_batch(folder / "train", key)
    x_test, y_test = _read_cifar_batch(folder / "test", key)
    meta = _read_pickle(folder / "meta")
    names = meta.get(f"{label_mode}_label_names".encode())
    if names is None:
        raise DataError(
            f"{folder / 'meta'} has no {label_mode}_label_names; unpack the archive again."
        )
    mean, std = _STATS["cifar100"]
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
    root = _root(data_dir, system if system.is_dir() else _keras_cache_dir())
    folder = _obtain(_FASHION_MNIST, root, download)
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
    root = _root(data_dir, _keras_cache_dir())
    folder = _locate(_MNIST_IDX, root)
    if folder is not None:
        return _idx_dataset(folder, "mnist", MNIST_CLASSES)
    path = _obtain(_MNIST_NPZ, root, download) / "mnist.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"Could not read {path} ({e}); delete it and download again.") from e
    mean, std = _STATS["mnist"]
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
        _read_idx(_find_file(folder, f, gz_optional=True)) for f in _IDX_FILES
    )
    mean, std = _STATS[name]
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


# --------------------------------------------------------------------------- image folder


def load_image_folder(
    directory: str | os.PathLike, *, image_size: tuple[int, int] | None = None
) -> ImageData:
    """Load `directory/{train,test}/<class>/<image>` into memory.

    Class names are the sorted subfolder names of `train/` (labels follow that
    order); `test/` may hold the same classes or a subset. Images (jpg, jpeg,
    png, bmp, gif) are decoded with `tf.io.decode_image`; they are stored class
    by class, files sorted by name. Channels follow the first training image:
    grayscale gives 1 channel, anything else 3 (RGB).

    Args:
        directory: folder with `train/` and `test/` subfolders.
        image_size: `(height, width)` to resize every image to. None requires
            all images to have the size of the first training image.

    Returns:
        The dataset, named "folder", with statistics computed from `x_train`.

    Raises:
        DataError: missing folders, no images, unknown test classes, images of
            different sizes without `image_size`, undecodable files.

    Example:
        >>> load_image_folder("flowers", image_size=(64, 64)).input_shape  # doctest: +SKIP
        (64, 64, 3)
    """
    root = Path(directory).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(
                f"Expected an image folder {root / split} (layout: {root}/train/<class>/*.jpg "
                f"and {root}/test/<class>/*.jpg). Point data_dir at the folder holding both."
            )
    class_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_paths, y_train = _list_images(root / "train", class_names)
    test_paths, y_test = _list_images(root / "test", class_names)
    shape = _target_shape(train_paths[0], image_size)
    return ImageData(
        _decode_images(train_paths, shape, resize=image_size is not None),
        y_train,
        _decode_images(test_paths, shape, resize=image_size is not None),
        y_test,
        name="folder",
        class_names=tuple(class_names),
    )


def _list_images(split_dir: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in class_names]
    if unknown:
        raise DataError(
            f"{split_dir} has class folders {unknown} that train/ lacks. "
            "Give train/ and test/ the same class folders."
        )
    paths, labels = [], []
    for folder in folders:
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS
        )
        paths += files
        labels += [class_names.index(folder.name)] * len(files)
    if not paths:
        raise DataError(
            f"No images ({', '.join(_IMAGE_EXTENSIONS)}) found in the class folders of "
            f"{split_dir}. Expected {split_dir}/<class>/<image>."
        )
    return paths, np.asarray(labels, np.int64)


def _target_shape(first: Path, image_size: tuple[int, int] | None) -> tuple[int, int, int]:
    try:
        image = tf.io.decode_image(tf.io.read_file(str(first)), expand_animations=False)
    except tf.errors.OpError as e:
        raise DataError(f"Could not decode {first}: {e.message}. Remove or re-save it.") from e
    channels = 1 if image.shape[-1] in (1, 2) else 3  # gray(+alpha) -> 1, else RGB
    if image_size is None:
        return int(image.shape[0]), int(image.shape[1]), channels
    if len(image_size) != 2 or min(image_size) < 1:
        raise DataError(
            f"Expected image_size=(height, width) of positive ints, got {image_size!r}."
        )
    return int(image_size[0]), int(image_size[1]), channels


def _decode_images(paths: list[Path], shape: tuple[int, int, int], resize: bool) -> np.ndarray:
    height, width, channels = shape

    def read(path: tf.Tensor) -> tf.Tensor:
        image = _decode(tf.io.read_file(path), channels)
        if resize:
            image = tf.image.resize(image, (height, width))
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    out = np.empty((len(paths), height, width, channels), np.uint8)
    try:
        for i, image in enumerate(ds.as_numpy_iterator()):
            if image.shape != out.shape[1:]:
                raise DataError(
                    f"{paths[i]} is {image.shape[1]}x{image.shape[0]} but the first image is "
                    f"{width}x{height}. Pass image_size=(height, width) to resize all images."
                )
            out[i] = image
    except tf.errors.OpError as e:
        raise DataError(
            f"Could not decode an image under {paths[0].parent.parent}: {e.message}. "
            "Remove or re-save the broken file."
        ) from e
    return out


def _decode(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode any supported image; JPEGs with the accurate IDCT, as PIL/libjpeg do by default."""
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=channels, expand_animations=False),
    )


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


# --------------------------------------------------------------------------- normalization


def normalize(
    x: np.ndarray | tf.Tensor,
    data: ImageData | tuple[Sequence[float], Sequence[float]],
) -> np.ndarray | tf.Tensor:
    """Scale uint8 pixels to [0, 1] and standardize each channel.

    `(x / 255 - mean) / std`, with `mean`/`std` from `data` (an `ImageData`
    or a `(mean, std)` pair of per-channel sequences).

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
    mean, std = _resolve_stats(data, channels=int(x.shape[-1]))
    if tf.is_tensor(x):
        return (tf.cast(x, tf.float32) / 255.0 - mean) / std
    return (np.asarray(x, np.float32) / np.float32(255.0) - mean) / std


def _resolve_stats(
    data: ImageData | tuple[Sequence[float], Sequence[float]], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, ImageData):
        mean, std = data.mean, data.std
    else:
        try:
            mean, std = data
        except (TypeError, ValueError) as e:
            raise DataError(
                f"Expected an ImageData or a (mean, std) pair for normalization, got {data!r}."
            ) from e
    mean, std = _check_stats(mean, std, channels)
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def _check_stats(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = tuple(float(m) for m in np.atleast_1d(mean))
    std = tuple(float(s) for s in np.atleast_1d(std))
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"Expected {channels} per-channel mean and std values for images with {channels} "
            f"channels, got mean={mean}, std={std}."
        )
    if min(std) <= 0:
        raise DataError(f"Expected positive standard deviations, got std={std}.")
    return mean, std


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], in float64 chunks."""
    if len(x) == 0:
        raise DataError("Cannot compute normalization statistics from an empty image set.")
    channels = x.shape[-1]
    total, acc, acc_sq = 0, np.zeros(channels), np.zeros(channels)
    for start in range(0, len(x), chunk):
        pixels = x[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += len(pixels)
        acc += pixels.sum(axis=0)
        acc_sq += np.square(pixels).sum(axis=0)
    mean = acc / total
    std = np.sqrt(np.maximum(acc_sq / total - mean**2, 0.0))
    if np.any(std < 1e-6):
        log.warning("A channel is constant; using std=1 for it to avoid dividing by zero.")
        std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --------------------------------------------------------------------------- validation


def _check_images(x, what: str = "x") -> np.ndarray:
    if tf.is_tensor(x):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != 4:
        fix = " Add a channel axis, e.g. x[..., None]." if x.ndim == 3 else ""
        raise DataError(
            f"Expected {what} of shape (N, height, width, channels), got shape {x.shape}.{fix}"
        )
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"Expected {what} as uint8 pixels (0..255) or floats used as given, got dtype "
            f"{x.dtype}. Convert with x.astype('uint8') or x.astype('float32')."
        )
    return x


def _check_uint8_images(x, what: str) -> np.ndarray:
    x = _check_images(x, what)
    if x.dtype != np.uint8:
        raise DataError(
            f"Expected {what} as uint8 pixels in ImageData, got {x.dtype}. "
            "Convert with np.clip(x, 0, 255).astype('uint8')."
        )
    return x


def _check_labels(y, n: int, num_classes: int | None, what: str = "y") -> np.ndarray:
    """Labels as int64 `(n,)`; `(n, 1)` is flattened. Range-checked when num_classes is known."""
    if tf.is_tensor(y):
        y = y.numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"Expected {what} of shape ({n},) (one integer label per image), got shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise DataError(f"Expected integer class indices in {what}, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    high = num_classes if num_classes is not None else np.iinfo(np.int64).max
    bad = np.flatnonzero((y < 0) | (y >= high))
    if bad.size:
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(
            f"{what}[{bad[0]}] = {y[bad[0]]} is outside the label range {bound} "
            f"({bad.size} bad labels). Labels must be class indices; fix the labels or "
            "num_classes."
        )
    return y


# --------------------------------------------------------------------------- tf.data pipelines


def make_dataset(
    data_or_x: ImageData | np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 64,
    training: bool = False,
    augment: bool | None = None,
    seed: int = 0,
    split: str | None = None,
    normalization: ImageData | tuple[Sequence[float], Sequence[float]] | None = None,
    num_classes: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of `(normalized float32 images, int64 labels)` for fit/evaluate.

    uint8 images are normalized with `normalization` (default: the
    `ImageData`'s statistics, or statistics computed from `x`); float images
    are used as given. Training data are reshuffled every epoch (seeded).
    Augmentation is a random crop after 4-pixel zero padding, plus a random
    horizontal flip for 3-channel (RGB) images; 1-channel images (MNIST-like)
    are only cropped.

    Args:
        data_or_x: an `ImageData`, or images `(N, height, width, channels)`.
        y: labels `(N,)` when `data_or_x` is an array; omit for `ImageData`.
        batch_size: images per batch.
        training: shuffle (and by default augment).
        augment: augment; None means `training`.
        seed: seed of the shuffle and the augmentation.
        split: "train" or "test" when `data_or_x` is an `ImageData`; default
            "train" if `training` else "test".
        normalization: an `ImageData` or `(mean, std)` per channel.
        num_classes: label range to check for arrays (an `ImageData` knows it).
        drop_remainder: drop the last partial batch (static batch shape).

    Returns:
        A prefetched `tf.data.Dataset`.

    Raises:
        DataError: bad image rank or dtype, labels out of range or mismatched.

    Example:
        >>> data = synthetic(64, 16, image_shape=(8, 8, 3))
        >>> ds = make_dataset(data, batch_size=16, training=True)
        >>> [tuple(t.shape) for t in next(iter(ds))]
        [(16, 8, 8, 3), (16,)]
    """
    x, y, normalization = _arrays(
        data_or_x, y, split or ("train" if training else "test"), num_classes, normalization
    )
    _check_batch_size(batch_size)
    return _pipeline(
        x,
        y,
        batch_size=batch_size,
        shuffle=training,
        augment=training if augment is None else augment,
        seed=seed,
        stats=_stats_for(x, normalization),
        drop_remainder=drop_remainder,
    )


def search_pairs(
    x: ImageData | np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 64,
    num_classes: int | None = None,
    normalization: ImageData | tuple[Sequence[float], Sequence[float]] | None = None,
    augment: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Paired batches `((x_train, y_train), (x_val, y_val))` for a bilevel search.

    The data are split (seeded) into two disjoint halves: weights train on the
    first, architecture parameters on the second, as in DARTS. One epoch is one
    pass over a half; both halves are reshuffled every epoch and batched with
    `drop_remainder=True`, so batch shapes are static.

    Args:
        x: an `ImageData` (its training split is used) or images
            `(N, height, width, channels)`: uint8 (normalized here) or float
            (used as given).
        y: labels `(N,)`; omit for an `ImageData`.
        batch_size: images per batch in each half.
        num_classes: label range to check for arrays.
        normalization: an `ImageData` or `(mean, std)`; default: the
            `ImageData`'s statistics, or statistics computed from `x`.
        augment: augment both halves as `make_dataset` does.
        seed: seed of the split, shuffles and augmentation.

    Returns:
        A prefetched `tf.data.Dataset` of nested tuples.

    Raises:
        DataError: a half holds fewer than `batch_size` samples, or as in
            `make_dataset`.

    Example:
        >>> data = synthetic(64, 16, image_shape=(8, 8, 3))
        >>> (xt, yt), (xv, yv) = next(iter(search_pairs(data, batch_size=16)))
        >>> xt.shape, xv.shape
        (TensorShape([16, 8, 8, 3]), TensorShape([16, 8, 8, 3]))
    """
    x, y, normalization = _arrays(x, y, "train", num_classes, normalization)
    _check_batch_size(batch_size)
    half = len(x) // 2
    if half < batch_size:
        raise DataError(
            f"search_pairs splits the data into two halves of {half} samples, fewer than "
            f"batch_size={batch_size}. Use a batch_size <= {half} or more data "
            f"(at least {2 * batch_size} samples)."
        )
    order = np.random.default_rng(seed).permutation(len(x))
    stats = _stats_for(x, normalization)
    halves = [
        _pipeline(
            x[idx],
            y[idx],
            batch_size=batch_size,
            shuffle=True,
            augment=augment,
            seed=seed + k,
            stats=stats,
            drop_remainder=True,
            prefetch=False,
        )
        for k, idx in enumerate((order[:half], order[half : 2 * half]))
    ]
    return tf.data.Dataset.zip(tuple(halves)).prefetch(tf.data.AUTOTUNE)


def _arrays(data_or_x, y, split: str, num_classes: int | None, normalization):
    """Resolve (x, y, normalization) from an ImageData or from arrays, validated."""
    if isinstance(data_or_x, ImageData):
        if y is not None:
            raise DataError("Pass labels only with image arrays; an ImageData carries its own.")
        if split not in ("train", "test"):
            raise DataError(f'Expected split "train" or "test", got {split!r}.')
        data = data_or_x
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        return x, y, normalization if normalization is not None else data
    if y is None:
        raise DataError("Expected labels y with image arrays (or pass an ImageData).")
    x = _check_images(data_or_x)
    return x, _check_labels(y, len(x), num_classes), normalization


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"Expected a positive integer batch_size, got {batch_size!r}.")


def _stats_for(x: np.ndarray, normalization) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float32 arrays for uint8 images; None for float images (used as given)."""
    channels = int(x.shape[-1])
    if x.dtype != np.uint8:
        if normalization is not None:
            log.warning("Images are already float; the given normalization is not applied.")
        return None
    if normalization is None:
        normalization = _channel_stats(x)
    return _resolve_stats(normalization, channels)


def _pipeline(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray] | None,
    drop_remainder: bool,
    prefetch: bool = True,
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:
        flip = x.shape[-1] == 3
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (_augment_image(xy[0], s, flip), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if stats is not None:
            images = (images / 255.0 - stats[0]) / stats[1]
        return images, labels

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def _augment_image(image: tf.Tensor, seeds: tf.Tensor, flip: bool) -> tf.Tensor:
    """Random crop of the zero-padded image (and a random horizontal flip if `flip`)."""
    p = _CROP_PADDING
    padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tuple(image.shape), seed=seeds[:2])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[2:])
    return image


def _root(data_dir: str | os.PathLike | None, default: Path) -> Path:
    return default if data_dir is None else Path(data_dir).expanduser()
