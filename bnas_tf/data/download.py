"""Finding the official dataset layouts on disk, and downloading them the way Keras does."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

@dataclass(frozen=True)
class Source:
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


CIFAR10 = Source(
    "CIFAR-10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
CIFAR100 = Source(
    "CIFAR-100",
    "cifar-100-python",
    ("train", "test", "meta"),
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
)
FASHION_MNIST = Source(
    "Fashion-MNIST",
    "fashion-mnist",
    IDX_FILES,
    tuple(f"{KERAS_ORIGIN}{f}.gz" for f in IDX_FILES),
    gz_optional=True,
)
MNIST_IDX = Source("MNIST", "mnist", IDX_FILES, (), gz_optional=True)
MNIST_NPZ = Source(
    "MNIST",
    ".",
    ("mnist.npz",),
    (f"{KERAS_ORIGIN}mnist.npz",),
    "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    alternative=f"the IDX files {', '.join(IDX_FILES)} (each optionally .gz) in <data_dir>/mnist",
)


def keras_cache_dir() -> Path:
    return Path("~/.keras/datasets").expanduser()


def find_file(folder: Path, name: str, gz_optional: bool) -> Path | None:
    for candidate in (name, name + ".gz") if gz_optional else (name,):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def locate(source: Source, root: Path) -> Path | None:
    """The layout folder: root/<dirname> if it exists, else root if it holds the files."""
    nested = root / source.dirname
    if source.dirname != "." and nested.is_dir():
        folder = nested
    elif any(find_file(root, f, source.gz_optional) for f in source.files):
        folder = root
    else:
        return None
    missing = [f for f in source.files if find_file(folder, f, source.gz_optional) is None]
    if missing:
        raise DataError(
            f"{source.title} folder {folder} is incomplete: missing {', '.join(missing)}. "
            f"It must hold {', '.join(source.files)}. Unpack the full archive "
            f"({source.urls[0] if source.urls else 'the official files'}) there again."
        )
    return folder


def _expected(source: Source, root: Path) -> str:
    where = root if source.dirname == "." else f"{root / source.dirname} or directly in {root}"
    also = f", or {source.alternative}" if source.alternative else ""
    return f"{source.title} not found: expected {', '.join(source.files)} in {where}{also}"


def _manual_fix(source: Source, root: Path) -> str:
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


def obtain(source: Source, root: Path, download: bool) -> Path:
    """Return the layout folder, downloading it into `root` when missing and allowed."""
    folder = locate(source, root)
    if folder is not None:
        return folder
    if not download:
        raise DataError(
            f"{_expected(source, root)}. download=False, so nothing was downloaded. "
            + _manual_fix(source, root)
        )
    _download(source, root)
    folder = locate(source, root)
    if folder is None:
        raise DataError(
            f"{_expected(source, root)}, even after downloading {source.urls[0]}. "
            + _manual_fix(source, root)
        )
    return folder


def _download(source: Source, root: Path) -> None:
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



def resolve_root(data_dir: str | os.PathLike | None, default: Path) -> Path:
    return default if data_dir is None else Path(data_dir).expanduser()
