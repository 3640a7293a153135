"""Convert a Keras model of Larq layers to an LCE TFLite flatbuffer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export._runtime import lce_module
from bnas_tf.export.dilation import direct_dilated_convs
from bnas_tf.export.files import check_writable, write_file
from bnas_tf.export.groups import native_groups
from bnas_tf.export.report import conversion_report
from bnas_tf.export.rules import check_target
from bnas_tf.export.walk import binary_layers


def check_convertible(model) -> None:
    """Raise `ExportError` unless `model` is a built Keras model other than a SuperNet."""
    if not isinstance(model, tf.keras.Model):
        raise ExportError(
            f"Expected a tf.keras.Model, got {type(model).__name__}. Build or load the network "
            "first (bnas_tf.load_model reads a saved one)."
        )
    from bnas_tf.supernet import SuperNet

    if isinstance(model, SuperNet):
        raise ExportError(
            "Cannot export a SuperNet: it mixes every candidate op. Derive its genotype "
            "(net.genotype()) and build the discrete network from it, then export that."
        )
    if not model.built:
        raise ExportError(
            f"Model {model.name!r} is not built. Call it on an input (or give it an Input "
            "layer) before exporting."
        )


def convert(
    model: tf.keras.Model,
    output_path: str | os.PathLike | None = None,
    *,
    target: str = "arm",
    allow_float: bool = False,
    strict: bool = False,
    **converter_kwargs: Any,
) -> bytes:
    """Convert a Larq Keras model to an LCE TFLite flatbuffer.

    Masked grouped convs (how bnas_tf trains grouped binary convs) are first swapped
    for real grouped convs (`native_groups`), and dilated convs trace as one dilated
    conv each (`direct_dilated_convs`: identical dilated convs on one input would
    otherwise stay float).

    Args:
        model: a built Keras model with Larq binary layers.
        output_path: if given, the flatbuffer is also written there atomically (a temporary
            file in the same directory, then renamed), so no partial file is ever left.
        target: "arm" (default) or "xcore".
        allow_float: convert a model without binary layers instead of refusing.
        strict: refuse if any binary layer stays float (see `conversion_report`).
        **converter_kwargs: passed on to `larq_compute_engine.convert_keras_model`
            (`inference_input_type`, `inference_output_type`,
            `experimental_default_int8_range`).

    Returns:
        The flatbuffer bytes.

    Raises:
        ExportError: unknown target, no binary layers (without `allow_float`), a model
            LCE cannot convert, an unwritable `output_path`, or, with `strict`, binary
            layers that stay float.

    Example:
        >>> fb = convert(model, "model.tflite")  # doctest: +SKIP
    """
    check_target(target)
    check_convertible(model)
    if output_path is not None:
        check_writable(output_path)
    if not allow_float and not binary_layers(model):
        raise ExportError(
            f"Model {model.name!r} has no binary layers (no Larq layer with an "
            "input_quantizer), so LCE would only produce a float model. Export a binarized "
            "network, or pass allow_float=True to convert it anyway."
        )
    model = native_groups(model)  # masked grouped convs (training) -> real grouped convs
    lce = lce_module()
    try:
        with direct_dilated_convs(model):  # one dilated Conv2D each, not a shared reshuffle
            tflite_bytes = lce.convert_keras_model(model, target=target, **converter_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ExportError(
            f"LCE could not convert model {model.name!r}: {e}. Check the converter options "
            "and that the model is float32 with fully defined input shapes."
        ) from e
    if strict:
        conversion_report(model, tflite_bytes, target=target, compare_float=False).check_strict()
    if output_path is not None:
        write_file(output_path, tflite_bytes)
    return tflite_bytes


def save_tflite(model: tf.keras.Model, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Convert `model` with `convert` and write it to `path` atomically.

    Args:
        model: the Keras model.
        path: the `.tflite` file to write.
        **kwargs: `convert` options (`target`, `strict`, `allow_float`, converter options).

    Returns:
        `path` as a `Path`.

    Raises:
        ExportError: as `convert`.
    """
    convert(model, path, **kwargs)
    return Path(path)
