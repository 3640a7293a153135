"""bnas_tf: architecture search for binary neural networks on Larq.

Importing the package selects Keras 2 (tf-keras), which Larq needs, before
TensorFlow resolves `tf.keras`. When it is the first to import TensorFlow, it
also keeps TensorFlow's C++ start-up lines (oneDNN and CPU-feature notices,
CUDA probing on a machine without a GPU) off stderr and sets
`TF_CPP_MIN_LOG_LEVEL=2`, unless `TF_CPP_MIN_LOG_LEVEL` is already set (set it
to 0 to see everything; see `bnas_tf._startup`).

Example:
    >>> import bnas_tf as bn
    >>> net = bn.SuperNet(bn.SearchSpace.get("lce"), num_classes=10, layers=5, channels=16)
    >>> bn.recipes.get("bnas").describe()              # one paper's settings, with sources
"""

from bnas_tf._keras2 import select_keras2

select_keras2()

from bnas_tf import _startup  # noqa: E402

_startup.import_tensorflow()

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from bnas_tf import (  # noqa: E402
    baselines,
    budget,
    callbacks,
    data,
    decision,
    errors,
    export,
    hmnas,
    masks,
    mixing,
    ops,
    recipes,
    regularizers,
)
from bnas_tf.builder import build_network, count_params  # noqa: E402
from bnas_tf.genotype import Cell, Edge, Genotype, derive_genotype, random_genotype  # noqa: E402
from bnas_tf.hmnas import HMNASSuperNet  # noqa: E402
from bnas_tf.saving import load_model  # noqa: E402
from bnas_tf.search_space import SearchSpace  # noqa: E402
from bnas_tf.supernet import SuperNet  # noqa: E402
from bnas_tf.training import TwoStageResult, train_two_stage  # noqa: E402

try:
    __version__ = version("bnas_tf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Cell",
    "Edge",
    "Genotype",
    "HMNASSuperNet",
    "SearchSpace",
    "SuperNet",
    "TwoStageResult",
    "baselines",
    "budget",
    "build_network",
    "callbacks",
    "count_params",
    "data",
    "decision",
    "derive_genotype",
    "errors",
    "export",
    "hmnas",
    "load_model",
    "masks",
    "mixing",
    "ops",
    "random_genotype",
    "recipes",
    "regularizers",
    "train_two_stage",
    "__version__",
]
