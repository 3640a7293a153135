"""Read a TFLite flatbuffer: op counts and the attributes of LCE's binary ops."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bnas_tf.errors import ExportError

BITPACK = 32
"""LCE packs 32 binary channels into one int32 word."""


def _schema():
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older TF layouts
        from larq_compute_engine.mlir.python import tflite_schema as schema
    return schema


@dataclass
class Flatbuffer:
    """What `parse_flatbuffer` read.

    Attributes:
        op_counts: op name -> count, in order of first appearance.
        bconvs: attributes of every `LceBconv2d` (see `bconv_key`).
        bmaxpools: attributes of every `LceBMaxPool2d` (see `pool_key`).
    """

    op_counts: dict[str, int]
    bconvs: list[dict[str, Any]]
    bmaxpools: list[dict[str, Any]]


def _bmaxpool(opts: dict, padding: str) -> dict[str, Any]:
    return {
        "pool_size": (opts["filter_height"], opts["filter_width"]),
        "strides": (opts["stride_height"], opts["stride_width"]),
        "padding": padding,
    }


def _bconv(graph, op, opts: dict, padding: str) -> dict[str, Any]:
    filt = graph.Tensors(op.Inputs(1)).ShapeAsNumpy().tolist()  # O, H, W, packed I/g
    cin = int(opts["channels_in"])
    packed = -(-cin // BITPACK)
    return {
        "filters": int(filt[0]),
        "kernel_size": (int(filt[1]), int(filt[2])),
        "channels_in": cin,
        "groups": max(1, packed // int(filt[3])),
        "strides": (opts["stride_height"], opts["stride_width"]),
        "dilation_rate": (opts["dilation_height_factor"], opts["dilation_width_factor"]),
        "padding": padding,
        "pad_values": int(opts.get("pad_values", 0)),
    }


def parse_flatbuffer(tflite_bytes: bytes) -> Flatbuffer:
    """Op counts and the attributes of LCE ops, read with the TFLite schema.

    Raises:
        ExportError: `tflite_bytes` is not a TFLite flatbuffer.
    """
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
                padding = "same" if opts.get("padding") == schema.Padding.SAME else "valid"
                if name == "LceBMaxPool2d":
                    bmaxpools.append(_bmaxpool(opts, padding))
                else:
                    bconvs.append(_bconv(graph, op, opts, padding))
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a flatbuffer"
        raise ExportError(
            f"Could not read the TFLite flatbuffer ({type(e).__name__}: {e}). Pass the bytes "
            "returned by `convert` (or read from a .tflite file)."
        ) from e
    return Flatbuffer(dict(counts), bconvs, bmaxpools)


def op_counts(tflite_bytes: bytes) -> dict[str, int]:
    """Count the ops of a TFLite flatbuffer by name (builtin or LCE custom op).

    Args:
        tflite_bytes: a TFLite model, e.g. from `convert`.

    Returns:
        `{"LceBconv2d": 2, "LceQuantize": 1, ...}` in order of first appearance.

    Raises:
        ExportError: `tflite_bytes` is not a TFLite flatbuffer.
    """
    return parse_flatbuffer(tflite_bytes).op_counts


def has_grouped_bconv(tflite_bytes: bytes) -> bool:
    """True if some `LceBconv2d` of the flatbuffer is grouped."""
    return any(d["groups"] > 1 for d in parse_flatbuffer(tflite_bytes).bconvs)


def bconv_key(d: dict[str, Any]) -> tuple:
    """The shape of an `LceBconv2d` that identifies its layer."""
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


def pool_key(d: dict[str, Any]) -> tuple:
    """The shape of an `LceBMaxPool2d` that identifies its layer."""
    return (tuple(d["pool_size"]), tuple(d["strides"]), d["padding"])
