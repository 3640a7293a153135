"""SuperNet: bilevel steps touch only their own variables, temperature, warm-up, saving."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn

IMAGE = (8, 8, 3)
# a small space keeps graphs (and tracing time) small; bats, bnas and lce ops are
# covered op by op in test_ops.py
SMALL_OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]


def tiny_net(space=None, temperature=0.2, seed=0, **kwargs):
    space = (bn.SearchSpace(SMALL_OPS, nodes=2, group_channels=2) if space is None
             else bn.SearchSpace.get(space, nodes=2))
    return bn.SuperNet(space, num_classes=4, layers=3, channels=4, temperature=temperature,
                       seed=seed, **kwargs)


def tiny_batches(n=32, seed=0):
    data = bn.data.synthetic(n, 8, image_shape=IMAGE, num_classes=4, seed=seed)
    x = bn.data.normalize(data.x_train, data)
    return x, data.y_train


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=False)]


@pytest.fixture(scope="module")
def compiled_net():
    net = tiny_net()
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_regularizer=bn.regularizers.Diversity(1.0), metrics=["accuracy"])
    x, _ = tiny_batches()
    net(x[:1])
    return net


def test_variables_are_split_between_arch_and_weights(compiled_net):
    arch = {id(v) for v in compiled_net.arch_variables}
    weights = {id(v) for v in compiled_net.weight_variables}
    assert len(arch) == 2 and not arch & weights
    assert arch | weights == {id(v) for v in compiled_net.trainable_variables}


def test_arch_step_changes_alpha_only(compiled_net):
    x, y = tiny_batches()
    net = compiled_net
    alpha, weights = snapshot(net.arch_variables), snapshot(net.weight_variables)
    net.arch_step(x[:8], y[:8], x[8:16], y[8:16])
    assert all(changed(alpha, net.arch_variables))
    assert not any(changed(weights, net.weight_variables))


def test_weight_step_changes_weights_only(compiled_net):
    x, y = tiny_batches()
    net = compiled_net
    alpha, weights = snapshot(net.arch_variables), snapshot(net.weight_variables)
    net.weight_step(x[:8], y[:8])
    assert not any(changed(alpha, net.arch_variables))
    # every weight that reaches the loss moves
    assert np.mean(changed(weights, net.weight_variables)) > 0.9


def test_second_order_step_changes_alpha_only_and_restores_weights():
    x, y = tiny_batches()
    net = tiny_net()
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2), second_order=True)
    net(x[:1])
    alpha, weights = snapshot(net.arch_variables), snapshot(net.weight_variables)
    loss = net.arch_step(x[:8], y[:8], x[8:16], y[8:16])
    assert np.isfinite(float(loss))
    assert all(changed(alpha, net.arch_variables))
    for before, v in zip(weights, net.weight_variables, strict=False):
        np.testing.assert_allclose(v.numpy(), before, atol=1e-6)


def moving_statistics(net):
    return [v.numpy() for v in net.non_trainable_weights if "moving_" in v.name]


def test_second_order_step_updates_batch_norm_statistics_as_first_order():
    """The virtual and finite-difference passes leave the BN moving statistics alone: both
    orders update them once, from the validation batch at the current weights."""
    x, y = tiny_batches()
    stats = {}
    for second_order in (False, True):
        tf.keras.utils.set_random_seed(0)  # same initial weights
        net = tiny_net()
        net.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.1), second_order=second_order)
        net(x[:1])
        before = moving_statistics(net)
        net.arch_step(x[:8], y[:8], x[8:16], y[8:16])
        stats[second_order] = moving_statistics(net)
    assert len(before) > 10 and any(not np.array_equal(a, b)
                                    for a, b in zip(before, stats[False], strict=True))
    for first, second in zip(stats[False], stats[True], strict=True):
        np.testing.assert_allclose(second, first, rtol=1e-6, atol=1e-7)


def arch_gradients(second_order, xi, space=None):
    x, y = (tf.constant(t) for t in tiny_batches())
    tf.keras.utils.set_random_seed(0)  # same initial weights for every call
    net = tiny_net(space)
    net.compile(optimizer=tf.keras.optimizers.legacy.SGD(xi), second_order=second_order)
    net(x[:1])
    return net._arch_gradients(x[:8], y[:8], x[8:16], y[8:16])[1]


def unrolled_distance(xi, space=None):
    first = arch_gradients(False, xi, space)
    second = arch_gradients(True, xi, space)
    return max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(first, second, strict=True))


def test_second_order_with_zero_virtual_step_is_first_order():
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in arch_gradients(False, 0.0))
    assert scale > 0
    assert unrolled_distance(0.0) < 1e-5 * scale
    assert unrolled_distance(1e-3) > 1e-4 * scale  # a binary supernet's correction is not 0


def test_second_order_correction_is_linear_in_the_virtual_step():
    # on a smooth (real-valued) space the finite-difference Hessian-vector product is
    # well defined, so the correction ξ·H·v grows linearly with ξ
    smooth = bn.SearchSpace(["none", "avg_pool_3x3", "skip_connect"], nodes=2)
    small, large = unrolled_distance(1e-4, smooth), unrolled_distance(1e-3, smooth)
    assert small > 0
    assert 7 < large / small < 13


@functools.cache
def search_entropy(temperature, arch_regularizer=None, epochs=3):
    tf.keras.utils.set_random_seed(1)
    x, y = tiny_batches(64, seed=1)
    net = tiny_net(temperature=temperature, seed=1)
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(3e-2, beta_1=0.5),
                arch_regularizer=arch_regularizer, arch_weight_decay=0.0)
    pairs = bn.data.search_pairs(x, y, batch_size=8, seed=1)
    history = net.fit(pairs, epochs=epochs, verbose=0)
    return history.history


def test_low_temperature_ends_sharper():
    cold, warm = search_entropy(0.2), search_entropy(1.0)
    uniform = math.log(len(SMALL_OPS))
    assert cold["entropy"][0] < uniform and warm["entropy"][0] < uniform
    assert cold["entropy"][-1] < warm["entropy"][-1] - 0.05
    assert cold["entropy"][-1] < cold["entropy"][0]
    assert {round(t, 6) for t in cold["temperature"]} == {0.2}


def test_temperature_regularizer_lowers_alpha_entropy_faster():
    plain = search_entropy(0.2)
    regularized = search_entropy(0.2, bn.regularizers.Temperature(5.0))
    assert regularized["alpha_entropy"][0] < math.log(len(SMALL_OPS))
    assert regularized["alpha_entropy"][-1] < plain["alpha_entropy"][-1] - 0.01


def test_warmup_epochs_freeze_alpha_then_search():
    x, y = tiny_batches()
    net = tiny_net()
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2), warmup_epochs=1)
    alphas = []

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            alphas.append(snapshot(net.arch_variables))

    net(x[:1])
    start = snapshot(net.arch_variables)
    net.fit(bn.data.search_pairs(x, y, batch_size=8), epochs=2, verbose=0,
            callbacks=[Record()])
    assert all(np.array_equal(a, b) for a, b in zip(start, alphas[0], strict=False))
    assert not any(np.array_equal(a, b) for a, b in zip(alphas[0], alphas[1], strict=False))


def test_temperature_scheduler_anneals():
    x, y = tiny_batches()
    net = tiny_net(temperature=1.0)
    net.compile()
    scheduler = bn.callbacks.TemperatureScheduler.anneal(1.0, 0.25, epochs=3)
    history = net.fit(bn.data.search_pairs(x, y, batch_size=8), epochs=3, verbose=0,
                      callbacks=[scheduler])
    np.testing.assert_allclose(history.history["temperature"], [1.0, 0.5, 0.25], rtol=1e-6)
    assert net.temperature == pytest.approx(0.25)


def test_fit_rejects_plain_batches(compiled_net):
    x, y = tiny_batches()
    with pytest.raises(bn.errors.DataError, match="search_pairs"):
        compiled_net.fit(x, y, epochs=1, verbose=0)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(bn.errors.DataError, match=r"\(\(x_train, y_train\), \(x_val, y_val\)\)"):
        compiled_net.fit(plain, epochs=1, verbose=0)


def test_wrong_input_rank_is_a_clear_error(compiled_net):
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\)"):
        compiled_net(tf.zeros([2, 8, 8]))


def test_genotype_uses_space_ops(compiled_net):
    genotype = compiled_net.genotype()
    assert genotype.op_names <= set(compiled_net.space.op_names)
    assert "none" not in genotype.op_names  # this space cannot select none
    assert bn.Genotype.from_json(genotype.to_json()) == genotype
    probs = compiled_net.op_probabilities()
    np.testing.assert_allclose(probs["normal"].sum(axis=1), 1.0, rtol=1e-5)
    assert np.asarray(genotype.probabilities["normal"]).shape == probs["normal"].shape


def test_config_round_trip_gives_identical_outputs(compiled_net):
    x, _ = tiny_batches()
    clone = bn.SuperNet.from_config(compiled_net.get_config())
    clone(x[:1])
    clone.set_weights(compiled_net.get_weights())
    np.testing.assert_array_equal(clone(x, training=False), compiled_net(x, training=False))
    assert clone.get_config() == compiled_net.get_config()


def test_save_and_load_model_reload_identically(compiled_net, tmp_path):
    x, _ = tiny_batches()
    path = tmp_path / "supernet.keras"
    compiled_net.save(path)
    loaded = tf.keras.models.load_model(path, compile=False)
    assert isinstance(loaded, bn.SuperNet)
    np.testing.assert_allclose(loaded(x, training=False), compiled_net(x, training=False),
                               atol=1e-6)
    for a, b in zip(loaded.arch_variables, compiled_net.arch_variables, strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="layers"):
        bn.SuperNet("bats", layers=0)
    with pytest.raises(bn.errors.SearchSpaceError, match="Known spaces"):
        bn.SuperNet("darts")
    with pytest.raises(ValueError, match="temperature"):
        bn.SuperNet("bats", temperature=0.0)


@pytest.fixture
def mixed_bfloat16():
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_search_under_mixed_bfloat16_keeps_alpha_and_logits_in_float32(mixed_bfloat16):
    x, y = tiny_batches()
    net = tiny_net()
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    net(x[:1])
    assert net.cells[0].edges[0].compute_dtype == "bfloat16"
    alpha = snapshot(net.arch_variables)
    history = net.fit(bn.data.search_pairs(x, y, batch_size=8), epochs=2, verbose=0)
    assert all(a.dtype == tf.float32 for a in net.arch_variables)
    assert net(x[:2]).dtype == tf.float32
    assert all(changed(alpha, net.arch_variables))
    assert np.all(np.isfinite(history.history["loss"]))
