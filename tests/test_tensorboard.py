"""ArchitectureBoard: event files hold op-probability histograms, entropies and cell images."""

from __future__ import annotations

import bnas_tf as bn  # noqa: F401  (first: selects Keras 2 before TensorFlow is imported)

# isort: split
import glob
import io
import json
import os
from collections import defaultdict

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

IMAGE = (8, 8, 3)
SMALL_OPS = ["none", "avg_pool_3x3", "skip_connect", "bin_conv_3x3"]


def tiny_net():
    space = bn.SearchSpace(SMALL_OPS, nodes=2, group_channels=2)
    return bn.SuperNet(space, num_classes=4, layers=3, channels=4, temperature=0.2, seed=0)


def read_events(log_dir):
    """`{tag: {step: tensor ndarray}}` of all events under `log_dir/architecture`."""
    files = glob.glob(os.path.join(log_dir, "architecture", "events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}/architecture"
    found = defaultdict(dict)
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[value.tag][event.step] = tf.make_ndarray(value.tensor)
    return found


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tf.keras.utils.set_random_seed(0)
    data = bn.data.synthetic(48, 8, image_shape=IMAGE, num_classes=4, seed=0)
    net = tiny_net()
    net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2),
                arch_optimizer=tf.keras.optimizers.legacy.Adam(3e-2, beta_1=0.5))
    log_dir = tmp_path_factory.mktemp("logs")
    board = bn.callbacks.ArchitectureBoard(log_dir, per_edge=True, engine="matplotlib", dpi=40)
    net.fit(bn.data.search_pairs(data, batch_size=8), epochs=2, verbose=0, callbacks=[board])
    return net, log_dir


def test_histograms_of_op_probabilities_each_epoch(searched):
    net, log_dir = searched
    events = read_events(log_dir)
    num_edges, num_ops = net.space.num_edges, net.space.num_ops
    for kind in ("normal", "reduce"):
        steps = events[f"op_probabilities/{kind}"]
        assert sorted(steps) == [0, 1]
        buckets = steps[1]  # [bucket, (left, right, count)]
        assert buckets.ndim == 2 and buckets.shape[1] == 3
        assert buckets[:, 2].sum() == pytest.approx(num_edges * num_ops)
        probs = net.op_probabilities()[kind]
        assert buckets[:, 0].min() == pytest.approx(probs.min(), abs=1e-6)
        assert buckets[:, 1].max() == pytest.approx(probs.max(), abs=1e-6)
        per_edge = [t for t in events if t.startswith(f"op_probabilities/{kind}/")]
        assert len(per_edge) == num_edges and f"op_probabilities/{kind}/0->1" in per_edge
        entropy = float(-(probs * np.log(probs)).sum(axis=1).mean())
        assert float(events[f"entropy/{kind}"][1]) == pytest.approx(entropy, rel=1e-5)
        for o, name in enumerate(SMALL_OPS):
            assert float(events[f"op_probability/{kind}/{name}"][1]) == pytest.approx(
                probs[:, o].mean(), rel=1e-5)


def test_cell_diagram_image_and_genotype_text_each_epoch(searched):
    net, log_dir = searched
    events = read_events(log_dir)
    assert sorted(events["genotype"]) == [0, 1]
    width, height, png = events["genotype"][1]  # tf.summary.image: [w, h, encoded...]
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (int(width), int(height))
    from bnas_tf import plot

    fig = plot.plot_genotype(net.genotype(), engine="matplotlib")
    expected = tuple(int(round(s * 40)) for s in fig.get_size_inches())
    assert image.size == expected
    assert np.asarray(image.convert("L"), dtype=float).std() > 5
    text = events["genotype_json"][1].reshape(-1)[0].decode()
    assert bn.Genotype.from_json(text) == net.genotype()


def test_every_n_epochs_and_always_the_last(tmp_path):
    net = tiny_net()
    board = bn.callbacks.ArchitectureBoard(tmp_path, every=2, images=False)
    board.set_model(net)
    board.set_params({"epochs": 5})
    board.on_train_begin()
    for epoch in range(5):
        board.on_epoch_end(epoch)
    board.on_train_end()
    events = read_events(tmp_path)
    assert sorted(events["op_probabilities/normal"]) == [1, 3, 4]
    assert "genotype" not in events
    assert json.loads(json.dumps(board.get_config()))["every"] == 2


def test_bad_use_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="every"):
        bn.callbacks.ArchitectureBoard(tmp_path, every=0)
    board = bn.callbacks.ArchitectureBoard(tmp_path, images=False)
    board.set_model(tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="SuperNet"):
        board.on_train_begin()
