"""bnas_tf.plot: cell diagrams of every space and of an HM-NAS genotype, history and flip plots."""

from __future__ import annotations

import bnas_tf as bn  # noqa: F401  (first: selects Keras 2 before TensorFlow is imported)

# isort: split
import json
import os
import sys

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from bnas_tf import plot  # noqa: E402
from bnas_tf.genotype import Cell, Edge, Genotype  # noqa: E402

IMAGE = (8, 8, 3)
SMALL_OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]
FIGSIZE, DPI = (6.0, 3.0), 50  # -> 300 × 150 pixels


def space_genotype(name: str) -> Genotype:
    space = bn.SearchSpace.get(name)
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(space.num_ops), size=space.num_edges) for _ in range(2)]
    return bn.derive_genotype(*probs, space)


def hmnas_genotype() -> Genotype:
    """HM-NAS style: weighted edges, several ops per edge, a node with 4 inputs, a pruned node."""
    space = bn.SearchSpace.get("bats", nodes=4)
    normal = Cell(nodes=(
        (Edge(0, (("bin_conv_3x3", 0.7), ("skip_connect", 0.3)), 0.9),),
        (Edge(0, (("max_pool_3x3", 1.0),), 0.4),
         Edge(1, (("bin_dil_conv_3x3", 0.55), ("avg_pool_3x3", 0.45)), 1.2),
         Edge(2, (("bin_conv_5x5", 1.0),), 0.8)),
        (),  # pruned
        (Edge(0, (("avg_pool_3x3", 1.0),), 0.2), Edge(1, (("skip_connect", 1.0),), 0.5),
         Edge(2, (("bin_conv_3x3", 1.0),), 0.3),
         Edge(3, (("bin_conv_5x5", 0.6), ("max_pool_3x3", 0.4)), 1.0)),
    ), concat=(2, 3, 5))
    reduce = Cell(nodes=(
        (Edge(0, (("max_pool_3x3", 1.0),), 1.0), Edge(1, (("bin_conv_3x3", 1.0),), 0.7)),
        (Edge(0, (("bin_dil_conv_5x5", 1.0),), 0.5), Edge(1, (("avg_pool_3x3", 0.8),
                                                               ("skip_connect", 0.2)), 0.7),
         Edge(2, (("bin_conv_3x3", 1.0),), 0.6)),
        (Edge(3, (("skip_connect", 1.0),), 1.0),),
        (Edge(4, (("bin_conv_3x3", 1.0),), 1.0),),
    ), concat=(2, 3, 4, 5))
    return Genotype(normal, reduce, space.get_config(), method="hmnas")


def assert_png(path, size):
    assert os.path.getsize(path) > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5, "the image is blank"
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp")]


ENGINES = ["matplotlib", pytest.param("graphviz", marks=pytest.mark.skipif(
    not plot.graphviz_available(), reason="Graphviz `dot` not installed"))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["bats", "bnas", "lce", "hmnas"])
def test_cell_diagrams_render_to_png_of_the_requested_size(name, engine, tmp_path):
    genotype = hmnas_genotype() if name == "hmnas" else space_genotype(name)
    for kind in ("normal", "reduce"):
        fig = plot.plot_cell(genotype, kind, path=tmp_path / f"{kind}.png", engine=engine,
                             figsize=FIGSIZE, dpi=DPI)
        assert_png(tmp_path / f"{kind}.png", (300, 150))
        assert tuple(fig.get_size_inches()) == FIGSIZE
    plot.plot_genotype(genotype, path=tmp_path / "both.png", engine=engine, figsize=(8, 3), dpi=40)
    assert_png(tmp_path / "both.png", (320, 120))


def test_hmnas_diagram_shows_every_edge_op_and_weight():
    genotype = hmnas_genotype()
    fig = plot.plot_cell(genotype, "normal", engine="matplotlib")
    texts = [t.get_text() for t in fig.axes[0].texts]
    labels = [t for t in texts if "β=" in t]
    assert len(labels) == 8  # all edges of the normal cell, 4 of them into node 3
    assert "bconv3x3 0.70\nskip 0.30\nβ=0.90" in labels
    assert fig.axes[0].get_title() == "normal cell (1 node pruned)"
    dot = plot.cell_to_dot(genotype, "normal")
    assert sum(line.strip().endswith("];") and "-> s5 " in line for line in dot.splitlines()) == 4
    assert "s4" not in dot  # the pruned node is not drawn
    assert 'bin_dil_conv_3x3 0.55\\navg_pool_3x3 0.45\\nβ=1.20' in dot


def test_zero_edges_and_dead_nodes_are_marked(tmp_path):
    """As HMNASSuperNet.genotype() keeps a pruned node: one `none` edge from input 1."""
    g = hmnas_genotype()
    nodes = list(g.normal.nodes)
    nodes[2] = (Edge(1, (("none", 0.0),), 1.0),)
    normal = Cell(tuple(nodes), concat=(2, 3, 4, 5))
    genotype = Genotype(normal, g.reduce, g.space, method="hmnas")
    fig = plot.plot_cell(genotype, "normal", engine="matplotlib", path=tmp_path / "n.png",
                         figsize=FIGSIZE, dpi=DPI)
    assert_png(tmp_path / "n.png", (300, 150))
    ax = fig.axes[0]
    assert ax.get_title() == "normal cell (1 node pruned)"
    assert [t.get_text() for t in ax.texts].count("none") == 1
    dot = plot.cell_to_dot(genotype, "normal")
    assert 's1 -> s4 [label="none", color=gray70' in dot
    assert "s4 [label=\"2\", fillcolor=gray90" in dot


def test_darts_diagram_labels_only_op_names():
    genotype = space_genotype("bats")
    fig = plot.plot_cell(genotype, "reduce", engine="matplotlib")
    edge_labels = [t.get_text() for t in fig.axes[0].texts if t.get_text() not in
                   ("$c_{k-2}$", "$c_{k-1}$", "$c_{k}$", "0", "1", "2", "3")]
    assert len(edge_labels) == 8
    assert all("β" not in t and "\n" not in t for t in edge_labels)


def test_svg_output_and_genotype_from_a_file(tmp_path):
    genotype = hmnas_genotype()
    genotype.save(tmp_path / "g.json")
    plot.plot_genotype(tmp_path / "g.json", path=tmp_path / "cells.svg", engine="matplotlib")
    text = (tmp_path / "cells.svg").read_text()
    assert "<svg" in text and "</svg>" in text


def test_bad_arguments_are_clear_errors(tmp_path):
    genotype = space_genotype("bats")
    with pytest.raises(ValueError, match="'normal' or 'reduce'"):
        plot.plot_cell(genotype, "reduction")
    with pytest.raises(ValueError, match="engine"):
        plot.plot_cell(genotype, engine="dot")
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        plot.plot_cell(genotype, path=tmp_path / "cell.jpg", engine="matplotlib")
    with pytest.raises(ValueError, match="figsize"):
        plot.plot_cell(genotype, figsize=(0, 3), engine="matplotlib")
    with pytest.raises(TypeError, match="Genotype"):
        plot.plot_cell(42)
    if not plot.graphviz_available():
        with pytest.raises(RuntimeError, match="dot"):
            plot.plot_cell(genotype, engine="graphviz")
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now fails
    with pytest.raises(ImportError, match=r"pip install bnas_tf\[plot\]"):
        plot.plot_cell(space_genotype("bats"), engine="matplotlib")
    with pytest.raises(ImportError, match=r"bnas_tf\[plot\]"):
        bn.callbacks.ArchitectureBoard("logs")


# -- search history ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_path(tmp_path_factory):
    """history.json of a real two-epoch search of a tiny supernet."""
    tf.keras.utils.set_random_seed(0)
    data = bn.data.synthetic(48, 8, image_shape=IMAGE, num_classes=4, seed=0)
    space = bn.SearchSpace(SMALL_OPS, nodes=2, group_channels=2)
    net = bn.SuperNet(space, num_classes=4, layers=3, channels=4, temperature=0.2, seed=0)
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(3e-2, beta_1=0.5))
    path = tmp_path_factory.mktemp("search") / "history.json"
    net.fit(bn.data.search_pairs(data, batch_size=8), epochs=2, verbose=0,
            callbacks=[bn.callbacks.SearchHistory(path)])
    return path


def test_op_probability_panels_show_the_recorded_probabilities(history_path, tmp_path):
    history = json.loads(history_path.read_text())
    fig = plot.plot_op_probabilities(history_path, "reduce", path=tmp_path / "p.png",
                                     ncols=3, figsize=(6, 4), dpi=50)
    assert_png(tmp_path / "p.png", (300, 200))
    probs = np.array([e["op_probabilities"]["reduce"] for e in history["epochs"]])
    assert probs.shape == (2, 5, 4)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 5  # one per edge of a 2-node cell
    for e, ax in enumerate(panels):
        for o, line in enumerate(ax.lines):
            assert line.get_label() == SMALL_OPS[o]
            np.testing.assert_allclose(line.get_ydata(), probs[:, e, o])
            np.testing.assert_array_equal(line.get_xdata(), [1, 2])
    assert "c_{k-2}" in panels[0].get_title() and panels[4].get_title() == "0 → 1"
    edge_only = plot.plot_op_probabilities(history, "normal", edges=[4])
    assert [ax.get_title() for ax in edge_only.axes if ax.lines] == ["0 → 1"]


def test_entropy_curves_compare_runs(history_path, tmp_path):
    entropies = plot.mean_entropies(history_path, "normal")
    history = json.loads(history_path.read_text())
    p = np.array(history["epochs"][-1]["op_probabilities"]["normal"])
    assert entropies[-1] == pytest.approx(float(-(p * np.log(p)).sum(axis=1).mean()), rel=1e-6)
    fig = plot.plot_entropy({"run A": history_path, "run B": history}, path=tmp_path / "e.png",
                            figsize=(6, 3), dpi=50)
    assert_png(tmp_path / "e.png", (300, 150))
    first = fig.axes[0]
    assert [line.get_label() for line in first.lines[:2]] == ["run A", "run B"]
    np.testing.assert_allclose(first.lines[0].get_ydata(), entropies)


def test_history_without_epochs_is_a_clear_error(tmp_path):
    empty = tmp_path / "history.json"
    empty.write_text(json.dumps({"op_names": SMALL_OPS, "epochs": []}))
    with pytest.raises(ValueError, match="no epochs"):
        plot.plot_op_probabilities(empty)
    with pytest.raises(ValueError, match="no epochs"):
        plot.plot_entropy(empty)
    with pytest.raises(ValueError, match="edge indices"):
        plot.plot_op_probabilities({"op_names": ["a"], "epochs": [
            {"epoch": 0, "op_probabilities": {"normal": [[1.0]], "reduce": [[1.0]]}}]}, edges=[3])


# -- weight flips ------------------------------------------------------------------------------


def test_flip_ratio_curves_from_a_real_fit(tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 3)),
        lq.layers.QuantConv2D(8, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(4),
    ])
    model.compile(tf.keras.optimizers.legacy.Adam(0.05),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    y = np.arange(64) % 4
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
        bn.callbacks.FlipFlopRatio(), bn.callbacks.ChangeToInitRatio()])
    fig = plot.plot_flip_ratios(history, path=tmp_path / "f.png", figsize=(6, 3), dpi=50)
    assert_png(tmp_path / "f.png", (300, 150))
    ff_ax, c2i_ax = fig.axes
    np.testing.assert_allclose(ff_ax.lines[0].get_ydata(), history.history["ff_ratio"])
    np.testing.assert_allclose(c2i_ax.lines[0].get_ydata(), history.history["c2i_ratio"])
    assert max(history.history["c2i_ratio"]) > 0  # the weights did flip


def test_flip_ratio_curves_from_metrics_json_put_stages_in_turn(tmp_path):
    metrics = {"stage1": {"epochs": [{"epoch": 0, "ff_ratio": 0.02, "c2i_ratio": 0.1},
                                     {"epoch": 1, "ff_ratio": 0.03, "c2i_ratio": 0.2}],
                          "test": {}},
               "stage2": {"epochs": [{"epoch": 0, "ff_ratio": 0.01, "c2i_ratio": 0.05}],
                          "test": {}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    fig = plot.plot_flip_ratios(tmp_path / "metrics.json", log_scale=True)
    ff_ax, c2i_ax = fig.axes
    stage1, stage2 = [line for line in ff_ax.lines if line.get_label() in ("stage1", "stage2")]
    np.testing.assert_array_equal(stage1.get_xdata(), [1, 2])
    np.testing.assert_array_equal(stage2.get_xdata(), [3])
    np.testing.assert_allclose(c2i_ax.lines[0].get_ydata(), [0.1, 0.2])
    assert ff_ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="ff_ratio"):
        plot.plot_flip_ratios({"loss": [1.0, 0.5]})
