"""Convert a saved Keras/Larq model to an LCE TFLite flatbuffer, with checks.

Usage (from the repository root; `bnas-tf export` takes the same arguments):

    python export/to_tflite.py MODEL_PATH --output model.tflite [--target arm]
        [--verify N --dataset cifar10 --data-dir DIR] [--top1-threshold 0.99]
        [--benchmark] [--strict] [--report report.json]

Prints the per-layer conversion report. The output is written (atomically) only when
every requested check passes: `--strict` refuses binary layers that stay float, `--verify`
refuses a flatbuffer whose top-1 predictions on N test images agree with Keras less than
the threshold. Exit codes: 0 written; 1 refused or conversion failed; 2 bad input (model
path, dataset, output path).

This script only parses arguments; the work is in `bnas_tf.export.command`. TensorFlow's
C++ start-up lines are hidden (as by `bnas-tf`) unless `--verbose` or TF_CPP_MIN_LOG_LEVEL
is set.
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # `python export/to_tflite.py` from a checkout: find bnas_tf
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bnas_tf import _startup  # noqa: E402  (selects Keras 2; imports no TensorFlow)

_startup.import_tensorflow()  # TensorFlow's start-up lines stay off stderr

# isort: split
from bnas_tf.export import command  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="to_tflite.py",
        description="Convert a saved Keras/Larq model to an LCE TFLite flatbuffer.",
    )
    command.add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print TensorFlow's start-up lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, *, load_data=None) -> int:
    """Run the export; `load_data(name, data_dir, n) -> (x, y)` replaces bnas_tf.data."""
    args = parse_args(argv)
    if args.verbose:
        sys.stderr.writelines(_startup.hidden_lines())
    return command.run(args, load_data=load_data)


if __name__ == "__main__":
    sys.exit(main())
