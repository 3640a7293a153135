"""Walk a Keras model: every layer with its path, binary layers, quantizer names, consumers."""

from __future__ import annotations

from typing import Any

import larq as lq
import tensorflow as tf
from larq import layers_base as _lq_base

_QUANTIZER_ALIASES = {
    "SteSign": "ste_sign",
    "ApproxSign": "approx_sign",
    "SwishSign": "swish_sign",
    "MagnitudeAwareSign": "magnitude_aware_sign",
    "SteHeaviside": "ste_heaviside",
    "SteTern": "ste_tern",
    "DoReFa": "dorefa_quantizer",
    "DoReFaQuantizer": "dorefa_quantizer",
    "NoOp": "noop",
    "NoOpQuantizer": "noop",
}


def _children(layer: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def walk(model: tf.keras.layers.Layer) -> list[tuple[str, tf.keras.layers.Layer]]:
    """All layers below `model`, depth first, with slash-separated paths; no quantizers."""
    out, seen = [], set()

    def visit(layer, prefix):
        for child in _children(layer):
            if id(child) in seen or isinstance(child, lq.quantizers.Quantizer):
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            out.append((path, child))
            visit(child, path + "/")

    visit(model, "")
    return out


def quantizer_name(q: Any) -> str | None:
    """Snake-case name of a Larq quantizer ("ste_sign"), or None."""
    if q is None:
        return None
    for cls in type(q).__mro__:  # subclasses of a sign quantizer keep its forward pass
        if cls.__name__ in _QUANTIZER_ALIASES and cls.__module__.startswith("larq"):
            return _QUANTIZER_ALIASES[cls.__name__]
    # Plain functions (lq.quantizers.ste_sign) by name, other objects by class name.
    return getattr(q, "__name__", None) or type(q).__name__


def is_larq_layer(layer: tf.keras.layers.Layer) -> bool:
    """True for Larq's quantized layers (they have input and kernel quantizers)."""
    return isinstance(layer, _lq_base.BaseLayer)


def binary_layers(model: tf.keras.Model) -> list[tuple[str, tf.keras.layers.Layer]]:
    """Larq layers that binarize their input (`input_quantizer` set)."""
    return [(p, layer) for p, layer in walk(model) if binarizes(layer)]


def binarizes(layer: tf.keras.layers.Layer) -> bool:
    """True for a Larq layer with an input quantizer."""
    return is_larq_layer(layer) and layer.input_quantizer is not None


def consumers(layer: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer] | None:
    """Layers fed by `layer` in a functional graph, or None where unknown."""
    nodes = getattr(layer, "_outbound_nodes", None)
    if not nodes:
        return None
    return [getattr(n, "layer", None) or getattr(n, "outbound_layer", None) for n in nodes]
