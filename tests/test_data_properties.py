"""Property-based tests (Hypothesis) of what a user or a file controls.

Random image and label arrays into `make_dataset`/`search_pairs`, random
labels into `holdout`, and damaged image files into a folder either work
(and then give finite images and in-range labels) or raise `DataError`; no
other exception, no NaN reaching training. Bounded example counts, derandomized
(the same examples on every run), no example database.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import data as bdata
from bnas_tf.data.checks import sniff
from bnas_tf.errors import DataError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IMAGE_DTYPES = (np.uint8, np.float32, np.float64, np.float16, np.int32, np.bool_)
LABEL_DTYPES = (np.int64, np.int32, np.uint8, np.float32, np.float64)


FAULTS = ("none", "none", "none", "rank", "dtype", "empty", "label_count", "label_values",
          "label_dtype", "num_classes", "batch_size", "non_finite")


@st.composite
def arrays_and_labels(draw):
    """Valid images and labels with at most one fault a user could make (or none)."""
    fault = draw(st.sampled_from(FAULTS))
    n = 0 if fault == "empty" else draw(st.integers(1, 9))
    shape = (n, draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 3])))
    if fault == "rank":
        shape = draw(st.sampled_from([shape[:3], (*shape, 1), (n, 0, 2, 3)]))
    dtype = draw(st.sampled_from(IMAGE_DTYPES if fault == "dtype" else IMAGE_DTYPES[:4]))
    elements = None
    if np.issubdtype(dtype, np.floating) and fault != "non_finite":
        elements = st.floats(-1e3, 1e3, width=16 if dtype == np.float16 else 32)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    num_classes = draw(st.one_of(st.none(), st.integers(2, 6)))
    high = (num_classes or 6) - 1
    count = draw(st.sampled_from([n + 1, max(n - 1, 0)])) if fault == "label_count" else n
    label_dtype = draw(st.sampled_from(LABEL_DTYPES))
    values = st.integers(0, high)
    if fault == "label_values":
        values = st.integers(-3, high + 3)
    if fault == "label_dtype":
        label_dtype = np.float64
        values = st.floats(allow_nan=True, allow_infinity=True)
    y = np.asarray(draw(st.lists(values, min_size=count, max_size=count)), dtype=label_dtype)
    if draw(st.booleans()):
        y = y.reshape(-1, 1)
    if fault == "num_classes":
        num_classes = draw(st.integers(-1, 1))
    batch_size = draw(st.integers(-1, 0) if fault == "batch_size" else st.integers(1, 3))
    return x, y, num_classes, batch_size


def check_batches(ds: tf.data.Dataset, num_classes: int | None) -> None:
    for images, labels in ds:
        assert images.dtype == tf.float32 and np.all(np.isfinite(images.numpy()))
        assert labels.dtype == tf.int64 and np.all(labels.numpy() >= 0)
        if num_classes is not None:
            assert np.all(labels.numpy() < num_classes)


@SETTINGS
@given(arrays_and_labels(), st.booleans())
def test_make_dataset_works_or_raises_data_error(case, training):
    x, y, num_classes, batch_size = case
    try:
        ds = bdata.make_dataset(x, y, batch_size=batch_size, training=training,
                                num_classes=num_classes)
    except DataError:
        return
    check_batches(ds, num_classes)


@SETTINGS
@given(arrays_and_labels(), st.booleans())
def test_search_pairs_works_or_raises_data_error(case, augment):
    x, y, num_classes, batch_size = case
    try:
        ds = bdata.search_pairs(x, y, batch_size=batch_size, num_classes=num_classes,
                                augment=augment)
    except DataError:
        return
    for train, val in ds:
        check_batches([train, val], num_classes)


@SETTINGS
@given(st.lists(st.integers(0, 4), min_size=2, max_size=40),
       st.floats(0.01, 0.99), st.integers(0, 3))
def test_holdout_works_or_raises_data_error(labels, fraction, seed):
    y = np.asarray(labels)
    x = np.zeros((len(y), 2, 2, 1), np.uint8)
    try:
        data = bdata.ImageData(x, y, x[:1], y[:1], name="t", class_names="abcde")
        train, val = bdata.holdout(data, fraction, seed=seed)
    except DataError:
        counts = np.bincount(y, minlength=5)
        assert np.any(counts == 1) or np.count_nonzero(counts) < 2 or len(set(y)) < 2
        return
    counts, held = np.bincount(y, minlength=5), np.bincount(val.y_train, minlength=5)
    assert np.all((held >= 1) == (counts >= 1)) and np.all(held <= np.maximum(counts - 1, 0))
    np.testing.assert_array_equal(held + np.bincount(train.y_train, minlength=5), counts)


# --------------------------------------------------------------------------- image files

_RGB = np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8)
VALID = {
    ".jpg": tf.io.encode_jpeg(_RGB).numpy(),
    ".png": tf.io.encode_png(_RGB).numpy(),
}


@st.composite
def damaged_files(draw):
    """A valid JPEG or PNG cut, overwritten or extended at random; or random bytes."""
    suffix = draw(st.sampled_from(sorted(VALID)))
    raw = bytearray(VALID[suffix])
    kind = draw(st.sampled_from(["cut", "overwrite", "append", "random"]))
    if kind == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif kind == "overwrite":
        at = draw(st.integers(0, len(raw) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        raw[at : at + len(patch)] = patch
    elif kind == "append":
        raw += draw(st.binary(max_size=64))
    else:
        raw = bytearray(draw(st.binary(max_size=128)))
    return suffix, bytes(raw)


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(damaged_files())
def test_a_damaged_file_loads_or_is_named(damaged):
    suffix, raw = damaged
    root = Path(tempfile.mkdtemp(prefix="bnas_prop_"))
    try:
        for split in ("train", "test"):
            for name in ("a", "b"):
                (root / split / name).mkdir(parents=True)
                for i in range(2):
                    (root / split / name / f"{i}{suffix}").write_bytes(VALID[suffix])
        target = root / "train" / "b" / f"9{suffix}"
        target.write_bytes(raw)
        info, problem = sniff(str(target))  # never raises
        assert info is not None or problem is not None
        try:
            data = bdata.load("folder", root, verify="decode", stats="imagenet")
        except DataError as e:
            assert str(target) in str(e)
            return
        check_batches(bdata.make_dataset(data, batch_size=3, training=True), 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
