"""Export binary networks to TFLite with Larq Compute Engine (LCE), and check the result.

`convert` turns a Keras model of Larq layers into an LCE flatbuffer; `conversion_report`
says, for every binary layer, whether LCE turned it into its binary kernel (`LceBconv2d`,
`LceBMaxPool2d`) and, if not, which converter rule it broke and how to fix it; `verify`
compares the flatbuffer's outputs with Keras; `benchmark` times it against the float
equivalent run by TFLite with XNNPACK.

The rules, read from the LCE 0.16 converter (`mlir/transforms/prepare_patterns_common.td`,
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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import larq as lq
import numpy as np
import tensorflow as tf
from larq import layers_base as _lq_base

from bnas_tf.errors import ExportError

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
    "export_model",
    "float_equivalent",
    "format_benchmark",
    "load_eval_data",
    "load_model",
    "op_counts",
    "save_tflite",
    "verify",
]

log = logging.getLogger(__name__)

TARGETS = ("arm", "xcore")
"""Targets of `larq_compute_engine.convert_keras_model`."""

_BITPACK = 32  # LCE packs 32 binary channels into one int32 word
_SIGN = ("ste_sign", "approx_sign", "swish_sign")
_KERNEL_OK = (*_SIGN, "magnitude_aware_sign")
_FLOAT_OPS = {  # TFLite op a non-converted layer runs as
    "QuantConv2D": "CONV_2D",
    "QuantDepthwiseConv2D": "DEPTHWISE_CONV_2D",
    "QuantDense": "FULLY_CONNECTED",
    "MaxPooling2D": "MAX_POOL_2D",
}
_GROUPED_HINT = (
    "run the model with use_indirect_bgemm=True (or the reference kernel): LCE's default "
    "BGEMM kernel rejects grouped binary convolutions"
)


# --------------------------------------------------------------------------- LCE access


def _lce():
    """Import LCE lazily: the rest of bnas_tf works without it."""
    try:
        import larq_compute_engine as lce
    except ImportError as e:  # pragma: no cover - LCE is a declared dependency
        raise ExportError(
            f"larq-compute-engine is not importable ({e}). Install it with "
            "`pip install larq-compute-engine==0.16.0` (see setup.cfg)."
        ) from e
    return lce


def _lce_interpreter(tflite_bytes: bytes, **kwargs):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(tflite_bytes, **kwargs)


def _tflite_interpreter(tflite_bytes: bytes, **kwargs) -> tf.lite.Interpreter:
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still the TF API
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_content=tflite_bytes, **kwargs)


# --------------------------------------------------------------------------- file output


def check_writable(path: str | os.PathLike) -> Path:
    """Raise `ExportError` unless a file can be created at `path` (run before slow work).

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ExportError(f"Cannot write {str(path)!r}: it is a directory. Pass a file path.")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ExportError(
            f"Cannot write {str(path)!r}: its directory {str(parent)!r} {what}. "
            "Create the directory first or choose another output path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(
            f"Cannot write {str(path)!r}: directory {str(parent)!r} is not writable. "
            "Choose another output path."
        )
    return path


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    Readers never see a partial file, and a failed write leaves nothing behind.
    """
    path = check_writable(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise ExportError(
            f"Cannot write {str(path)!r}: {e.strerror or e}. Choose another output path."
        ) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


# --------------------------------------------------------------------------- model walking


def _children(layer: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def _walk(model: tf.keras.layers.Layer) -> list[tuple[str, tf.keras.layers.Layer]]:
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


def _quantizer_name(q: Any) -> str | None:
    """Snake-case name of a Larq quantizer ("ste_sign"), or None."""
    if q is None:
        return None
    aliases = {
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
    for cls in type(q).__mro__:  # subclasses of a sign quantizer keep its forward pass
        if cls.__name__ in aliases and cls.__module__.startswith("larq"):
            return aliases[cls.__name__]
    # Plain functions (lq.quantizers.ste_sign) by name, other objects by class name.
    return getattr(q, "__name__", None) or type(q).__name__


def _binary_layers(model: tf.keras.Model) -> list[tuple[str, tf.keras.layers.Layer]]:
    """Larq layers that binarize their input (`input_quantizer` set)."""
    return [
        (p, layer)
        for p, layer in _walk(model)
        if isinstance(layer, _lq_base.BaseLayer) and layer.input_quantizer is not None
    ]


def _consumers(layer: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer] | None:
    """Layers fed by `layer` in a functional graph, or None where unknown."""
    nodes = getattr(layer, "_outbound_nodes", None)
    if not nodes:
        return None
    return [getattr(n, "layer", None) or getattr(n, "outbound_layer", None) for n in nodes]


# --------------------------------------------------------------------------- flatbuffer


def _schema():
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older TF layouts
        from larq_compute_engine.mlir.python import tflite_schema as schema
    return schema


@dataclass
class _Flatbuffer:
    op_counts: dict[str, int]
    bconvs: list[dict[str, Any]]
    bmaxpools: list[dict[str, Any]]


def _parse_flatbuffer(tflite_bytes: bytes) -> _Flatbuffer:
    """Op counts and the attributes of LCE ops, read with the TFLite schema."""
    from flatbuffers import flexbuffers

    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAsModel(bytearray(tflite_bytes), 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            builtin = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                codes.append(oc.CustomCode().decode())
            else:
                codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
        counts: Counter[str] = Counter()
        bconvs, bmaxpools = [], []
        same = schema.Padding.SAME
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for j in range(graph.OperatorsLength()):
                op = graph.Operators(j)
                name = codes[op.OpcodeIndex()]
                counts[name] += 1
                if name not in ("LceBconv2d", "LceBMaxPool2d"):
                    continue
                raw = op.CustomOptionsAsNumpy()
                opts = flexbuffers.Loads(bytes(raw)) if not isinstance(raw, int) else {}
                padding = "same" if opts.get("padding") == same else "valid"
                if name == "LceBMaxPool2d":
                    bmaxpools.append(
                        {
                            "pool_size": (opts["filter_height"], opts["filter_width"]),
                            "strides": (opts["stride_height"], opts["stride_width"]),
                            "padding": padding,
                        }
                    )
                    continue
                filt = graph.Tensors(op.Inputs(1)).ShapeAsNumpy().tolist()  # O, H, W, packed I/g
                cin = int(opts["channels_in"])
                packed = -(-cin // _BITPACK)
                bconvs.append(
                    {
                        "filters": int(filt[0]),
                        "kernel_size": (int(filt[1]), int(filt[2])),
                        "channels_in": cin,
                        "groups": max(1, packed // int(filt[3])),
                        "strides": (opts["stride_height"], opts["stride_width"]),
                        "dilation_rate": (
                            opts["dilation_height_factor"],
                            opts["dilation_width_factor"],
                        ),
                        "padding": padding,
                        "pad_values": int(opts.get("pad_values", 0)),
                    }
                )
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a flatbuffer"
        raise ExportError(
            f"Could not read the TFLite flatbuffer ({type(e).__name__}: {e}). Pass the bytes "
            "returned by `convert` (or read from a .tflite file)."
        ) from e
    return _Flatbuffer(dict(counts), bconvs, bmaxpools)


def op_counts(tflite_bytes: bytes) -> dict[str, int]:
    """Count the ops of a TFLite flatbuffer by name (builtin or LCE custom op).

    Args:
        tflite_bytes: a TFLite model, e.g. from `convert`.

    Returns:
        `{"LceBconv2d": 2, "LceQuantize": 1, ...}` in order of first appearance.
    """
    return _parse_flatbuffer(tflite_bytes).op_counts


def _bconv_key(d: dict[str, Any]) -> tuple:
    return (
        d["filters"],
        tuple(d["kernel_size"]),
        d["channels_in"],
        d["groups"],
        tuple(d["strides"]),
        tuple(d["dilation_rate"]),
        d["padding"],
        d["pad_values"],
    )


def _pool_key(d: dict[str, Any]) -> tuple:
    return (tuple(d["pool_size"]), tuple(d["strides"]), d["padding"])


# --------------------------------------------------------------------------- report


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


@dataclass
class ConversionReport:
    """Per-layer outcome of an LCE conversion, op counts and model sizes.

    Attributes:
        target: the converter target.
        layers: one `LayerReport` per binary layer (and per max pool feeding one).
        op_counts: op name -> count in the flatbuffer.
        size_bytes: flatbuffer size.
        float_size_bytes: size of the float equivalent converted by plain TFLite, or None.
        unattributed_ops: LCE ops the layer rules could not match to a layer.
        notes: remarks on the whole conversion.
        verification: `VerifyResult.to_dict()` if the model was verified.
        benchmark: `benchmark(...)` result if the model was timed.
    """

    target: str
    layers: list[LayerReport]
    op_counts: dict[str, int]
    size_bytes: int
    float_size_bytes: int | None = None
    unattributed_ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None

    @property
    def float_layers(self) -> list[LayerReport]:
        """Binary layers that stayed float."""
        return [r for r in self.layers if not r.converted]

    @property
    def converted_layers(self) -> list[LayerReport]:
        """Binary layers that became LCE ops."""
        return [r for r in self.layers if r.converted]

    @property
    def all_converted(self) -> bool:
        """True if every binary layer became an LCE op."""
        return not self.float_layers

    @property
    def size_ratio(self) -> float | None:
        """Float-equivalent size / LCE size (how many times smaller), or None."""
        if not self.float_size_bytes:
            return None
        return self.float_size_bytes / self.size_bytes

    def layer(self, name: str) -> LayerReport:
        """The report of the layer whose path or last path component is `name`."""
        for r in self.layers:
            if r.name == name or r.name.rsplit("/", 1)[-1] == name:
                return r
        raise KeyError(f"No binary layer named {name!r}; have {[r.name for r in self.layers]}.")

    def check_strict(self) -> None:
        """Raise `ExportError` naming every binary layer that stayed float.

        Max pools that were not fused (`required=False`) do not count.

        Raises:
            ExportError: some required binary layer is not an LCE op.
        """
        failed = [r for r in self.float_layers if r.required]
        if not failed:
            return
        total = sum(r.required for r in self.layers)
        lines = [f"  {r.name} ({r.layer_type}): {r.message}" for r in failed]
        raise ExportError(
            f"Strict export: {len(failed)} of {total} binary layers stay "
            "float in the LCE flatbuffer:\n" + "\n".join(lines) + "\nFix them, or export "
            "without strict mode to accept float fallbacks."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (layers as dicts, tuples as lists)."""
        d = asdict(self)
        d["summary"] = {
            "binary_layers": len(self.layers),
            "converted": len(self.converted_layers),
            "float": len(self.float_layers),
            "size_ratio": self.size_ratio,
        }
        return json.loads(json.dumps(d, default=_json_default))

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write `to_dict()` as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        return _atomic_write(path, text.encode())

    def format_table(self) -> str:
        """Human-readable table: one row per binary layer, then ops and sizes."""
        head = ("layer", "type", "became", "status", "reason / fix")
        rows = []
        for r in self.layers:
            status = "binary" if r.converted else "FLOAT"
            if r.converted and r.warnings:
                status = "binary(!)"
            rows.append((r.name, r.layer_type, r.op, status, r.message))
        widths = [
            max([len(head[i])] + [len(row[i]) for row in rows]) if i < 4 else 0 for i in range(5)
        ]

        def fmt(row):
            return (
                "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=False)) + "  " + row[4]
            )

        lines = [f"LCE conversion report (target={self.target})", fmt(head)]
        lines += [fmt(row) for row in rows] or ["  (no binary layers)"]
        n = len(self.layers)
        lines.append(
            f"Binary layers: {len(self.converted_layers)}/{n} converted"
            + (f", {len(self.float_layers)} stay float" if self.float_layers else "")
        )
        lines.append("Ops: " + ", ".join(f"{k} x{v}" for k, v in self.op_counts.items()))
        size = f"Size: {self.size_bytes:,} B"
        if self.float_size_bytes:
            size += (
                f" (float equivalent {self.float_size_bytes:,} B, "
                f"{self.size_ratio:.1f}x smaller)"
            )
        lines.append(size)
        if self.unattributed_ops:
            lines.append("Unattributed LCE ops: " + "; ".join(self.unattributed_ops))
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


def _conv_entry(path: str, layer, target: str) -> tuple[LayerReport, tuple | None, bool]:
    """Rule check of one binary Larq layer: its report, LceBconv2d key and prediction.

    The key (None for layer types LCE never converts) is the shape the layer's
    LceBconv2d would have; the prediction is True if the rules let it convert.
    """
    kind = type(layer).__name__
    in_q = _quantizer_name(layer.input_quantizer)
    k_attr = "depthwise_quantizer" if hasattr(layer, "depthwise_quantizer") else "kernel_quantizer"
    k_q = _quantizer_name(getattr(layer, k_attr, None))
    details: dict[str, Any] = {"input_quantizer": in_q, k_attr: k_q}
    entry = LayerReport(path, kind, None, False, _FLOAT_OPS.get(kind, "float ops"))
    entry.details = details

    if not isinstance(layer, lq.layers.QuantConv2D):
        if isinstance(layer, lq.layers.QuantDense):
            entry.reason = "LCE has no binary fully-connected op: it runs as float FULLY_CONNECTED"
            entry.fix = (
                "keep the classifier real-valued (input_quantizer=None), or use a 1x1 "
                "QuantConv2D"
            )
        elif isinstance(layer, lq.layers.QuantDepthwiseConv2D):
            entry.reason = "LCE has no binary depthwise convolution: it runs as float"
            entry.fix = "use a grouped QuantConv2D with a multiple of 32 channels per group"
        else:
            entry.reason = f"LCE has no binary kernel for {kind}: only QuantConv2D converts"
            entry.fix = "use QuantConv2D"
        return entry, None, False

    entry.lce_op = "LceBconv2d"
    groups = int(layer.groups)
    per_group = int(layer.kernel.shape[-2])
    cin = per_group * groups
    pad = float(tf.keras.backend.get_value(layer.pad_values))
    details.update(
        groups=groups,
        in_channels=cin,
        channels_per_group=per_group,
        padding=layer.padding,
        pad_values=pad,
        strides=list(layer.strides),
        dilation_rate=list(layer.dilation_rate),
    )
    reasons, fixes = [], []
    if in_q not in _SIGN:
        if in_q == "magnitude_aware_sign":
            why = "scales the sign, so activations are not +-1"
        else:
            why = "LCE binarizes activations only from sign quantizers"
        reasons.append(f"input_quantizer={in_q}: {why}")
        fixes.append("use input_quantizer='ste_sign' (or approx_sign, swish_sign)")
    if k_q is None:
        reasons.append("kernel_quantizer is None: the layer has real weights")
        fixes.append("train stage 2 (binary weights) before export")
    elif k_q not in _KERNEL_OK:
        reasons.append(f"kernel_quantizer={k_q}: LCE needs weights of +-alpha per output channel")
        fixes.append("use kernel_quantizer='ste_sign' or 'magnitude_aware_sign'")
    if groups > 1 and per_group % _BITPACK:
        reasons.append(
            f"groups={groups} with {per_group} input channels per group: LCE needs a "
            f"multiple of {_BITPACK}"
        )
        fixes.append(f"use the `lce` search space or group_channels={_BITPACK}")
    if layer.data_format != "channels_last":
        reasons.append(f"data_format={layer.data_format!r}: LCE needs channels_last")
        fixes.append("use data_format='channels_last'")
    lce_pad = 0
    if layer.padding == "same":
        if pad == 1.0:
            lce_pad = 1
        elif pad == 0.0 and target == "arm":
            entry.warnings.append(
                "pad_values=0 with padding='same': converted with zero padding, which LCE "
                "corrects in float (slower, output not bit-packed, no fused activation); "
                "set pad_values=1.0."
            )
        elif pad == 0.0:
            reasons.append(f"pad_values=0 with padding='same': target {target!r} needs +1 padding")
            fixes.append("set pad_values=1.0")
        else:
            reasons.append(f"pad_values={pad:g} with padding='same': LCE pads binary convs with 1")
            fixes.append("set pad_values=1.0")
    elif layer.padding != "valid":
        reasons.append(f"padding={layer.padding!r}: LCE supports 'same' and 'valid'")
        fixes.append("use padding='same' with pad_values=1.0")
    key = _bconv_key(
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
    if reasons:
        entry.reason, entry.fix = "; ".join(reasons), "; ".join(fixes)
        return entry, key, False
    if groups > 1:
        entry.warnings.append(f"grouped: {_GROUPED_HINT}.")
    elif cin % _BITPACK:
        entry.warnings.append(
            f"{cin} input channels are bit-packed into {-(-cin // _BITPACK)} x 32 bits; "
            "multiples of 32 use the kernel fully."
        )
    return entry, key, True


def _pool_entries(model, target: str) -> list[tuple[LayerReport, tuple, bool]]:
    """Max pools LCE can fuse with the binarizer that follows them."""
    out = []
    for path, layer in _walk(model):
        if not isinstance(layer, tf.keras.layers.MaxPooling2D):
            continue
        consumers = _consumers(layer)
        binarizing = [
            c
            for c in consumers or []
            if isinstance(c, _lq_base.BaseLayer) and _quantizer_name(c.input_quantizer) in _SIGN
        ]
        key = _pool_key(
            {"pool_size": layer.pool_size, "strides": layer.strides, "padding": layer.padding}
        )
        entry = LayerReport(
            path, type(layer).__name__, "LceBMaxPool2d", False, "MAX_POOL_2D", required=False
        )
        entry.details = {
            "pool_size": list(layer.pool_size),
            "strides": list(layer.strides),
            "consumers": None if consumers is None else [c.name for c in consumers if c],
        }
        predicted = False
        if binarizing and len(consumers) == 1:
            if target == "arm":
                predicted = True
            else:
                entry.reason = f"LceBMaxPool2d exists only for target='arm', not {target!r}"
                entry.fix = "export with target='arm'"
        elif binarizing:
            entry.reason = (
                f"its output feeds {len(consumers)} layers: LCE fuses a max pool only when its "
                "single consumer binarizes it"
            )
            entry.fix = "binarize the pooled tensor once (one consumer)"
        out.append((entry, key, predicted))
    return out


def _attribute(entries, keys, predicted, ops, op_name, noun) -> list[str]:
    """Match LCE ops of the flatbuffer to rule-checked layers; return unmatched ops."""
    pool = Counter(ops)
    for entry, key, pred in zip(entries, keys, predicted, strict=True):
        if not pred:
            continue
        if pool[key] > 0:
            pool[key] -= 1
            entry.converted, entry.op = True, op_name
        else:
            entry.reason = (
                f"the rules predicted {op_name}, but the flatbuffer has no {op_name} of "
                f"this {noun}'s shape"
            )
            entry.fix = "check the converter's log for this layer"
            entry.warnings = []
    for entry, key, pred in zip(entries, keys, predicted, strict=True):
        if pred or key is None or pool[key] <= 0:
            continue
        pool[key] -= 1
        why = entry.reason or "no binarizing consumer seen"
        entry.warnings.insert(0, f"converted although the rules predicted float ({why}).")
        entry.converted, entry.op, entry.reason, entry.fix = True, op_name, None, None
    return [f"{op_name}{k}" for k, n in pool.items() for _ in range(n)]


def conversion_report(
    model: tf.keras.Model,
    tflite_bytes: bytes,
    *,
    target: str = "arm",
    float_tflite_bytes: bytes | None = None,
    compare_float: bool = True,
) -> ConversionReport:
    """Say, for every binary layer, whether LCE turned it into a binary op, and why not.

    Each binary layer (a Larq layer with an `input_quantizer`, and a `MaxPooling2D` whose
    only consumer binarizes its output) is checked against the LCE converter's rules (see
    the module docstring). The prediction is then cross-checked with the flatbuffer: every
    `LceBconv2d`/`LceBMaxPool2d` op is matched to a layer of the same shape (filters,
    kernel, input channels, groups, strides, dilation, padding). The flatbuffer wins
    where the two disagree, and the layer's warnings say so.

    Args:
        model: the Keras model that was converted.
        tflite_bytes: the flatbuffer `convert(model, target=target)` returned.
        target: the converter target used.
        float_tflite_bytes: the float baseline (`convert_float(model)`), to compare sizes;
            computed when None and `compare_float` is True.
        compare_float: convert the float equivalent to report its size.

    Returns:
        A `ConversionReport`.

    Raises:
        ExportError: `tflite_bytes` is not a TFLite flatbuffer, or an unknown target.
    """
    _check_target(target)
    fb = _parse_flatbuffer(tflite_bytes)
    checked = [_conv_entry(path, layer, target) for path, layer in _binary_layers(model)]
    entries = [c[0] for c in checked]
    unattributed = _attribute(
        entries,
        [c[1] for c in checked],
        [c[2] for c in checked],
        [_bconv_key(d) for d in fb.bconvs],
        "LceBconv2d",
        "layer",
    )
    pools = _pool_entries(model, target)
    pool_entries = [p[0] for p in pools]
    unattributed += _attribute(
        pool_entries,
        [p[1] for p in pools],
        [p[2] for p in pools],
        [_pool_key(d) for d in fb.bmaxpools],
        "LceBMaxPool2d",
        "pool",
    )
    # Report pools that binarize or became LCE ops; others are ordinary float pools.
    entries += [e for e in pool_entries if e.converted or e.reason]

    notes = []
    if any(e.converted and e.details.get("groups", 1) > 1 for e in entries):
        notes.append(f"Grouped binary convolutions converted: {_GROUPED_HINT}.")
    if any(not e.converted and "groups=" in (e.reason or "") for e in entries):
        notes.append(
            "Lines 'error: Invalid binary grouped convolution ...' printed by the converter "
            "mark the grouped layers listed as FLOAT; the conversion itself succeeded."
        )
    float_size = None
    if float_tflite_bytes is None and compare_float:
        try:
            float_tflite_bytes = convert_float(model)
        except ExportError as e:
            notes.append(f"No float size to compare: {e}")
    if float_tflite_bytes is not None:
        float_size = len(float_tflite_bytes)
    return ConversionReport(
        target=target,
        layers=entries,
        op_counts=fb.op_counts,
        size_bytes=len(tflite_bytes),
        float_size_bytes=float_size,
        unattributed_ops=unattributed,
        notes=notes,
    )


# --------------------------------------------------------------------------- conversion


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ExportError(
            f"Unknown target {target!r}. Expected one of {', '.join(map(repr, TARGETS))} "
            "(the targets of larq_compute_engine.convert_keras_model)."
        )


def _check_convertible(model) -> None:
    if not isinstance(model, tf.keras.Model):
        raise ExportError(
            f"Expected a tf.keras.Model, got {type(model).__name__}. Build or load the network "
            "first (bnas_tf.export.load_model reads a saved one)."
        )
    try:
        from bnas_tf.supernet import SuperNet
    except ImportError:  # pragma: no cover - supernet module missing in a partial install
        SuperNet = None  # noqa: N806
    if SuperNet is not None and isinstance(model, SuperNet):
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
    _check_target(target)
    _check_convertible(model)
    if output_path is not None:
        check_writable(output_path)
    if not allow_float and not _binary_layers(model):
        raise ExportError(
            f"Model {model.name!r} has no binary layers (no Larq layer with an "
            "input_quantizer), so LCE would only produce a float model. Export a binarized "
            "network, or pass allow_float=True to convert it anyway."
        )
    lce = _lce()
    try:
        tflite_bytes = lce.convert_keras_model(model, target=target, **converter_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ExportError(
            f"LCE could not convert model {model.name!r}: {e}. Check the converter options "
            "and that the model is float32 with fully defined input shapes."
        ) from e
    if strict:
        conversion_report(model, tflite_bytes, target=target, compare_float=False).check_strict()
    if output_path is not None:
        _atomic_write(output_path, tflite_bytes)
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
    try:
        clone = tf.keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - clone_model raises many types
        raise ExportError(
            f"Cannot build the float equivalent of {model.name!r} ({type(e).__name__}: {e}). "
            "It needs a functional or Sequential model whose layers implement get_config."
        ) from e
    for _, layer in _walk(clone):
        if not isinstance(layer, _lq_base.BaseLayer):
            continue
        layer.input_quantizer = None
        for attr in ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer"):
            if hasattr(layer, attr):
                setattr(layer, attr, None)
        for w in layer.weights:  # QuantizedVariable applies its quantizer on read
            if hasattr(w, "latent_variable"):
                w.quantizer = None
        if isinstance(layer, _lq_base.QuantizerBaseConv):
            layer.pad_values = 0.0
            layer._is_native_padding = True  # larq's switch between tf.pad and native padding
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


# --------------------------------------------------------------------------- verification


@dataclass
class VerifyResult:
    """Agreement between Keras and the LCE flatbuffer on the same inputs.

    Attributes:
        num_samples: inputs compared.
        top1_agreement: fraction of inputs whose arg-max output (over the flattened
            per-sample output) is the same in both.
        max_abs_diff: largest absolute output difference.
        mean_abs_diff: mean absolute output difference.
        max_abs_output: largest absolute Keras output (the scale of the diffs).
        top1_threshold: the agreement required.
        passed: `top1_agreement >= top1_threshold` and outputs finite.
        keras_accuracy: Keras top-1 accuracy on the labels, if given.
        tflite_accuracy: flatbuffer top-1 accuracy on the labels, if given.
        interpreter: the LCE interpreter options used.
    """

    num_samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    max_abs_output: float
    top1_threshold: float
    passed: bool
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    interpreter: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def format(self) -> str:
        """One-paragraph summary."""
        s = (
            f"Verification on {self.num_samples} inputs: top-1 agreement "
            f"{self.top1_agreement:.4f} (need >= {self.top1_threshold}), max |diff| "
            f"{self.max_abs_diff:.3g}, mean |diff| {self.mean_abs_diff:.3g} (outputs up to "
            f"{self.max_abs_output:.3g})"
        )
        if self.keras_accuracy is not None:
            s += f"; accuracy Keras {self.keras_accuracy:.4f}, TFLite {self.tflite_accuracy:.4f}"
        return s + (": PASSED" if self.passed else ": FAILED")


def _flat(out) -> np.ndarray:
    if isinstance(out, list | tuple):
        return np.concatenate([np.asarray(o).reshape(len(o), -1) for o in out], axis=1)
    out = np.asarray(out)
    return out.reshape(len(out), -1)


def verify(
    model: tf.keras.Model,
    tflite_bytes: bytes,
    x: np.ndarray,
    *,
    y: np.ndarray | None = None,
    top1_threshold: float = 0.99,
    batch_size: int = 64,
    interpreter_kwargs: dict[str, Any] | None = None,
) -> VerifyResult:
    """Run the flatbuffer with LCE's interpreter on `x` and compare with Keras.

    Args:
        model: the Keras model that was converted.
        tflite_bytes: its LCE flatbuffer.
        x: inputs, float32, with a batch axis (each sample runs with batch size 1).
        y: optional integer labels, to report both accuracies.
        top1_threshold: top-1 agreement needed for `passed`.
        batch_size: Keras batch size.
        interpreter_kwargs: options of `larq_compute_engine...Interpreter`; default
            `use_indirect_bgemm=True`, the x86-fast kernel that also runs grouped convs.

    Returns:
        A `VerifyResult` (check `.passed`; this function does not raise on disagreement).

    Raises:
        ExportError: empty `x`, or the interpreter cannot run the flatbuffer.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ExportError(f"Expected a non-empty batch of inputs, got shape {x.shape}.")
    kwargs = {"use_indirect_bgemm": True, **(interpreter_kwargs or {})}
    try:
        interp = _lce_interpreter(tflite_bytes, **kwargs)
        got = _flat(interp.predict(x))
    except Exception as e:  # noqa: BLE001 - the C++ wrapper raises RuntimeError/ValueError
        raise ExportError(
            f"LCE's interpreter could not run the flatbuffer with {kwargs}: {e}"
        ) from e
    want = _flat(model.predict(x, batch_size=batch_size, verbose=0))
    if got.shape != want.shape:
        raise ExportError(
            f"Output shapes differ: Keras {want.shape}, TFLite {got.shape}. Was the flatbuffer "
            "converted from this model?"
        )
    diff = np.abs(got - want)
    finite = bool(np.isfinite(got).all())
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    acc_k = acc_t = None
    if y is not None:
        y = np.asarray(y).reshape(-1)
        acc_k = float(np.mean(want.argmax(1) == y))
        acc_t = float(np.mean(got.argmax(1) == y))
    return VerifyResult(
        num_samples=len(x),
        top1_agreement=agree,
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        max_abs_output=float(np.abs(want).max()),
        top1_threshold=float(top1_threshold),
        passed=finite and agree >= top1_threshold,
        keras_accuracy=acc_k,
        tflite_accuracy=acc_t,
        interpreter=kwargs,
    )


# --------------------------------------------------------------------------- benchmark

_LCE_KERNELS = {
    "bgemm": {},
    "indirect_bgemm": {"use_indirect_bgemm": True},
    "reference": {"use_reference_bconv": True},
}


def _time(fn: Callable[[], Any], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def benchmark(
    tflite_bytes: bytes,
    float_tflite_bytes: bytes,
    x: np.ndarray,
    *,
    threads: Sequence[int] = (1, 2),
    repeats: int = 50,
    warmup: int = 5,
    kernels: Iterable[str] = ("bgemm", "indirect_bgemm", "reference"),
    xnnpack: Iterable[bool] = (False, True),
) -> dict[str, Any]:
    """Time single-input inference: LCE flatbuffer vs float TFLite with XNNPACK.

    For each thread count, every LCE kernel option ("bgemm" is LCE's default,
    "indirect_bgemm", "reference"; each with and without XNNPACK for the float ops) is
    timed and the fastest is reported; the float flatbuffer runs in `tf.lite.Interpreter`
    with its default delegates (XNNPACK; `float_xnnpack` says whether it applied) and
    without them.

    Args:
        tflite_bytes: the LCE flatbuffer.
        float_tflite_bytes: the float baseline (`convert_float(model)`).
        x: inputs; the first sample is used.
        threads: thread counts to time.
        repeats: timed runs per configuration (the median is reported).
        warmup: untimed runs first.
        kernels: LCE kernel options to try.
        xnnpack: whether to try the LCE interpreter with XNNPACK off and/or on.

    Returns:
        A JSON-ready dict: `size_bytes`, `float_size_bytes`, `size_ratio`, and `runs`, one
        entry per thread count with `lce` (every option's timing or error), `lce_best`,
        `lce_ms`, `float_ms`, `float_xnnpack`, `float_builtin_ms` and `speedup`
        (`float_ms / lce_ms`). Use `format_benchmark` to print it.
    """
    x1 = np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:1])
    grouped = any(d["groups"] > 1 for d in _parse_flatbuffer(tflite_bytes).bconvs)
    result: dict[str, Any] = {
        "size_bytes": len(tflite_bytes),
        "float_size_bytes": len(float_tflite_bytes),
        "size_ratio": len(float_tflite_bytes) / len(tflite_bytes),
        "repeats": repeats,
        "runs": [],
    }
    for n in threads:
        lce_runs: dict[str, dict[str, Any]] = {}
        for kernel in kernels:
            if kernel not in _LCE_KERNELS:
                raise ExportError(
                    f"Unknown LCE kernel {kernel!r}; expected one of {list(_LCE_KERNELS)}."
                )
            for xnn in xnnpack:
                name = kernel + ("+xnnpack" if xnn else "")
                if kernel == "bgemm" and grouped:
                    lce_runs[name] = {"error": "rejects grouped binary convolutions"}
                    continue
                try:
                    inner = _lce_interpreter(
                        tflite_bytes, num_threads=n, use_xnnpack=xnn, **_LCE_KERNELS[kernel]
                    ).interpreter
                    lce_runs[name] = _time(lambda i=inner: i.predict([x1]), repeats, warmup)
                except Exception as e:  # noqa: BLE001 - report and go on with other kernels
                    lce_runs[name] = {"error": str(e).strip().splitlines()[-1][:200]}
        ok = {k: v for k, v in lce_runs.items() if "median_ms" in v}
        best = min(ok, key=lambda k: ok[k]["median_ms"]) if ok else None

        def run_float(n=n, **kw):
            it = _tflite_interpreter(float_tflite_bytes, num_threads=n, **kw)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

            def step():
                it.set_tensor(inp, x1)
                it.invoke()
                return it.get_tensor(out)

            applied = any(d.get("op_name") == "DELEGATE" for d in it._get_ops_details())
            return _time(step, repeats, warmup), applied

        flt, applied = run_float()
        builtin, _ = run_float(
            experimental_op_resolver_type=(
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        )
        lce_ms = ok[best]["median_ms"] if best else None
        result["runs"].append(
            {
                "threads": n,
                "lce": lce_runs,
                "lce_best": best,
                "lce_ms": lce_ms,
                "float_ms": flt["median_ms"],
                "float_xnnpack": applied,
                "float_builtin_ms": builtin["median_ms"],
                "speedup": flt["median_ms"] / lce_ms if lce_ms else None,
            }
        )
    return result


def format_benchmark(result: dict[str, Any]) -> str:
    """Human-readable table of a `benchmark` result."""
    lines = [
        f"Size: LCE {result['size_bytes']:,} B, float {result['float_size_bytes']:,} B "
        f"({result['size_ratio']:.1f}x smaller); median of {result['repeats']} runs, batch 1"
    ]
    for run in result["runs"]:
        opts = ", ".join(
            f"{k} {v['median_ms']:.3f}" if "median_ms" in v else f"{k} n/a ({v['error']})"
            for k, v in run["lce"].items()
        )
        xnn = "XNNPACK" if run["float_xnnpack"] else "no XNNPACK delegate"
        best = f"LCE {run['lce_ms']:.3f} ms ({run['lce_best']})" if run["lce_ms"] else "LCE n/a"
        speed = f", {run['speedup']:.2f}x float" if run["speedup"] else ""
        lines.append(
            f"{run['threads']} thread(s): {best} vs float {run['float_ms']:.3f} ms ({xnn}; "
            f"builtin kernels {run['float_builtin_ms']:.3f} ms){speed}"
        )
        lines.append(f"    LCE options (ms): {opts}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files and pipeline


def load_model(path: str | os.PathLike) -> tf.keras.Model:
    """Load a Keras model saved with `model.save` (.keras, .h5 or SavedModel directory).

    Larq's layers, quantizers and constraints are passed as custom objects, and bnas_tf's
    own layers are registered, so models built from either load.

    Raises:
        ExportError: the path does not exist or holds no loadable Keras model.
    """
    p = Path(path)
    if not p.exists():
        raise ExportError(
            f"No model at {str(path)!r}: the path does not exist. Pass a model saved with "
            "model.save(...) (.keras or .h5 file, or SavedModel directory)."
        )
    for module in ("bnas_tf.ops", "bnas_tf.layers"):  # register bnas_tf's serializable layers
        with contextlib.suppress(ImportError):
            __import__(module)
    custom = {}
    for mod in (lq.layers, lq.quantizers, lq.constraints):
        custom.update({k: v for k, v in vars(mod).items() if isinstance(v, type)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tf.keras.models.load_model(p, custom_objects=custom, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises OSError/ValueError/IOError/...
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"Could not load a Keras model from {str(path)!r}: {reason}. Expected a model "
            "saved with model.save(...): a .keras or .h5 file, or a SavedModel directory."
        ) from None
    if not isinstance(model, tf.keras.Model):
        raise ExportError(
            f"{str(path)!r} holds a {type(model).__name__}, not a Keras model. Save the model "
            "with tf.keras model.save(...)."
        )
    return model


def load_eval_data(
    name: str,
    data_dir: str | os.PathLike | None,
    limit: int,
    *,
    loader: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` normalized test images and labels of a dataset.

    Args:
        name: dataset name (e.g. "cifar10").
        data_dir: where the dataset lies.
        limit: number of test images.
        loader: `loader(name, data_dir, limit) -> (x, y)` to use instead of `bnas_tf.data`
            (a hook for tests and custom data).

    Returns:
        `(x, y)`: float32 images normalized like training data, integer labels.

    Raises:
        ExportError: the dataset cannot be loaded.
    """
    if limit < 1:
        raise ExportError(f"Expected a positive number of verification images, got {limit}.")
    if loader is not None:
        x, y = loader(name, data_dir, limit)
        return np.asarray(x, np.float32)[:limit], np.asarray(y).reshape(-1)[:limit]
    try:
        from bnas_tf import data as data_mod

        # `limit` keeps limit training and limit // 5 test images.
        data = data_mod.load(name, data_dir, limit=max(5, 5 * limit))
        x = data_mod.normalize(data.x_test[:limit], data)
        y = np.asarray(data.y_test[:limit]).reshape(-1)
    except (ImportError, AttributeError) as e:
        raise ExportError(
            f"bnas_tf.data cannot load datasets here ({e}). Pass the images yourself with "
            "verify(model, tflite_bytes, x)."
        ) from e
    except (ValueError, OSError) as e:  # bnas_tf.errors.DataError is a ValueError
        raise ExportError(f"Cannot load {limit} test images of {name!r}: {e}") from e
    return np.asarray(x, np.float32), y


@dataclass
class ExportResult:
    """What `export_model` produced."""

    tflite_bytes: bytes
    report: ConversionReport
    verification: VerifyResult | None = None
    benchmark: dict[str, Any] | None = None
    output_path: Path | None = None


def export_model(
    model: tf.keras.Model,
    output_path: str | os.PathLike,
    *,
    target: str = "arm",
    verify_data: tuple[np.ndarray, np.ndarray | None] | None = None,
    top1_threshold: float = 0.99,
    run_benchmark: bool = False,
    strict: bool = False,
    report_path: str | os.PathLike | None = None,
    allow_float: bool = False,
    print_fn: Callable[[str], Any] | None = print,
    benchmark_kwargs: dict[str, Any] | None = None,
) -> ExportResult:
    """Convert, report, check, optionally verify and time; write only if every check passes.

    The output is written atomically after all checks pass; a refused export leaves no
    output file (an existing one is untouched). The JSON report, if asked for, is written
    in any case, with the verification and benchmark results.

    Args:
        model: the Keras model.
        output_path: the `.tflite` file to write.
        target: converter target.
        verify_data: `(x, y)` to verify on (`y` may be None); see `verify`.
        top1_threshold: top-1 agreement the verification needs.
        run_benchmark: time the flatbuffer against the float baseline.
        strict: refuse if any binary layer stays float.
        report_path: where to write the JSON report.
        allow_float: accept a model without binary layers.
        print_fn: where progress and tables go (None: silent).
        benchmark_kwargs: options of `benchmark`.

    Returns:
        An `ExportResult`.

    Raises:
        ExportError: conversion failed, or strict mode / verification refused the model.
    """
    say = print_fn or (lambda _s: None)
    _check_target(target)
    check_writable(output_path)
    if report_path is not None:
        check_writable(report_path)
    fb = convert(model, target=target, allow_float=allow_float)
    float_fb = None
    try:
        float_fb = convert_float(model)
    except ExportError as e:
        log.warning("%s", e)
    report = conversion_report(
        model, fb, target=target, float_tflite_bytes=float_fb, compare_float=False
    )
    say(report.format_table())
    result = ExportResult(fb, report)
    failure = None
    if strict:
        try:
            report.check_strict()
        except ExportError as e:
            failure = e
    if failure is None and verify_data is not None:
        x, y = verify_data
        result.verification = verify(model, fb, x, y=y, top1_threshold=top1_threshold)
        report.verification = result.verification.to_dict()
        say(result.verification.format())
        if not result.verification.passed:
            failure = ExportError(
                f"Verification failed: top-1 agreement {result.verification.top1_agreement:.4f}"
                f" < {top1_threshold} on {result.verification.num_samples} inputs (max |diff| "
                f"{result.verification.max_abs_diff:.3g}). Not writing {str(output_path)!r}; "
                "check the layers reported above, or lower the threshold knowingly."
            )
    if failure is None and run_benchmark:
        if float_fb is None:
            say("Benchmark skipped: no float baseline (see the warning above).")
        else:
            x = verify_data[0] if verify_data is not None else None
            if x is None:
                shape = [d or 1 for d in model.inputs[0].shape]
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            result.benchmark = benchmark(fb, float_fb, x, **(benchmark_kwargs or {}))
            report.benchmark = result.benchmark
            say(format_benchmark(result.benchmark))
    if report_path is not None:
        report.to_json(report_path)
        say(f"Report written to {report_path}")
    if failure is not None:
        raise failure
    result.output_path = _atomic_write(output_path, fb)
    say(f"Wrote {len(fb):,} bytes to {output_path}")
    return result
