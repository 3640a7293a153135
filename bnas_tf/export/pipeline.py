"""The whole export: convert, report, check, verify, time, then write if every check passed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export.converter import convert
from bnas_tf.export.files import check_writable, write_file
from bnas_tf.export.float_baseline import convert_float
from bnas_tf.export.groups import native_groups
from bnas_tf.export.report import ConversionReport, conversion_report
from bnas_tf.export.rules import check_target
from bnas_tf.export.timing import benchmark, format_benchmark
from bnas_tf.export.verification import VerifyResult, verify

log = logging.getLogger(__name__)


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
    from bnas_tf import data as data_mod

    try:
        # `limit` keeps limit training and limit // 5 test images.
        data = data_mod.load(name, data_dir, limit=max(5, 5 * limit))
        x, y = data.arrays("test", limit)  # in memory or streamed (folder, tfds:)
        x = data_mod.normalize(x, data)
        y = np.asarray(y).reshape(-1)
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


def _float_baseline(model: tf.keras.Model) -> bytes | None:
    try:
        return convert_float(model)
    except ExportError as e:
        log.warning("%s", e)
        return None


def _verification_failure(result: VerifyResult, output_path) -> ExportError | None:
    if result.passed:
        return None
    return ExportError(
        f"Verification failed: top-1 agreement {result.top1_agreement:.4f}"
        f" < {result.top1_threshold} on {result.num_samples} inputs (max |diff| "
        f"{result.max_abs_diff:.3g}). Not writing {str(output_path)!r}; "
        "check the layers reported above, or lower the threshold knowingly."
    )


def _benchmark_input(model: tf.keras.Model, verify_data) -> np.ndarray:
    if verify_data is not None and verify_data[0] is not None:
        return verify_data[0]
    shape = [d or 1 for d in model.inputs[0].shape]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


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
    check_target(target)
    check_writable(output_path)
    if report_path is not None:
        check_writable(report_path)
    # swap masked grouped convs for real ones once (convert, the float baseline and the
    # report would each do it); verification keeps `model`, whose masked convs run faster
    deployable = native_groups(model)
    fb = convert(deployable, target=target, allow_float=allow_float)
    float_fb = _float_baseline(deployable)
    report = conversion_report(
        deployable, fb, target=target, float_tflite_bytes=float_fb, compare_float=False
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
        failure = _verification_failure(result.verification, output_path)
    if failure is None and run_benchmark:
        if float_fb is None:
            say("Benchmark skipped: no float baseline (see the warning above).")
        else:
            x = _benchmark_input(model, verify_data)
            result.benchmark = benchmark(fb, float_fb, x, **(benchmark_kwargs or {}))
            report.benchmark = result.benchmark
            say(format_benchmark(result.benchmark))
    if report_path is not None:
        report.to_json(report_path)
        say(f"Report written to {report_path}")
    if failure is not None:
        raise failure
    result.output_path = write_file(output_path, fb)
    say(f"Wrote {len(fb):,} bytes to {output_path}")
    return result
