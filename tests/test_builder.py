"""`build_network(..., stem="imagenet")`: the DARTS/BATS ImageNet stem on 224x224 inputs.

Tiny networks (3 cells, 16 channels, one node per cell) keep a 224x224 build
around a second. 16 channels, not fewer: TensorFlow 2.21's oneDNN kernel for the
weight gradient of a stride-2 1x1 conv (the FactorizedReduce of the first
cell's s0) corrupts memory with fewer than 16 input channels on AVX-512 CPUs
(oneDNN issue 6035).
"""

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.training import binary_conv_layers

IMAGE = (224, 224, 3)


def edge(op_name, source):
    return bn.Edge(source, ((op_name, 1.0),))


CELL = bn.Cell(nodes=((edge("bin_conv_3x3", 0), edge("bin_dil_conv_3x3", 1)),), concat=(2,))


def imagenet_network(**kwargs):
    tf.keras.utils.set_random_seed(0)
    genotype = bn.Genotype(CELL, CELL, bn.SearchSpace.get("bnas", nodes=1).get_config())
    return bn.build_network(genotype, num_classes=4, layers=3, channels=16, input_shape=IMAGE,
                            stem="imagenet", **kwargs)


@pytest.fixture(scope="module")
def model():
    return imagenet_network()


def test_imagenet_stem_reduces_8x_before_the_first_cell(model):
    shapes = {layer.name: layer.output_shape for layer in model.layers}
    assert shapes["stem0_a_conv"] == (None, 112, 112, 8)  # C/2 channels
    assert shapes["stem0_b_bn"] == (None, 56, 56, 16)
    assert shapes["stem1_bn"] == (None, 28, 28, 16)
    # the first cell reads stem0 as a reduction_prev input: a factorized reduce to 28x28
    assert shapes["cell0_pre0_bn"] == (None, 28, 28, 16)
    assert {"cell0_pre0_conv_a", "cell0_pre0_conv_b"} <= set(shapes)
    assert shapes["cell2_out"][1:3] == (7, 7)  # reductions in cells 1 and 2
    assert "stem_conv" not in shapes  # the CIFAR stem is not there
    # stem and cell-input convs are real-valued; the cells' convs are binary
    assert all(c.name.startswith("cell") and "_pre" not in c.name
               for c in binary_conv_layers(model))


def test_imagenet_stem_config_and_save_round_trip(model, tmp_path):
    x = tf.random.normal([2, *IMAGE], seed=0)
    clone = tf.keras.Model.from_config(model.get_config(),
                                       custom_objects=bn.saving.custom_objects())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x, training=False), model(x, training=False))
    model.save(tmp_path / "model.keras")
    loaded = bn.load_model(tmp_path / "model.keras")
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


def test_imagenet_stem_network_trains_a_step_per_stage_and_converts_with_lce(model):
    lce = pytest.importorskip("larq_compute_engine")  # noqa: F841
    data = bn.data.synthetic(8, 4, image_shape=IMAGE, num_classes=4)
    train = bn.data.make_dataset(data, batch_size=8, training=True)  # one step per stage
    result = bn.train_two_stage(model, train, epochs=(1, 1), verbose=0)
    for stage in ("stage1", "stage2"):
        assert np.isfinite(result.history[stage]["loss"][0])
    moved = [not np.array_equal(a, b) for a, b in
             zip(model.get_weights(), result.model.get_weights(), strict=True)]
    assert any(moved)
    fb = bn.export.convert(result.model)
    report = bn.export.conversion_report(result.model, fb, compare_float=False)
    assert report.all_converted
    assert report.op_counts["LceBconv2d"] == len(binary_conv_layers(result.model)) == 6


def test_unknown_stem_is_refused():
    genotype = bn.Genotype(CELL, CELL, bn.SearchSpace.get("bnas", nodes=1).get_config())
    with pytest.raises(ValueError, match="stem to be one of 'cifar', 'imagenet', got 'mobile'"):
        bn.build_network(genotype, stem="mobile")
