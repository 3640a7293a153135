"""Measured latency of every candidate op at the shapes a supernet uses (LCE, one-op models).

`latency_table` builds each distinct `(op, input shape, stride)` of a supernet's cells as a
one-op Keras model, as the op deploys (binary weights, stage-2 quantizers, real grouped
convs, dilated convs traced as one op: `bnas_tf.export.convert`), converts it with Larq
Compute Engine and times it with LCE's interpreter (batch 1). All ops are timed in
alternation (`bnas_tf.export.timing`), so that a change in machine load hits all alike.
Ops with no compute (`none`, `skip_connect` at stride 1) get 0 ms and are not timed.

The table records the machine it ran on; the same command on an ARM board
(`bnas-tf profile ... --output TABLE.json`) gives that board's table. LCE has optimized
binary kernels only for aarch64 and 32-bit ARM: on x86 it runs portable kernels, so an x86
table says little about phones and boards (`X86_CAVEAT`, printed beside x86 figures).

`edge_latency_tables` turns a table into per-edge arrays aligned with the supernet's α,
the layout of `EdgeCosts.table(kind, metric)`, for a cost-aware search on latency.

Example:
    >>> from bnas_tf import cost
    >>> table = cost.latency_table("lce", 5, 16, (32, 32, 3))  # 40 entries, 32 timed: ~20 s
    >>> table.to_json("latency.json")
    >>> tables = cost.edge_latency_tables("latency.json", "lce", 5, 16, (32, 32, 3))
    >>> tables["normal"].shape                                   # (edges, ops), ms
    (14, 8)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import tensorflow as tf

import bnas_tf
from bnas_tf import ops
from bnas_tf._io import atomic_write_text
from bnas_tf.cost._search import CELL_KINDS, _check_sizes, _skeleton
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import SuperNet

__all__ = ["LatencyEntry", "LatencyTable", "LatencyTableError", "X86_CAVEAT",
           "edge_latency_tables", "latency_table"]

log = logging.getLogger(__name__)

FORMAT = "bnas_tf.latency_table"
FORMAT_VERSION = 1
X86_CAVEAT = ("x86: LCE runs portable kernels here; these latencies say little about ARM "
              "phones and boards — run bnas-tf profile on the board")
"""Printed beside the latencies of a table measured on x86."""
NO_COMPUTE = "no compute: 0 ms, not timed"

LatencyKey = tuple[str, tuple[int, int, int], int]
"""`(op name, (height, width, channels) of its input, strides)`."""

_OP_OPTIONS = ("input_quantizer", "group_channels", "convertible_groups", "binary_cell_inputs",
               "weight_quantizer")
"""Space settings that change how an op is built (and so its latency)."""


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


EdgeShapes = list[tuple[str, list[tuple[tuple[int, int, int], int]]]]
"""Per cell: its kind and, per edge (α's rows), `((h, w, c) of the op's input, strides)`."""


def _edge_shapes(space_or_supernet: SuperNet | SearchSpace | str | dict, layers: int | None,
                 channels: int | None, input_shape: Sequence[int] | None
                 ) -> tuple[SearchSpace, EdgeShapes, dict[str, Any]]:
    """The space, the `EdgeShapes` of its cells and the checked sizes.

    The shapes `supernet_edge_costs` gives each edge (the same `_skeleton`).
    """
    if isinstance(space_or_supernet, SuperNet):
        net = space_or_supernet
        if layers is not None or channels is not None:
            raise ValueError("layers and channels come from the supernet; pass only the "
                             "supernet (and input_shape).")
        space, layers, channels = net.space, net.num_layers, net.channels
        if input_shape is None and getattr(net, "_build_input_shape", None) is not None:
            input_shape = tuple(tf.TensorShape(net._build_input_shape)[1:])
    else:
        space = SearchSpace.get(space_or_supernet)
    if layers is None or channels is None or input_shape is None:
        raise ValueError("Expected layers, channels and input_shape=(height, width, channels) "
                         "of the supernet.")
    input_shape = _check_sizes(layers, channels, 10, input_shape)
    skeleton = _skeleton(space, layers, channels, input_shape,
                         outputs={False: space.nodes, True: space.nodes}, num_classes=10,
                         stem="cifar", stem_multiplier=3, cell_skip=True, binary_weights=True)
    cells = []
    for shape in skeleton.cells:
        row = []
        for source, _ in space.edges():
            strides = 2 if shape.reduction and source < 2 else 1
            hw = shape.hw if source < 2 else shape.out_hw
            row.append(((*hw, shape.filters), strides))
        cells.append((CELL_KINDS[shape.reduction], row))
    sizes = {"layers": layers, "channels": channels, "input_shape": list(input_shape)}
    return space, cells, sizes


def _one_op_model(layer: tf.keras.layers.Layer, shape: tuple[int, int, int],
                  rng: np.random.Generator) -> tf.keras.Model:
    """Input -> `layer` (inference mode), batch norms given trained-like statistics.

    With the initial statistics (offset 0) the converter drops a batch norm's addition.
    """
    from bnas_tf.export.walk import walk

    inputs = tf.keras.Input(shape, batch_size=1)
    model = tf.keras.Model(inputs, layer(inputs, training=False))
    for _, sub in walk(model):
        if isinstance(sub, tf.keras.layers.BatchNormalization):
            values = []
            for w in sub.weights:
                name = w.name.split("/")[-1]
                low_high = (0.5, 1.5) if "gamma" in name else (1, 4) if "variance" in name else None
                values.append(rng.uniform(*low_high, w.shape) if low_high
                              else rng.normal(0, 0.5, w.shape))
            sub.set_weights(values)
    return model


def _machine(num_threads: int, kernel: str, use_xnnpack: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from bnas_tf.export.timing import LCE_KERNELS, is_x86

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    machine = platform.machine()
    arch = machine.lower()
    optimized = arch in ("aarch64", "arm64", "armv8l") or arch.startswith("armv7")
    try:  # x86: "model name"; ARM boards: "Model" (Raspberry Pi) or "Hardware"
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        cpuinfo = []
    cpu_model = next((v.strip() for k, _, v in (line.partition(":") for line in cpuinfo)
                      if k.strip() in ("model name", "Model", "Hardware") and v.strip()), "")
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "machine": machine,
        "processor": platform.processor(),
        "cpu_model": cpu_model,
        "system": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity else os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "larq": installed("larq"),
        "larq_compute_engine": installed("larq-compute-engine"),
        "bnas_tf": bnas_tf.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(  # noqa: UP017 - py3.10
            timespec="seconds"),
        "num_threads": num_threads,
        "optimized_kernels": optimized,
        "kernels": "LCE's optimized ARM kernels" if optimized else (
            "LCE's portable kernels" + (" (x86)" if is_x86(machine) else "")),
        "kernel_options": {"kernel": kernel, **LCE_KERNELS[kernel], "use_xnnpack": use_xnnpack},
    }


def latency_table(space_or_supernet: SuperNet | SearchSpace | str | dict,
                  layers: int | None = None, channels: int | None = None,
                  input_shape: Sequence[int] | None = None, *, num_threads: int = 1,
                  repeats: int = 100, warmup: int = 10, target: str = "arm",
                  kernel: str = "indirect_bgemm", use_xnnpack: bool = False,
                  seed: int = 0) -> LatencyTable:
    """Time every op of a supernet's space at every input shape and stride its cells use.

    Each distinct `(op, (h, w, c), strides)` of the cells (the shapes of
    `supernet_edge_costs`: channels doubled and resolution halved at the reduction cells,
    stride 2 on the edges from a reduction cell's inputs) is built once as a one-op model
    as it deploys (binary weights, real grouped convs, trained-like batch-norm statistics
    so that nothing folds away), converted with `bnas_tf.export.convert` and run in LCE's
    interpreter on one random image. All ops are timed in alternation, `repeats` runs
    each after `warmup` untimed ones; an entry's figure is the median. Ops with no
    compute (`none`; `skip_connect` at stride 1) get 0 without timing.

    Each figure includes binarizing the op's input (`LceQuantize`; a deployed network may
    share it between the ops reading one node) and the interpreter's per-call overhead
    (copying the input in and the output out; `machine["call_overhead_ms"]` is that of a
    one-value model).

    Args:
        space_or_supernet: a search space (or its name or config), or a `SuperNet`
            (layers and channels are read from it).
        layers: cells of the supernet (with a space).
        channels: channels of its first cells (with a space).
        input_shape: `(height, width, channels)` of its images.
        num_threads: interpreter threads.
        repeats: timed runs per op (the median is reported).
        warmup: untimed runs per op first.
        target: converter target ("arm"; "xcore" flatbuffers do not run here).
        kernel: LCE's binary-conv kernel, a name of `bnas_tf.export.timing.LCE_KERNELS`:
            "indirect_bgemm" (default: the fastest on x86 and the one that runs grouped
            binary convs, which LCE's default "bgemm" rejects), "bgemm" or "reference".
        use_xnnpack: run the float ops (pools, batch norms) with XNNPACK.
        seed: seed of the random inputs and batch-norm statistics.

    Returns:
        A `LatencyTable` with one entry per distinct `(op, shape, stride)`.

    Raises:
        ValueError: bad sizes or counts, or an unknown kernel.
        ExportError: LCE is missing (the message says how to install it), an unknown
            target, or an op LCE cannot convert or run.

    Example:
        >>> table = bn.cost.latency_table("lce", 5, 16, (32, 32, 3), repeats=50)
        >>> print(table.format())
    """
    from bnas_tf.export import _runtime, timing
    from bnas_tf.export.rules import check_target

    space, cells, sizes = _edge_shapes(space_or_supernet, layers, channels, input_shape)
    for name, value, least in (("num_threads", num_threads, 1), ("repeats", repeats, 1),
                               ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"Expected {name} to be an integer >= {least}, got {value!r}.")
    if kernel not in timing.LCE_KERNELS:
        raise ValueError(f"Unknown LCE kernel {kernel!r}; expected one of "
                         f"{', '.join(timing.LCE_KERNELS)}.")
    check_target(target)
    _runtime.lce_module()  # missing: the install hint, before any work
    start, rng = time.perf_counter(), np.random.default_rng(seed)
    option = kernel + ("+xnnpack" if use_xnnpack else "")
    keys = list(dict.fromkeys((op, shape, strides) for _, row in cells
                              for shape, strides in row for op in space.op_names))
    zero: dict[LatencyKey, LatencyEntry] = {}
    runs, counts = {}, {}
    with _tensorflow_warnings_off():  # "Compiled the loaded model, but ..." per conversion
        for i, key in enumerate(keys):
            # as build_network deploys it: binary weights, real grouped convs
            layer = space.build_op(key[0], key[1][2], key[2], affine=True,
                                   binary_weights=True, masked_groups=False)
            if layer is None or isinstance(layer, ops.Zero | ops.SkipIdentity):  # no compute
                zero[key] = LatencyEntry(0.0, 0.0, timed=False)
                continue
            log.info("profile %d/%d: %s", i + 1, len(keys), _describe(key))
            runs[key], counts[key] = _loaded_op(layer, key, rng, num_threads, option, target)
        overhead = _overhead_step(num_threads, option, target)
    times = timing._time_interleaved([*runs.values(), overhead], repeats, warmup)
    timed = {key: LatencyEntry(t["median_ms"], t["min_ms"], True, counts[key])
             for key, t in zip(runs, times, strict=False)}
    entries = {key: timed[key] if key in timed else zero[key] for key in keys}  # first use
    machine = {**_machine(num_threads, kernel, use_xnnpack),
               "call_overhead_ms": times[-1]["median_ms"]}
    settings = {**sizes, "repeats": repeats, "warmup": warmup, "target": target, "seed": seed,
                "seconds": round(time.perf_counter() - start, 1)}
    return LatencyTable(entries, machine, space.get_config(), settings)


def _describe(key: LatencyKey) -> str:
    op, shape, strides = key
    return f"{op} on a {'x'.join(map(str, shape))} input at stride {strides}"


@contextlib.contextmanager
def _tensorflow_warnings_off():
    """TensorFlow's Python warnings off (each LCE conversion logs the same Keras one)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _loaded_op(layer: tf.keras.layers.Layer, key: LatencyKey, rng: np.random.Generator,
               num_threads: int, option: str, target: str
               ) -> tuple[Callable[[], Any], dict[str, int]]:
    """One run of the op's one-op LCE model (an input bound), and the flatbuffer's op counts.

    Raises:
        ExportError: the op does not convert, or the interpreter cannot run it.
    """
    from bnas_tf.errors import ExportError
    from bnas_tf.export import convert
    from bnas_tf.export.flatbuffer import has_grouped_bconv, op_counts
    from bnas_tf.export.timing import _lce_step

    try:
        fb = convert(_one_op_model(layer, key[1], rng), target=target, allow_float=True)
        if option.startswith("bgemm") and has_grouped_bconv(fb):
            raise ExportError("LCE's bgemm kernel rejects grouped binary convolutions; use "
                              "kernel 'indirect_bgemm' (bnas-tf profile --kernel indirect_bgemm)")
        step = _lce_step(fb, num_threads, option)
        x = rng.standard_normal((1, *key[1])).astype(np.float32)
        step([x])  # fails here if the kernel cannot run the op
    except Exception as e:  # noqa: BLE001 - ExportError, or the interpreter's RuntimeError
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ExportError(f"Cannot profile {_describe(key)} with LCE's {option} kernel: "
                          f"{last}") from e
    return (lambda: step([x])), op_counts(fb)


def _overhead_step(num_threads: int, option: str, target: str) -> Callable[[], Any]:
    """A run of a one-value model (one MUL): the interpreter's fixed cost per call."""
    from bnas_tf.export import convert
    from bnas_tf.export.timing import _lce_step

    inputs = tf.keras.Input((1, 1, 1), batch_size=1)
    model = tf.keras.Model(inputs, tf.keras.layers.Rescaling(1.5)(inputs))
    step = _lce_step(convert(model, target=target, allow_float=True), num_threads, option)
    x = np.ones((1, 1, 1, 1), np.float32)
    return lambda: step([x])


def edge_latency_tables(table: LatencyTable | str | os.PathLike,
                        space_or_supernet: SuperNet | SearchSpace | str | dict,
                        layers: int | None = None, channels: int | None = None,
                        input_shape: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """`{"normal": [edges, ops], "reduce": [edges, ops]}` latencies in ms, aligned with α.

    Row e, column o of `tables[kind]` is the sum, over all cells of that kind (in the
    supernet's order: normal cells share α_normal, reduction cells α_reduce), of the
    table's median latency of op o at the input shape and stride edge e has in that cell
    (`(h, w, filters)` of the cell, stride 2 on a reduction cell's edges from its inputs).
    The layout of `EdgeCosts.table(kind, metric)`: rows `space.edges()`, columns
    `space.op_names`; a kind without cells gives zeros. Only the candidate ops are
    counted: the stem, cell-input convs, skips and classifier (fixed) are not.

    Args:
        table: a `LatencyTable`, or the path of one (`bnas-tf profile --output`).
        space_or_supernet: the supernet, or its space (then layers, channels, input_shape).
        layers: cells (with a space).
        channels: channels of the first cells (with a space).
        input_shape: `(height, width, channels)`; optional for a built supernet.

    Returns:
        float64 arrays of shape `(space.num_edges, space.num_ops)`, in ms.

    Raises:
        ValueError: the table was profiled for another space or lacks a shape the
            supernet uses (profile with the same space, layers, channels and image size);
            a malformed table file (`LatencyTableError`).

    Example:
        >>> net = bn.SuperNet("lce", layers=5, channels=16)
        >>> ms = bn.cost.edge_latency_tables("latency.json", net, input_shape=(32, 32, 3))
        >>> expected_ms = sum(float(np.sum(p * ms[k])) for k, p in net.op_probabilities().items())
    """
    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    space, cells, _ = _edge_shapes(space_or_supernet, layers, channels, input_shape)
    config = space.get_config()
    differ = [k for k in _OP_OPTIONS if table.space.get(k) != config.get(k)]
    if differ:
        settings = ", ".join(f"{k} {table.space.get(k)!r}, not {config.get(k)!r}"
                             for k in differ)
        raise ValueError(
            f"The latency table was profiled for search space {table.space.get('name')!r} "
            f"with other op settings ({settings}); profile space {space.name!r} "
            "(bnas-tf profile --space ...).")
    out = {kind: np.zeros((space.num_edges, space.num_ops)) for kind in CELL_KINDS}
    missing = []
    for kind, row in cells:
        for e, (shape, strides) in enumerate(row):
            for o, op in enumerate(space.op_names):
                entry = table.entries.get((op, shape, strides))
                if entry is None:
                    missing.append(f"{op} at {'x'.join(map(str, shape))} stride {strides}")
                else:
                    out[kind][e, o] += entry.median_ms
    if missing:
        missing = list(dict.fromkeys(missing))
        raise ValueError(
            f"The latency table lacks {len(missing)} op shape(s) this supernet uses "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). Profile the "
            "same space, layers, channels and image size (bnas-tf profile).")
    return out

