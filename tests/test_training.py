"""Derived networks and two-stage training: build, decay, binarize, hand-off, save/load."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.training import binarize_weights, binary_conv_layers, with_weight_decay

SPACE = bn.SearchSpace.get("bats", nodes=3)
IMAGE = (16, 16, 3)


def edge(source, *ops, weight=1.0):
    return bn.Edge(source, tuple((name, w) for name, w in ops), weight)


def wide_genotype():
    """Node 2 has 1 input, node 3 has 3 inputs with weighted ops and edges, node 4 is pruned."""
    normal = bn.Cell(
        nodes=(
            (edge(1, ("bin_conv_3x3", 1.0)),),
            (edge(0, ("bin_dil_conv_3x3", 0.7), ("max_pool_3x3", 0.3), weight=0.8),
             edge(1, ("skip_connect", 1.0)),
             edge(2, ("bin_conv_5x5", 1.0), weight=1.3)),
            (),
        ),
        concat=(2, 3),
    )
    reduce = bn.Cell(
        nodes=(
            (edge(0, ("bin_conv_3x3", 1.0)), edge(1, ("avg_pool_3x3", 1.0))),
            (edge(0, ("bin_dil_conv_5x5", 1.0)), edge(2, ("skip_connect", 1.0)),
             edge(1, ("max_pool_3x3", 1.0))),
            (edge(3, ("bin_conv_3x3", 1.0)),),
        ),
        concat=(2, 3, 4),
    )
    return bn.Genotype(normal, reduce, SPACE.get_config())


def small_model(binary_weights=False, seed=0):
    tf.keras.utils.set_random_seed(seed)
    return bn.build_network(wide_genotype(), num_classes=4, layers=3, channels=6,
                            input_shape=IMAGE, binary_weights=binary_weights)


def small_data():
    data = bn.data.synthetic(128, 32, image_shape=IMAGE, num_classes=4, seed=0)
    train = bn.data.make_dataset(data, batch_size=16, training=True)
    test = bn.data.make_dataset(data, batch_size=32)
    return data, train, test


@pytest.fixture(scope="module")
def two_stage():
    _, train, test = small_data()
    starts = {}

    class StageStart(tf.keras.callbacks.Callback):
        def __init__(self, stage):
            super().__init__()
            self.stage = stage

        def on_train_begin(self, logs=None):
            starts[self.stage] = [w.copy() for w in self.model.get_weights()]

    model = small_model()
    result = bn.train_two_stage(model, train, test, epochs=(3, 2), learning_rate=3e-3,
                                test_ds=test, verbose=0,
                                callbacks=lambda stage: [StageStart(stage)])
    return model, result, starts


def test_three_input_node_with_weights_builds(capsys):
    model = small_model()
    assert model.output_shape == (None, 4)
    names = [layer.name for layer in model.layers]
    # node 3 of normal cells sums three edges; weighted ops and edges get Scale layers
    assert "cell0_n3" in names and "cell0_n3_e0_weight" in names
    assert "cell0_n3_e0_max_pool_3x3_weight" in names
    assert not any(name.startswith("cell0_n4") for name in names)  # pruned node
    scales = {layer.name: float(layer.scale.numpy()) for layer in model.layers
              if isinstance(layer, bn.layers.Scale)}
    assert scales["cell0_n3_e2_weight"] == pytest.approx(1.3)
    lq.models.summary(model)
    assert "Total params" in capsys.readouterr().out


def test_binary_convs_are_top_level_larq_layers_with_plus_one_padding():
    convs = binary_conv_layers(small_model())
    assert convs and all(isinstance(c, lq.layers.QuantConv2D) for c in convs)
    for conv in convs:
        config = conv.get_config()
        # "same" convs pad with +1; a stride-2 dilated conv pads in its PhaseSubsample
        # (with +1) and runs "valid"
        assert (config["padding"], config["pad_values"]) in (("same", 1.0), ("valid", 0.0))
        assert config["kernel_quantizer"] is None  # stage 1: latent real weights


def test_weight_decay_reaches_conv_kernels_and_nothing_else():
    model = small_model()
    decayed = with_weight_decay(model, 1e-2)
    expected = 0.0
    for layer in decayed.layers:
        is_conv = isinstance(layer, (tf.keras.layers.Conv2D, lq.layers.QuantConv2D))
        assert (getattr(layer, "kernel_regularizer", None) is not None) == is_conv, layer.name
        if is_conv:
            kernel = getattr(layer.kernel, "latent_variable", layer.kernel)
            expected += 0.5 * 1e-2 * float(tf.reduce_sum(tf.square(kernel)))
        for attr in ("bias_regularizer", "beta_regularizer", "gamma_regularizer"):
            assert getattr(layer, attr, None) is None
    # FactorizedReduce's inner convs are not top level: they stay without decay
    assert float(tf.add_n(decayed.losses)) == pytest.approx(expected, rel=1e-5)
    for a, b in zip(model.get_weights(), decayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_binarized_copy_keeps_latent_weights_and_binarizes_kernels():
    model = small_model()
    binary = binarize_weights(model)
    for a, b in zip(model.get_weights(), binary.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = tf.random.normal([2, *IMAGE])
    for conv in binary_conv_layers(binary):
        with lq.context.quantized_scope(True):
            kernel = conv.kernel.numpy()
        assert set(np.unique(kernel)) <= {-1.0, 1.0}
        latent = conv.kernel.latent_variable.numpy()
        np.testing.assert_array_equal(kernel, np.where(latent >= 0, 1.0, -1.0))
    # the forward pass uses sign(W): equal to a conv on hand-binarized inputs and kernels
    conv = next(c for c in binary_conv_layers(binary) if c.kernel_size == (3, 3)
                and c.strides == (1, 1) and c.dilation_rate == (1, 1))
    inputs = tf.random.normal([2, 8, 8, conv.input_shape[-1]])
    signs = np.where(inputs.numpy() >= 0, 1.0, -1.0)
    padded = np.pad(signs, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    latent = conv.kernel.latent_variable.numpy()
    kernel = np.where(latent >= 0, 1.0, -1.0).astype("float32")
    if isinstance(conv, bn.ops.GroupMaskedQuantConv2D):  # a grouped conv, trained masked
        kernel *= conv._mask.numpy()
    expected = tf.nn.conv2d(padded, kernel, strides=1, padding="VALID")
    np.testing.assert_allclose(conv(inputs), expected, atol=1e-5)
    assert binary(x).shape == (2, 4)


def test_stage2_copy_decays_no_conv_at_all():
    """AdamBNN stage 2: weight decay 0 on every conv, the real-valued ones included."""
    decayed = with_weight_decay(small_model(), 1e-2)
    real = [layer.name for layer in decayed.layers if isinstance(layer, tf.keras.layers.Conv2D)
            and layer not in binary_conv_layers(decayed)]
    assert "stem_conv" in real and any("_pre" in name for name in real)  # decayed in stage 1
    stage2 = binarize_weights(decayed)
    assert not stage2.losses
    assert all(getattr(layer, "kernel_regularizer", None) is None for layer in stage2.layers)


def test_scaled_binarization_uses_per_channel_magnitude():
    """Scale per output channel: mean |W| over the conv's real entries (for a grouped conv
    trained masked, its in-block entries: the scale of the grouped conv export makes)."""
    binary = binarize_weights(small_model(), "magnitude_aware_sign")
    convs = binary_conv_layers(binary)
    assert any(isinstance(c, bn.ops.GroupMaskedQuantConv2D) for c in convs)
    for conv in convs:
        with lq.context.quantized_scope(True):
            kernel = conv.kernel.numpy()
        latent = conv.kernel.latent_variable.numpy()
        real = (np.broadcast_to(conv._mask.numpy(), latent.shape) > 0
                if isinstance(conv, bn.ops.GroupMaskedQuantConv2D) else np.ones(latent.shape, bool))
        scale = np.abs(latent * real).sum(axis=(0, 1, 2)) / real.sum(axis=(0, 1, 2))
        np.testing.assert_allclose(np.abs(kernel), np.broadcast_to(scale, kernel.shape),
                                   rtol=1e-5)


def test_two_stage_training_hands_off_weights_and_learns(two_stage):
    model, result, starts = two_stage
    assert result.model is not result.stage1_model and result.model is not model
    # stage 2 starts exactly where stage 1 ended (same latent values)
    for a, b in zip(starts[2], result.stage1_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # stage 1 started from the template's weights
    for a, b in zip(starts[1], model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    stage1 = result.history["stage1"]
    assert stage1["loss"][-1] < stage1["loss"][0]
    assert stage1["learning_rate"][-1] == pytest.approx(0.0, abs=1e-9)  # linear decay to 0
    assert 0.0 < stage1["learning_rate"][0] < 3e-3
    assert result.test["stage2"]["accuracy"] > 0.25  # above chance on 4 learnable classes
    convs = binary_conv_layers(result.model)
    assert all(c.get_config()["kernel_quantizer"]["class_name"] == "SteSign" for c in convs)
    assert all(c.kernel_regularizer is None for c in convs)  # no decay in stage 2
    assert not result.model.losses  # nor on the real-valued convs (stem, 1x1 inputs, skips)


@pytest.mark.parametrize("suffix", ["model", "model.keras"])
def test_saved_model_reloads_identically(two_stage, tmp_path, suffix):
    _, result, _ = two_stage
    x = tf.random.normal([4, *IMAGE], seed=1)
    path = tmp_path / suffix
    result.model.save(path)
    loaded = bn.load_model(path)
    np.testing.assert_array_equal(loaded(x, training=False), result.model(x, training=False))


def test_checkpointed_training_continues_after_its_newest_checkpoint(tmp_path):
    """With checkpoint_dir, a second call restores both finished stages instead of training
    them again, and returns the same history and weights (every epoch, both stages)."""
    _, train, test = small_data()
    begun = []

    class Begin(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            begun.append(int(self.model.optimizer.iterations.numpy()))

    def run():
        return bn.train_two_stage(small_model(), train, test, epochs=(2, 1), learning_rate=3e-3,
                                  test_ds=test, verbose=0, callbacks=[Begin()],
                                  checkpoint_dir=tmp_path)

    first = run()
    assert begun == [0, 0] and sorted(p.name for p in tmp_path.iterdir()) == ["stage1", "stage2"]
    again = run()
    assert begun == [0, 0]  # nothing trained again
    assert again.history == first.history and again.test == first.test
    assert len(again.history["stage1"]["loss"]) == 2 and len(again.history["stage2"]["loss"]) == 1
    for a, b in zip(again.model.get_weights(), first.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="hold 2 epochs of stage 1, more than the 1 asked for"):
        bn.train_two_stage(small_model(), train, epochs=(1, 1), verbose=0,
                           checkpoint_dir=tmp_path)


def test_distillation_from_a_teacher_trains_the_student():
    data, train, test = small_data()
    teacher = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=IMAGE),
                                   tf.keras.layers.Dense(4)])
    teacher.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(True))
    teacher.fit(train, epochs=3, verbose=0)
    student = small_model()
    distiller = bn.training.Distiller(student, teacher)
    distiller.compile(optimizer=tf.keras.optimizers.legacy.Adam(3e-3),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(True),
                      metrics=["accuracy"])
    history = distiller.fit(train, epochs=3, verbose=0)
    assert history.history["distillation_loss"][-1] < history.history["distillation_loss"][0]
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    distiller.fit(train, epochs=1, verbose=0)
    for a, b in zip(teacher_weights, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the teacher is frozen


def test_distillation_keeps_weight_decay_whatever_alpha():
    """Pure distillation (alpha = 1, as train_two_stage uses it) still adds the student's
    regularization losses: loss = (1 - alpha) * CE + alpha * KL + weight decay."""
    _, train, _ = small_data()
    teacher = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=IMAGE),
                                   tf.keras.layers.Dense(4)])
    student = with_weight_decay(small_model(), 1.0)
    decay = float(tf.add_n(student.losses))
    distiller = bn.training.Distiller(student, teacher, alpha=1.0)
    distiller.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.0),  # weights stay put
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(True))
    logs = distiller.fit(train.take(1), epochs=1, verbose=0).history
    assert decay > 1.0
    assert logs["loss"][0] - logs["distillation_loss"][0] == pytest.approx(decay, rel=1e-4)


def test_bad_inputs_fail_clearly():
    with pytest.raises(TypeError, match="Genotype.load"):
        bn.build_network({"normal": []})
    with pytest.raises(ValueError, match="input_shape"):
        bn.build_network(wide_genotype(), input_shape=(32, 32))
    with pytest.raises(ValueError, match="epochs"):
        bn.train_two_stage(small_model(), small_data()[1], epochs=(1,))
    float_model = tf.keras.Sequential([tf.keras.layers.Conv2D(4, 3, input_shape=IMAGE)])
    with pytest.raises(ValueError, match="no binary convolutions"):
        bn.train_two_stage(float_model, small_data()[1])
