"""Select Keras 2 (tf-keras) before TensorFlow resolves `tf.keras`.

Larq is built on Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
the environment variable `TF_USE_LEGACY_KERAS=1` is set before `tf.keras` is
first touched. Every entry point of bnas_tf imports this module first.
"""

from __future__ import annotations

import os
import sys

_FIX = (
    "Set TF_USE_LEGACY_KERAS=1 in the environment (or import bnas_tf before "
    "anything touches tf.keras), and do not `import keras` (Keras 3) in the same "
    "process."
)


def select_keras2() -> None:
    """Make `tf.keras` resolve to tf-keras (Keras 2) or raise a clear error.

    Raises:
        ImportError: if `tf.keras` is already Keras 3 in this process, or the
            environment explicitly disables legacy Keras.
    """
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is not None and value.strip().lower() not in ("1", "true"):
        raise ImportError(
            f"bnas_tf needs Keras 2 (tf-keras), but TF_USE_LEGACY_KERAS={value!r}. " + _FIX
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    loader = getattr(tf, "keras", None)
    # TensorFlow resolves its lazy `tf.keras` on first attribute access; probing
    # it now is safe because the variable is already set.
    module = getattr(getattr(getattr(loader, "layers", None), "Layer", None), "__module__", "")
    if module and not module.startswith("tf_keras"):
        raise ImportError(
            "bnas_tf needs Keras 2 (tf-keras), but tf.keras in this process is "
            f"Keras 3 ({module}). Restart the Python process (or Jupyter kernel) "
            "and import bnas_tf first. " + _FIX
        )
