"""The conversion report: which binary layers LCE converted, which stayed float and why.

`conversion_report` applies the converter's rules (`rules`) to every binary layer, then
cross-checks them with the flatbuffer: every `LceBconv2d`/`LceBMaxPool2d` op is matched
to a layer of the same shape.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export.files import write_file
from bnas_tf.export.flatbuffer import bconv_key, parse_flatbuffer, pool_key
from bnas_tf.export.float_baseline import convert_float
from bnas_tf.export.groups import native_groups
from bnas_tf.export.rules import GROUPED_HINT, LayerReport, check_layer, check_pools, check_target
from bnas_tf.export.walk import binary_layers


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
        cost: the Keras model's `bnas_tf.cost.model_cost(...).to_dict()` (binary and
            float MACs, OPs, parameters, size), or None if it could not be counted.
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
    cost: dict[str, float] | None = None

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
        return write_file(path, text.encode())

    def format_table(self) -> str:
        """Human-readable table: one row per binary layer, then ops and sizes."""
        head = ("layer", "type", "became", "status", "reason / fix")
        rows = []
        for r in self.layers:
            status = "binary" if r.converted else "FLOAT"
            if r.converted and r.warnings:
                status = "binary(!)"
            rows.append((r.name, r.layer_type, r.op, status, r.message))
        widths = [max([len(head[i])] + [len(row[i]) for row in rows]) for i in range(4)]

        def fmt(row):
            return "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + (
                "  " + row[4]
            )

        lines = [f"LCE conversion report (target={self.target})", fmt(head)]
        lines += [fmt(row) for row in rows] or ["  (no binary layers)"]
        lines.append(
            f"Binary layers: {len(self.converted_layers)}/{len(self.layers)} converted"
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
        if self.cost is not None:
            from bnas_tf.cost import ModelCost

            lines.append("Cost (Keras model, per image): "
                         + ModelCost.from_dict(self.cost).summary())
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


def _attribute(checks, ops: list[tuple], op_name: str, noun: str) -> list[str]:
    """Match LCE ops of the flatbuffer to rule-checked layers; return unmatched ops.

    A layer predicted to convert takes an op of its shape (else it is reported float);
    ops left over then go to same-shaped layers predicted float, with a warning: the
    flatbuffer wins where the rules and the converter disagree.
    """
    pool = Counter(ops)
    for entry, key, predicted in checks:
        if not predicted:
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
    for entry, key, predicted in checks:
        if predicted or key is None or pool[key] <= 0:
            continue
        pool[key] -= 1
        why = entry.reason or "no binarizing consumer seen"
        entry.warnings.insert(0, f"converted although the rules predicted float ({why}).")
        entry.converted, entry.op, entry.reason, entry.fix = True, op_name, None, None
    return [f"{op_name}{k}" for k, n in pool.items() for _ in range(n)]


def _notes(entries: list[LayerReport]) -> list[str]:
    notes = []
    if any(e.converted and e.details.get("groups", 1) > 1 for e in entries):
        notes.append(f"Grouped binary convolutions converted: {GROUPED_HINT}.")
    if any(not e.converted and "groups=" in (e.reason or "") for e in entries):
        notes.append(
            "Lines 'error: Invalid binary grouped convolution ...' printed by the converter "
            "mark the grouped layers listed as FLOAT; the conversion itself succeeded."
        )
    return notes


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
    `bnas_tf.export.rules`). The prediction is then cross-checked with the flatbuffer:
    every `LceBconv2d`/`LceBMaxPool2d` op is matched to a layer of the same shape (filters,
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
    check_target(target)
    fb = parse_flatbuffer(tflite_bytes)
    model = native_groups(model)
    convs = [check_layer(path, layer, target) for path, layer in binary_layers(model)]
    unattributed = _attribute(convs, [bconv_key(d) for d in fb.bconvs], "LceBconv2d", "layer")
    pools = check_pools(model, target)
    unattributed += _attribute(pools, [pool_key(d) for d in fb.bmaxpools], "LceBMaxPool2d", "pool")
    entries = [c[0] for c in convs]
    # Report pools that binarize or became LCE ops; others are ordinary float pools.
    entries += [p[0] for p in pools if p[0].converted or p[0].reason]
    notes = _notes(entries)
    from bnas_tf.cost import model_cost

    try:
        cost = model_cost(model).to_dict()
    except Exception as error:  # noqa: BLE001 (informative figures never stop an export)
        cost = None
        notes.append(f"No cost figures ({type(error).__name__}): {error}")
    if float_tflite_bytes is None and compare_float:
        try:
            float_tflite_bytes = convert_float(model)
        except ExportError as e:
            notes.append(f"No float size to compare: {e}")
    return ConversionReport(
        target=target,
        layers=entries,
        op_counts=fb.op_counts,
        size_bytes=len(tflite_bytes),
        float_size_bytes=None if float_tflite_bytes is None else len(float_tflite_bytes),
        unattributed_ops=unattributed,
        notes=notes,
        cost=cost,
    )
