"""Lazy access to Larq Compute Engine and the two TFLite interpreters.

LCE is imported only when a conversion or an LCE run needs it, so the rest of bnas_tf
works without it (it is the `export` extra: `pip install "bnas_tf[export]"`).
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from bnas_tf.errors import ExportError


def lce_module():
    """`larq_compute_engine`, or `ExportError` saying how to install it."""
    try:
        import larq_compute_engine as lce
    except ImportError as e:  # LCE is the `export` extra: searching and training need none
        raise ExportError(
            f"Exporting needs larq-compute-engine, which is not importable ({e}). Install it "
            "with `pip install \"bnas_tf[export]\"` (tested: 0.16.0). It publishes no Linux "
            "aarch64 wheel: convert on an x86-64 machine and copy the .tflite file to the board."
        ) from None
    return lce


def lce_interpreter(tflite_bytes: bytes, **kwargs):
    """LCE's interpreter (runs LCE ops); `kwargs` are its kernel and thread options."""
    lce_module()  # a missing LCE says how to install it
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(tflite_bytes, **kwargs)


def tflite_interpreter(tflite_bytes: bytes, **kwargs) -> tf.lite.Interpreter:
    """TensorFlow's TFLite interpreter (float baseline, XNNPACK by default)."""
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still the TF API
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_content=tflite_bytes, **kwargs)
