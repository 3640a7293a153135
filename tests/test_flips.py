"""Sign-flip callbacks against an independent brute-force count of the formulas.

The reference here recomputes METHODS.md §7 literally with NumPy,
`Σ |sign(w_b) − sign(w_a)| / (2N)` with `sign(w) = +1 if w >= 0 else −1`, on
kernels that a recording callback copies with `layer.get_weights()` after
every batch; it shares no code with `bnas_tf.flips`.
"""

from __future__ import annotations

import bnas_tf as bn  # noqa: F401  (first: selects Keras 2 before TensorFlow is imported)

# isort: split
import glob
import os

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import flips
from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio, binarized_kernels, sign_flip_fraction

BATCH, STEPS = 8, 4


def _sign(w: np.ndarray) -> np.ndarray:
    return np.where(w >= 0, 1, -1).astype(np.int64)  # sign(0) = sign(-0.0) = +1


def _ratio(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    diff = sum(int(np.abs(_sign(a) - _sign(b)).sum()) for a, b in zip(after, before, strict=True))
    return diff / (2 * sum(b.size for b in before))


class Recorder(tf.keras.callbacks.Callback):
    """Copies the given layers' kernels (first weight) at train begin and after each batch."""

    def __init__(self, layer_names):
        super().__init__()
        self.layer_names = layer_names
        self.snapshots: list[list[np.ndarray]] = []
        self.epoch_ends: list[int] = []

    def _copy(self):
        self.snapshots.append([np.array(self.model.get_layer(n).get_weights()[0])
                               for n in self.layer_names])

    def on_train_begin(self, logs=None):
        self.snapshots, self.epoch_ends = [], []
        self._copy()

    def on_train_batch_end(self, batch, logs=None):
        self._copy()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(len(self.snapshots) - 1)


def _binary_model(kernel_quantizer="ste_sign", seed=0):
    tf.keras.utils.set_random_seed(seed)
    kwargs = dict(input_quantizer="ste_sign", kernel_quantizer=kernel_quantizer,
                  kernel_constraint="weight_clip" if kernel_quantizer else None,
                  use_bias=False, padding="same")
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 3)),
        lq.layers.QuantConv2D(8, 3, name="bin1", **kwargs),
        tf.keras.layers.BatchNormalization(),
        lq.layers.QuantConv2D(8, 3, name="bin2", **kwargs),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4, name="head"),
    ])
    return model


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH * STEPS, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=BATCH * STEPS)
    return x, y


def _fit(model, callbacks, lr=0.05, epochs=2):
    model.compile(tf.keras.optimizers.Adam(lr),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks)


@pytest.mark.parametrize("update_freq", ["batch", "epoch"])
def test_ff_ratio_matches_brute_force(update_freq):
    model = _binary_model()
    ff, rec = FlipFlopRatio(update_freq=update_freq), Recorder(["bin1", "bin2"])
    history = _fit(model, [ff, rec])
    snaps = rec.snapshots
    per_step = [_ratio(snaps[i], snaps[i + 1]) for i in range(len(snaps) - 1)]
    assert len(per_step) == 2 * STEPS and max(per_step) > 0.01  # signs did flip
    means = [float(np.mean(per_step[:STEPS])), float(np.mean(per_step[STEPS:]))]
    np.testing.assert_allclose(ff.history, means, rtol=0, atol=1e-7)
    np.testing.assert_allclose(history.history["ff_ratio"], means, rtol=0, atol=1e-7)
    if update_freq == "batch":
        np.testing.assert_allclose(np.concatenate(ff.batch_history), per_step, rtol=0, atol=1e-7)
    else:
        assert ff.batch_history == []
    # A second fit with the same callback starts from the current signs again.
    _fit(model, [ff, rec], epochs=1)
    again = [_ratio(rec.snapshots[i], rec.snapshots[i + 1]) for i in range(STEPS)]
    np.testing.assert_allclose(ff.history, [np.mean(again)], rtol=0, atol=1e-7)


def test_ff_ratio_logs_per_batch():
    seen = []

    class Spy(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(logs["ff_ratio"])

    ff = FlipFlopRatio(update_freq="batch")
    _fit(_binary_model(), [ff, Spy()], epochs=1)
    assert seen == ff.batch_history[0] and len(seen) == STEPS


def test_c2i_ratio_matches_brute_force():
    model = _binary_model()
    c2i, rec = ChangeToInitRatio(), Recorder(["bin1", "bin2"])
    history = _fit(model, [c2i, rec], epochs=3)
    expected = [_ratio(rec.snapshots[0], rec.snapshots[i]) for i in rec.epoch_ends]
    assert expected[-1] > 0.01
    np.testing.assert_allclose(c2i.history, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(history.history["c2i_ratio"], expected, rtol=0, atol=1e-7)


def test_c2i_ratio_against_given_initial_weights():
    model = _binary_model()
    init = [v.numpy() for v in binarized_kernels(model)]
    _fit(model, [], epochs=1)  # move away from the initial weights first
    c2i, rec = ChangeToInitRatio(initial_weights=init), Recorder(["bin1", "bin2"])
    _fit(model, [c2i, rec], epochs=1)
    expected = _ratio(init, rec.snapshots[-1])
    assert expected != _ratio(rec.snapshots[0], rec.snapshots[-1])  # the reference matters
    np.testing.assert_allclose(c2i.history, [expected], rtol=0, atol=1e-7)


def test_both_callbacks_together_on_stage1_model():
    """Binary activations with real latent weights (kernel_quantizer=None) are measured."""
    model = _binary_model(kernel_quantizer=None)
    assert [v.name for v in binarized_kernels(model)] == ["bin1/kernel:0", "bin2/kernel:0"]
    ff, c2i, rec = FlipFlopRatio(), ChangeToInitRatio(), Recorder(["bin1", "bin2"])
    _fit(model, [ff, c2i, rec], lr=0.1)
    snaps = rec.snapshots
    per_step = [_ratio(snaps[i], snaps[i + 1]) for i in range(len(snaps) - 1)]
    assert max(per_step) > 0.01
    np.testing.assert_allclose(ff.history, [np.mean(per_step[:STEPS]), np.mean(per_step[STEPS:])],
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(c2i.history, [_ratio(snaps[0], snaps[i]) for i in rec.epoch_ends],
                               rtol=0, atol=1e-7)


def _manual(callback, variable, values_after_steps):
    """Drive the callback hooks by hand, assigning exact values between steps."""
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    logs_per_batch = []
    for i, values in enumerate(values_after_steps):
        variable.assign(values)
        logs = {}
        callback.on_train_batch_end(i, logs)
        logs_per_batch.append(logs)
    epoch_logs = {}
    callback.on_epoch_end(0, epoch_logs)
    return logs_per_batch, epoch_logs


def test_sign_of_zero_counts_as_plus_one():
    start = np.array([0.0, -0.0, 0.5, -0.5, 0.0, -0.3, 0.2, -0.0], np.float32)
    step1 = np.array([0.3, 0.2, 0.0, -0.0, -0.1, -0.0, -0.0, -0.2], np.float32)
    step2 = np.array([-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, 0.1, 0.0], np.float32)
    # Signs (sign(0) = sign(-0.0) = +1): start + + + - + - + +, step1 + + + + - + + -,
    # step2 all +. Step 1 flips entries 3, 4, 5, 7; step 2 flips 4, 7; start vs step2: 3, 5.
    assert _ratio([start], [step1]) == 4 / 8 and _ratio([step1], [step2]) == 2 / 8
    assert _ratio([start], [step2]) == 2 / 8

    v = tf.Variable(start)
    ff = FlipFlopRatio(update_freq="batch", variables=[v])
    batch_logs, epoch_logs = _manual(ff, v, [step1, step2])
    assert [b["ff_ratio"] for b in batch_logs] == [4 / 8, 2 / 8]
    assert epoch_logs["ff_ratio"] == 6 / 16

    v.assign(start)
    c2i = ChangeToInitRatio(variables=[v])
    _, epoch_logs = _manual(c2i, v, [step1, step2])
    assert epoch_logs["c2i_ratio"] == 2 / 8

    assert sign_flip_fraction(start, step1) == 4 / 8
    assert sign_flip_fraction([start, step1], [step1, step2]) == 6 / 16


def test_zero_learning_rate_gives_exact_zeros():
    model = _binary_model()
    kernel = model.get_layer("bin1").kernel.latent_variable
    values = kernel.numpy()
    values.flat[:6] = [0.0, -0.0, 0.0, -0.0, 0.0, -0.0]  # Adam may turn -0.0 into +0.0
    kernel.assign(values)
    ff, c2i = FlipFlopRatio(update_freq="batch"), ChangeToInitRatio()
    history = _fit(model, [ff, c2i], lr=0.0)
    assert history.history["ff_ratio"] == [0.0, 0.0]
    assert history.history["c2i_ratio"] == [0.0, 0.0]
    assert all(r == 0.0 for epoch in ff.batch_history for r in epoch)


class _Block(tf.keras.layers.Layer):
    """A custom layer holding a binary dense layer (nested search)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = lq.layers.QuantDense(5, kernel_quantizer="ste_sign",
                                          kernel_constraint="weight_clip", name="bdense")

    def call(self, inputs):
        return self.dense(inputs)


def test_only_binarized_kernels_are_counted():
    inner = tf.keras.Sequential([
        lq.layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign",
                                       depthwise_constraint="weight_clip", padding="same",
                                       name="bdw"),
        lq.layers.QuantSeparableConv2D(4, 3, pointwise_quantizer="ste_sign",
                                       pointwise_constraint="weight_clip", padding="same",
                                       name="bsep"),
    ], name="inner")
    x = tf.keras.Input((8, 8, 3))
    y = tf.keras.layers.Conv2D(6, 3, padding="same", name="real_conv")(x)  # plain Keras: excluded
    y = lq.layers.QuantConv2D(6, 3, padding="same", name="no_quantizers")(y)  # nothing quantized
    y = lq.layers.QuantConv2D(6, 1, input_quantizer="ste_sign", name="stage1")(y)
    y = inner(y)
    y = tf.keras.layers.Flatten()(y)
    y = _Block(name="block")(y)
    y = tf.keras.layers.Dense(3, name="head")(y)  # plain head: excluded
    model = tf.keras.Model(x, y)
    found = binarized_kernels(model)
    expected = [  # in the order of model.weights; not bsep's depthwise kernel (no quantizer)
        model.get_layer("stage1").kernel,
        inner.get_layer("bdw").depthwise_kernel.latent_variable,
        inner.get_layer("bsep").pointwise_kernel.latent_variable,
        model.get_layer("block").dense.kernel.latent_variable,
    ]
    assert [v.name for v in found] == [v.name for v in expected]
    assert all(a is b for a, b in zip(found, expected, strict=True))
    n = 6 * 6 + 3 * 3 * 6 + 6 * 4 + 8 * 8 * 4 * 5  # stage1, bdw, bsep pointwise, bdense
    ff = FlipFlopRatio()
    model.compile("adam", "mse")
    model.fit(np.zeros((2, 8, 8, 3), "float32"), np.zeros((2, 3), "float32"), verbose=0,
              callbacks=[ff])
    assert ff.num_weights == n
    assert len(ff.history) == 1


@pytest.mark.parametrize("callback", [FlipFlopRatio, ChangeToInitRatio])
def test_model_without_binarized_kernels_raises(callback):
    model = tf.keras.Sequential([
        tf.keras.Input((4,)),
        tf.keras.layers.Dense(3),
        lq.layers.QuantDense(2),  # Larq layer with no quantizer: not binarized
    ])
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="binarized kernels"):
        model.fit(np.zeros((2, 4), "float32"), np.zeros((2, 2), "float32"), verbose=0,
                  callbacks=[callback()])


def test_unbuilt_model_raises():
    model = tf.keras.Sequential([lq.layers.QuantDense(2, input_quantizer="ste_sign")])
    with pytest.raises(ValueError, match="build"):
        binarized_kernels(model)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="update_freq"):
        FlipFlopRatio(update_freq="step")
    with pytest.raises(ValueError, match="at least one variable"):
        FlipFlopRatio(variables=[])
    with pytest.raises(TypeError, match="tf.Variable"):
        ChangeToInitRatio(variables=[np.zeros(3)])
    with pytest.raises(ValueError, match="floating-point"):
        FlipFlopRatio(variables=[tf.Variable([1, 2])])
    with pytest.raises(TypeError, match="list of arrays"):
        ChangeToInitRatio(initial_weights=np.zeros(3))
    with pytest.raises(ValueError, match="equal shapes"):
        sign_flip_fraction(np.zeros(3), np.zeros(4))
    v = tf.Variable(np.zeros(3, np.float32))
    c2i = ChangeToInitRatio(initial_weights=[np.zeros(4)], variables=[v])
    with pytest.raises(ValueError, match="shapes"):
        c2i.on_train_begin()


@pytest.mark.parametrize("callback", [FlipFlopRatio("batch", "/tmp/tb"), ChangeToInitRatio("x")])
def test_get_config_round_trip(callback):
    config = callback.get_config()
    clone = type(callback).from_config(config)
    assert clone.get_config() == config
    assert set(config) <= set(type(callback).__init__.__code__.co_varnames)


def test_tensorboard_scalars(tmp_path):
    ff = FlipFlopRatio(update_freq="batch", log_dir=tmp_path)
    c2i = ChangeToInitRatio(log_dir=tmp_path)
    _fit(_binary_model(), [ff, c2i], epochs=1)
    values = {}
    for path in glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                values.setdefault(v.tag, []).append(float(tf.make_ndarray(v.tensor)))
    assert values["epoch_ff_ratio"] == pytest.approx(ff.history)
    assert values["batch_ff_ratio"] == pytest.approx(ff.batch_history[0])
    assert values["epoch_c2i_ratio"] == pytest.approx(c2i.history)


def test_public_names():
    assert set(flips.__all__) == {"FlipFlopRatio", "ChangeToInitRatio", "binarized_kernels",
                                  "sign_flip_fraction"}


def test_steps_per_execution_warns(caplog):
    model = _binary_model()
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=2)
    x, y = _data()
    with caplog.at_level("WARNING", logger="bnas_tf.flips"):
        model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[FlipFlopRatio()])
    assert "steps_per_execution=2" in caplog.text
