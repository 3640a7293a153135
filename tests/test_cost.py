"""bnas_tf.cost: MACs, OPs, parameters and size, measured and analytic.

Measured counts (`model_cost`) are checked against Larq's own profile
(`larq.models.ModelProfile`, what `lq.models.summary` prints) wherever Larq
understands every layer; hand-computed counts where bnas_tf departs from it
(masked grouped convs, phase-subsampled dilated convs, QuickNet's blur pool).
Analytic counts (`op_costs`, `genotype_cost`, `supernet_edge_costs`) are
checked against measured ones: per op, per random genotype network
(Hypothesis), and per supernet.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from larq.models import ModelProfile
from larq.utils import memory_as_readable_str

from bnas_tf import cost
from bnas_tf.export import native_groups
from bnas_tf.training import binarize_weights

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
          "kernel_constraint": "weight_clip"}


def larq_figures(model: tf.keras.Model) -> dict:
    """What `lq.models.summary` reports, as `ModelCost` fields."""
    profile = ModelProfile(model)
    binary = profile.op_count("mac", 1)
    return {"binary_macs": binary, "float_macs": profile.op_count("mac") - binary,
            "binary_params": profile.weight_count(1),
            "float_params": profile.weight_count() - profile.weight_count(1),
            "memory_bits": profile.memory}


def figures(c: cost.ModelCost) -> dict:
    return {k: getattr(c, k) for k in ("binary_macs", "float_macs", "binary_params",
                                       "float_params", "memory_bits")}


def functional(shape, *layers) -> tf.keras.Model:
    inputs = tf.keras.Input(shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return tf.keras.Model(inputs, x)


LAYERS = {
    "binary_conv": lambda: [lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0,
                                                  use_bias=False, **BINARY)],
    # binary input, latent real kernel (stage 1): float MACs, as Larq counts them
    "stage1_conv": lambda: [lq.layers.QuantConv2D(16, 3, strides=2, padding="same",
                                                  input_quantizer="ste_sign")],
    "float_conv_bias_bn": lambda: [tf.keras.layers.Conv2D(12, 3, strides=2),
                                   tf.keras.layers.BatchNormalization()],
    "bn_without_affine": lambda: [tf.keras.layers.Conv2D(8, 1, use_bias=False),
                                  tf.keras.layers.BatchNormalization(center=False, scale=False)],
    "depthwise": lambda: [tf.keras.layers.DepthwiseConv2D(3, padding="same",
                                                          depth_multiplier=2)],
    "binary_depthwise": lambda: [lq.layers.QuantDepthwiseConv2D(
        3, padding="same", input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
        depthwise_constraint="weight_clip", use_bias=False)],
    "grouped_float_conv": lambda: [tf.keras.layers.Conv2D(16, 3, groups=4, padding="same")],
    "binary_dense": lambda: [tf.keras.layers.Flatten(),
                             lq.layers.QuantDense(10, **BINARY)],
    "dense": lambda: [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)],
    "separable": lambda: [tf.keras.layers.SeparableConv2D(16, 3, padding="same")],
    "pools_cost_nothing": lambda: [tf.keras.layers.MaxPool2D(), tf.keras.layers.AveragePooling2D()],
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_model_cost_is_larqs_count_for_layers_larq_understands(name):
    model = functional((9, 8, 16), *LAYERS[name]())
    measured = cost.model_cost(model)
    assert figures(measured) == larq_figures(model)
    assert measured.params == ModelProfile(model).weight_count()  # Larq's "Total params"


def test_binary_macs_need_binary_inputs_and_kernels():
    model = functional((8, 8, 16), *LAYERS["binary_conv"]())
    c = cost.model_cost(model)
    assert (c.binary_macs, c.float_macs) == (8 * 8 * 9 * 16 * 16, 0)
    assert (c.binary_params, c.float_params, c.memory_bits) == (9 * 16 * 16, 0, 9 * 16 * 16)
    assert c.ops == c.binary_macs / 64
    stage1 = cost.model_cost(functional((8, 8, 16), *LAYERS["stage1_conv"]()))
    assert stage1.binary_macs == 0 and stage1.float_macs == 4 * 4 * 9 * 16 * 16


def test_nested_models_are_counted_as_larq_does():
    inner = functional((8, 8, 16), *LAYERS["binary_conv"](), tf.keras.layers.BatchNormalization())
    outer = functional((8, 8, 3), tf.keras.layers.Conv2D(16, 3, padding="same"), inner,
                       *LAYERS["dense"]())
    assert figures(cost.model_cost(outer)) == larq_figures(outer)


def test_model_size_is_the_size_larqs_summary_prints():
    model = functional((8, 8, 16), *LAYERS["binary_conv"](), tf.keras.layers.BatchNormalization(),
                       *LAYERS["dense"]())
    printed = []
    lq.models.summary(model, print_fn=printed.append)
    line = next(line for line in printed[-1].splitlines()
                if "Model size " in line and "8-bit" not in line)
    c = cost.model_cost(model)
    assert line.strip(" |").split()[-2:] == memory_as_readable_str(c.memory_bits).split()
    assert c.size_bytes == (9 * 16 * 16) / 8 + 4 * (2 * 16 + 16 * 10 + 10)
    assert c.size_mib == c.size_bytes / 2**20


def test_masked_grouped_convs_count_as_the_grouped_conv_that_deploys():
    groups, c, k, hw = 4, 16, 3, 8
    masked = functional((hw, hw, c), bn.ops.GroupMaskedQuantConv2D(
        c, k, mask_groups=groups, padding="same", pad_values=1.0, use_bias=False, **BINARY))
    expected = hw * hw * k * k * (c // groups) * c  # hand count: MACs of 4 groups of 4 channels
    measured = cost.model_cost(masked)
    assert measured.binary_macs == expected and measured.float_macs == 0
    assert measured.binary_params == k * k * (c // groups) * c
    assert larq_figures(masked)["binary_macs"] == groups * expected  # Larq: the dense kernel
    assert figures(measured) == larq_figures(native_groups(masked))  # a real grouped conv


@pytest.mark.parametrize("kernel, dilation, size, computed", [
    (3, 2, 9, 5),   # PhaseSubsample: an undilated "valid" conv on one phase, 5x5 outputs
    (5, 2, 8, 4),
    (3, 3, 9, 9),   # stride 2, dilation 3: a stride-1 conv (9x9), then subsampled
])
def test_strided_dilated_binary_convs_count_what_their_conv_computes(kernel, dilation, size,
                                                                     computed):
    c = 8
    op = bn.ops.BinaryConvBN(c, kernel, strides=2, dilation_rate=dilation,
                             kernel_quantizer="ste_sign", affine=True)
    model = functional((size, size, c), op)  # a composite layer: counted through its sublayers
    measured = cost.model_cost(model)
    assert measured.binary_macs == computed * computed * kernel * kernel * c * c
    assert measured.float_params == 2 * c  # the batch norm
    assert model.output_shape[1:3] == (size // 2 + size % 2,) * 2
    # the same figures from the analytic model of the op
    assert cost._search._layer_cost(op, c, (size, size))[0] == measured


def _quicknet_blur_macs(width: int, size: int = 32) -> int:
    """Float MACs of QuickNet's three blur pools: 3x3 depthwise at stride 2."""
    return sum(9 * width * 2**k * (size // 2 ** (k + 1)) ** 2 for k in range(3))


@pytest.mark.parametrize("width, ops, params", [(16, 1.20e6, 0.80e6), (40, 6.93e6, 4.98e6)])
def test_quicknet_costs_the_figures_issue_24_measured_plus_its_blur_pools(width, ops, params):
    tf.keras.backend.clear_session()
    stage1 = bn.baselines.get("quicknet", num_classes=10, input_shape=(32, 32, 3), width=width)
    assert cost.model_cost(stage1).binary_macs == 0  # latent real kernels
    model = binarize_weights(stage1, bn.baselines.kernel_quantizer("quicknet"))
    measured, larq = cost.model_cost(model), larq_figures(model)
    blur = _quicknet_blur_macs(width)
    assert measured.binary_macs == larq["binary_macs"]
    assert measured.float_macs == larq["float_macs"] + blur  # Larq skips BlurPool2D
    assert figures(measured) | {"float_macs": 0} == larq | {"float_macs": 0}
    larq_ops = larq["float_macs"] + larq["binary_macs"] / 64
    assert round(larq_ops, -4) == ops and round(measured.params, -4) == params
    assert measured.ops == larq_ops + blur


@pytest.mark.parametrize("space_name, channels", [("bats", 12), ("bnas", 8), ("lce", 64)])
@pytest.mark.parametrize("strides, size", [(1, 6), (2, 7)])
def test_analytic_op_costs_equal_the_measured_ops(space_name, channels, strides, size):
    space = bn.SearchSpace.get(space_name)
    for binary_weights in (True, False):
        analytic = cost.op_costs(space, channels, size, strides, binary_weights=binary_weights)
        assert list(analytic) == list(space.op_names)
        for name, value in analytic.items():
            op = space.build_op(name, channels, strides, affine=True,
                                binary_weights=binary_weights, masked_groups=True)
            assert value == cost.model_cost(op, input_shape=(size, size, channels)), name
    if space_name == "lce":  # 64 channels: 2 groups of 32
        conv = cost.op_costs(space, channels, size, strides)["bin_conv_3x3"]
        out = size if strides == 1 else size // 2 + 1
        assert conv.binary_macs == out * out * 9 * 32 * channels


def test_a_user_registered_op_is_measured(monkeypatch):
    monkeypatch.setattr(bn.ops, "_OPS", dict(bn.ops._OPS))  # a private registry
    name = "test_cost_float_conv_7x7"
    bn.ops.register_op(name)(lambda filters, strides, options: tf.keras.layers.Conv2D(
        filters, 7, strides=strides, padding="same", use_bias=False))
    space = bn.SearchSpace(["none", name])
    assert cost.op_costs(space, 4, 5, 2)[name].float_macs == 3 * 3 * 49 * 4 * 4


SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(space_name=st.sampled_from(["lce", "bats", "bnas"]), nodes=st.integers(1, 3),
       layers=st.integers(1, 4), channels=st.sampled_from([4, 8, 16]),
       size=st.sampled_from([(8, 8), (9, 7)]), stem=st.sampled_from(["cifar", "imagenet"]),
       binary_weights=st.booleans(), cell_skip=st.booleans(), edges=st.integers(1, 3),
       seed=st.integers(0, 2**16))
# lce's grouped convs (64 channels: 2 groups of 32) at 4 nodes
@example(space_name="lce", nodes=4, layers=3, channels=16, size=(9, 7), stem="cifar",
         binary_weights=True, cell_skip=True, edges=2, seed=3)
# a cell input no edge reads: Keras leaves its conv out of the model
@example(space_name="lce", nodes=1, layers=1, channels=4, size=(8, 8), stem="cifar",
         binary_weights=False, cell_skip=False, edges=1, seed=0)
def test_genotype_cost_is_the_cost_of_the_built_network(space_name, nodes, layers, channels,
                                                        size, stem, binary_weights, cell_skip,
                                                        edges, seed):
    tf.keras.backend.clear_session()
    genotype = bn.random_genotype(bn.SearchSpace.get(space_name, nodes=nodes), rng=seed,
                                  edges_per_node=edges)
    sizes = {"layers": layers, "channels": channels, "input_shape": (*size, 3),
             "num_classes": 5, "binary_weights": binary_weights, "cell_skip": cell_skip,
             "stem": stem}
    model = bn.build_network(genotype, **sizes)
    measured = cost.model_cost(model)
    assert cost.genotype_cost(genotype, **sizes) == measured
    assert figures(measured) == larq_figures(native_groups(model))


def test_weighted_genotypes_with_none_ops_and_pruned_nodes():
    E = bn.Edge
    normal = bn.Cell(((E(0, (("bin_conv_3x3", 0.7), ("skip_connect", 0.3)), 0.9),),
                      (E(1, (("max_pool_3x3", 1.0), ("none", 0.5)), 0.4),
                       E(2, (("bin_dil_conv_5x5", 1.0),))),
                      (E(0, (("none", 1.0),)),)), concat=(2, 3, 4))
    reduce = bn.Cell(((E(0, (("bin_dil_conv_3x3", 1.0),)), E(1, (("skip_connect", 2.0),))),
                      (), (E(2, (("avg_pool_3x3", 1.0),)),)), concat=(2, 4))
    genotype = bn.Genotype(normal, reduce, bn.SearchSpace.get("lce", nodes=3).get_config(),
                           method="hmnas")
    sizes = {"layers": 4, "channels": 8, "input_shape": (8, 8, 3), "binary_weights": True}
    assert cost.genotype_cost(genotype, **sizes) == cost.model_cost(
        bn.build_network(genotype, **sizes))


@pytest.fixture(scope="module")
def supernet():
    tf.keras.backend.clear_session()
    net = bn.SuperNet(bn.SearchSpace.get("lce", nodes=2), num_classes=10, layers=3, channels=32,
                      seed=0)
    net(tf.zeros([1, 7, 7, 3]))
    return net


def test_edge_tables_follow_the_rows_and_columns_of_alpha(supernet):
    space = supernet.space
    costs = cost.supernet_edge_costs(supernet)  # input shape: the one it was built with
    assert costs.op_names == space.op_names and costs.edges == tuple(space.edges())
    tables = cost.edge_cost_tables(supernet, metric="binary_macs")
    for kind, alpha in zip(("normal", "reduce"), supernet.arch.alphas, strict=True):
        assert tables[kind].shape == tuple(alpha.shape) == (space.num_edges, space.num_ops)
        assert np.all(tables[kind][:, space.op_names.index("none")] == 0)
    # reduction cells: stride 2 from the cell inputs (sources 0, 1), stride 1 after
    assert [source for source, _ in costs.edges] == [0, 1, 0, 1, 2]
    skip = tables["reduce"][:, space.op_names.index("skip_connect")]  # factorized reduce
    assert skip[0] == skip[1] == skip[2] == skip[3] == 4 * 4 * 64 * 64 + 2 * 2 * 128 * 128
    assert skip[4] == 0 == tables["normal"][:, space.op_names.index("skip_connect")].max()
    conv = space.op_names.index("bin_conv_3x3")
    reduce = tables["reduce"][:, conv]  # stride 2 or not: the same outputs
    # cell 0 is normal at 32 channels (7x7); cells 1, 2 reduce to 64 (4x4) and 128 (2x2,
    # 4 groups of 32)
    assert tables["normal"][0, conv] == 7 * 7 * 9 * 32 * 32
    assert reduce[0] == 4 * 4 * 9 * 32 * 64 + 2 * 2 * 9 * 32 * 128


def test_the_supernet_costs_its_fixed_part_plus_every_op_of_every_edge(supernet):
    costs = cost.supernet_edge_costs(supernet, binary_weights=False)  # as it searches
    every_op = sum((c for kind in ("normal", "reduce") for row in costs[kind]
                    for c in row.values()), cost.ModelCost())
    arch = cost.model_cost(supernet).layers["arch"]  # α, β and T are not part of the network
    assert cost.model_cost(supernet) == costs.fixed + every_op + arch


def test_one_hot_alpha_costs_what_its_genotype_network_costs(supernet):
    space, rng = supernet.space, np.random.default_rng(0)
    candidates = [i for i, name in enumerate(space.op_names) if name != "none"]
    chosen = {kind: rng.choice(candidates, size=space.num_edges) for kind in ("normal", "reduce")}
    for kind, alpha in zip(("normal", "reduce"), supernet.arch.alphas, strict=True):
        alpha.assign(10.0 * tf.one_hot(chosen[kind], space.num_ops))
    genotype = supernet.genotype(edges_per_node=space.nodes + 1, warn=False)  # every edge
    costs = cost.supernet_edge_costs(supernet, input_shape=(7, 7, 3))
    picked = sum((costs[kind][e][space.op_names[o]] for kind in ("normal", "reduce")
                  for e, o in enumerate(chosen[kind])), cost.ModelCost())
    expected = cost.genotype_cost(genotype, layers=3, channels=32, input_shape=(7, 7, 3))
    assert costs.fixed + picked == expected
    probabilities = {k: tf.one_hot(chosen[k], space.num_ops).numpy() for k in chosen}
    assert costs.expected(probabilities) == pytest.approx(expected.ops)
    assert costs.expected(supernet.op_probabilities(), "params") == pytest.approx(
        expected.params, rel=1e-3)


def test_space_arguments_give_the_supernets_tables(supernet):
    from_net = cost.edge_cost_tables(supernet, input_shape=(7, 7, 3))
    from_space = cost.edge_cost_tables(supernet.space, 3, 32, (7, 7, 3))
    for kind in ("normal", "reduce"):
        np.testing.assert_array_equal(from_net[kind], from_space[kind])
    with pytest.raises(ValueError, match="come from the supernet"):
        cost.supernet_edge_costs(supernet, layers=3)
    with pytest.raises(ValueError, match="input_shape"):
        cost.supernet_edge_costs("lce", 3, 16)


def test_model_cost_api():
    c = cost.ModelCost(binary_macs=640, float_macs=10, binary_params=8, float_params=2,
                       memory_bits=72)
    assert c.to_dict() == {"binary_macs": 640, "float_macs": 10, "macs": 650, "ops": 20.0,
                           "binary_params": 8, "float_params": 2, "params": 10,
                           "memory_bits": 72, "size_bytes": 9.0, "size_mib": 9.0 / 2**20}
    assert c + c == 2 * c and sum([c, c], cost.ModelCost()) == c * 2
    with pytest.raises(ValueError, match="Unknown cost metric"):
        c.value("flops")
    with pytest.raises(ValueError, match="not built"):
        cost.model_cost(tf.keras.Sequential([tf.keras.layers.Dense(3)]))
    with pytest.raises(TypeError, match="Genotype"):
        cost.genotype_cost({"normal": []})


@settings(max_examples=40, deadline=None)
@given(totals=st.fixed_dictionaries({k: st.integers(0, 10**12) for k in (
    "binary_macs", "float_macs", "binary_params", "float_params", "memory_bits")}))
def test_cost_round_trips_through_its_dict_and_summarizes_in_one_line(totals):
    original = cost.ModelCost(**totals)
    assert cost.ModelCost.from_dict(original.to_dict()) == original
    line = original.summary()
    assert "\n" not in line and line.startswith(f"{original.ops / 1e6:.2f} M OPs (")
    assert f"{original.params:,} parameters" in line


@pytest.mark.parametrize("bad", [None, {}, {"binary_macs": 1}, "ops",
                                 dict.fromkeys(("binary_macs", "float_macs", "binary_params",
                                                "float_params", "memory_bits"), -1),
                                 dict.fromkeys(("binary_macs", "float_macs", "binary_params",
                                                "float_params", "memory_bits"), 0.5)])
def test_a_malformed_cost_dict_is_one_value_error(bad):
    with pytest.raises(ValueError, match="Expected"):
        cost.ModelCost.from_dict(bad)
