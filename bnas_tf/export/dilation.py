"""Dilated convs as one `Conv2D` op while LCE converts a model.

Keras computes a dilated conv as `SpaceToBatchND → Conv2D → BatchToSpaceND`, and
the TFLite converter folds the three back into one dilated conv. After common
subexpression elimination, two identical dilated convs on the same input share
one `SpaceToBatchND`; the fold then fails for both, and binary ones stay float
`CONV_2D` between the space/batch reshuffles instead of becoming `LceBconv2d`
(seen in a searched cell with two `bin_dil_conv_5x5` edges from one input).
`direct_dilated_convs` makes such convs call `tf.nn.conv2d` with `dilations`
for the duration of the conversion: the same function, traced as one op.

Example:
    >>> with direct_dilated_convs(model):
    ...     fb = lce.convert_keras_model(model)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import tensorflow as tf

from bnas_tf.export.walk import walk

__all__ = ["direct_dilated_convs", "dilated_convs"]


def dilated_convs(model: tf.keras.layers.Layer) -> list[tf.keras.layers.Conv2D]:
    """The 2-D convs below `model` with a dilation above 1 (stride 1, as Keras requires)."""
    return [layer for _, layer in walk(model)
            if isinstance(layer, tf.keras.layers.Conv2D)
            and not isinstance(layer, tf.keras.layers.Conv2DTranspose)
            and max(layer.dilation_rate) > 1 and isinstance(layer.padding, str)]


def _conv2d(layer: tf.keras.layers.Conv2D, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """What `layer.convolution_op` computes, as one `tf.nn.conv2d` with dilations."""
    if layer.data_format == "channels_first":
        fmt, strides, dilations = "NCHW", [1, 1, *layer.strides], [1, 1, *layer.dilation_rate]
    else:
        fmt, strides, dilations = "NHWC", [1, *layer.strides, 1], [1, *layer.dilation_rate, 1]
    return tf.nn.conv2d(inputs, kernel, strides=strides, padding=layer.padding.upper(),
                        dilations=dilations, data_format=fmt)


@contextlib.contextmanager
def direct_dilated_convs(model: tf.keras.layers.Layer) -> Iterator[list]:
    """Within the context, every dilated conv of `model` traces as one dilated `Conv2D`.

    Outputs are unchanged; only the traced graph differs. Yields the patched layers.
    """
    convs = dilated_convs(model)
    try:
        for layer in convs:  # an instance attribute; bypass Keras' attribute tracking
            object.__setattr__(layer, "convolution_op", functools.partial(_conv2d, layer))
        yield convs
    finally:
        for layer in convs:
            if "convolution_op" in vars(layer):
                object.__delattr__(layer, "convolution_op")
