"""The latency table's data: `LatencyTable`, `LatencyEntry` and their JSON format.

`bnas_tf.cost.latency` measures a table (`latency_table`) and turns it into per-edge
costs (`edge_latency_tables`); this module holds the table, writes it atomically and
reads it back, refusing malformed or foreign files with a `LatencyTableError`.

Example:
    >>> from bnas_tf.cost import LatencyTable
    >>> table = LatencyTable.load("latency.json")
    >>> table.ms("bin_conv_3x3", (32, 32, 16), 1), table.machine["call_overhead_ms"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bnas_tf._io import atomic_write_text

__all__ = ["LatencyEntry", "LatencyTable", "LatencyTableError", "LatencyKey", "X86_CAVEAT",
           "NO_COMPUTE", "FORMAT", "FORMAT_VERSION"]


FORMAT = "bnas_tf.latency_table"
FORMAT_VERSION = 1
X86_CAVEAT = ("x86: LCE runs portable kernels here; these latencies say little about ARM "
              "phones and boards — run bnas-tf profile on the board")
"""Printed beside the latencies of a table measured on x86."""
NO_COMPUTE = "no compute: 0 ms, not timed"

LatencyKey = tuple[str, tuple[int, int, int], int]
"""`(op name, (height, width, channels) of its input, strides)`."""


class LatencyTableError(ValueError):
    """A file that is not a valid latency table (malformed, foreign or of another version)."""


@dataclasses.dataclass(frozen=True)
class LatencyEntry:
    """The latency of one op at one input shape and stride, in milliseconds.

    Attributes:
        median_ms: median over the timed runs (0 for an op with no compute).
        min_ms: the fastest run; `spread_ms = median_ms - min_ms`.
        timed: False for ops with no compute (`none`, `skip_connect` at stride 1): 0 ms.
        lce_ops: the flatbuffer's ops, e.g. `{"LceQuantize": 1, "LceBconv2d": 1}`.
    """

    median_ms: float
    min_ms: float
    timed: bool = True
    lce_ops: Mapping[str, int] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def spread_ms(self) -> float:
        """How far the median lies above the fastest run."""
        return self.median_ms - self.min_ms


@dataclasses.dataclass
class LatencyTable:
    """Per `(op, input shape, stride)`, the latency LCE's interpreter measured.

    Attributes:
        entries: `{(op, (h, w, c), strides): LatencyEntry}`.
        machine: where and how it was measured: `platform.machine()`, processor, CPU
            count, Python/TensorFlow/Larq/LCE versions, date, threads, whether LCE's
            optimized kernels apply, the kernel options, the interpreter's per-call
            overhead (`call_overhead_ms`, included in every timed entry).
        space: the config of the search space profiled.
        settings: layers, channels, input shape, repeats, warmup, target, seconds taken.

    Example:
        >>> table = LatencyTable.load("latency.json")
        >>> table.ms("bin_conv_3x3", (32, 32, 16), 1)
    """

    entries: dict[LatencyKey, LatencyEntry]
    machine: dict[str, Any]
    space: dict[str, Any]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def ms(self, op: str, input_shape: Sequence[int], strides: int) -> float:
        """The median latency of one entry.

        Raises:
            KeyError: the op was not profiled at that shape and stride.
        """
        return self.entries[(op, tuple(input_shape), strides)].median_ms

    def net_ms(self, op: str, input_shape: Sequence[int], strides: int) -> float:
        """`ms` less the interpreter's per-call overhead (`machine["call_overhead_ms"]`),
        at least 0: what the op adds inside a network, which pays that overhead once per
        inference, not once per op. Ops with no compute stay at 0.

        Raises:
            KeyError: the op was not profiled at that shape and stride.
        """
        entry = self.entries[(op, tuple(input_shape), strides)]
        if not entry.timed:
            return 0.0
        return max(entry.median_ms - float(self.machine.get("call_overhead_ms") or 0.0), 0.0)

    @property
    def x86(self) -> bool:
        """Measured on an x86 machine (portable LCE kernels)."""
        from bnas_tf.export.timing import is_x86

        return is_x86(str(self.machine.get("machine", "")))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `to_json` writes.

        `{"format": "bnas_tf.latency_table", "version": 1, "machine": {...},
        "space": {SearchSpace config}, "settings": {...}, "entries": [{"op": name,
        "input_shape": [h, w, c], "strides": s, "median_ms": m, "min_ms": t,
        "timed": bool, "lce_ops": {op: count}}, ...]}`; an entry that was not timed
        also says so in a `"note"`.
        """
        entries = []
        for (op, shape, strides), entry in self.entries.items():
            row = {"op": op, "input_shape": list(shape), "strides": strides,
                   "median_ms": entry.median_ms, "min_ms": entry.min_ms, "timed": entry.timed,
                   "lce_ops": dict(entry.lce_ops)}
            if not entry.timed:
                row["note"] = NO_COMPUTE
            entries.append(row)
        return {"format": FORMAT, "version": FORMAT_VERSION, "machine": self.machine,
                "space": self.space, "settings": self.settings, "entries": entries}

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the table to `path` atomically (a temporary file, then renamed over it)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        atomic_write_text(path, text + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table written by `to_json` (or `bnas-tf profile`).

        Raises:
            LatencyTableError: (a ValueError) the file is not valid JSON, not a latency
                table, of another format version, or has a malformed field; the message
                names the file and the problem.
            OSError: the file cannot be read.
        """
        raw = Path(path).read_bytes()
        try:
            data = json.loads(raw, parse_constant=_finite, parse_float=_finite)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise LatencyTableError(f"Cannot read latency table {str(path)!r}: not JSON "
                                    f"({type(e).__name__}: {e}).") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> LatencyTable:
        """The table of a `to_dict` document, every field checked.

        Raises:
            LatencyTableError: naming `source` and what is wrong.
        """
        def fail(problem: str) -> NoReturn:
            raise LatencyTableError(f"Cannot read latency table {source!r}: {problem}.")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            fail(f"not a bnas_tf latency table (no \"format\": \"{FORMAT}\"); write one with "
                 "`bnas-tf profile`")
        if data.get("version") != FORMAT_VERSION or isinstance(data.get("version"), bool):
            fail(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        expected = {"format", "version", "machine", "space", "settings", "entries"}
        if set(data) != expected:
            fail(_key_problem("the table", set(data), expected))
        for name in ("machine", "space", "settings"):
            if not isinstance(data[name], dict):
                fail(f"{name!r} is {type(data[name]).__name__}, expected an object")
        if not isinstance(data["machine"].get("machine"), str):
            fail("machine has no 'machine' string (platform.machine())")
        names = data["space"].get("op_names")
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            fail("space has no 'op_names' list of op names")
        if not isinstance(data["entries"], list):
            fail("'entries' is not a list")
        entries: dict[LatencyKey, LatencyEntry] = {}
        for i, row in enumerate(data["entries"]):
            try:
                key, entry = _entry(row)
            except ValueError as e:
                fail(f"entry {i}: {e}")
            if key in entries:
                fail(f"entry {i}: {key} appears twice")
            entries[key] = entry
        return cls(entries, data["machine"], data["space"], data["settings"])

    def format(self) -> str:
        """The table as text: op, input shape, stride, ms; the x86 caveat beside x86 figures."""
        m, s = self.machine, self.settings
        options = m.get("kernel_options", {})
        lines = [f"LCE latency per op, batch 1, {m.get('num_threads', '?')} thread(s), "
                 f"{options.get('kernel', '?')} kernel"
                 f"{' + XNNPACK' if options.get('use_xnnpack') else ''}, median of "
                 f"{s.get('repeats', '?')} runs on {m.get('machine')} "
                 f"({m.get('cpu_model') or m.get('processor') or 'unknown CPU'})"]
        if self.x86:
            lines.append(X86_CAVEAT)
        lines.append(f"{'op':<18} {'input':>10} {'stride':>6} {'median ms':>10} {'min ms':>8}"
                     "  LCE ops")
        for (op, shape, strides), e in self.entries.items():
            size = "x".join(map(str, shape))
            if e.timed:
                lines.append(f"{op:<18} {size:>10} {strides:>6} {e.median_ms:>10.4f} "
                             f"{e.min_ms:>8.4f}  {', '.join(e.lce_ops)}")
            else:
                lines.append(f"{op:<18} {size:>10} {strides:>6} {0:>10} {'-':>8}  {NO_COMPUTE}")
        if self.x86:
            lines.append(X86_CAVEAT)
        return "\n".join(lines)


def _finite(text: str) -> float:
    """`json.loads`'s float parser: NaN, Infinity and out-of-range numbers are errors."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _key_problem(what: str, got: set, expected: set) -> str:
    missing, unknown = sorted(expected - got), sorted(map(repr, got - expected))
    return "; ".join(filter(None, [missing and f"{what} lacks {', '.join(missing)}",
                                   unknown and f"{what} has unknown keys {', '.join(unknown)}"]))


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} is {value!r}, expected a positive integer")
    return value


def _ms(value: Any, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 <= value <= sys.float_info.max):
        raise ValueError(f"{what} is {value!r}, expected milliseconds (a finite number >= 0)")
    return float(value)


def _entry(row: Any) -> tuple[LatencyKey, LatencyEntry]:
    """One checked entry of a table document (ValueError says what is wrong)."""
    if not isinstance(row, dict):
        raise ValueError(f"is {type(row).__name__}, expected an object")
    required = {"op", "input_shape", "strides", "median_ms", "min_ms", "timed", "lce_ops"}
    if not required <= set(row) <= required | {"note"}:
        raise ValueError(_key_problem("it", set(row), required))
    op, shape = row["op"], row["input_shape"]
    if not isinstance(op, str) or not op:
        raise ValueError(f"op is {op!r}, expected an op name")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ValueError(f"input_shape is {shape!r}, expected [height, width, channels]")
    shape = tuple(_count(d, "an input_shape size") for d in shape)
    strides = _count(row["strides"], "strides")
    median, fastest = _ms(row["median_ms"], "median_ms"), _ms(row["min_ms"], "min_ms")
    if not isinstance(row["timed"], bool):
        raise ValueError(f"timed is {row['timed']!r}, expected true or false")
    if fastest > median or (not row["timed"] and median != 0):
        raise ValueError(f"min_ms {fastest} and median_ms {median} do not fit (min <= median; "
                         "0 when not timed)")
    lce_ops = row["lce_ops"]
    if not isinstance(lce_ops, dict) or not all(
            not isinstance(n, bool) and isinstance(n, int) and n >= 0 for n in lce_ops.values()):
        raise ValueError(f"lce_ops is {lce_ops!r}, expected {{op name: count}}")
    if "note" in row and not isinstance(row["note"], str):
        raise ValueError(f"note is {row['note']!r}, expected text")
    return (op, shape, strides), LatencyEntry(median, fastest, row["timed"], lce_ops)
