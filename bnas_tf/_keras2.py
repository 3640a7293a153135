"""Select Keras 2 (tf-keras) before TensorFlow resolves `tf.keras`.

Larq is built on Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
the environment variable `TF_USE_LEGACY_KERAS=1` is set before `tf.keras` is
first used. Every entry point of bnas_tf imports this module first.

TensorFlow reads the variable in two places: its lazy `tf.keras` attribute
reads it on first use, but `import tensorflow` itself reads it once, to choose
where `import tensorflow.keras....` statements (Larq's own imports among them)
find their modules. So after `import tensorflow as tf` (the first line of most
notebooks) setting the variable is not enough: `select_keras2` also points
those imports at tf-keras, as TensorFlow would have done had the variable been
set. That is safe as long as nothing has used Keras 3 through `tf.keras` yet;
if something has, it raises an ImportError naming the fix.

Example:
    >>> import tensorflow as tf     # tf.keras not used yet
    >>> import bnas_tf as bn        # selects tf-keras; tf.keras is Keras 2 from here on
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["select_keras2"]

_FIX = (
    "Restart the Python process (or Jupyter kernel) and import bnas_tf before "
    "using tf.keras, or set TF_USE_LEGACY_KERAS=1 before starting Python; build "
    "bnas_tf models with tf.keras, not with `keras` (Keras 3)."
)


def _package_dir(name: str) -> str | None:
    """The directory holding the last component of dotted `name` (TensorFlow's rule)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), *rest[:-1])


def _keras3_modules() -> list[str]:
    """Modules `tensorflow.keras...` already imported from Keras 3 (tf.keras was used)."""
    legacy = _package_dir("tf_keras.api._v2.keras")
    found = []
    for name, module in list(sys.modules.items()):
        if name == "tensorflow.keras" or name.startswith("tensorflow.keras."):
            path = getattr(module, "__file__", None) or ""
            if module is not None and not (legacy and path.startswith(legacy)):
                found.append(name)
    return found


def _lazy_keras_version(tf) -> str | None:
    """What `tf.keras` resolved to ("tf_keras", "keras_3"), None if unused.

    Before first use `tf.keras` is TensorFlow's lazy loader; once used (or once an
    `import tensorflow.keras...` statement ran), it is the Keras module itself, told
    apart by where its file lies.
    """
    loader = tf.__dict__.get("keras")
    if loader is None:
        return None
    state = vars(loader)
    if "_tfll_initialized" in state:                   # still the lazy loader
        return state.get("_tfll_keras_version", "unknown") if state["_tfll_initialized"] else None
    legacy = _package_dir("tf_keras.api._v2.keras")
    path = getattr(loader, "__file__", None) or ""
    return "tf_keras" if legacy and path.startswith(legacy) else "keras_3"


def _route_imports_to_tf_keras(tf) -> None:
    """Make `import tensorflow.keras...` find tf-keras, as with TF_USE_LEGACY_KERAS=1 at import."""
    legacy = _package_dir("tf_keras.api._v2.keras")
    if legacy is None:
        raise ImportError("bnas_tf needs Keras 2, but the tf-keras package is not installed: "
                          "`pip install tf-keras` (the version of your TensorFlow).")
    keras3 = _package_dir("keras.api._v2.keras")
    path = [p for p in tf.__path__ if p not in (legacy, keras3)]
    tf.__path__[:] = [legacy, *path]


def select_keras2() -> None:
    """Make `tf.keras` resolve to tf-keras (Keras 2), or raise an ImportError naming the fix.

    Sets `TF_USE_LEGACY_KERAS=1`. If TensorFlow is already imported but
    `tf.keras` has not been used, routes TensorFlow's Keras imports to
    tf-keras too.

    Raises:
        ImportError: `tf.keras` already is Keras 3 in this process, or the
            environment explicitly disables legacy Keras.
    """
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is not None and value.strip().lower() not in ("1", "true"):
        raise ImportError(
            f"bnas_tf needs Keras 2 (tf-keras), but TF_USE_LEGACY_KERAS={value!r}: unset it or "
            "set it to 1 before starting Python.")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "__path__"):
        return
    used = _lazy_keras_version(tf)
    keras3 = _keras3_modules()
    if used not in (None, "tf_keras") or keras3:
        what = f"tf.keras ({keras3[0]})" if keras3 else "tf.keras"
        raise ImportError(
            f"bnas_tf needs Keras 2 (tf-keras), but {what} was already used as Keras 3 in this "
            f"process before bnas_tf was imported. {_FIX}")
    if used is None:
        _route_imports_to_tf_keras(tf)
