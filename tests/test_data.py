"""Tests for bnas_tf.data: loaders of the standard layouts, subsets, tf.data pipelines."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import data as bdata
from bnas_tf.errors import DataError

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"  # as in conftest.py


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """conftest's shared folder, or $BNAS_SHARED_DIR (a git worktree sits elsewhere)."""
    for candidate in (SHARED_DIR, Path(os.environ.get("BNAS_SHARED_DIR", SHARED_DIR))):
        if (candidate / "datasets" / "cifar10" / "make_cifar10.py").is_file():
            return candidate
    pytest.skip(f"shared datasets not found at {SHARED_DIR}/datasets or $BNAS_SHARED_DIR")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# loader, official download URL, folder name users are told to provide
DOWNLOADS = [
    (bdata.load_cifar10, CIFAR10_URL, "cifar-10-batches-py"),
    (
        bdata.load_cifar100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python",
    ),
    (bdata.load_fashion_mnist, KERAS_ORIGIN + "train-images-idx3-ubyte.gz", "fashion-mnist"),
    (bdata.load_mnist, KERAS_ORIGIN + "mnist.npz", "mnist.npz"),
]
DOWNLOAD_IDS = ["cifar10", "cifar100", "fashion_mnist", "mnist"]


def keras_load_batch():
    """Keras' own CIFAR batch reader, the one `tf.keras.datasets.cifar10.load_data` uses."""
    return sys.modules[tf.keras.datasets.cifar10.load_data.__module__].load_batch


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tagged(n: int, shape=(8, 8, 3), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose label is their index, so batches reveal which samples they hold."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64)


def identity_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization that maps uint8 pixels to themselves as floats: (x/255 - 0) / (1/255)."""
    return (0.0,) * channels, (1 / 255,) * channels


def collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- CIFAR-10 layout


def test_cifar10_batches_layout_matches_keras_reader(cifar10_dir):
    data = bdata.load_cifar10(cifar10_dir, download=False)

    assert data.x_train.shape == (1000, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (200, 32, 32, 3) and data.x_test.dtype == np.uint8
    assert data.y_train.shape == (1000,) and data.y_train.dtype == np.int64
    assert data.y_test.shape == (200,) and data.y_test.dtype == np.int64
    assert set(np.unique(data.y_train)) == set(range(10))
    assert data.y_test.min() >= 0 and data.y_test.max() <= 9
    assert data.class_names == CIFAR10_CLASSES
    assert data.num_classes == 10 and data.input_shape == (32, 32, 3)
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)

    load_batch = keras_load_batch()
    layout = cifar10_dir / "cifar-10-batches-py"
    parts = [load_batch(str(layout / f"data_batch_{i}")) for i in range(1, 6)]
    x_keras = np.concatenate([x for x, _ in parts]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(data.x_train, x_keras)
    np.testing.assert_array_equal(data.y_train, np.concatenate([y for _, y in parts]))
    x_test, y_test = load_batch(str(layout / "test_batch"))
    np.testing.assert_array_equal(data.x_test, x_test.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(data.y_test, y_test)


def test_cifar10_data_dir_may_be_parent_or_layout_folder(cifar10_dir):
    from_parent = bdata.load("cifar10", cifar10_dir, download=False)
    from_layout = bdata.load("cifar10", cifar10_dir / "cifar-10-batches-py", download=False)
    np.testing.assert_array_equal(from_parent.x_train, from_layout.x_train)
    np.testing.assert_array_equal(from_parent.y_test, from_layout.y_test)


def test_cifar10_missing_batch_file_is_named(cifar10_dir, tmp_path):
    layout = shutil.copytree(cifar10_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (layout / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3") as info:
        bdata.load_cifar10(tmp_path, download=False)
    assert str(layout) in str(info.value)


SPLITS = (("train", 12), ("test", 4))


def test_cifar100_fine_and_coarse_labels(tmp_path):
    layout = tmp_path / "cifar-100-python"
    layout.mkdir()
    rng = np.random.default_rng(0)
    rows = {split: rng.integers(0, 256, (n, 3072), dtype=np.uint8) for split, n in SPLITS}
    for split, n in SPLITS:
        batch = {
            b"data": rows[split],
            b"fine_labels": list(range(n)),
            b"coarse_labels": [i % 3 for i in range(n)],
        }
        (layout / split).write_bytes(pickle.dumps(batch))
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (layout / "meta").write_bytes(pickle.dumps(meta))

    fine = bdata.load_cifar100(tmp_path, download=False)
    coarse = bdata.load_cifar100(layout, label_mode="coarse", download=False)

    assert fine.num_classes == 100 and fine.class_names[5] == "fine5"
    np.testing.assert_array_equal(fine.y_train, np.arange(12))
    assert coarse.num_classes == 20
    np.testing.assert_array_equal(coarse.y_test, [0, 1, 2, 0])
    assert fine.x_train.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(fine.x_train[1, :, :, 0].ravel(), rows["train"][1, :1024])
    np.testing.assert_array_equal(fine.x_test[2, 5, 7], rows["test"][2, [5 * 32 + 7 + 1024 * c
                                                                          for c in range(3)]])  # fmt: skip
    with pytest.raises(DataError, match="label_mode"):
        bdata.load_cifar100(tmp_path, label_mode="medium", download=False)


# --------------------------------------------------------------------------- missing data / downloads


@pytest.mark.parametrize("loader,url,layout", DOWNLOADS, ids=DOWNLOAD_IDS)
def test_missing_data_without_download_names_the_path(loader, url, layout, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("download=False must not download")

    monkeypatch.setattr(tf.keras.utils, "get_file", no_download)
    where = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        loader(where, download=False)
    message = str(info.value)
    assert str(where) in message and layout in message and "download=False" in message


@pytest.mark.parametrize("loader,url,layout", DOWNLOADS, ids=DOWNLOAD_IDS)
def test_failed_download_explains_the_fix(loader, url, layout, tmp_path, monkeypatch):
    calls = []
    failure = Exception(f"URL fetch failure on {url}: None -- [Errno -3] name resolution")

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise failure

    monkeypatch.setattr(tf.keras.utils, "get_file", offline)
    with pytest.raises(DataError) as info:
        loader(tmp_path)
    message = str(info.value)
    assert calls and calls[0]["origin"] == url
    assert f"download from {url} failed" in message
    assert "--data-dir" in message and layout in message and str(tmp_path) in message
    assert info.value.__cause__ is failure


def test_download_unpacks_archive_into_data_dir(cifar10_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    (data_dir / "keep.txt").write_text("user file")
    calls = []

    def fake_get_file(fname, origin, file_hash, cache_dir, cache_subdir):
        calls.append((fname, origin, file_hash, cache_subdir))
        archive = Path(cache_subdir) / fname
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(cifar10_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        return str(archive)

    monkeypatch.setattr(tf.keras.utils, "get_file", fake_get_file)
    data = bdata.load_cifar10(data_dir)

    assert calls == [
        (
            "cifar-10-python.tar.gz",
            CIFAR10_URL,
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            str(data_dir.resolve()),
        )
    ]
    np.testing.assert_array_equal(
        data.x_train, bdata.load_cifar10(cifar10_dir, download=False).x_train
    )
    assert (data_dir / "keep.txt").read_text() == "user file"
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        "keep.txt",
    ]
    bdata.load_cifar10(data_dir)  # now found locally: no second download
    assert len(calls) == 1


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError) as info:
        bdata.load("imagenet")
    for name in bdata.DATASET_NAMES:
        assert name in str(info.value)


# --------------------------------------------------------------------------- image folder


def test_image_folder_matches_batches_layout(cifar10_folder_dir, cifar10_dir):
    data = bdata.load("folder", cifar10_folder_dir, in_memory=True)
    streamed = bdata.load("folder", cifar10_folder_dir)
    assert isinstance(data, bdata.ImageData) and isinstance(streamed, bdata.StreamingData)
    assert streamed.input_shape == data.input_shape and streamed.class_names == data.class_names
    decoded = streamed.to_memory()  # streamed images decode to the same pixels
    np.testing.assert_array_equal(decoded.x_train, data.x_train)
    np.testing.assert_array_equal(decoded.y_test, data.y_test)

    assert data.x_train.shape == (500, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (100, 32, 32, 3)
    assert data.class_names == CIFAR10_CLASSES
    # Both layouts come from the same images: match the folder's files (stored class by
    # class, sorted by name) to the batch rows by the image index in their file names.
    by_index = {}
    layout = cifar10_dir / "cifar-10-batches-py"
    for i in range(1, 6):
        with open(layout / f"data_batch_{i}", "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        for row, label, name in zip(
            batch[b"data"], batch[b"labels"], batch[b"filenames"], strict=True
        ):
            index = int(name.decode().rsplit("_", 1)[1].split(".")[0])
            by_index[index] = (row.reshape(3, 32, 32).transpose(1, 2, 0), label)
    files = sorted((p.parent.name, p.name) for p in (cifar10_folder_dir / "train").glob("*/*"))
    for k, (_, name) in enumerate(files):
        pixels, label = by_index[int(Path(name).stem)]
        assert data.y_train[k] == label
        # Same JPEG decoding (accurate IDCT) as Pillow, which wrote the batches.
        np.testing.assert_array_equal(data.x_train[k], pixels)


def test_image_folder_sizes_channels_and_resize(tmp_path):
    for split, sizes in (("train", [(6, 6), (6, 6), (8, 10)]), ("test", [(6, 6)])):
        for i, (h, w) in enumerate(sizes):
            folder = tmp_path / split / ("b" if i % 2 else "a")
            folder.mkdir(parents=True, exist_ok=True)
            gray = np.full((h, w, 1), 40 * (i + 1), np.uint8)
            tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(gray))

    with pytest.raises(DataError, match=r"2\.png.*image_size"):
        bdata.load_image_folder(tmp_path)
    data = bdata.load_image_folder(tmp_path, image_size=(4, 5))
    assert data.x_train.shape == (3, 4, 5, 1) and data.x_test.shape == (1, 4, 5, 1)
    assert data.class_names == ("a", "b")
    np.testing.assert_array_equal(data.y_train, [0, 0, 1])  # a: 0.png, 2.png; b: 1.png
    np.testing.assert_array_equal(data.x_train[:, 0, 0, 0], [40, 120, 80])


def test_image_folder_without_test_split_explains_layout(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="test") as info:
        bdata.load("folder", tmp_path)
    assert str(tmp_path / "test") in str(info.value)
    with pytest.raises(DataError, match="data_dir"):
        bdata.load("folder")


# --------------------------------------------------------------------------- limit


def test_limit_is_a_fixed_balanced_subset(cifar10_dir):
    full = bdata.load("cifar10", cifar10_dir, download=False)
    small = bdata.load("cifar10", cifar10_dir, download=False, limit=100)
    again = bdata.load("cifar10", cifar10_dir, download=False, limit=100)
    other = bdata.load("cifar10", cifar10_dir, download=False, limit=100, seed=1)

    assert small.x_train.shape == (100, 32, 32, 3) and small.x_test.shape == (20, 32, 32, 3)
    assert len(small.y_train) == 100 and len(small.y_test) == 20
    np.testing.assert_array_equal(small.x_train, again.x_train)
    np.testing.assert_array_equal(small.y_test, again.y_test)
    assert not np.array_equal(small.y_train, other.y_train)
    np.testing.assert_array_equal(np.bincount(small.y_train, minlength=10), [10] * 10)
    np.testing.assert_array_equal(np.bincount(small.y_test, minlength=10), [2] * 10)
    full_rows = {row.tobytes(): y for row, y in zip(full.x_train, full.y_train, strict=True)}
    assert all(
        full_rows[row.tobytes()] == y for row, y in zip(small.x_train, small.y_train, strict=True)
    )
    assert small.mean == full.mean  # standard statistics are kept
    with pytest.raises(DataError, match="limit"):
        bdata.load("cifar10", cifar10_dir, download=False, limit=4)


# --------------------------------------------------------------------------- (Fashion-)MNIST


def test_fashion_mnist_from_system_package(fashion_mnist_dir):
    data = bdata.load("fashion_mnist", limit=None)

    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.unique(data.y_test), np.arange(10))
    assert data.y_train[0] == 9  # the first training image is an ankle boot
    assert data.class_names[9] == "Ankle boot"
    # The standard statistics match the data (computed exactly from a pixel histogram).
    counts = np.bincount(data.x_train.ravel(), minlength=256)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - data.mean[0]) < 1e-3 and abs(std - data.std[0]) < 1e-3


def test_mnist_reads_uncompressed_idx_and_rejects_truncated(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(30) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(10),
    }
    # Plain files, a .gz file, and a gzipped file without the suffix (gzip known by content).
    for name, array in arrays.items():
        write_idx(folder / name, array, gz=name.startswith("t10k"))
    (folder / "t10k-images-idx3-ubyte").rename(folder / "t10k-images-idx3-ubyte.gz")

    data = bdata.load_mnist(tmp_path, download=False)
    assert data.x_train.shape == (30, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.y_train, arrays["train-labels-idx1-ubyte"])

    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        bdata.load_mnist(folder, download=False)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_out_of_range_are_rejected(bad):
    x, _ = tagged(8)
    y = np.zeros(8, np.int64)
    y[3] = bad
    with pytest.raises(DataError, match=rf"y\[3\] = {bad} is outside the label range \[0, 10\)"):
        bdata.make_dataset(x, y, num_classes=10)
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        bdata.search_pairs(x, y, batch_size=2, num_classes=10)
    with pytest.raises(DataError, match="y_train"):
        bdata.ImageData(x, y, x, np.zeros(8), name="t", class_names=[str(i) for i in range(10)])


def test_bad_image_rank_dtype_and_label_count_are_rejected():
    x, y = tagged(8)
    with pytest.raises(DataError, match=r"\(N, height, width, channels\).*x\[\.\.\., None\]"):
        bdata.make_dataset(x[..., 0], y)
    with pytest.raises(DataError, match="dtype int64"):
        bdata.make_dataset(x.astype(np.int64), y)
    with pytest.raises(DataError, match=r"shape \(8,\)"):
        bdata.make_dataset(x, y[:5])
    with pytest.raises(DataError, match="x_test"):
        bdata.ImageData(x, y, x[:, :4], y, name="t", class_names=[str(i) for i in range(8)])


# --------------------------------------------------------------------------- pipelines


def test_normalize_uses_per_channel_statistics(cifar10_dir):
    data = bdata.load_cifar10(cifar10_dir, download=False)
    white = np.full((1, 2, 2, 3), 255, np.uint8)
    expected = (1.0 - np.array(data.mean)) / np.array(data.std)
    out = bdata.normalize(white, data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(bdata.normalize(tf.constant(white), data).numpy(), out)
    with pytest.raises(DataError, match="3 channels"):
        bdata.normalize(white, ((0.5,), (0.5,)))


def test_make_dataset_evaluation_batches_are_normalized_in_order(cifar10_dir):
    data = bdata.load_cifar10(cifar10_dir, download=False)
    ds = bdata.make_dataset(data, batch_size=64)  # not training: test split, no shuffle

    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int64
    x, y = collect(ds)
    assert x.shape == (200, 32, 32, 3)
    np.testing.assert_allclose(x, bdata.normalize(data.x_test, data), atol=1e-5)
    np.testing.assert_array_equal(y, data.y_test)


def test_training_reshuffles_each_epoch_deterministically():
    x, y = tagged(32)
    ds = bdata.make_dataset(x, y, batch_size=8, training=True, augment=False, seed=3)
    first, second = (collect(ds)[1] for _ in range(2))
    assert sorted(first) == list(range(32)) and sorted(second) == list(range(32))
    assert not np.array_equal(first, second) and not np.array_equal(first, y)
    same_seed = bdata.make_dataset(x, y, batch_size=8, training=True, augment=False, seed=3)
    np.testing.assert_array_equal(collect(same_seed)[1], first)


def _match_crop(original: np.ndarray, augmented: np.ndarray, flips) -> tuple | None:
    """The (dy, dx, flipped) of a 4-pixel-padded crop of `original` equal to `augmented`."""
    h, w = original.shape[:2]
    padded = np.pad(original.astype(np.float32), ((4, 4), (4, 4), (0, 0)))
    for flipped in flips:
        for dy in range(9):
            for dx in range(9):
                crop = padded[dy : dy + h, dx : dx + w]
                crop = crop[:, ::-1] if flipped else crop
                if np.allclose(crop, augmented, atol=0.01):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb_crop_and_flip", "gray_crop_only"])
def test_augmentation_is_padded_crop_and_flip(channels):
    x, y = tagged(16, shape=(10, 10, channels), seed=channels)
    ds = bdata.make_dataset(
        x,
        y,
        batch_size=16,
        training=True,
        num_classes=16,
        normalization=identity_stats(channels),  # outputs raw pixel values
    )
    out, tags = collect(ds)
    assert out.shape == x.shape

    flips = (False, True) if channels == 3 else (False,)
    matches = [_match_crop(x[t], img, flips) for img, t in zip(out, tags, strict=True)]
    assert all(m is not None for m in matches), "every image is a padded crop (+flip) of its own"
    assert sum(m != (4, 4, False) for m in matches) >= 8, "augmentation changes most images"
    if channels == 3:
        assert any(m[2] for m in matches), "RGB images are sometimes flipped"
    again, _ = collect(ds)
    assert not np.array_equal(np.sort(out, axis=0), np.sort(again, axis=0)), "new draw each epoch"


def test_search_pairs_halves_are_disjoint_and_static():
    x, y = tagged(64)
    ds = bdata.search_pairs(x, y, batch_size=8, num_classes=64, seed=1)

    spec = ds.element_spec
    assert spec[0][0].shape == (8, 8, 8, 3) and spec[1][0].shape == (8, 8, 8, 3)
    assert spec[0][0].dtype == tf.float32 and spec[0][1].dtype == tf.int64

    def one_epoch():
        pairs = list(ds)
        assert len(pairs) == 4  # 32 samples per half / batch 8
        xt = np.concatenate([p[0][0] for p in pairs])
        yt = np.concatenate([p[0][1] for p in pairs])
        xv = np.concatenate([p[1][0] for p in pairs])
        yv = np.concatenate([p[1][1] for p in pairs])
        return xt, yt, xv, yv

    xt, yt, xv, yv = one_epoch()
    assert len(set(yt)) == 32 and len(set(yv)) == 32
    assert not set(yt) & set(yv) and set(yt) | set(yv) == set(range(64))
    # Default normalization: per-channel statistics of x, so the whole set is standardized.
    everything = np.concatenate([xt, xv]).reshape(-1, 3)
    np.testing.assert_allclose(everything.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(everything.std(axis=0), 1.0, atol=1e-4)
    pixels = x / 255.0
    mean, std = pixels.mean(axis=(0, 1, 2)), pixels.std(axis=(0, 1, 2))
    np.testing.assert_allclose(xt, (pixels[yt] - mean) / std, atol=1e-4)  # images match tags

    _, yt2, _, yv2 = one_epoch()
    assert set(yt2) == set(yt) and set(yv2) == set(yv), "each half stays the same half"
    assert not np.array_equal(yt2, yt), "halves are reshuffled each epoch"


def test_search_pairs_accepts_imagedata_and_float_arrays():
    data = bdata.synthetic(40, 8, image_shape=(6, 6, 3), num_classes=4)
    (xt, yt), (xv, yv) = next(iter(bdata.search_pairs(data, batch_size=20)))
    assert xt.shape == (20, 6, 6, 3) and yv.shape == (20,)
    # The ImageData's own statistics are used: every image is a normalized training image.
    expected = bdata.normalize(data.x_train, data)
    found = [np.any(np.all(np.isclose(expected, img, atol=1e-5), axis=(1, 2, 3))) for img in xt]
    assert all(found)

    floats = np.random.default_rng(0).normal(size=(16, 4, 4, 2)).astype(np.float32)
    (ft, ftags), _ = next(iter(bdata.search_pairs(floats, np.arange(16), batch_size=8)))
    np.testing.assert_array_equal(ft.numpy(), floats[ftags.numpy()])  # used as given


def test_search_pairs_needs_a_batch_per_half():
    x, y = tagged(30)
    with pytest.raises(DataError, match=r"batch_size=16.*batch_size <= 15"):
        bdata.search_pairs(x, y, batch_size=16)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_balanced():
    a = bdata.synthetic(100, 20, image_shape=(8, 8, 1), num_classes=5, seed=7)
    b = bdata.load("synthetic", limit=100, seed=7)
    c = bdata.synthetic(100, 20, image_shape=(8, 8, 1), num_classes=5, seed=7)
    assert a.x_train.shape == (100, 8, 8, 1) and a.x_test.shape == (20, 8, 8, 1)
    assert b.x_train.shape == (100, 32, 32, 3) and b.x_test.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(a.x_train, c.x_train)
    np.testing.assert_array_equal(np.bincount(a.y_train), [20] * 5)
    assert not np.array_equal(a.x_train, bdata.synthetic(100, 20, image_shape=(8, 8, 1),
                                                         num_classes=5, seed=8).x_train)  # fmt: skip


def test_synthetic_is_learnable_by_a_tiny_dense_model():
    tf.keras.utils.set_random_seed(0)
    data = bdata.synthetic(512, 128, image_shape=(16, 16, 3), num_classes=10, seed=0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Flatten(input_shape=data.input_shape),
            tf.keras.layers.Dense(data.num_classes),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    test = bdata.make_dataset(data, batch_size=128)
    before, _ = model.evaluate(test, verbose=0)
    train = bdata.make_dataset(data, batch_size=32, training=True, augment=False).repeat()
    model.fit(train, steps_per_epoch=50, epochs=1, verbose=0)
    after, accuracy = model.evaluate(test, verbose=0)
    assert after < 0.5 * before and accuracy > 0.8


# --------------------------------------------------------------------------- data checks (issue 14)


def test_non_finite_pixels_are_named_by_index():
    x = np.zeros((6, 4, 4, 3), np.float32)
    x[2, 1, 1, 0] = np.nan
    x[4, 0, 0, 2] = np.inf
    y = np.arange(6) % 2
    for build in (
        lambda: bdata.make_dataset(x, y, num_classes=2),
        lambda: bdata.search_pairs(x, y, batch_size=2),
    ):
        with pytest.raises(DataError, match=r"NaN or infinite pixel values in 2 image\(s\) "
                                            r"\(indices 2, 4\).*loss: nan"):
            build()


def test_label_equal_to_num_classes_is_rejected_with_a_hint():
    x, _ = tagged(6)
    y = np.array([1, 2, 3, 1, 2, 3])  # 1-based labels of 3 classes
    with pytest.raises(DataError, match=r"y\[2\] = 3 is outside .*\[0, 3\).*1-based: subtract 1"):
        bdata.make_dataset(x, y, num_classes=3)


@pytest.mark.parametrize("classes", [["only"], []])
def test_fewer_than_two_classes_are_rejected(classes):
    x, y = tagged(4)
    with pytest.raises(DataError, match="at least 2 classes"):
        bdata.ImageData(x, y * 0, x, y * 0, name="t", class_names=classes)
    with pytest.raises(DataError, match="at least 2 classes"):
        bdata.make_dataset(x, y * 0, num_classes=1)


def test_empty_arrays_are_rejected():
    with pytest.raises(DataError, match="No images"):
        bdata.make_dataset(np.zeros((0, 4, 4, 3), np.uint8), np.zeros(0, np.int64))


def test_holdout_is_stratified_seeded_and_disjoint():
    data = bdata.synthetic(200, 40, image_shape=(4, 4, 3), num_classes=4, seed=0)
    train, val = bdata.holdout(data, seed=0)  # default fraction: 10 % of each class
    assert bdata.DEFAULT_HOLDOUT_FRACTION == 0.1
    np.testing.assert_array_equal(np.bincount(val.y_train), [5] * 4)
    np.testing.assert_array_equal(np.bincount(train.y_train), [45] * 4)
    np.testing.assert_array_equal(val.x_test, val.x_train)  # both splits: held-out images
    np.testing.assert_array_equal(train.x_test, data.x_test)  # test split untouched
    assert train.mean == data.mean and val.std == data.std
    rows = {r.tobytes() for r in data.x_train}
    held = {r.tobytes() for r in val.x_train}
    kept = {r.tobytes() for r in train.x_train}
    assert held | kept == rows and not held & kept
    again, val_again = bdata.holdout(data, seed=0)
    np.testing.assert_array_equal(val_again.x_train, val.x_train)
    _, other = bdata.holdout(data, seed=1)
    assert not np.array_equal(other.x_train, val.x_train)
    x, y = collect(bdata.make_dataset(val, batch_size=8))
    assert len(x) == 20 and sorted(y) == sorted(val.y_test)


def test_holdout_needs_two_images_per_class():
    x, _ = tagged(5)
    data = bdata.ImageData(x, [0, 0, 0, 1, 2], x, [0, 1, 2, 0, 1], name="t",
                           class_names=["cat", "dog", "owl"])
    with pytest.raises(DataError, match=r"2 class\(es\) have a single training image: "
                                        r"'dog' \(label 1\), 'owl' \(label 2\).*at least 2"):
        bdata.holdout(data)
    with pytest.raises(DataError, match="0 < fraction < 1"):
        bdata.holdout(data, 1.0)
