"""HM-NAS mode: exact masking, straight-through mask gradients, pruning of a useless part,
any in-degree, and a derived network that starts with the supernet's predictions."""

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.hmnas import HMNASSuperNet
from bnas_tf.masks import Sparsity, threshold_mask
from bnas_tf.search_run import SearchConfig, run_search

IMAGE = (8, 8, 3)
# grouped binary convs (group_channels=2) exercise the grouped-kernel copy; skip_connect
# at stride 2 is a FactorizedReduce, the pool a PoolBN: every op kind that holds weights
SMALL_OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]


def tiny_net(ops=SMALL_OPS, **kwargs):
    space = bn.SearchSpace(ops, nodes=2, group_channels=2)
    kwargs = {"num_classes": 4, "layers": 3, "channels": 4, "seed": 0, **kwargs}
    return HMNASSuperNet(space, **kwargs)


def tiny_batches(n=32, seed=0):
    data = bn.data.synthetic(n, 8, image_shape=IMAGE, num_classes=4, seed=seed)
    return bn.data.normalize(data.x_train, data), data.y_train


def set_scores(variable, index, value):
    v = variable.numpy()
    v[index] = value
    variable.assign(v)


def mixed_convs(net, kind, edge):
    """The masked binary convs of edge `edge` in every cell of `kind`."""
    return [op.conv for cell in net.cells if cell.reduction == (kind == "reduce")
            for op in cell.edges[edge]._ops if isinstance(op, bn.ops.BinaryConvBN)]


@pytest.fixture(scope="module")
def trained_net():
    """A tiny supernet after a few bilevel steps (moved α, β, BN statistics, weights)."""
    tf.keras.utils.set_random_seed(0)
    net = tiny_net()
    # small steps: scores (1e-2 at first) stay above the threshold 5e-3
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-3))
    x, y = tiny_batches()
    for _ in range(3):
        net.arch_step(x[:16], y[:16], x[16:], y[16:])
        net.weight_step(x[:16], y[:16])
    return net


def test_threshold_mask_is_exact_and_straight_through():
    s = tf.Variable([0.02, 0.005, -1.0, 0.0051])
    with tf.GradientTape() as tape:
        m = threshold_mask(s, 5e-3)
        loss = tf.reduce_sum(m * tf.constant([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(m.numpy(), [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(tape.gradient(loss, s).numpy(), [1.0, 2.0, 3.0, 4.0])


def test_masked_off_op_contributes_exactly_nothing():
    net = tiny_net()
    x, _ = tiny_batches(8)
    conv = bn.SearchSpace(SMALL_OPS).op_names.index("bin_conv_3x3")
    net(x)

    def scramble_convs():
        for kind in ("normal", "reduce"):
            for e in range(net.space.num_edges):
                for c in mixed_convs(net, kind, e):
                    c.kernel.assign(tf.random.normal(c.kernel.shape, stddev=10.0))

    before = net(x, training=False).numpy()
    scramble_convs()
    assert not np.allclose(before, net(x, training=False).numpy())  # the convs matter...
    for kind in ("normal", "reduce"):
        set_scores(getattr(net.arch, f"op_scores_{kind}"), (slice(None), conv), 0.0)
    masked = net(x, training=False).numpy()
    scramble_convs()
    np.testing.assert_array_equal(masked, net(x, training=False).numpy())  # ...until masked


def test_masked_off_edge_contributes_exactly_nothing():
    net = tiny_net()
    x, _ = tiny_batches(8)
    net(x)
    set_scores(net.arch.edge_scores_normal, 0, 0.0)  # edge 0 -> node 2 of normal cells
    masked = net(x, training=False).numpy()
    for c in mixed_convs(net, "normal", 0):
        c.kernel.assign(tf.random.normal(c.kernel.shape, stddev=10.0))
    set_scores(net.arch.beta_normal, 0, 123.0)
    np.testing.assert_array_equal(masked, net(x, training=False).numpy())
    set_scores(net.arch.edge_scores_normal, 0, 1.0)  # back on: it matters
    assert not np.allclose(masked, net(x, training=False).numpy())


def test_mask_gradients_flow_through_the_threshold():
    net = tiny_net()
    x, y = tiny_batches(8)
    net(x)
    set_scores(net.arch.edge_scores_normal, 1, -1.0)  # masked off: still gets a gradient
    set_scores(net.arch.op_scores_reduce, (0, 3), -1.0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    convs = net.masked_convs()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, net(x, training=True))
    scores = [net.arch.op_scores_normal, net.arch.op_scores_reduce, net.arch.edge_scores_normal,
              net.arch.edge_scores_reduce] + [c.kernel_scores for c in convs]
    grads = tape.gradient(loss, scores)
    for g, v in zip(grads, scores, strict=True):
        assert g is not None and np.all(np.isfinite(g.numpy())), v.name
    for g, v in zip(grads[:4], scores[:4], strict=True):
        assert np.count_nonzero(g.numpy()) > 0, v.name
    # kernel scores: all but the convs behind the masked-off op/edge (their output is × 0)
    silent = {id(c) for c in mixed_convs(net, "normal", 1) + mixed_convs(net, "reduce", 0)}
    for g, c in zip(grads[4:], convs, strict=True):
        assert (np.count_nonzero(g.numpy()) > 0) == (id(c) not in silent), c.name
    assert grads[2].numpy()[1] != 0.0  # the masked-off edge
    assert grads[1].numpy()[0, 3] != 0.0  # the masked-off op


def test_each_step_updates_its_own_scores(trained_net):
    net = trained_net
    arch, weights = net.arch_variables, net.weight_variables
    names = {v.name.split("/")[-1].split(":")[0] for v in arch}
    assert {"op_scores_normal", "edge_scores_reduce", "beta_normal", "alpha_reduce"} <= names
    assert any("kernel_scores" in v.name for v in weights)
    assert not any("kernel_scores" in v.name for v in arch)
    x, y = tiny_batches(16, seed=1)
    a0, w0 = [v.numpy().copy() for v in arch], [v.numpy().copy() for v in weights]
    net.arch_step(x[:8], y[:8], x[8:], y[8:])
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(a0, arch, strict=True))
    assert all(np.array_equal(w, v.numpy()) for w, v in zip(w0, weights, strict=True))
    a0, w0 = [v.numpy().copy() for v in arch], [v.numpy().copy() for v in weights]
    net.weight_step(x[:8], y[:8])
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(a0, arch, strict=True))
    kernel_scores = [(w, v) for w, v in zip(w0, weights, strict=True) if "kernel_scores" in v.name]
    assert all(not np.array_equal(w, v.numpy()) for w, v in kernel_scores)


def test_sparsity_is_a_keras_regularizer_on_the_scores():
    net = tiny_net(sparsity=0.5, weight_sparsity=0.25)
    x, _ = tiny_batches(4)
    net(x)
    # 4 arch score variables, each at its initial value: mean(|s|) = 2e-2
    np.testing.assert_allclose(float(tf.add_n(net.arch.losses)), 4 * 0.5 * 2e-2, rtol=1e-5)
    assert len(net.losses) == 4 + len(net.masked_convs())
    assert Sparsity.from_config(Sparsity(0.3).get_config()).strength == 0.3


def test_kernel_masks_of_grouped_convs_count_only_real_entries():
    """`weights_on` and the kernel-score sparsity see the in-block entries of a grouped conv
    trained masked, not the always-zero entries outside the blocks."""
    net = tiny_net(weight_sparsity=0.5)  # channels 4 and 8 in groups of 2: 2 and 4 groups
    x, _ = tiny_batches(4)
    net(x)
    convs = net.masked_convs()
    assert convs and all(c.mask_groups > 1 for c in convs)
    for conv in convs:  # real entries on (0.1 > τ), the entries outside the blocks off
        conv.kernel_scores.assign(np.where(conv._mask.numpy() > 0, 0.1, -7.0)
                                  * np.ones(conv.kernel_scores.shape, "float32"))
    assert float(net.weight_mask_fraction()) == pytest.approx(1.0)
    for conv in convs:  # 0.5 · mean |s| over the real entries
        assert float(tf.add_n(conv.losses)) == pytest.approx(0.5 * 0.1, rel=1e-5)
        with tf.GradientTape() as tape:
            loss = tf.add_n(conv.losses)
        grad = tape.gradient(loss, conv.kernel_scores).numpy()
        assert not grad[..., conv._mask.numpy()[0, 0] == 0].any()
    first = convs[0]
    first.kernel_scores.assign(np.where(first._mask.numpy() > 0, -1.0, 0.1)
                               * np.ones(first.kernel_scores.shape, "float32"))
    total = sum(bn.ops.active_entries(c.kernel) for c in convs)
    expected = 1.0 - bn.ops.active_entries(first.kernel) / total
    assert float(net.weight_mask_fraction()) == pytest.approx(expected, rel=1e-6)


class _Noise(tf.keras.layers.Layer):
    """Useless by construction: Gaussian noise that ignores its input."""

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        return 3.0 * tf.random.normal(tf.shape(x))


if "test_noise" not in bn.ops.registered_ops():
    bn.ops.register_op("test_noise")(lambda filters, strides, options: _Noise(strides))


def test_masks_switch_off_a_useless_op():
    """Labels = brightest colour channel; `skip_connect` carries it, `test_noise` only hurts."""
    tf.keras.utils.set_random_seed(0)
    space = bn.SearchSpace(["none", "skip_connect", "test_noise"], nodes=2)
    net = HMNASSuperNet(space, num_classes=3, layers=3, channels=4, seed=0, sparsity=0.05,
                        op_initial=1e-2, edge_initial=1e-2, cell_skip=False)
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(2e-3), arch_weight_decay=0.0)
    rng = np.random.default_rng(0)

    def batch(n=32):
        x = rng.normal(size=(n, *IMAGE)) + 2 * rng.normal(size=(n, 1, 1, 3))
        return tf.constant(x, tf.float32), tf.constant(np.argmax(x.mean(axis=(1, 2)), axis=1))

    step = tf.function(lambda xt, yt, xv, yv: (net.arch_step(xt, yt, xv, yv),
                                               net.weight_step(xt, yt)[0]))
    noise = space.op_names.index("test_noise")
    assert net.arch.op_mask("normal").numpy()[:, noise].all()
    for _ in range(100):
        (xt, yt), (xv, yv) = batch(), batch()
        step(xt, yt, xv, yv)
    for kind in ("normal", "reduce"):
        assert not net.arch.op_mask(kind).numpy()[:, noise].any(), kind
    genotype = net.genotype()
    assert "test_noise" not in genotype.op_names
    assert "skip_connect" in genotype.op_names  # the useful part stays
    x, y = batch(256)
    accuracy = np.mean(np.argmax(net(x, training=False).numpy(), axis=1) == y.numpy())
    assert accuracy > 0.6  # chance: 1/3


def test_genotype_keeps_any_in_degree_and_derived_model_predicts_like_the_supernet(trained_net):
    net = trained_net
    conv = net.space.op_names.index("bin_conv_3x3")
    # normal: node 2 keeps one input (edge 1->2), node 3 all three (0,1,2 -> 3);
    # reduce: node 2 loses every input, so it is removed and edge 2->3 goes with it
    set_scores(net.arch.edge_scores_normal, 0, 0.0)
    set_scores(net.arch.op_scores_normal, (2, conv), 0.0)   # one op off on edge 0->3
    set_scores(net.arch.edge_scores_reduce, slice(0, 2), 0.0)
    for c in mixed_convs(net, "normal", 4)[:1]:              # prune some kernel entries
        set_scores(c.kernel_scores, (Ellipsis, 0), 0.0)
    genotype = net.genotype()
    normal, reduce = genotype.normal, genotype.reduce
    assert [len(edges) for edges in normal.nodes] == [1, 3]
    assert [e.source for e in normal.nodes[1]] == [0, 1, 2]
    assert "bin_conv_3x3" not in normal.nodes[1][0].op_names
    assert len(normal.nodes[1][1].ops) == 3  # several ops per edge, each with its weight
    assert reduce.nodes[0] == (bn.Edge(1, (("none", 0.0),), 1.0),)   # removed: zero block
    assert [e.source for e in reduce.nodes[1]] == [0, 1]
    beta = net.arch.beta_normal.numpy()
    assert normal.nodes[1][2].weight == pytest.approx(float(beta[4]))
    assert genotype.method == "hmnas"
    assert bn.Genotype.from_json(genotype.to_json()) == genotype

    model = net.derive_model()
    x, _ = tiny_batches(16, seed=2)
    np.testing.assert_allclose(model(x, training=False).numpy(),
                               net(x, training=False).numpy(), rtol=1e-4, atol=1e-4)
    assert model.count_params() < net.count_params()
    pruned = model.get_layer("cell0_n3_e2_bin_conv_3x3_conv").kernel.numpy()
    assert np.all(pruned[..., 0] == 0.0) and np.any(pruned != 0.0)  # masked weights are zero
    # continued training starts from there (no restart) and runs
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.evaluate(x, tiny_batches(16, seed=2)[1], verbose=0)
    assert np.isfinite(before)


def test_masks_combine_with_the_bnas_space_and_the_temperature_regularizer():
    # dense binary convs (MaskedQuantConv2D, not grouped): the other weight-copy path
    space = bn.SearchSpace.get("bnas", nodes=2)
    net = HMNASSuperNet(space, num_classes=4, layers=2, channels=4, seed=0, sparsity=0.1)
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
                arch_regularizer=bn.regularizers.Temperature(1.0), arch_weight_decay=0.0)
    x, y = tiny_batches(16)
    net(x)
    alphas = tf.concat([net.arch.alpha_normal, net.arch.alpha_reduce], 0)
    expected = net.arch_regularizer(alphas) + tf.add_n(net.arch.losses)
    np.testing.assert_allclose(float(net.arch_regularization()), float(expected), rtol=1e-5)
    assert float(tf.add_n(net.arch.losses)) > 0
    assert float(net.arch_step(x[:8], y[:8], x[8:], y[8:])) > 0
    net.weight_step(x[:8], y[:8])
    conv = space.op_names.index("bin_conv_5x5")
    set_scores(net.arch.op_scores_reduce, (slice(None), conv), 0.0)
    c = mixed_convs(net, "reduce", 1)[0]  # layers=2: both cells reduce; bin_conv_3x3
    set_scores(c.kernel_scores, (0, 0), 0.0)
    assert isinstance(c, bn.masks.MaskedQuantConv2D)
    model = net.derive_model()
    assert "bin_conv_5x5" not in {n for e in sum(net.genotype().reduce.nodes, ()) for n in e.op_names}
    np.testing.assert_allclose(model(x, training=False).numpy(),
                               net(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_config_round_trip_and_bad_input():
    net = tiny_net(op_threshold=0.1, op_initial=0.2, sparsity=0.01)
    x, _ = tiny_batches(4)
    net(x)
    clone = HMNASSuperNet.from_config(net.get_config())
    clone(x)
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(x, training=False), net(x, training=False), atol=1e-6)
    assert clone.arch.op_threshold == 0.1 and clone.arch.sparsity == 0.01
    with pytest.raises(ValueError, match="'darts', 'hmnas'"):
        bn.recipes.supernet_class("hm-nas")
    with pytest.raises(ValueError, match="'darts', 'hmnas'"):
        SearchConfig(method="enas")
    with pytest.raises(bn.errors.SearchSpaceError, match="needs the 'none' op"):
        tiny_net(ops=["skip_connect", "bin_conv_3x3"])
    with pytest.raises(ValueError, match="masks start on"):
        tiny_net(weight_initial=1e-3)
    with pytest.raises(ValueError, match="edges_per_node"):
        net.genotype(edges_per_node=2)


@pytest.mark.slow
def test_search_run_hmnas_writes_genotype_and_derived_model(tmp_path):
    # one (reduction) cell with one node: the 8-op bats space traces slowly
    config = SearchConfig(dataset="synthetic", download=False, limit=64, space="bats", nodes=1,
                          layers=1, channels=4, epochs=1, batch_size=16, augment=False,
                          method="hmnas")
    result = run_search(config, tmp_path / "RUN", verbose=0)
    out = result.output_dir
    for name in ("genotype.json", "history.json", "config.json", "derived_model.keras"):
        assert (out / name).exists(), name
    assert (out / "checkpoints" / "checkpoint").exists()
    assert bn.Genotype.load(out / "genotype.json").method == "hmnas"
    model = bn.load_model(out / "derived_model.keras")
    assert model.output_shape[-1] == 10
    logs = result.history["epochs"][0]["logs"]
    for key in ("ops_on", "edges_on", "weights_on"):
        assert 0.0 <= logs[key] <= 1.0, key
    # --resume with the same epochs re-derives from the checkpoint: the same network
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    again = run_search(config, out, resume=True, verbose=0)
    assert again.derived_model_path == out / "derived_model.keras"
    np.testing.assert_allclose(bn.load_model(again.derived_model_path)(x, training=False),
                               model(x, training=False), rtol=1e-5, atol=1e-5)


def test_derived_model_of_the_lce_space_predicts_like_the_supernet():
    """`lce`: binary cell-input convs, binary factorized reduce, channel-repeating skips."""
    space = bn.SearchSpace.get("lce", nodes=2, op_names=["none", "skip_connect", "bin_conv_3x3"])
    net = HMNASSuperNet(space, num_classes=4, layers=3, channels=4, seed=0)
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-3))
    x, y = tiny_batches(16)
    net.arch_step(x[:8], y[:8], x[8:], y[8:])
    net.weight_step(x[:8], y[:8])
    model = net.derive_model()
    assert isinstance(model.get_layer("cell2_pre0_conv_a"), bn.ops.lq.layers.QuantConv2D)
    assert type(model.get_layer("cell1_skip")).__name__ == "RepeatChannels"
    np.testing.assert_allclose(model(x, training=False).numpy(),
                               net(x, training=False).numpy(), rtol=1e-4, atol=1e-4)
