"""Cost-aware search (#24 part 3): `bn.regularizers.ExpectedCost` and `--cost ops|latency`.

The regularizer's gradient moves α toward cheaper ops above the target and
toward dearer ops below it; its expected cost is the derived genotype's cost
(`bn.cost.genotype_cost`) once the kept edges are decided; it serializes and
runs in every mixing mode; a cost-targeted search on real CIFAR-10 lands
within ±10 % of a target between the cheapest and the dearest network; bad
values of the flags exit 2 with one line and write nothing.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import cli, cost_search
from bnas_tf import regularizers as R
from bnas_tf._runs import SettingError
from bnas_tf.genotype import Cell, Edge, Genotype
from bnas_tf.search_run import SearchConfig, run_search

IMAGE = (8, 8, 3)
SMALL_OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]
SYNTHETIC = ["search", "--dataset", "synthetic", "--limit", "64", "--layers", "1", "--channels",
             "4", "--nodes", "1", "--batch-size", "16", "--epochs", "1", "--no-augment"]


def _descend(reg: R.ExpectedCost, alpha0, steps=60, lr=0.05):
    """Adam on α for the cost term alone; the op probabilities after each step."""
    alpha = tf.Variable(np.asarray(alpha0, np.float32))
    optimizer = tf.keras.optimizers.legacy.Adam(lr)
    probs = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = reg(alpha)
        optimizer.apply_gradients([(tape.gradient(loss, alpha), alpha)])
        probs.append(tf.nn.softmax(alpha).numpy()[0])
    return np.array(probs), float(reg.expected_cost(alpha))


# -- the gradient ---------------------------------------------------------------------------


@pytest.mark.parametrize("target, cheaper_rises", [(1.5, True), (2.5, False)],
                         ids=["above_target", "below_target"])
def test_gradient_moves_alpha_toward_cheaper_ops_above_target_and_dearer_below(
        target, cheaper_rises):
    # one edge, a cheap op (cost 1) and a dear one (cost 3): E[cost] = 2 at uniform α
    reg = R.ExpectedCost(1.0, target, [[1.0, 3.0]], temperature=1.0)
    variable = tf.Variable(tf.zeros([1, 2]))
    with tf.GradientTape() as tape:
        loss = reg(variable)
    grad = tape.gradient(loss, variable).numpy()[0]
    # d/dα_o = 2 w log(E/t) / E · p_o (c_o − E) / T
    e = 2.0
    expected = 2 * math.log(e / target) / e * 0.5 * (np.array([1.0, 3.0]) - e)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)
    assert (grad[0] < 0) == cheaper_rises  # descent raises the cheap op's logit above target
    probs, final = _descend(reg, np.zeros([1, 2]))
    cheap = probs[:, 0]
    assert (cheap[-1] > 0.6) if cheaper_rises else (cheap[-1] < 0.4)
    # two-sided: it settles at the target instead of running to the cheapest (dearest) op
    assert final == pytest.approx(target, rel=0.02)


def test_zero_at_the_target_and_symmetric_in_ratio():
    reg = R.ExpectedCost(10.0, 2.0, [[1.0, 3.0]], temperature=1.0)
    alpha = tf.zeros([1, 2])
    assert float(reg(alpha)) == pytest.approx(0.0, abs=1e-10)
    above = R.ExpectedCost(10.0, 2.0 / 1.1, [[1.0, 3.0]], temperature=1.0)
    below = R.ExpectedCost(10.0, 2.0 * 1.1, [[1.0, 3.0]], temperature=1.0)
    assert float(above(alpha)) == pytest.approx(float(below(alpha)), rel=1e-5)
    assert float(above(alpha)) == pytest.approx(10 * math.log(1.1) ** 2, rel=1e-5)


# -- what it measures: the derived network -----------------------------------------------


def _decided_alpha(net, rng):
    """α with one clearly strongest op per edge and distinct edge strengths."""
    for alpha in net.arch.alphas:
        values = rng.normal(0.0, 0.3, alpha.shape)
        values[np.arange(alpha.shape[0]), rng.integers(0, alpha.shape[1], alpha.shape[0])] += (
            4.0 + rng.uniform(0.0, 1.0, alpha.shape[0]))
        alpha.assign(values)
    for beta in net.arch.betas:
        beta.assign(rng.normal(0.0, 1.0, beta.shape))


@pytest.mark.parametrize("mixing", ["all", "partial"])
def test_decided_expected_cost_is_the_derived_genotypes_cost(mixing):
    net = bn.SuperNet("lce", num_classes=10, layers=3, channels=8, mixing=mixing, seed=0)
    reg = R.ExpectedCost.for_supernet(net, 1e6, input_shape=(32, 32, 3))
    reg.follow(net)
    rng = np.random.default_rng(0)
    for _ in range(4):
        _decided_alpha(net, rng)
        alpha = tf.concat(net.arch.alphas, 0)
        genotype = net.genotype(warn=False)
        ops = bn.cost.genotype_cost(genotype, layers=3, channels=8).ops
        assert float(reg.derived_cost(alpha)) == pytest.approx(ops, rel=1e-6)
        assert float(reg.expected_cost(alpha)) == pytest.approx(ops, rel=2e-3)
        # the kept edges are the genotype's (edge weight × strongest op, top 2 per node)
        kept = np.zeros(2 * net.space.num_edges)
        rows = {edge: r for r, edge in enumerate(net.space.edges())}
        for k, kind in enumerate(("normal", "reduce")):
            for j, node in enumerate(getattr(genotype, kind).nodes):
                for edge in node:
                    kept[k * net.space.num_edges + rows[(edge.source, j + 2)]] = 1
        np.testing.assert_array_equal(reg.keep_weights(alpha).numpy(), kept)


def test_none_and_dropped_edges_do_not_count():
    net = bn.SuperNet("lce", num_classes=10, layers=3, channels=8, mixing="all", seed=0)
    reg = R.ExpectedCost.for_supernet(net, 1e6, input_shape=(32, 32, 3))
    reg.follow(net)
    _decided_alpha(net, np.random.default_rng(1))
    none = net.space.op_names.index("none")
    for alpha in net.arch.alphas:  # `none` strongest everywhere: lce never derives it
        alpha[:, none].assign(tf.reduce_max(alpha, axis=1) + 1.0)
    alpha = tf.concat(net.arch.alphas, 0).numpy()
    ops = bn.cost.genotype_cost(net.genotype(warn=False), layers=3, channels=8).ops
    assert float(reg.expected_cost(alpha)) == pytest.approx(ops, rel=2e-3)
    uniform = float(reg.expected_cost(np.zeros_like(alpha)))  # 2 of each node's edges count
    costs = bn.cost.supernet_edge_costs(net, input_shape=(32, 32, 3))
    derivable = [i for i, n in enumerate(net.space.op_names) if n != "none"]
    per_edge = np.concatenate([costs.table(k)[:, derivable].mean(1) for k in ("normal", "reduce")])
    all_edges = costs.fixed.ops + per_edge.sum()
    assert uniform < all_edges - 0.3 * (all_edges - costs.fixed.ops)


def test_bad_arguments_and_hmnas_raise():
    with pytest.raises(ValueError, match="target"):
        R.ExpectedCost(1.0, 0.0, [[1.0]])
    with pytest.raises(ValueError, match="weight"):
        R.ExpectedCost(-1.0, 1.0, [[1.0]])
    with pytest.raises(ValueError, match="finite costs"):
        R.ExpectedCost(1.0, 1.0, [[-1.0, 2.0]])
    with pytest.raises(ValueError, match="nodes"):
        R.ExpectedCost(1.0, 1.0, np.ones([6, 3]), nodes=2)  # 5 edges per kind
    with pytest.raises(ValueError, match="follows a SuperNet"):
        R.ExpectedCost(1.0, 1.0, [[1.0, 2.0]])(tf.zeros([1, 2]))
    net = bn.SuperNet(bn.SearchSpace(SMALL_OPS, nodes=1), num_classes=4, layers=1, channels=4)
    with pytest.raises(ValueError, match="shape"):
        R.ExpectedCost(1.0, 1.0, np.ones([3, 4])).follow(net)
    hmnas = bn.HMNASSuperNet(bn.SearchSpace(SMALL_OPS, nodes=1), num_classes=4, layers=1,
                             channels=4)
    with pytest.raises(ValueError, match="HM-NAS"):
        R.ExpectedCost.for_supernet(hmnas, 1e6, input_shape=IMAGE)
    with pytest.raises(SettingError, match="cost does not apply to method hmnas"):
        SearchConfig(method="hmnas", cost="ops", cost_target=1e6)


# -- serialization --------------------------------------------------------------------------


def test_config_round_trip():
    reg = R.ExpectedCost(3.0, 5.0, {"normal": [[0.0, 1.0, 4.0]] * 5, "reduce": [[0.0, 2.0, 8.0]] * 5},
                         fixed=2.0, nodes=2, derivable=[1, 2], temperature=0.5, metric="ops")
    config = reg.get_config()
    clone = R.ExpectedCost.from_config(config)
    assert clone.get_config() == config
    serialized = json.loads(json.dumps(R.serialize(reg + R.Diversity(0.5))))  # JSON only
    revived = R.deserialize(serialized)
    assert [type(r) for r in revived.regularizers] == [R.ExpectedCost, R.Diversity]
    assert revived.regularizers[0].get_config() == config
    assert type(tf.keras.regularizers.deserialize(R.serialize(reg))) is R.ExpectedCost
    alpha = tf.constant(np.random.default_rng(0).normal(size=[10, 3]), tf.float32)
    for other in (clone, revived.regularizers[0], R.get(R.serialize(reg))):
        assert float(other(alpha)) == pytest.approx(float(reg(alpha)), rel=1e-6)
        assert float(other.expected_cost(alpha)) == pytest.approx(
            float(reg.expected_cost(alpha)), rel=1e-6)


def _tiny_net(mixing="all"):
    space = bn.SearchSpace(SMALL_OPS, nodes=2, group_channels=2)
    return bn.SuperNet(space, num_classes=4, layers=3, channels=4, mixing=mixing, seed=0)


def _pairs():
    data = bn.data.synthetic(32, 8, image_shape=IMAGE, num_classes=4, seed=0)
    return bn.data.search_pairs(data, batch_size=8)


def test_supernet_with_the_cost_term_saves_and_loads(tmp_path):
    net = _tiny_net()
    reg = R.ExpectedCost.for_supernet(net, 1e5, input_shape=IMAGE)
    net.compile(arch_regularizer=[R.Diversity(), reg])
    x = tf.zeros([2, *IMAGE])
    net(x)
    net.save(tmp_path / "supernet.keras")
    loaded = bn.load_model(tmp_path / "supernet.keras")
    np.testing.assert_allclose(loaded(x, training=False), net(x, training=False), atol=1e-6)


# -- every search mode -----------------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["all", "partial", "gumbel"])
def test_every_mixing_mode_logs_expected_cost_and_steps_alpha(mixing):
    net = _tiny_net(mixing)
    costs = bn.cost.supernet_edge_costs(net, input_shape=IMAGE)
    target = 0.8 * costs.expected({k: np.full_like(t, 1 / t.shape[1])
                                   for k, t in costs.tables().items()})
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(0.1),
                arch_regularizer=R.ExpectedCost.for_supernet(net, target, input_shape=IMAGE))
    before = tf.concat(net.arch.alphas, 0).numpy()
    history = net.fit(_pairs().take(1), epochs=1, verbose=0).history
    assert math.isfinite(history["arch_loss"][0]) and math.isfinite(history["loss"][0])
    expected, derived = history["expected_cost"][0], history["derived_cost"][0]
    dearest = costs.fixed.ops + sum(t.max(axis=1).sum() for t in costs.tables().values())
    assert costs.fixed.ops < expected < dearest and costs.fixed.ops <= derived < dearest
    assert not np.array_equal(before, tf.concat(net.arch.alphas, 0).numpy())


# -- a cost-targeted search ------------------------------------------------------------------


def _all_one_op(space: bn.SearchSpace, op: str) -> Genotype:
    cell = Cell(tuple((Edge(0, ((op, 1.0),)), Edge(1, ((op, 1.0),))) for _ in range(space.nodes)),
                tuple(range(2, 2 + space.nodes)))
    return Genotype(cell, cell, space.get_config())


@pytest.mark.slow
def test_cost_targeted_search_lands_within_ten_percent(cifar10_dir, tmp_path):
    """Default search settings, test-sized: `lce`, 3 layers, 8 channels, 500 images, 2 epochs.

    The target is 3/4 of the way from the cheapest network (max pools only)
    to the dearest (5x5 convs only). At this size the fixed part (stem,
    cell-input convs, classifier) is 70 % of the dearest network, so ±10 % of
    the midpoint covers the middle 60 % of the range, and a search without the
    cost term (`cost_weight=0`) landed inside it as well (at 27 % of the range,
    drifting toward pools); ±10 % of the 3/4 point excludes that.
    """
    space = bn.SearchSpace.get("lce")
    cheapest, dearest = (bn.cost.genotype_cost(_all_one_op(space, op), layers=3, channels=8).ops
                         for op in ("max_pool_3x3", "bin_conv_5x5"))
    target = cheapest + 0.75 * (dearest - cheapest)
    out = tmp_path / "RUN"
    result = run_search(SearchConfig(dataset="cifar10", data_dir=str(cifar10_dir),
                                     download=False, limit=500, layers=3, channels=8, epochs=2,
                                     batch_size=32, cost="ops", cost_target=target),
                        out, verbose=0)
    assert result.cost["ops"] == pytest.approx(target, rel=0.10), (cheapest, dearest, result.cost)
    # not where an unsteered search drifts (27 % of the range, see above)
    assert result.cost["ops"] > cheapest + 0.4 * (dearest - cheapest)
    saved = json.loads((out / "genotype.json").read_text())
    assert saved["cost"] == result.cost and saved["cost"]["target"] == target
    assert result.cost["relative_error"] == pytest.approx(result.cost["ops"] / target - 1)
    assert result.cost["ops"] == bn.cost.genotype_cost(result.genotype, layers=3, channels=8).ops
    logs = result.history["epochs"][-1]["logs"]
    assert logs["derived_cost"] == pytest.approx(result.cost["ops"], rel=1e-6)
    assert logs["expected_cost"] == pytest.approx(target, rel=0.10)


# -- the command line ------------------------------------------------------------------------


_STDOUT: list[str] = []  # what the last _run printed


def _run(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_info:
            code = exit_info.code
    _STDOUT[:] = [out.getvalue()]
    return code, err.getvalue()


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(("bnas-tf search: error: ", "bnas-tf: error: ")), err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--cost-target", "5e6"], "--cost-target needs --cost ops or latency"),
    (["--cost", "ops"], "--cost ops needs --cost-target: the derived network's cost"),
    (["--cost", "ops", "--cost-target", "0"], "Expected --cost-target > 0, got 0."),
    (["--cost", "ops", "--cost-target=-2e6"], "Expected --cost-target > 0, got -2e+06."),
    (["--cost", "ops", "--cost-target", "inf"],
     "Expected --cost-target to be a finite number, got inf."),
    (["--cost", "ops", "--cost-target", "6e6", "--cost-weight=-1"],
     "Expected --cost-weight >= 0, got -1."),
    (["--cost", "ops", "--cost-target", "six"], "argument --cost-target: invalid float value"),
    (["--cost", "flops"], "argument --cost: invalid choice: 'flops'"),
    (["--cost", "latency", "--cost-target", "3"], "--cost latency needs --latency-table FILE"),
    (["--latency-table", "t.json"], "--latency-table is read only with --cost latency."),
    (["--cost-weight", "3"], "--cost-weight weighs the cost term, which needs --cost ops or "
                             "latency."),
    (["--cost", "ops", "--cost-target", "6e6", "--latency-table", "t.json"],
     "--latency-table is read only with --cost latency."),
    (["--cost", "latency", "--cost-target", "3", "--latency-table", "missing.json"],
     "--latency-table missing.json: no such file; write one with `bnas-tf profile`."),
    (["--method", "hmnas", "--cost", "ops", "--cost-target", "6e6"],
     "--cost does not apply to --method hmnas"),
])
def test_bad_cost_flags_exit_2_in_one_line_writing_nothing(args, message, tmp_path):
    code, err = _run([*SYNTHETIC, *args, "--output", tmp_path / "RUN"])
    assert code == 2
    assert message in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def _fake_latency_table(path: Path, space: bn.SearchSpace, layers: int, channels: int,
                        input_shape=(32, 32, 3)) -> Path:
    """A `bnas-tf profile` table with made-up latencies: 1 ms per MOP, plus 1 µs per op."""
    from bnas_tf.cost import latency

    _, cells, sizes = latency._edge_shapes(space, layers, channels, input_shape)
    entries = {}
    for _, row in cells:
        for shape, strides in row:
            costs = bn.cost.op_costs(space, shape[2], shape[:2], strides)
            for op, figures in costs.items():
                ms = figures.ops * 1e-6 + (0.0 if op == "none" else 1e-3)
                entries[(op, shape, strides)] = latency.LatencyEntry(ms, ms, op != "none")
    table = latency.LatencyTable(entries, {"machine": "test"}, space.get_config(), sizes)
    return table.to_json(path)


def test_latency_cost_term_sums_the_tables_milliseconds(tmp_path):
    space = bn.SearchSpace.get("lce", nodes=2)
    path = _fake_latency_table(tmp_path / "latency.json", space, 3, 8)
    config = SearchConfig(space="lce", nodes=2, layers=3, channels=8, cost="latency",
                          cost_target=0.5, latency_table=str(path))
    net = bn.SuperNet(space, num_classes=10, layers=3, channels=8, seed=0)
    reg = cost_search.cost_regularizer(config, net, (32, 32, 3))
    assert (reg.metric, reg.fixed, reg.target) == ("latency", 0.0, 0.5)
    reg.follow(net)
    _decided_alpha(net, np.random.default_rng(2))
    genotype = net.genotype(warn=False)
    ms = bn.cost.edge_latency_tables(path, net, input_shape=(32, 32, 3))
    rows = {edge: r for r, edge in enumerate(space.edges())}
    derived = sum(ms[kind][rows[(edge.source, j + 2)], space.op_names.index(edge.ops[0][0])]
                  for kind in ("normal", "reduce")
                  for j, node in enumerate(getattr(genotype, kind).nodes) for edge in node)
    alpha = tf.concat(net.arch.alphas, 0)
    assert float(reg.derived_cost(alpha)) == pytest.approx(derived, rel=1e-5)
    assert float(reg.expected_cost(alpha)) == pytest.approx(derived, rel=2e-3)
    with pytest.raises(FileNotFoundError, match="bnas-tf profile"):
        cost_search.latency_edge_tables(net, (32, 32, 3), tmp_path / "missing.json")
    other = _fake_latency_table(tmp_path / "other.json", space, 3, 16)  # other shapes
    with pytest.raises(ValueError, match="lacks"):
        cost_search.latency_edge_tables(net, (32, 32, 3), other)


def test_search_command_with_latency_cost(tmp_path):
    table = _fake_latency_table(tmp_path / "latency.json", bn.SearchSpace.get("lce", nodes=1),
                                1, 4)
    out = tmp_path / "RUN"
    code, err = _run([*SYNTHETIC, "--cost", "latency", "--cost-target", "0.01",
                      "--latency-table", table, "--output", out])
    assert code == 0, err
    saved = json.loads((out / "genotype.json").read_text())["cost"]
    assert saved["metric"] == "latency" and saved["target"] == 0.01 and saved["derived"] > 0
    logs = json.loads((out / "history.json").read_text())["epochs"][-1]["logs"]
    assert logs["derived_cost"] == pytest.approx(saved["derived"], rel=1e-6)


def test_search_command_with_cost_records_it(tmp_path):
    out = tmp_path / "RUN"
    code, err = _run([*SYNTHETIC, "--cost", "ops", "--cost-target", "3e5", "--output", out])
    assert code == 0, err
    saved = json.loads((out / "genotype.json").read_text())["cost"]
    assert saved["metric"] == "ops" and saved["target"] == 3e5
    assert saved["ops"] == bn.cost.genotype_cost(
        bn.Genotype.load(out / "genotype.json"), layers=1, channels=4).ops
    assert set(saved) >= {"binary_macs", "float_macs", "params", "size_bytes", "relative_error"}
    assert (f"searched network at the search width (1 cells x 4 channels): "
            f"{saved['ops'] / 1e6:.2f} M OPs, {saved['params']:,} parameters; ops target 0.3 M "
            f"OPs, derived {saved['ops'] / 1e6:.3g} ({saved['relative_error']:+.1%})\n"
            ) in _STDOUT[0]
    logs = json.loads((out / "history.json").read_text())["epochs"][-1]["logs"]
    assert logs["derived_cost"] == pytest.approx(saved["ops"], rel=1e-6)
    assert math.isfinite(logs["expected_cost"])
    config = json.loads((out / "config.json").read_text())
    assert (config["cost"], config["cost_target"], config["cost_weight"]) == (
        "ops", 3e5, R.DEFAULT_COST_WEIGHT)


def test_cost_settings_are_off_by_default_and_in_no_recipe():
    assert SearchConfig().cost is None and SearchConfig().cost_target is None
    for recipe in bn.recipes.names():
        assert SearchConfig(recipe=recipe).cost is None


# -- property: which values the flags accept -------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e3, max_value=1e3).map(str),
    st.sampled_from(["0", "-0", "-1", "nan", "inf", "-inf", "1e400", "x", "", "1,2", "None",
                     "6e6", " 5 ", "1_000", "0x10", "True"]),
    st.text(max_size=6),
)


def _as_float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


@settings(deadline=None, derandomize=True, database=None, max_examples=120,
          suppress_health_check=[HealthCheck.too_slow])
@given(flag=st.sampled_from(["--cost-target", "--cost-weight"]), value=VALUES)
def test_cost_target_and_weight_accepted_iff_finite_and_in_range(flag, value):
    """`--cost-target` accepts finite numbers > 0, `--cost-weight` finite numbers >= 0."""
    argv = [*SYNTHETIC, "--cost", "ops", "--cost-target", "6e6", f"{flag}={value}"]
    number = _as_float(value)
    valid = number is not None and math.isfinite(number) and (
        number > 0 if flag == "--cost-target" else number >= 0)
    if valid:  # the settings are accepted as that number (running them is tested above)
        config = cli.search_config(cli.build_parser().parse_args([*argv, "--output", "OUT"]))
        assert getattr(config, flag[2:].replace("-", "_")) == number
        return
    parent = Path(tempfile.mkdtemp(prefix="bnas_cost_property_"))
    try:
        code, err = _run([*argv, "--output", parent / "runs" / "OUT"])
        assert code == 2, (value, err)
        line = _one_error_line(err)
        assert flag in line, (value, line)
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)
