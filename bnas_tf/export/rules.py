"""The LCE converter's rules, applied to one layer: will it become a binary LCE op?

Read from the LCE 0.16 converter (`mlir/transforms/prepare_patterns_common.td`,
`prepare_tf.cc`, `optimize_patterns_target_arm.td`) and checked with small models:

- Only `QuantConv2D` becomes `LceBconv2d`: there is no binary dense, depthwise, separable,
  1-D/3-D or transposed convolution in LCE; those layers run as float ops.
- The input quantizer must produce exactly +-1 (`ste_sign`, `approx_sign`, `swish_sign`);
  `magnitude_aware_sign`, `ste_heaviside`, `ste_tern`, DoReFa or none stay float.
- The kernel must be +-alpha per output channel after quantization (`ste_sign`,
  `approx_sign`, `swish_sign`, `magnitude_aware_sign`); `kernel_quantizer=None` (real
  weights, stage 1 of the two-stage recipe) or multi-level quantizers stay float.
- `padding="same"` needs `pad_values=1.0`. `pad_values=0.0` converts on `target="arm"`
  only, with a zero-padding correction (output not bit-packed, no fused activation);
  on "xcore" it stays float. Any other pad value stays float. `padding="valid"` converts.
- Grouped convolutions need a multiple of 32 input channels per group. Those that convert
  run only with the indirect-BGEMM or reference kernel (`use_indirect_bgemm=True`): LCE's
  default BGEMM kernel rejects them.
- A `MaxPooling2D` whose only consumer binarizes its output becomes `LceBMaxPool2d`
  (`target="arm"` only).

Each check returns a `LayerReport`, the shape key of the LCE op the layer would become
(see `flatbuffer.bconv_key`) and the prediction; `report.conversion_report` then matches
the predictions with the flatbuffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import larq as lq
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export.flatbuffer import BITPACK, bconv_key, pool_key
from bnas_tf.export.walk import consumers, is_larq_layer, quantizer_name, walk

TARGETS = ("arm", "xcore")
"""Targets of `larq_compute_engine.convert_keras_model`."""

SIGN_QUANTIZERS = ("ste_sign", "approx_sign", "swish_sign")
_KERNEL_OK = (*SIGN_QUANTIZERS, "magnitude_aware_sign")
_FLOAT_OPS = {  # TFLite op a non-converted layer runs as
    "QuantConv2D": "CONV_2D",
    "QuantDepthwiseConv2D": "DEPTHWISE_CONV_2D",
    "QuantDense": "FULLY_CONNECTED",
    "MaxPooling2D": "MAX_POOL_2D",
}
GROUPED_HINT = (
    "run the model with use_indirect_bgemm=True (or the reference kernel): LCE's default "
    "BGEMM kernel rejects grouped binary convolutions"
)


@dataclass
class LayerReport:
    """What LCE made of one binary layer.

    Attributes:
        name: layer path in the model, e.g. `"cell_0/edge_1/quant_conv2d"`.
        layer_type: Keras class name.
        lce_op: the LCE op the layer can become (None if LCE has none for its type).
        converted: True if the flatbuffer holds that LCE op for this layer.
        op: the op the layer became (`"LceBconv2d"`, `"CONV_2D"`, ...).
        reason: why the layer stayed float (None if converted).
        fix: how to make it convert (None if converted).
        warnings: problems of a converted layer (slow path, runtime kernel limits).
        details: the settings the rules looked at.
        required: whether strict mode requires the layer to convert (False for max pools,
            which LCE fuses with the next binarizer only as an optimization).
    """

    name: str
    layer_type: str
    lce_op: str | None
    converted: bool
    op: str
    reason: str | None = None
    fix: str | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    required: bool = True

    @property
    def message(self) -> str:
        """`"reason; fix"` for a float layer, the warnings for a converted one."""
        if not self.converted:
            return "; ".join(s for s in (self.reason, self.fix) if s)
        return " ".join(self.warnings)


Check = tuple[LayerReport, tuple | None, bool]
"""`(report, LCE op shape key or None, predicted to convert)`."""


def check_target(target: str) -> None:
    """Raise `ExportError` unless `target` is one of `TARGETS`."""
    if target not in TARGETS:
        raise ExportError(
            f"Unknown target {target!r}. Expected one of {', '.join(map(repr, TARGETS))} "
            "(the targets of larq_compute_engine.convert_keras_model)."
        )


def _no_lce_kernel(entry: LayerReport, layer) -> Check:
    kind = entry.layer_type
    if isinstance(layer, lq.layers.QuantDense):
        entry.reason = "LCE has no binary fully-connected op: it runs as float FULLY_CONNECTED"
        entry.fix = (
            "keep the classifier real-valued (input_quantizer=None), or use a 1x1 QuantConv2D"
        )
    elif isinstance(layer, lq.layers.QuantDepthwiseConv2D):
        entry.reason = "LCE has no binary depthwise convolution: it runs as float"
        entry.fix = "use a grouped QuantConv2D with a multiple of 32 channels per group"
    else:
        entry.reason = f"LCE has no binary kernel for {kind}: only QuantConv2D converts"
        entry.fix = "use QuantConv2D"
    return entry, None, False


def _quantizer_rules(in_q: str | None, k_q: str | None) -> list[tuple[str, str]]:
    broken = []
    if in_q not in SIGN_QUANTIZERS:
        if in_q == "magnitude_aware_sign":
            why = "scales the sign, so activations are not +-1"
        else:
            why = "LCE binarizes activations only from sign quantizers"
        broken.append(
            (
                f"input_quantizer={in_q}: {why}",
                "use input_quantizer='ste_sign' (or approx_sign, swish_sign)",
            )
        )
    if k_q is None:
        broken.append(
            (
                "kernel_quantizer is None: the layer has real weights",
                "train stage 2 (binary weights) before export",
            )
        )
    elif k_q not in _KERNEL_OK:
        broken.append(
            (
                f"kernel_quantizer={k_q}: LCE needs weights of +-alpha per output channel",
                "use kernel_quantizer='ste_sign' or 'magnitude_aware_sign'",
            )
        )
    return broken


def _padding_rule(entry: LayerReport, padding: str, pad: float, target: str):
    """`(broken rules, LCE pad value)` of a conv's padding; may add a warning to `entry`."""
    if padding == "valid":
        return [], 0
    if padding != "same":
        return [
            (
                f"padding={padding!r}: LCE supports 'same' and 'valid'",
                "use padding='same' with pad_values=1.0",
            )
        ], 0
    if pad == 1.0:
        return [], 1
    if pad == 0.0 and target == "arm":
        entry.warnings.append(
            "pad_values=0 with padding='same': converted with zero padding, which LCE "
            "corrects in float (slower, output not bit-packed, no fused activation); "
            "set pad_values=1.0."
        )
        return [], 0
    if pad == 0.0:
        why = f"pad_values=0 with padding='same': target {target!r} needs +1 padding"
    else:
        why = f"pad_values={pad:g} with padding='same': LCE pads binary convs with 1"
    return [(why, "set pad_values=1.0")], 0


def check_layer(path: str, layer, target: str) -> Check:
    """Rule check of one binary Larq layer: its report, LceBconv2d key and prediction.

    The key (None for layer types LCE never converts) is the shape the layer's
    LceBconv2d would have; the prediction is True if the rules let it convert.
    """
    kind = type(layer).__name__
    in_q = quantizer_name(layer.input_quantizer)
    k_attr = "depthwise_quantizer" if hasattr(layer, "depthwise_quantizer") else "kernel_quantizer"
    k_q = quantizer_name(getattr(layer, k_attr, None))
    entry = LayerReport(path, kind, None, False, _FLOAT_OPS.get(kind, "float ops"))
    entry.details = {"input_quantizer": in_q, k_attr: k_q}
    if not isinstance(layer, lq.layers.QuantConv2D):
        return _no_lce_kernel(entry, layer)

    entry.lce_op = "LceBconv2d"
    groups = int(layer.groups)
    per_group = int(layer.kernel.shape[-2])
    cin = per_group * groups
    pad = float(tf.keras.backend.get_value(layer.pad_values))
    entry.details.update(
        groups=groups,
        in_channels=cin,
        channels_per_group=per_group,
        padding=layer.padding,
        pad_values=pad,
        strides=list(layer.strides),
        dilation_rate=list(layer.dilation_rate),
    )
    broken = _quantizer_rules(in_q, k_q)
    if groups > 1 and per_group % BITPACK:
        broken.append(
            (
                f"groups={groups} with {per_group} input channels per group: LCE needs a "
                f"multiple of {BITPACK}",
                f"use the `lce` search space or group_channels={BITPACK}",
            )
        )
    if layer.data_format != "channels_last":
        broken.append(
            (
                f"data_format={layer.data_format!r}: LCE needs channels_last",
                "use data_format='channels_last'",
            )
        )
    padding_broken, lce_pad = _padding_rule(entry, layer.padding, pad, target)
    broken += padding_broken
    key = bconv_key(
        {
            "filters": int(layer.filters),
            "kernel_size": tuple(layer.kernel_size),
            "channels_in": cin,
            "groups": groups,
            "strides": tuple(layer.strides),
            "dilation_rate": tuple(layer.dilation_rate),
            "padding": layer.padding,
            "pad_values": lce_pad,
        }
    )
    if broken:
        entry.reason = "; ".join(reason for reason, _ in broken)
        entry.fix = "; ".join(fix for _, fix in broken)
        return entry, key, False
    if groups > 1:
        entry.warnings.append(f"grouped: {GROUPED_HINT}.")
    elif cin % BITPACK:
        entry.warnings.append(
            f"{cin} input channels are bit-packed into {-(-cin // BITPACK)} x 32 bits; "
            "multiples of 32 use the kernel fully."
        )
    return entry, key, True


def check_pools(model: tf.keras.Model, target: str) -> list[Check]:
    """Max pools LCE can fuse with the binarizer that follows them."""
    out = []
    for path, layer in walk(model):
        if isinstance(layer, tf.keras.layers.MaxPooling2D):
            out.append(_check_pool(path, layer, target))
    return out


def _check_pool(path: str, layer, target: str) -> Check:
    fed = consumers(layer)
    binarizing = [
        c
        for c in fed or []
        if is_larq_layer(c) and quantizer_name(c.input_quantizer) in SIGN_QUANTIZERS
    ]
    key = pool_key(
        {"pool_size": layer.pool_size, "strides": layer.strides, "padding": layer.padding}
    )
    entry = LayerReport(
        path, type(layer).__name__, "LceBMaxPool2d", False, "MAX_POOL_2D", required=False
    )
    entry.details = {
        "pool_size": list(layer.pool_size),
        "strides": list(layer.strides),
        "consumers": None if fed is None else [c.name for c in fed if c],
    }
    predicted = False
    if binarizing and len(fed) == 1:
        if target == "arm":
            predicted = True
        else:
            entry.reason = f"LceBMaxPool2d exists only for target='arm', not {target!r}"
            entry.fix = "export with target='arm'"
    elif binarizing:
        entry.reason = (
            f"its output feeds {len(fed)} layers: LCE fuses a max pool only when its "
            "single consumer binarizes it"
        )
        entry.fix = "binarize the pooled tensor once (one consumer)"
    return entry, key, predicted
