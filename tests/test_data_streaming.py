"""Streamed datasets: image folders read by tf.data, TFDS records, bad files, holdout, sharding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import data as bdata
from bnas_tf.errors import DataError

IDENTITY = ((0.0, 0.0, 0.0), (1 / 255,) * 3)  # normalization that keeps raw pixel values


def write_folder(root: Path, counts: dict, *, size=(8, 8), fmt="png", noise=False) -> dict:
    """root/{train,test}/<class>/<i>.<fmt>; image k (in listing order) is filled with k.

    With `noise`, images are random instead (the corner tag stays).
    `counts` maps split -> {class: number of images}. Returns split -> pixel tags
    in the order the loader lists them (class folders sorted, files sorted).
    """
    tags, k = {}, 0
    for split, classes in counts.items():
        tags[split] = []
        for name in sorted(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(classes[name]):
                image = np.full((*size, 3), k % 250, np.uint8)
                if noise:
                    image = np.random.default_rng(k).integers(0, 256, (*size, 3), np.uint8)
                image[0, 0] = (k % 250, k // 250, 7)  # tag survives resize-free decoding
                encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
                tf.io.write_file(str(folder / f"{i:03d}.{fmt}"), encode(image))
                tags[split].append(k)
                k += 1
    return tags


def corner_tags(images: np.ndarray) -> np.ndarray:
    """The tag written into pixel (0, 0) of each raw (identity-normalized) image."""
    return np.rint(images[:, 0, 0, 0] + 250 * images[:, 0, 0, 1]).astype(int)


def collect(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("folder")
    tags = write_folder(root, {"train": {"a": 12, "b": 12, "c": 8}, "test": {"a": 3, "b": 3}})
    return root, tags


# --------------------------------------------------------------------------- folder streaming


def test_streamed_folder_matches_the_in_memory_path(folder):
    root, tags = folder
    streamed = bdata.load("folder", root, stats=IDENTITY)
    memory = bdata.load("folder", root, in_memory=True)

    assert isinstance(streamed, bdata.StreamingData) and isinstance(memory, bdata.ImageData)
    assert streamed.input_shape == memory.input_shape == (8, 8, 3)
    assert streamed.class_names == memory.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(streamed.y_train, memory.y_train)
    for split in ("train", "test"):
        ds = bdata.make_dataset(streamed, batch_size=5, split=split, preprocessing="cifar")
        x, y = collect(ds)  # evaluation order: as listed
        np.testing.assert_array_equal(corner_tags(x), tags[split])
        expected, _ = collect(bdata.make_dataset(memory, batch_size=5, split=split,
                                                 normalization=IDENTITY))
        np.testing.assert_allclose(x, expected, atol=1e-4)
        np.testing.assert_array_equal(y, memory.y_train if split == "train" else memory.y_test)


def test_streamed_training_reshuffles_each_epoch_deterministically(folder):
    root, tags = folder
    data = bdata.load("folder", root, stats=IDENTITY)
    ds = bdata.make_dataset(data, batch_size=8, training=True, augment=False, seed=3,
                            preprocessing="cifar")
    first, second = (corner_tags(collect(ds)[0]) for _ in range(2))
    assert sorted(first) == sorted(second) == tags["train"]  # every image once per epoch
    assert not np.array_equal(first, second) and not np.array_equal(first, tags["train"])
    again = bdata.make_dataset(data, batch_size=8, training=True, augment=False, seed=3,
                               preprocessing="cifar")
    np.testing.assert_array_equal(corner_tags(collect(again)[0]), first)


def test_imagenet_preprocessing_crops_to_image_size(tmp_path):
    write_folder(tmp_path, {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}},
                 size=(20, 30), fmt="jpeg", noise=True)
    data = bdata.load("folder", tmp_path, image_size=12)
    assert data.input_shape == (12, 12, 3)

    train = bdata.make_dataset(data, batch_size=8, training=True, seed=0)
    (x1, _), (x2, _) = next(iter(train)), next(iter(train))
    assert x1.shape == (8, 12, 12, 3) and x1.dtype == tf.float32
    evaluation = bdata.make_dataset(data, batch_size=4)
    e1, e2 = collect(evaluation)[0], collect(evaluation)[0]
    np.testing.assert_array_equal(e1, e2)  # center crop: deterministic
    # Random-resized crops differ between epochs; evaluation batches are a center crop
    # of the image scaled so its shorter side is 12 / 0.875 = 14 pixels.
    assert not np.allclose(np.sort(x1.numpy().ravel()), np.sort(x2.numpy().ravel()))
    raw = tf.io.decode_jpeg(tf.io.read_file(str(sorted((tmp_path / "test" / "a").iterdir())[0])),
                            dct_method="INTEGER_ACCURATE")
    scaled = tf.image.resize(tf.cast(raw, tf.float32), (14, 21))
    expected = bdata.normalize(scaled[1:13, 4:16][None], data)
    np.testing.assert_allclose(e1[:1], expected, atol=1e-4)
    # make_dataset may override the size (e.g. a CLI --image-size).
    bigger = bdata.make_dataset(data, batch_size=4, image_size=(16, 24))
    assert bigger.element_spec[0].shape.as_list() == [None, 16, 24, 3]


def test_search_pairs_on_streamed_data_uses_disjoint_halves(folder):
    root, tags = folder
    data = bdata.load("folder", root, stats=IDENTITY)
    pairs = bdata.search_pairs(data, batch_size=4, seed=1, preprocessing="cifar")
    spec = pairs.element_spec
    assert spec[0][0].shape == (4, 8, 8, 3) and spec[1][1].shape == (4,)
    batches = list(pairs)
    assert len(batches) == 4  # 16 images per half / 4
    first = np.concatenate([corner_tags(b[0][0].numpy()) for b in batches])
    second = np.concatenate([corner_tags(b[1][0].numpy()) for b in batches])
    assert len(set(first)) == 16 and len(set(second)) == 16 and not set(first) & set(second)
    assert set(first) | set(second) == set(tags["train"])


def test_input_context_shards_the_file_list(folder):
    root, tags = folder
    data = bdata.load("folder", root, stats=IDENTITY)
    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                             num_replicas_in_sync=2)
        ds = bdata.make_dataset(data, batch_size=8, split="train", input_context=context,
                                preprocessing="cifar")
        x, _ = collect(ds)
        assert ds.element_spec[0].shape[0] in (None, 4)  # per-replica batch
        seen.append(set(corner_tags(x)))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(tags["train"])


def test_limit_on_a_streamed_folder_is_balanced(folder):
    root, _ = folder
    small = bdata.load("folder", root, limit=15, stats=IDENTITY)
    assert isinstance(small, bdata.StreamingData)
    np.testing.assert_array_equal(np.bincount(small.y_train), [5, 5, 5])
    assert len(small.y_test) == 3
    again = bdata.load("folder", root, limit=15, stats=IDENTITY)
    np.testing.assert_array_equal(small.train.paths, again.train.paths)


def test_streamed_statistics_come_from_a_sample_or_constants(folder):
    root, _ = folder
    sampled = bdata.load("folder", root)  # images are constant gray levels k, tags aside
    assert all(0.0 < m < 0.2 for m in sampled.mean) and all(s > 0 for s in sampled.std)
    assert bdata.load("folder", root, stats="imagenet").mean == (0.485, 0.456, 0.406)
    with pytest.raises(DataError, match="standard statistics"):
        bdata.load("folder", root, stats="unknown")


# --------------------------------------------------------------------------- bad input


def test_single_class_folder_names_the_class_count(tmp_path):
    write_folder(tmp_path, {"train": {"cat": 4}, "test": {"cat": 2}})
    with pytest.raises(DataError, match=r"at least 2 class folders .* found only 'cat'"):
        bdata.load("folder", tmp_path)
    with pytest.raises(DataError, match="at least 2 class folders"):
        bdata.load_image_folder(tmp_path)


def _corrupt(folder: Path) -> tuple[Path, Path]:
    """A truncated JPEG (fails the header check) and one with a bogus Huffman table (passes it)."""
    files = sorted(folder.glob("train/*/*.jpg"))
    good = files[0].read_bytes()
    truncated = files[1]
    truncated.write_bytes(good[: len(good) // 2])
    bogus = bytearray(good)
    at = bogus.find(b"\xff\xc4")
    bogus[at + 5 : at + 21] = b"\xff" * 16  # code counts of the first Huffman table
    files[2].write_bytes(bytes(bogus))
    return truncated, files[2]


@pytest.fixture
def broken_folder(tmp_path) -> tuple[Path, Path, Path]:
    write_folder(tmp_path, {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}}, fmt="jpg")
    truncated, bogus = _corrupt(tmp_path)
    return tmp_path, truncated, bogus


def test_corrupt_files_are_named_at_load_time(broken_folder, caplog):
    root, truncated, bogus = broken_folder
    with pytest.raises(DataError) as info:
        bdata.load("folder", root)
    message = str(info.value)
    assert f"{truncated}: ends inside the JPEG header (truncated)" in message
    assert "bad_files='skip'" in message and str(bogus) not in message  # header is fine
    with pytest.raises(DataError, match=str(bogus)):
        bdata.load("folder", root, verify="decode", stats=IDENTITY)
    with caplog.at_level(logging.WARNING):
        data = bdata.load("folder", root, verify="decode", bad_files="skip", stats=IDENTITY)
    assert len(data.y_train) == 10 and str(truncated) in caplog.text and str(bogus) in caplog.text


def test_a_file_failing_during_the_epoch_is_named(broken_folder, capfd):
    root, truncated, bogus = broken_folder
    truncated.unlink()
    data = bdata.load("folder", root, stats=IDENTITY)  # header check passes `bogus`
    model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=data.input_shape),
                                 tf.keras.layers.Dense(2)])
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        model.fit(bdata.make_dataset(data, batch_size=4, training=True), verbose=0)
    assert f"could not read or decode 1 image file(s) in {root / 'train'}: {bogus}" in str(
        info.value)
    skipping = bdata.load("folder", root, stats=IDENTITY, bad_files="skip")
    x, _ = collect(bdata.make_dataset(skipping, batch_size=4, training=True))
    assert len(x) == 10
    assert f"skipped 1 image file(s) in {root / 'train'}" in capfd.readouterr().err


def test_images_of_different_sizes_need_image_size(tmp_path):
    write_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    odd = tmp_path / "train" / "b" / "001.png"
    tf.io.write_file(str(odd), tf.io.encode_png(np.zeros((9, 8, 3), np.uint8)))
    with pytest.raises(DataError, match=rf"{odd} is 8x9 .* Pass image_size"):
        bdata.load("folder", tmp_path)
    assert bdata.load("folder", tmp_path, image_size=(9, 8)).input_shape == (9, 8, 3)


def test_non_image_file_is_named(tmp_path):
    write_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    html = tmp_path / "train" / "a" / "000.png"
    html.write_text("<html>404 Not Found</html>")
    empty = tmp_path / "train" / "b" / "000.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as info:
        bdata.load("folder", tmp_path)
    assert f"{html}: is not a JPEG, PNG, GIF or BMP image" in str(info.value)
    assert f"{empty}: is empty (0 bytes)" in str(info.value)


# --------------------------------------------------------------------------- holdout


def test_holdout_of_streamed_data_is_stratified_and_disjoint(folder):
    root, _ = folder
    data = bdata.load("folder", root, stats=IDENTITY)
    train, val = bdata.holdout(data, 0.25, seed=0)
    assert isinstance(train, bdata.StreamingData) and isinstance(val, bdata.StreamingData)
    np.testing.assert_array_equal(np.bincount(val.y_train), [3, 3, 2])  # 25 % of 12, 12, 8
    assert not set(train.train.paths) & set(val.train.paths)
    assert set(train.train.paths) | set(val.train.paths) == set(data.train.paths)
    assert list(val.test.paths) == list(val.train.paths)  # both splits: the held-out images
    assert list(train.test.paths) == list(data.test.paths)  # the test split is untouched
    again, _ = bdata.holdout(data, 0.25, seed=0)
    assert list(again.train.paths) == list(train.train.paths)
    other, _ = bdata.holdout(data, 0.25, seed=1)
    assert list(other.train.paths) != list(train.train.paths)
    x, _ = collect(bdata.make_dataset(val, batch_size=4))
    assert len(x) == 8


# --------------------------------------------------------------------------- TFDS


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """TFDS' own test dataset `dummy_mnist`, prepared locally (no download)."""
    testing = pytest.importorskip("tensorflow_datasets.testing")
    root = tmp_path_factory.mktemp("tfds")
    testing.DummyMnist(data_dir=str(root)).download_and_prepare()
    return root


def test_tfds_dataset_loads_through_the_tfds_prefix(tfds_dir):
    data = bdata.load("tfds:dummy_mnist", tfds_dir, download=False)

    assert isinstance(data, bdata.StreamingData)
    assert data.name == "tfds:dummy_mnist" and data.num_classes == 10
    assert data.input_shape == (28, 28, 1) and len(data.train) == 20 and len(data.test) == 20
    np.testing.assert_array_equal(np.bincount(data.y_train), [2] * 10)  # labels i % 10
    x, y = collect(bdata.make_dataset(data, batch_size=8, normalization=((0.0,), (1 / 255,))))
    assert x.shape == (20, 28, 28, 1) and sorted(y) == sorted(data.y_test)
    np.testing.assert_allclose(x, 1.0)  # DummyMnist images are all ones
    (xt, yt), (xv, yv) = next(iter(bdata.search_pairs(data, batch_size=4, augment=True)))
    assert xt.shape == (4, 28, 28, 1) and yv.shape == (4,)

    train, val = bdata.holdout(data, 0.5, seed=0)
    np.testing.assert_array_equal(np.bincount(val.y_test), [1] * 10)
    _, yv = collect(bdata.make_dataset(val, batch_size=8))
    np.testing.assert_array_equal(np.sort(yv), np.arange(10))
    assert len(train.train) == 10 and len(train.test) == 20

    small = bdata.load("tfds:dummy_mnist", tfds_dir, limit=10, download=False,
                       image_size=(14, 14))
    assert len(small.train) == 10 and len(small.test) == 2 and small.input_shape == (14, 14, 1)
    assert small.to_memory().x_train.shape == (10, 14, 14, 1)
    x3, y3 = data.arrays("test", 3)  # the first records only
    assert x3.shape == (3, 28, 28, 1) and x3.dtype == np.uint8 and len(y3) == 3


def test_tfds_dataset_not_prepared_explains_the_fix(tfds_dir, tmp_path):
    with pytest.raises(DataError, match=r"tfds build|not found"):
        bdata.load("tfds:dummy_mnist", tmp_path, download=False)
