"""The export command, shared by `bnas-tf export` and `python export/to_tflite.py`.

    bnas-tf export TRAIN/model.keras --output model.tflite [--target arm]
        [--verify N --dataset cifar10 --data-dir DIR] [--top1-threshold 0.99]
        [--benchmark] [--strict] [--report report.json]

Prints the per-layer conversion report. The output is written (atomically) only when
every requested check passes: `--strict` refuses binary layers that stay float,
`--verify` refuses a flatbuffer whose top-1 predictions on N test images agree with
Keras less than the threshold. Exit codes: 0 written; 1 refused or conversion failed;
2 bad input (model path, dataset, output path) or larq-compute-engine missing.

Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> run(parser.parse_args(["TRAIN/model.keras", "--output", "model.tflite"]))
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from bnas_tf.errors import ExportError, ModelFileError
from bnas_tf.export.files import check_writable
from bnas_tf.export.pipeline import export_model, load_eval_data
from bnas_tf.export.rules import TARGETS

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _agreement(text: str) -> float:
    """argparse type of `--top1-threshold`: a share in [0, 1] (0.99, not 99)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        hint = f" ({value / 100:g} for {value:g} %?)" if 1.0 < value <= 100.0 else ""
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}{hint}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the export command's arguments to `p`."""
    p.add_argument("model_path",
                   help="model saved with model.save (.keras or .h5 file, or SavedModel "
                        "directory), e.g. TRAIN/model.keras")
    p.add_argument("--output", "-o", required=True, help="the .tflite file to write")
    p.add_argument("--target", default="arm", choices=TARGETS, help="converter target")
    p.add_argument("--verify", type=_positive, metavar="N",
                   help="verify on N real test images of --dataset")
    p.add_argument("--dataset", default="cifar10", help="dataset of --verify")
    p.add_argument("--data-dir", help="where the dataset lies")
    p.add_argument("--top1-threshold", type=_agreement, default=0.99,
                   help="least top-1 agreement with Keras that --verify accepts")
    p.add_argument("--benchmark", action="store_true", help="time LCE vs float TFLite")
    p.add_argument("--strict", action="store_true", help="refuse if a binary layer stays float")
    p.add_argument("--report", help="write the JSON report here")


def run(args: argparse.Namespace, *,
        load_data: Callable[[str, str | None, int], tuple[np.ndarray, np.ndarray]] | None = None
        ) -> int:
    """Export as `args` (from `add_arguments`) say; returns the exit code.

    Args:
        load_data: `load_data(name, data_dir, n) -> (x, y)` instead of `bnas_tf.data`
            (for tests and custom data).
    """
    from bnas_tf.export._runtime import lce_module
    from bnas_tf.saving import load_model

    try:
        lce_module()  # missing: say how to install it before loading anything
        for path in (args.output, args.report):
            if path is not None:
                check_writable(path)
        model = load_model(args.model_path)
        data = None
        if args.verify:
            data = load_eval_data(args.dataset, args.data_dir, args.verify, loader=load_data)
    except (ExportError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        export_model(model, args.output, target=args.target, verify_data=data,
                     top1_threshold=args.top1_threshold, run_benchmark=args.benchmark,
                     strict=args.strict, report_path=args.report)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
