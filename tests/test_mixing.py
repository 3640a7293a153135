"""Search modes that fit a CPU: partial channels (PC-DARTS) and single path (GDAS)."""

import collections
import contextlib
import json

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.layers import ArchitectureParameters, MixedOp, channel_shuffle
from bnas_tf.search_run import SearchConfig, run_search

IMAGE = (8, 8, 3)
SMALL_OPS = ["none", "max_pool_3x3", "skip_connect", "bin_conv_3x3", "bin_dil_conv_5x5"]


def tiny_net(mixing="all", seed=0, **kwargs):
    space = bn.SearchSpace(SMALL_OPS, nodes=2)
    return bn.SuperNet(space, num_classes=4, layers=3, channels=4, seed=seed, mixing=mixing,
                       **kwargs)


def tiny_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, *IMAGE)).astype("float32"),
            rng.integers(0, 4, size=n).astype("int64"))


def loss_and_gradients(net, x, y):
    with tf.GradientTape() as tape:
        logits = net(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    variables = net.trainable_variables
    return logits.numpy(), [None if g is None else g.numpy()
                            for g in tape.gradient(loss, variables)]


def test_partial_with_one_group_equals_all():
    x, y = tiny_batch()
    reference, partial = tiny_net("all"), tiny_net("partial", partial_channels=1,
                                                   edge_normalization=False)
    reference(x[:1]), partial(x[:1])
    partial.set_weights(reference.get_weights())
    out_all, grads_all = loss_and_gradients(reference, x, y)
    out_partial, grads_partial = loss_and_gradients(partial, x, y)
    np.testing.assert_allclose(out_partial, out_all, rtol=1e-5, atol=1e-6)
    assert len(grads_all) == len(grads_partial)
    for a, b in zip(grads_all, grads_partial, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strides", [1, 2])
def test_partial_mixed_op_runs_ops_on_a_channel_sample_and_shuffles(strides):
    x = tf.random.normal([2, 6, 6, 8], seed=1)
    weights = tf.nn.softmax(tf.random.normal([len(SMALL_OPS)], seed=2))
    mixed = MixedOp(bn.SearchSpace(SMALL_OPS), 8, strides, partial_channels=4)
    out = mixed(x, weights, training=False)
    assert all(op.built for op in mixed._ops)
    mixed_part = tf.add_n([weights[i] * op(x[..., :2], training=False)
                           for i, op in enumerate(mixed._ops) if SMALL_OPS[i] != "none"])
    bypass = x[..., 2:] if strides == 1 else tf.nn.max_pool2d(x[..., 2:], 2, 2, "SAME")
    expected = channel_shuffle(tf.concat([mixed_part, bypass], -1), 4)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert out.shape == (2, 6 // strides, 6 // strides, 8)


def test_channel_shuffle_interleaves_the_groups():
    x = tf.reshape(tf.range(8.0), [1, 1, 1, 8])
    np.testing.assert_array_equal(channel_shuffle(x, 4)[0, 0, 0].numpy(),
                                  [0, 2, 4, 6, 1, 3, 5, 7])
    np.testing.assert_array_equal(channel_shuffle(x, 1).numpy(), x.numpy())


def test_edge_normalization_is_a_softmax_per_node_and_trains_with_alpha():
    net = tiny_net("partial", partial_channels=2)
    x, y = tiny_batch()
    net(x[:1])
    assert len(net.arch_variables) == 4  # α and β of both cell kinds
    for weights in net.edge_weights().values():
        np.testing.assert_allclose([weights[:2].sum(), weights[2:].sum()], [1.0, 1.0], rtol=1e-6)
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    before = [v.numpy().copy() for v in net.arch_variables]
    net.arch_step(x, y, x, y)
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, net.arch_variables, strict=True))


def test_partial_derivation_ranks_edges_by_edge_weight_times_op_probability():
    space = bn.SearchSpace(SMALL_OPS, nodes=2)
    probs = np.full((space.num_edges, space.num_ops), 0.1)
    probs[:, 3] = 0.6  # bin_conv_3x3 everywhere
    probs[0, 3] = 0.9  # edge 0 -> node 2 has the strongest op, ...
    edge_weights = np.array([0.2, 0.8, 0.1, 0.3, 0.6])  # ... but the weakest edge
    weights = {"normal": edge_weights, "reduce": edge_weights}
    plain = bn.derive_genotype(probs, probs, space, edges_per_node=1)
    ranked = bn.derive_genotype(probs, probs, space, edges_per_node=1, edge_weights=weights)
    assert [e.source for e in plain.normal.nodes[0]] == [0]
    (edge,) = ranked.normal.nodes[0]
    assert (edge.source, edge.weight) == (1, 0.8)
    assert [(e.source, e.weight) for e in ranked.normal.nodes[1]] == [(2, 0.6)]


def test_partial_supernet_genotype_keeps_the_learned_edge_weights():
    net = tiny_net("partial", partial_channels=2)
    net(tiny_batch()[0][:1])
    beta_normal = net.arch.betas[0]
    beta_normal.assign([3.0, 0.0, 0.0, 0.0, 0.0])  # node 2 prefers input 0
    genotype = net.genotype(edges_per_node=1)
    (edge,) = genotype.normal.nodes[0]
    assert edge.source == 0
    assert edge.weight == pytest.approx(np.exp(3) / (np.exp(3) + 1), abs=1e-5)
    model = bn.build_network(genotype, num_classes=4, layers=3, channels=4, input_shape=IMAGE)
    assert any(isinstance(layer, bn.layers.Scale) for layer in model.layers)


class Counting(tf.keras.layers.Layer):
    """Wrap an op and count its calls in a variable (executed only when it runs)."""

    def __init__(self, op, **kwargs):
        super().__init__(**kwargs)
        self.op = op
        self.calls = self.add_weight("calls", [], dtype="int64", trainable=False,
                                     initializer="zeros")

    def call(self, inputs, training=None):
        self.calls.assign_add(1)
        return self.op(inputs, training=training)


@pytest.fixture(scope="module")
def counted_space():
    names = []
    for base in ("max_pool_3x3", "bin_conv_3x3", "bin_dil_conv_3x3"):
        name = f"counted_{base}"
        if name not in bn.ops.registered_ops():
            bn.ops.register_op(name)(
                lambda f, s, o, base=base: Counting(bn.ops.get(base)(f, s, o)))
        names.append(name)
    return bn.SearchSpace(names, nodes=2)


def test_gumbel_runs_one_op_per_edge_through_the_shared_functions(monkeypatch):
    """Count the ops the shared single-path functions run (a counter inside each branch)."""
    calls = tf.Variable(tf.zeros([len(SMALL_OPS)], tf.int64), trainable=False)
    run = bn.mixing._SharedEdge._run

    def counted_run(self, i, *args):
        calls.assign_add(tf.one_hot(i, len(SMALL_OPS), dtype=tf.int64))
        return run(self, i, *args)

    monkeypatch.setattr(bn.mixing._SharedEdge, "_run", counted_run)
    monkeypatch.setattr(bn.mixing, "_SHARED_EDGES", {})
    net = tiny_net("gumbel")
    net.compile()
    x, y = tiny_batch()
    net(x[:1])
    edges = sum(len(cell.edges) for cell in net.cells)
    tf.function(net.train_step)(((x, y), (x, y)))
    # two passes (architecture, weights), one op per edge each; the gradients reuse the
    # forward's batch-norm inputs (their own recomputation is pruned: test below)
    assert int(tf.reduce_sum(calls)) == 2 * edges
    assert len(bn.mixing._SHARED_EDGES) < edges  # edges of a kind share their functions


def test_gumbel_runs_exactly_one_op_per_edge_and_gives_every_alpha_a_gradient(counted_space):
    """Ops of their own (here: counting wrappers) take the per-edge path; count each call."""
    net = bn.SuperNet(counted_space, num_classes=4, layers=3, channels=4, seed=0,
                      mixing="gumbel")
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    x, y = tiny_batch()
    net(x[:1])
    counters = [[op.calls for op in mixed._ops] for cell in net.cells for mixed in cell.edges]
    for row in counters:
        for c in row:
            c.assign(0)
    tf.function(net.train_step)(((x, y), (x, y)))  # one architecture and one weight pass
    calls = np.array([[int(c.numpy()) for c in row] for row in counters])
    # per pass one op, run forward and recomputed for its gradient: 4 calls of <= 2 ops
    np.testing.assert_array_equal(calls.sum(axis=1), 4)
    assert np.all((calls == 0) | (calls == 2) | (calls == 4))
    assert (calls > 0).sum() > calls.shape[0]  # the two passes draw different ops somewhere

    with tf.GradientTape() as tape:
        logits = net(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    for grad in tape.gradient(loss, net.arch_variables):
        assert np.all(np.abs(grad.numpy()) > 0)


def test_gumbel_inference_runs_each_edges_most_likely_op(counted_space):
    net = bn.SuperNet(counted_space, num_classes=4, layers=3, channels=4, seed=0,
                      mixing="gumbel")
    x, _ = tiny_batch()
    net(x[:1])
    net.arch.alpha_normal.assign(tf.one_hot([1, 2, 0, 1, 2], 3) * 5.0)
    net.arch.alpha_reduce.assign(tf.one_hot([0, 0, 0, 0, 0], 3) * 5.0)
    counters = [(cell.reduction, [op.calls for op in mixed._ops])
                for cell in net.cells for mixed in cell.edges]
    before = [[int(c.numpy()) for c in row] for _, row in counters]
    net(x, training=False)
    normal_edges = 0
    for (reduction, row), old in zip(counters, before, strict=True):
        ran = [int(c.numpy()) - o for c, o in zip(row, old, strict=True)]
        expected = 0 if reduction else [1, 2, 0, 1, 2][normal_edges % 5]
        normal_edges += 0 if reduction else 1
        assert ran == [int(i == expected) for i in range(3)]


def test_gumbel_samples_follow_the_tempered_op_distribution():
    alpha = np.log(np.array([0.05, 0.1, 0.15, 0.3, 0.4])) * 0.5  # softmax(α / 0.5) = p
    arch = ArchitectureParameters(4000, 5, temperature=0.5, gumbel=True, seed=3)
    arch.alpha_normal.assign(np.tile(alpha, (4000, 1)))
    arch.alpha_reduce.assign(np.tile(alpha, (4000, 1)))
    counts = np.zeros(5)
    for _ in range(3):
        for _, index in arch.sample():
            counts += np.bincount(index.numpy(), minlength=5)
    expected = counts.sum() * np.array([0.05, 0.1, 0.15, 0.3, 0.4])
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 18.47  # 4 degrees of freedom, p = 0.001
    assert int(arch.sample_key.numpy()[1]) == 3  # every draw advances the noise key


def test_gumbel_straight_through_weights_are_one_hot_forward_with_soft_gradients():
    arch = ArchitectureParameters(6, 4, temperature=1.0, gumbel=True, seed=0,
                                  gumbel_temperature=1.0)
    with tf.GradientTape() as tape:
        (hard, index), _ = arch.sample()
        objective = tf.reduce_sum(hard * tf.range(4, dtype=tf.float32))
    np.testing.assert_array_equal(hard.numpy(), tf.one_hot(index, 4).numpy())
    grad = tape.gradient(objective, arch.alpha_normal).numpy()
    assert np.all(np.abs(grad) > 0)


def test_gumbel_temperature_anneals_linearly_over_the_fit():
    net = tiny_net("gumbel", gumbel_temperature=(10.0, 0.1))
    net.compile()
    x, y = tiny_batch()
    pairs = tf.data.Dataset.from_tensors(((x, y), (x, y))).repeat(3)
    history = net.fit(pairs, epochs=2, verbose=0)
    assert history.history["gumbel_temperature"][-1] == pytest.approx(0.1)
    assert history.history["gumbel_temperature"][0] == pytest.approx(10 - 9.9 * 2 / 5, rel=1e-5)



def test_gumbel_search_runs_eagerly():
    """`compile(run_eagerly=True)`, for debugging: the single-path search steps run and learn
    (the gradients themselves are compared with the op alone in the tests below)."""
    x, y = tiny_batch()
    net = tiny_net("gumbel")
    net.compile(run_eagerly=True, arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    initial = net.arch.alpha_normal.numpy().copy()
    history = net.fit(tf.data.Dataset.from_tensors(((x, y), (x, y))).repeat(2), epochs=1,
                      verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.abs(net.arch.alpha_normal.numpy() - initial).max() > 1e-3


@pytest.mark.parametrize("mixing", ["partial", "gumbel"])
def test_config_round_trip(mixing):
    net = tiny_net(mixing, partial_channels=2, gumbel_temperature=(5.0, 0.5))
    config = net.get_config()
    assert config["mixing"] == mixing
    clone = bn.SuperNet.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    x, _ = tiny_batch()
    net(x[:1]), clone(x[:1])
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(x, training=False).numpy(), net(x, training=False).numpy(),
                               rtol=1e-6)


def test_bad_mixing_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown mixing 'single'"):
        tiny_net("single")
    with pytest.raises(ValueError, match="partial_channels=3 must divide channels=4"):
        tiny_net("partial", partial_channels=3)
    with pytest.raises(ValueError, match="gumbel_temperature"):
        tiny_net("gumbel", gumbel_temperature=(1.0, 0.0))
    with pytest.raises(ValueError, match="HM-NAS search supports mixing='all' only"):
        bn.HMNASSuperNet(bn.SearchSpace(SMALL_OPS, nodes=2), mixing="gumbel")


@pytest.mark.parametrize("mixing", ["partial", "gumbel"])
def test_search_run_records_and_resumes_the_mixing_mode(mixing, cifar10_dir, tmp_path):
    config = SearchConfig(dataset="cifar10", data_dir=str(cifar10_dir), limit=64, space="lce",
                          nodes=2, layers=3, channels=4, epochs=1, batch_size=16,
                          mixing=mixing, partial_channels=2)
    out = tmp_path / "RUN"
    run_search(config, out, verbose=0)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["mixing"], saved["partial_channels"]) == (mixing, 2)
    # resuming with other flags keeps the stored mode
    resumed = run_search(SearchConfig(epochs=2), out, resume=True, verbose=0)
    assert [e["epoch"] for e in resumed.history["epochs"]] == [0, 1]
    logs = resumed.history["epochs"][1]["logs"]
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["val_accuracy"])
    if mixing == "gumbel":
        assert logs["gumbel_temperature"] == pytest.approx(0.1)
    else:
        assert any(e.weight != 1.0 for node in resumed.genotype.normal.nodes for e in node)


def _live_op_counts(function) -> collections.Counter:
    """Op types a traced function can run, with how many such nodes: the nodes of each called
    function (non-inlined functions and switch branches alike, each function counted once)
    that its return values depend on. TensorFlow prunes the other nodes of a function body
    when it instantiates the function."""
    graph_def = function.get_concrete_function().graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}

    def called(node) -> list[str]:
        return [name for attr in node.attr.values()
                for name in ([attr.func.name] if attr.HasField("func")
                             else [f.name for f in attr.list.func])]

    types, seen = collections.Counter(node.op for node in graph_def.node), set()
    pending = [name for node in graph_def.node for name in called(node)]
    while pending:
        name = pending.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        nodes = {node.name: node for node in library[name].node_def}
        frontier = [value.split(":")[0] for value in library[name].ret.values()]
        live = set()
        while frontier:
            node = nodes.get(frontier.pop().lstrip("^"))
            if node is None or node.name in live:
                continue
            live.add(node.name)
            types[node.op] += 1
            pending += called(node)
            frontier += [inp.split(":")[0] for inp in node.input]
    return types


@pytest.mark.parametrize("space_name", ["lce", "bnas"])
def test_architecture_gradients_skip_kernels_and_leave_input_and_alpha_gradients_alone(
        space_name):
    space, mixed, x, weights = _single_path_case(space_name, 2, 1)
    dy = tf.random.normal(mixed(x, weights, training=False).shape, seed=5)
    for index, name in enumerate(space.op_names):
        kernels = [v for v in mixed._ops[index].trainable_variables if "kernel" in v.name]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = mixed(x, weights, training=True, op_index=tf.constant(index))
        full = tape.gradient(y, [x, weights, *kernels], output_gradients=dy)
        with bn.mixing.architecture_gradients_only():
            arch = tape.gradient(y, [x, weights, *kernels], output_gradients=dy)
        for got, want in zip(arch[:2], full[:2], strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)
        assert all(g is None for g in arch[2:]), name
        assert all(g is not None and np.any(g.numpy()) for g in full[2:]), name

    def gradients(arch_only: bool):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                y = mixed(x, weights, training=True, op_index=tf.constant(0))
            context = (bn.mixing.architecture_gradients_only() if arch_only
                       else contextlib.nullcontext())
            with context:
                return tape.gradient(y, weights, output_gradients=dy)
        return run

    # the architecture gradient runs no filter-gradient convolution at all
    assert "Conv2DBackpropFilter" in _live_op_counts(gradients(False))
    with_arch_only = _live_op_counts(gradients(True))
    assert "Conv2DBackpropFilter" not in with_arch_only
    assert "Conv2DBackpropInput" in with_arch_only


@pytest.mark.parametrize("space_name", ["bats", "bnas"])
def test_single_path_gradient_reuses_the_forward_instead_of_recomputing_the_convolutions(
        space_name):
    """The backward runs no convolution of its own: as many live Conv2D as the forward."""
    space, mixed, x, weights = _single_path_case(space_name, 1, 0)
    dy = tf.random.normal(mixed(x, weights, training=False).shape, seed=5)

    @tf.function
    def forward():
        return mixed(x, weights, training=True, op_index=tf.constant(0))

    @tf.function
    def forward_and_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = mixed(x, weights, training=True, op_index=tf.constant(0))
        return y, tape.gradient(y, [x, weights], output_gradients=dy)

    convs = _live_op_counts(forward)["Conv2D"]
    counts = _live_op_counts(forward_and_backward)
    assert convs >= 2  # one per binary conv op of the space, in the forward switch
    assert counts["Conv2D"] == convs
    assert counts["Conv2DBackpropInput"] >= convs


def _single_path_case(space_name, strides, index):
    space = bn.SearchSpace.get(space_name)
    mixed = MixedOp(space, 8, strides)
    x = tf.random.normal([4, 6, 6, 8], seed=index)
    weights = tf.Variable(tf.nn.softmax(tf.random.normal([space.num_ops], seed=7)))
    mixed(x, weights, training=False)  # build
    return space, mixed, x, weights


@pytest.mark.parametrize("space_name", ["bats", "lce", "bnas"])
@pytest.mark.parametrize("strides", [1, 2])
def test_single_path_output_gradients_and_statistics_equal_the_op_alone(space_name, strides):
    space, mixed, x, weights = _single_path_case(space_name, strides, 0)
    dy = tf.random.normal(mixed(x, weights, training=False).shape, seed=3)
    for index, name in enumerate(space.op_names):
        op = mixed._ops[index]
        variables = [weights, *op.trainable_variables]
        stats = [v.numpy().copy() for v in op.non_trainable_variables]

        @tf.function
        def single(x=x, index=index, variables=variables):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = mixed(x, weights, training=True, op_index=tf.constant(index))
            return y, tape.gradient(y, [x, *variables], output_gradients=dy)

        y, grads = single()
        after_single = [v.numpy().copy() for v in op.non_trainable_variables]
        for v, s in zip(op.non_trainable_variables, stats, strict=True):
            v.assign(s)
        with tf.GradientTape() as tape:
            tape.watch(x)
            expected = weights[index] * op(x, training=True) + (
                tf.reduce_sum(weights) - weights[index])
        expected_grads = tape.gradient(expected, [x, *variables], output_gradients=dy)
        np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        for got, want in zip(grads, expected_grads, strict=True):
            want = np.zeros_like(got.numpy()) if want is None else want.numpy()
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5, err_msg=name)
        for got, want in zip(after_single, op.non_trainable_variables, strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
