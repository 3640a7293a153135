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
import datetime
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

import bnas_tf
from bnas_tf import ops
from bnas_tf.cost._latency_table import (
    X86_CAVEAT,
    LatencyEntry,
    LatencyKey,
    LatencyTable,
    LatencyTableError,
)
from bnas_tf.cost._search import CELL_KINDS, _check_sizes, _skeleton
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import SuperNet

__all__ = ["LatencyEntry", "LatencyTable", "LatencyTableError", "X86_CAVEAT",
           "edge_latency_tables", "latency_table"]

log = logging.getLogger(__name__)

_OP_OPTIONS = ("input_quantizer", "group_channels", "convertible_groups", "binary_cell_inputs",
               "weight_quantizer")
"""Space settings that change how an op is built (and so its latency)."""

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
    (`(h, w, filters)` of the cell, stride 2 on a reduction cell's edges from its inputs),
    less the interpreter's per-call overhead (`LatencyTable.net_ms`: a network pays it
    once per inference, and counting it per op would make every computing edge dearer
    than `none` and skips by a constant).
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
                if (op, shape, strides) not in table.entries:
                    missing.append(f"{op} at {'x'.join(map(str, shape))} stride {strides}")
                else:
                    out[kind][e, o] += table.net_ms(op, shape, strides)
    if missing:
        missing = list(dict.fromkeys(missing))
        raise ValueError(
            f"The latency table lacks {len(missing)} op shape(s) this supernet uses "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). Profile the "
            "same space, layers, channels and image size (bnas-tf profile).")
    return out

