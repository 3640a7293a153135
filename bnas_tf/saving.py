"""Load models saved by bnas_tf (or any Larq model) with every custom object.

Example:
    >>> model.save("TRAIN/model.keras")
    >>> restored = bn.load_model("TRAIN/model.keras")
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import larq as lq
import tensorflow as tf

# every module that registers Keras classes: a .keras file names them, and `import bnas_tf`
# imports none of them until used
from bnas_tf import baselines as _baselines  # noqa: F401
from bnas_tf import conv_layers as _conv_layers  # noqa: F401
from bnas_tf import hmnas as _hmnas  # noqa: F401
from bnas_tf import layers as _layers  # noqa: F401
from bnas_tf import masks as _masks  # noqa: F401
from bnas_tf import ops as _ops  # noqa: F401
from bnas_tf import regularizers as _regularizers  # noqa: F401
from bnas_tf import supernet as _supernet  # noqa: F401
from bnas_tf import training as _training  # noqa: F401
from bnas_tf.errors import ModelFileError

__all__ = ["load_model", "custom_objects"]


def custom_objects() -> dict:
    """Larq's layers, quantizers and constraints by class name."""
    objects = {}
    for module in (lq.layers, lq.quantizers, lq.constraints):
        objects.update({k: v for k, v in vars(module).items() if isinstance(v, type)})
    return objects


def load_model(path: str | os.PathLike, *, compile: bool = False) -> tf.keras.Model:
    """Load a model saved with `model.save` (.keras, .h5 or SavedModel directory).

    Args:
        path: the saved model.
        compile: restore the training configuration too.

    Raises:
        ModelFileError: the path does not exist or holds no loadable Keras model.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(
            f"No model at {os.fspath(path)!r}: the path does not exist. Pass a model saved "
            "with model.save(...) (.keras or .h5 file, or SavedModel directory).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tf.keras.models.load_model(p, custom_objects=custom_objects(),
                                               compile=compile)
    except Exception as error:  # noqa: BLE001 - Keras raises OSError/ValueError/IOError/...
        text = str(error).strip()
        reason = text.splitlines()[0][:300] if text else type(error).__name__
        raise ModelFileError(
            f"Could not load a Keras model from {os.fspath(path)!r}: {reason}. Expected a "
            "model saved with model.save(...): a .keras or .h5 file, or a SavedModel "
            "directory.") from None
    if not isinstance(model, tf.keras.Model):
        raise ModelFileError(f"{os.fspath(path)!r} holds a {type(model).__name__}, not a Keras "
                             "model. Save the model with model.save(...).")
    return model
