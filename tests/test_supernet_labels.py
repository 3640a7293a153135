"""Labels outside a supernet's classes: one DataError naming the label and the fix.

Before any step where the data carry their label range (`search_pairs`,
`make_dataset`, arrays), in the step (an in-graph assertion) for foreign
pipelines; for `SuperNet` and `HMNASSuperNet`, training and validation labels.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnas_tf as bn

IMAGE = (8, 8, 3)
OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]


@functools.cache
def tiny_net(num_classes: int = 4, hmnas: bool = False) -> bn.SuperNet:
    """A compiled 2-cell supernet (cached: the label checks never change its state)."""
    cls = bn.HMNASSuperNet if hmnas else bn.SuperNet
    net = cls(bn.SearchSpace(OPS, nodes=2), num_classes=num_classes, layers=2, channels=8,
              seed=0)
    net.compile()
    return net


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *IMAGE)).astype("float32")


def foreign_pairs(y: np.ndarray, batch: int = 4) -> tf.data.Dataset:
    """Pairs from a tf.data pipeline bnas_tf did not build (no label range attached)."""
    x, half = images(len(y)), len(y) // 2
    halves = [tf.data.Dataset.from_tensor_slices((x[s], y[s])).batch(batch)
              for s in (slice(0, half), slice(half, 2 * half))]
    return tf.data.Dataset.zip(tuple(halves))


def assert_clear(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, (part, message)
    assert "Graph execution" not in message and "node" not in message
    chained = error.value.__cause__ or (None if error.value.__suppress_context__
                                        else error.value.__context__)
    assert chained is None  # no TensorFlow error (or stack trace) printed along


def test_image_data_with_more_classes_fails_before_any_step():
    data = bn.data.synthetic(48, 8, image_shape=IMAGE, num_classes=6, seed=0)
    pairs = bn.data.search_pairs(data, batch_size=8)
    net = bn.SuperNet(bn.SearchSpace(OPS, nodes=2), num_classes=4, layers=2, channels=8)
    net.compile()
    with pytest.raises(bn.errors.DataError) as error:
        net.fit(pairs, epochs=1, verbose=0)
    assert_clear(error, "Label 5 (the largest) in the search data", "num_classes=4",
                 "Build the SuperNet with num_classes=6", "data.num_classes")
    assert not net.built  # caught before the network was even built, let alone stepped


def test_array_labels_fail_before_any_step():
    y = np.arange(32) % 4
    y[5] = 11
    pairs = bn.data.search_pairs(images(32), y, batch_size=4)
    with pytest.raises(bn.errors.DataError) as error:
        tiny_net().fit(pairs, epochs=1, verbose=0)
    assert_clear(error, "Label 11 (the largest)", "num_classes=4 (labels 0..3)",
                 "num_classes=12")


def test_validation_data_labels_fail_before_any_step():
    pairs = bn.data.search_pairs(images(32), np.arange(32) % 4, batch_size=4)
    val_y = np.array([0, 1, 7, 2])
    with pytest.raises(bn.errors.DataError) as error:
        tiny_net().fit(pairs, validation_data=(images(4), val_y), epochs=1, verbose=0)
    assert_clear(error, "Label 7 (the largest) in the validation_data", "num_classes=4")
    wide = bn.data.synthetic(24, 8, image_shape=IMAGE, num_classes=6, seed=0)
    with pytest.raises(bn.errors.DataError, match="in the validation_data"):
        tiny_net().fit(pairs, validation_data=bn.data.make_dataset(wide, split="train"),
                       epochs=1, verbose=0)


@pytest.mark.parametrize("hmnas", [False, True])
def test_bad_label_in_a_later_batch_of_a_foreign_pipeline(hmnas):
    y = np.arange(32) % 4
    y[9] = 9  # training half, third batch: two steps run first
    steps = []

    class Count(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    with pytest.raises(bn.errors.DataError) as error:
        tiny_net(hmnas=hmnas).fit(foreign_pairs(y), epochs=1, verbose=0, callbacks=[Count()])
    assert_clear(error, "Label 9 (the largest) in a training batch", "num_classes=4",
                 "num_classes=10", "checked batch by batch")
    assert steps == [0, 1]


def test_negative_label_of_a_foreign_pipeline():
    y = np.arange(32) % 4
    y[20] = -1  # the architecture half
    with pytest.raises(bn.errors.DataError) as error:
        tiny_net().fit(foreign_pairs(y), epochs=1, verbose=0)
    assert_clear(error, "Label -1 in a training batch is negative", "num_classes=4",
                 "class indices")


def test_bad_label_of_a_foreign_validation_pipeline():
    y = np.arange(16) % 4
    val = tf.data.Dataset.from_tensor_slices((images(8), np.array([0, 1, 2, 3, 0, 4, 1, 2])))
    with pytest.raises(bn.errors.DataError) as error:
        tiny_net().fit(foreign_pairs(y), validation_data=val.batch(4), epochs=1, verbose=0)
    assert_clear(error, "Label 4 (the largest) in a validation batch", "num_classes=4")


def test_good_labels_still_train():
    y = np.arange(32) % 4
    history = tiny_net().fit(foreign_pairs(y), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_classes=st.integers(2, 6),
       bad=st.lists(st.integers(-30, 60), min_size=1, max_size=4), data=st.data())
def test_out_of_range_array_labels_always_give_one_clear_error(num_classes, bad, data):
    """Any label outside [0, num_classes) among array labels: a DataError naming it (the
    largest one for too-large labels, before any step), never TensorFlow's error."""
    bad = [b for b in bad if not 0 <= b < num_classes] or [num_classes]
    y = np.arange(32) % num_classes
    where = data.draw(st.lists(st.integers(0, 31), min_size=len(bad), max_size=len(bad),
                               unique=True))
    y[where] = bad
    net = tiny_net(num_classes)
    steps = int(net.optimizer.iterations.numpy())
    with pytest.raises(bn.errors.DataError) as error:
        pairs = bn.data.search_pairs(images(32), y, batch_size=4)  # negatives: caught here
        net.fit(pairs, epochs=1, verbose=0)
    message = str(error.value)
    if min(bad) < 0:
        assert "outside the label range" in message
    else:
        assert f"Label {max(bad)} (the largest)" in message
        assert f"num_classes={num_classes} (labels 0..{num_classes - 1})" in message
        assert f"num_classes={max(bad) + 1}" in message
    assert int(net.optimizer.iterations.numpy()) == steps  # no step ran
