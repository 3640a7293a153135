"""The float baseline an LCE flatbuffer is compared with: binarization removed, plain TFLite."""

from __future__ import annotations

import tensorflow as tf
from larq import layers_base as _lq_base

from bnas_tf.errors import ExportError
from bnas_tf.export.groups import native_groups
from bnas_tf.export.walk import is_larq_layer, walk

_QUANTIZER_ATTRS = ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer")


def _strip_binarization(layer: tf.keras.layers.Layer) -> None:
    layer.input_quantizer = None
    for attr in _QUANTIZER_ATTRS:
        if hasattr(layer, attr):
            setattr(layer, attr, None)
    for w in layer.weights:  # QuantizedVariable applies its quantizer on read
        if hasattr(w, "latent_variable"):
            w.quantizer = None
    if isinstance(layer, _lq_base.QuantizerBaseConv):
        layer.pad_values = 0.0
        layer._is_native_padding = True  # larq's switch between tf.pad and native padding


def float_equivalent(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` with binarization removed, for a float baseline.

    Every Larq layer loses its input and kernel quantizers and pads with zeros
    (`pad_values=0`, native "same" padding), including Larq layers nested in custom
    layers; the copy holds the original's latent (real-valued) weights.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        A new model; `model` is unchanged.

    Raises:
        ExportError: the model cannot be cloned (e.g. a subclassed model).
    """
    model = native_groups(model)  # a float grouped conv, not a masked dense one
    try:
        clone = tf.keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - clone_model raises many types
        raise ExportError(
            f"Cannot build the float equivalent of {model.name!r} ({type(e).__name__}: {e}). "
            "It needs a functional or Sequential model whose layers implement get_config."
        ) from e
    for _, layer in walk(clone):
        if is_larq_layer(layer):
            _strip_binarization(layer)
    return clone


def convert_float(model: tf.keras.Model) -> bytes:
    """Convert `float_equivalent(model)` with plain TFLite (the baseline LCE is compared to).

    Raises:
        ExportError: the model cannot be cloned or converted.
    """
    fmodel = float_equivalent(model)
    try:
        return tf.lite.TFLiteConverter.from_keras_model(fmodel).convert()
    except Exception as e:  # noqa: BLE001 - the TFLite converter raises many types
        raise ExportError(
            f"TFLite could not convert the float equivalent of {model.name!r}: {e}"
        ) from e
