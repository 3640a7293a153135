"""Export binary networks to TFLite with Larq Compute Engine (LCE), and check the result.

`convert` turns a Keras model of Larq layers into an LCE flatbuffer; `conversion_report`
says, for every binary layer, whether LCE turned it into its binary kernel (`LceBconv2d`,
`LceBMaxPool2d`) and, if not, which converter rule it broke and how to fix it (the rules
are listed in `bnas_tf.export.rules`); `verify` compares the flatbuffer's outputs with
Keras; `benchmark` times it against the float equivalent run by TFLite with XNNPACK;
`export_model` does all of it and writes the file only if every check passed.

Modules, one job each: `converter` (Keras -> LCE flatbuffer), `rules` (the converter's
rules, per layer), `report` (the per-layer report), `flatbuffer` (read a flatbuffer's
ops), `float_baseline` (binarization removed, plain TFLite), `verification` (`verify`),
`timing` (`benchmark`), `files` (checked, atomic output), `pipeline` (`export_model`,
`load_eval_data`), `walk` (a model's layers and quantizers), `groups` (masked grouped
convs, as bnas_tf trains them, swapped for real grouped convs before conversion).

Example:
    >>> import bnas_tf  # selects Keras 2 before TensorFlow
    >>> import larq as lq, tensorflow as tf
    >>> from bnas_tf import export
    >>> x = inp = tf.keras.Input((8, 8, 32))
    >>> x = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0,
    ...                           input_quantizer="ste_sign", kernel_quantizer="ste_sign",
    ...                           kernel_constraint="weight_clip", use_bias=False)(x)
    >>> model = tf.keras.Model(inp, tf.keras.layers.BatchNormalization()(x))
    >>> fb = export.convert(model)
    >>> export.conversion_report(model, fb).all_converted
    True

A saved model is read with `bnas_tf.load_model(path)`.
"""

from bnas_tf.export.converter import convert, save_tflite
from bnas_tf.export.dilation import direct_dilated_convs
from bnas_tf.export.files import check_writable
from bnas_tf.export.flatbuffer import op_counts
from bnas_tf.export.float_baseline import convert_float, float_equivalent
from bnas_tf.export.groups import has_masked_groups, native_groups
from bnas_tf.export.pipeline import ExportResult, export_model, load_eval_data
from bnas_tf.export.report import ConversionReport, conversion_report
from bnas_tf.export.rules import TARGETS, LayerReport
from bnas_tf.export.timing import benchmark, format_benchmark
from bnas_tf.export.verification import VerifyResult, verify

__all__ = [
    "TARGETS",
    "ConversionReport",
    "ExportResult",
    "LayerReport",
    "VerifyResult",
    "benchmark",
    "check_writable",
    "conversion_report",
    "convert",
    "convert_float",
    "direct_dilated_convs",
    "export_model",
    "float_equivalent",
    "format_benchmark",
    "has_masked_groups",
    "load_eval_data",
    "native_groups",
    "op_counts",
    "save_tflite",
    "verify",
]
