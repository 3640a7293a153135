"""Swap masked grouped convs (fast training) for real grouped convs (what LCE converts)."""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export.walk import walk
from bnas_tf.ops import GroupMaskedQuantConv2D


def has_masked_groups(model: tf.keras.Model) -> bool:
    """Whether `model` holds a `GroupMaskedQuantConv2D` with more than one group."""
    return any(isinstance(layer, GroupMaskedQuantConv2D) and layer.mask_groups > 1
               for _, layer in walk(model))


def native_groups(model: tf.keras.Model) -> tf.keras.Model:
    """`model` with every `GroupMaskedQuantConv2D` replaced by a grouped `QuantConv2D`.

    bnas_tf trains grouped binary convs as dense convs with a block-diagonal
    kernel mask (TensorFlow's grouped convs are 10–30× slower on CPU); Larq
    Compute Engine needs the real grouped conv. The two compute the same
    function; the copy holds the same weights (each masked kernel reduced to its
    `[k, k, in/groups, filters]` grouped form) and the same layer names.
    `bnas_tf.export.convert` calls this itself; call it before using
    `larq_compute_engine.convert_keras_model` directly.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        `model` itself when it has no masked grouped convs, else a new model.

    Raises:
        ExportError: a masked conv is nested inside a custom layer, or the model
            cannot be cloned (e.g. a subclassed model).

    Example:
        >>> deployable = native_groups(model)
        >>> lce.convert_keras_model(deployable)  # doctest: +SKIP
    """
    if not has_masked_groups(model):
        return model
    top = {id(layer) for layer in model.layers}
    nested = [path for path, layer in walk(model)
              if isinstance(layer, GroupMaskedQuantConv2D) and id(layer) not in top]
    if nested:
        raise ExportError(
            f"Masked grouped convs nested inside other layers cannot be swapped for real "
            f"grouped convs: {', '.join(nested)}. Build the network with "
            "bnas_tf.build_network, which keeps binary convs at the top level.")

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, GroupMaskedQuantConv2D):
            config["groups"] = config.pop("mask_groups")
            return lq.layers.QuantConv2D.from_config(config)
        return layer.__class__.from_config(config)

    try:
        clone = tf.keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as e:  # noqa: BLE001 - clone_model raises many types
        raise ExportError(
            f"Cannot swap the masked grouped convs of {model.name!r} for real ones "
            f"({type(e).__name__}: {e}). It needs a functional or Sequential model."
        ) from e
    for old, new in zip(model.layers, clone.layers, strict=True):
        if isinstance(old, GroupMaskedQuantConv2D):
            new.set_weights([old.grouped_kernel(), *old.get_weights()[1:]])
        else:
            new.set_weights(old.get_weights())
    return clone
