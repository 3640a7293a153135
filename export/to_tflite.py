"""Convert a saved Keras/Larq model to an LCE TFLite flatbuffer, with checks.

Usage (from the repository root):

    python export/to_tflite.py MODEL_PATH --output model.tflite [--target arm]
        [--verify N --dataset cifar10 --data-dir DIR] [--top1-threshold 0.99]
        [--benchmark] [--strict] [--report report.json]

Prints the per-layer conversion report. The output is written (atomically) only when
every requested check passes: `--strict` refuses binary layers that stay float, `--verify`
refuses a flatbuffer whose top-1 predictions on N test images agree with Keras less than
the threshold. Exit codes: 0 written; 1 refused or conversion failed; 2 bad input (model
path, dataset, output path).

This script only parses arguments; the model is read by `bnas_tf.load_model` and the work
is in `bnas_tf.export`. TensorFlow's C++ start-up lines are hidden (as by `bnas-tf`) unless
`--verbose` or TF_CPP_MIN_LOG_LEVEL is set.
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # `python export/to_tflite.py` from a checkout: find bnas_tf
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bnas_tf  # noqa: E402,F401  (selects Keras 2 and quiets TensorFlow's start-up lines)

# isort: split
from bnas_tf import _startup, export  # noqa: E402
from bnas_tf.errors import ExportError, ModelFileError  # noqa: E402
from bnas_tf.saving import load_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="to_tflite.py",
        description="Convert a saved Keras/Larq model to an LCE TFLite flatbuffer.",
    )
    p.add_argument(
        "model_path",
        help="model saved with model.save (.keras, .h5, SavedModel dir such as TRAIN/model)",
    )
    p.add_argument("--output", "-o", required=True, help="the .tflite file to write")
    p.add_argument("--target", default="arm", choices=export.TARGETS, help="converter target")
    p.add_argument("--verify", type=int, metavar="N", help="verify on N real test images")
    p.add_argument("--dataset", default="cifar10", help="dataset of --verify")
    p.add_argument("--data-dir", help="where the dataset lies")
    p.add_argument("--top1-threshold", type=float, default=0.99, help="default 0.99")
    p.add_argument("--benchmark", action="store_true", help="time LCE vs float TFLite")
    p.add_argument("--strict", action="store_true", help="refuse if a binary layer stays float")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print TensorFlow's start-up lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, *, load_data=None) -> int:
    """Run the export; `load_data(name, data_dir, n) -> (x, y)` replaces bnas_tf.data."""
    args = parse_args(argv)
    if args.verbose:
        sys.stderr.writelines(_startup.hidden_lines())
    try:
        for path in (args.output, args.report):
            if path is not None:
                export.check_writable(path)
        model = load_model(args.model_path)
        data = None
        if args.verify:
            data = export.load_eval_data(args.dataset, args.data_dir, args.verify, loader=load_data)
    except (ExportError, ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        export.export_model(
            model,
            args.output,
            target=args.target,
            verify_data=data,
            top1_threshold=args.top1_threshold,
            run_benchmark=args.benchmark,
            strict=args.strict,
            report_path=args.report,
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
