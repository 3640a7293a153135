"""bnas_tf.baselines: the published binary networks, their sizes, training and export.

Published figures the 224x224 networks are checked against (1000 classes):

* Bi-Real Net 18: 11,699,112 parameters, Larq Zoo's `literature.BiRealNet`
  docstring ("ImageNet Metrics"; its Keras `count_params()`: batch norm counts
  4 per channel).
* QuickNet: 13,234,088 parameters, Larq Zoo's `sota.QuickNet` docstring (Larq's
  `summary` count, which folds a batch norm's scale and offset into its moving
  statistics: 2 per channel).
* ReActNet-A: the paper (Liu et al., ECCV 2020, Table 4) reports operations,
  not parameters: 4.82e9 BOPs and 0.12e8 FLOPs. The parameter figure,
  29,343,592 trainable, is that of the authors' PyTorch definition
  (github.com/liuzechun/ReActNet, mobilenet/reactnet.py), counted from its layers.

All three match exactly; the tolerances only allow for a figure's rounding.
"""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from larq.models import ModelProfile

import bnas_tf as bn
from bnas_tf.export.rules import check_layer
from bnas_tf.training import binarize_weights, binary_conv_layers


def binary_and_float_macs(model):
    """Multiply-accumulates per image of the top-level convs and dense layers."""
    binary = floating = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Conv2D | tf.keras.layers.DepthwiseConv2D):
            kernel = getattr(layer, "depthwise_kernel", None)
            kernel = layer.kernel if kernel is None else kernel
            macs = int(np.prod(kernel.shape)) * int(np.prod(layer.output_shape[1:3]))
        elif isinstance(layer, tf.keras.layers.Dense):
            macs = int(np.prod(layer.kernel.shape))
        else:
            continue
        if getattr(layer, "input_quantizer", None) is not None:
            binary += macs
        else:
            floating += macs
    return binary, floating


PUBLISHED = {
    # name: (how the figure counts, figure)
    "birealnet": ("count_params", 11_699_112),
    "quicknet": ("larq_summary", 13_234_088),
    "reactnet_a": ("trainable", 29_343_592),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_imagenet_networks_have_the_published_size(name):
    tf.keras.backend.clear_session()
    model = bn.baselines.get(name, num_classes=1000, input_shape=(224, 224, 3))
    how, figure = PUBLISHED[name]
    count = {"count_params": model.count_params,
             "larq_summary": lambda: ModelProfile(model).weight_count(),
             "trainable": lambda: sum(int(np.prod(w.shape)) for w in model.trainable_weights),
             }[how]()
    assert count == pytest.approx(figure, rel=1e-3), (name, count, figure)
    assert model.get_layer("pool").input_shape[1:3] == (7, 7)  # total stride 32
    if name == "reactnet_a":
        binary, floating = binary_and_float_macs(model)
        assert binary == pytest.approx(4.82e9, rel=5e-3)  # paper: BOPs 4.82e9
        assert floating == pytest.approx(0.12e8, rel=5e-2)  # paper: FLOPs 0.12e8


# name -> (binary convs, final feature map of a 32x32 input)
SMALL = {"birealnet": (16, 4), "quicknet": (16, 4), "reactnet_a": (13 + 8 + 2 * 5, 2)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_inputs_get_the_cifar_stem_and_binary_convs_are_top_level(name):
    model = bn.baselines.get(name, num_classes=10, input_shape=(32, 32, 3), width=8)
    convs, final = SMALL[name]
    assert model.output_shape == (None, 10)
    assert model.get_layer("pool").input_shape[1:3] == (final, final)
    # the ImageNet stem would shrink a 32x32 image to 1x1
    imagenet = bn.baselines.get(name, num_classes=10, input_shape=(32, 32, 3), width=8,
                                stem="imagenet")
    assert imagenet.get_layer("pool").input_shape[1:3] == (1, 1)
    binary = binary_conv_layers(model)
    assert len(binary) == convs
    for conv in binary:
        config = conv.get_config()
        assert isinstance(conv, lq.layers.QuantConv2D)
        assert (config["padding"], config["pad_values"]) == ("same", 1.0)
        assert config["kernel_quantizer"] is None  # stage 1: latent real weights
    # every Larq layer with an input quantizer is a binary conv binarize_weights finds
    assert {layer.name for layer in model.layers
            if getattr(layer, "input_quantizer", None) is not None} == {c.name for c in binary}
    # stage 2: every binary conv meets LCE's rules for LceBconv2d (the converter itself
    # runs on a QuickNet trained by `bnas-tf train --baseline`, in test_cli.py)
    stage2 = binarize_weights(model, bn.baselines.kernel_quantizer(name))
    for conv in binary_conv_layers(stage2):
        report, _, converts = check_layer(conv.name, conv, "arm")
        assert converts, report.message


def test_reactnet_layers_round_trip_through_save(tmp_path):
    model = bn.baselines.get("reactnet_a", num_classes=4, input_shape=(8, 8, 3), width=4)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    x = tf.random.normal([2, 8, 8, 3], seed=1)
    model.save(tmp_path / "model.keras")
    loaded = bn.load_model(tmp_path / "model.keras")
    assert {type(layer).__name__ for layer in loaded.layers} >= {"Shift", "RPReLU"}
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


def test_registry_names_and_errors():
    assert bn.baselines.names() == ("birealnet", "quicknet", "reactnet_a")
    assert bn.baselines.kernel_quantizer("quicknet") == "ste_sign"
    with pytest.raises(ValueError, match="Unknown baseline 'resnet18'. Expected one of: "
                                         "birealnet, quicknet, reactnet_a"):
        bn.baselines.get("resnet18", num_classes=10, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="already registered"):
        bn.baselines.register("quicknet", kernel_quantizer="ste_sign")(bn.baselines.QuickNet)
    with pytest.raises(ValueError, match="stem"):
        bn.baselines.get("birealnet", input_shape=(32, 32, 3), stem="mobile")
    with pytest.raises(ValueError, match="input_shape"):
        bn.baselines.get("birealnet", input_shape=(32, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        bn.baselines.get("quicknet", input_shape=(32, 32, 3), width=6)


def test_reactnet_layers_compute_rsign_threshold_and_rprelu():
    x = tf.constant([[[[-2.0, 0.5]]]])
    shift = bn.baselines.Shift()
    shift(x)
    shift.set_weights([np.array([1.0, -1.0], np.float32)])
    np.testing.assert_allclose(shift(x), [[[[-1.0, -0.5]]]])
    rprelu = bn.baselines.RPReLU()
    rprelu(x)
    gamma, slope, zeta = (np.array(v, np.float32) for v in ([-1.0, 1.0], [0.25, 0.5], [0.1, 0.2]))
    rprelu.set_weights([gamma, slope, zeta])
    # x − γ = [−1, −0.5]: both below the threshold, so β·(x − γ) + ζ
    np.testing.assert_allclose(rprelu(x), [[[[0.25 * -1.0 + 0.1, 0.5 * -0.5 + 0.2]]]], rtol=1e-6)
    blur = bn.baselines.BlurPool2D(2)
    out = blur(tf.ones([1, 4, 4, 3]))
    assert out.shape == (1, 2, 2, 3) and not blur.trainable_weights
    assert float(out[0, 0, 0, 0]) == pytest.approx(1.0)  # the kernel sums to 1
