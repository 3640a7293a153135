"""bnas_tf: architecture search for binary neural networks on Larq.

Importing the package selects Keras 2 (tf-keras), which Larq needs, before
TensorFlow resolves `tf.keras`.
"""

from bnas_tf._keras2 import select_keras2

select_keras2()

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from bnas_tf import data, errors  # noqa: E402

try:
    __version__ = version("bnas_tf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["data", "errors", "__version__"]
