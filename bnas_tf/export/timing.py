"""Time an LCE flatbuffer against its float equivalent run by TFLite with XNNPACK."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export._runtime import lce_interpreter, tflite_interpreter
from bnas_tf.export.flatbuffer import has_grouped_bconv

X86_CAVEAT = (
    "x86 caveat: LCE's optimized binary kernels are for ARM (aarch64 and 32-bit ARM); on x86 "
    "it runs portable kernels against x86-optimized float kernels, so these latencies say "
    "little about phones and boards."
)
"""Printed beside every latency measured on an x86 machine (`format_benchmark`)."""

LCE_KERNELS = {
    "bgemm": {},
    "indirect_bgemm": {"use_indirect_bgemm": True},
    "reference": {"use_reference_bconv": True},
}
"""LCE interpreter options per kernel name ("bgemm" is LCE's default)."""


def _time(fn: Callable[[], Any], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def _time_interleaved(fns: Sequence[Callable[[], Any]], repeats: int, warmup: int
                      ) -> list[dict[str, float]]:
    """Time several functions in alternation, so that load changes hit all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t0) * 1e3)
    return [{"median_ms": statistics.median(t), "min_ms": min(t)} for t in times]


def _lce_step(tflite_bytes, threads: int, option: str) -> Callable[[np.ndarray], Any]:
    kernel, _, xnn = option.partition("+")
    return lce_interpreter(tflite_bytes, num_threads=threads, use_xnnpack=bool(xnn),
                           **LCE_KERNELS[kernel]).interpreter.predict


def _float_step(float_tflite_bytes, threads: int, **kwargs):
    it = tflite_interpreter(float_tflite_bytes, num_threads=threads, **kwargs)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def step(x1):
        it.set_tensor(inp, x1)
        it.invoke()
        return it.get_tensor(out)

    applied = any(d.get("op_name") == "DELEGATE" for d in it._get_ops_details())
    return step, applied


def _time_lce(tflite_bytes, x1, threads, kernels, xnnpack, grouped, repeats, warmup):
    """Every LCE kernel option's timing (or error) at `threads` threads."""
    runs: dict[str, dict[str, Any]] = {}
    for kernel in kernels:
        if kernel not in LCE_KERNELS:
            raise ExportError(
                f"Unknown LCE kernel {kernel!r}; expected one of {list(LCE_KERNELS)}."
            )
        for xnn in xnnpack:
            name = kernel + ("+xnnpack" if xnn else "")
            if kernel == "bgemm" and grouped:
                runs[name] = {"error": "rejects grouped binary convolutions"}
                continue
            try:
                inner = lce_interpreter(
                    tflite_bytes, num_threads=threads, use_xnnpack=xnn, **LCE_KERNELS[kernel]
                ).interpreter
                runs[name] = _time(lambda i=inner: i.predict([x1]), repeats, warmup)
            except Exception as e:  # noqa: BLE001 - report and go on with other kernels
                runs[name] = {"error": str(e).strip().splitlines()[-1][:200]}
    return runs


def _time_float(float_tflite_bytes, x1, threads, repeats, warmup, **kwargs):
    """`(timing, XNNPACK applied)` of the float flatbuffer in `tf.lite.Interpreter`."""
    step, applied = _float_step(float_tflite_bytes, threads, **kwargs)
    return _time(lambda: step(x1), repeats, warmup), applied


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
    timed and the fastest is chosen; the float flatbuffer runs in `tf.lite.Interpreter`
    with its default delegates (XNNPACK; `float_xnnpack` says whether it applied) and
    without them. The reported `lce_ms`, `float_ms` and `speedup` come from a final
    head-to-head in which the fastest LCE option and the float model run in alternation,
    so that a change in machine load affects both alike.

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
        A JSON-ready dict: `machine` (`platform.machine()`, e.g. "x86_64" or "aarch64"),
        `size_bytes`, `float_size_bytes`, `size_ratio`, and `runs`, one
        entry per thread count with `lce` (every option's timing or error), `lce_best`,
        `lce_ms`, `float_ms`, `float_xnnpack`, `float_builtin_ms`, `speedup`
        (`float_ms / lce_ms`, medians) and `speedup_min` (from the fastest runs).
        Use `format_benchmark` to print it.

    Raises:
        ExportError: an unknown kernel name, or a bad flatbuffer.
    """
    x1 = np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:1])
    grouped = has_grouped_bconv(tflite_bytes)
    kernels, xnnpack = tuple(kernels), tuple(xnnpack)
    result: dict[str, Any] = {
        "machine": platform.machine(),
        "size_bytes": len(tflite_bytes),
        "float_size_bytes": len(float_tflite_bytes),
        "size_ratio": len(float_tflite_bytes) / len(tflite_bytes),
        "repeats": repeats,
        "runs": [],
    }
    builtin_only = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    for n in threads:
        lce_runs = _time_lce(tflite_bytes, x1, n, kernels, xnnpack, grouped, repeats, warmup)
        ok = {k: v for k, v in lce_runs.items() if "median_ms" in v}
        best = min(ok, key=lambda k: ok[k]["median_ms"]) if ok else None
        builtin, _ = _time_float(
            float_tflite_bytes, x1, n, repeats, warmup, experimental_op_resolver_type=builtin_only
        )
        float_step, applied = _float_step(float_tflite_bytes, n)
        if best:
            lce_step = _lce_step(tflite_bytes, n, best)
            lce_t, flt = _time_interleaved(
                [lambda f=lce_step: f([x1]), lambda f=float_step: f(x1)], repeats, warmup)
        else:
            lce_t, flt = None, _time(lambda f=float_step: f(x1), repeats, warmup)
        result["runs"].append(
            {
                "threads": n,
                "lce": lce_runs,
                "lce_best": best,
                "lce_ms": lce_t["median_ms"] if lce_t else None,
                "lce_min_ms": lce_t["min_ms"] if lce_t else None,
                "float_ms": flt["median_ms"],
                "float_min_ms": flt["min_ms"],
                "float_xnnpack": applied,
                "float_builtin_ms": builtin["median_ms"],
                "speedup": flt["median_ms"] / lce_t["median_ms"] if lce_t else None,
                "speedup_min": flt["min_ms"] / lce_t["min_ms"] if lce_t else None,
            }
        )
    return result


def is_x86(machine: str) -> bool:
    """Whether `platform.machine()`'s answer names an x86 processor (32 or 64 bit)."""
    return machine.lower() in ("x86_64", "amd64", "x86", "i386", "i486", "i586", "i686")


def format_benchmark(result: dict[str, Any]) -> str:
    """Human-readable table of a `benchmark` result.

    Measured on x86 (`result["machine"]`), every latency line is marked and
    `X86_CAVEAT` follows the size line: the figures say little about ARM.

    Example:
        >>> print(format_benchmark(benchmark(lce_bytes, float_bytes, x, threads=(1,))))
    """
    x86 = is_x86(result.get("machine", platform.machine()))
    lines = [
        f"Size: LCE {result['size_bytes']:,} B, float {result['float_size_bytes']:,} B "
        f"({result['size_ratio']:.1f}x smaller); median of {result['repeats']} runs, batch 1; "
        "LCE vs float timed in alternation"
    ]
    if x86:
        lines.append(X86_CAVEAT)
    for run in result["runs"]:
        opts = ", ".join(
            f"{k} {v['median_ms']:.3f}" if "median_ms" in v else f"{k} n/a ({v['error']})"
            for k, v in run["lce"].items()
        )
        xnn = "XNNPACK" if run["float_xnnpack"] else "no XNNPACK delegate"
        best = (f"LCE {run['lce_ms']:.3f} ms ({run['lce_best']})" if run["lce_ms"]
                else "LCE n/a")
        speed = (f", {run['speedup']:.2f}x float (fastest runs {run['speedup_min']:.2f}x)"
                 if run["speedup"] else "")
        lines.append(
            f"{run['threads']} thread(s): {best} vs float {run['float_ms']:.3f} ms ({xnn}; "
            f"builtin kernels {run['float_builtin_ms']:.3f} ms){speed}"
            + (" [x86: portable LCE kernels, see the caveat]" if x86 else "")
        )
        lines.append(f"    LCE options (ms): {opts}")
    return "\n".join(lines)
