"""bnas_tf: architecture search for binary neural networks on Larq.

Importing the package only selects Keras 2 (tf-keras), which Larq needs, before
TensorFlow resolves `tf.keras` (see `bnas_tf._keras2`): it works before or after
`import tensorflow`, as long as `tf.keras` has not been used yet. Everything
else loads on first use (`bn.SuperNet`, `bn.data`, ...), so `import bnas_tf`
neither imports TensorFlow nor touches the process's stderr or logging; the
`bnas-tf` command and `export/to_tflite.py` keep TensorFlow's C++ start-up lines
quiet themselves (`bnas_tf._startup`).

Load saved bnas_tf models with `bn.load_model`, which registers bnas_tf's
layers (plain `tf.keras.models.load_model` needs them imported first, e.g. by
touching `bn.SuperNet`).

Example:
    >>> import tensorflow as tf                       # before or after: both work
    >>> import bnas_tf as bn
    >>> net = bn.SuperNet(bn.SearchSpace.get("lce"), num_classes=10, layers=5, channels=16)
    >>> bn.recipes.get("bnas").describe()              # one paper's settings, with sources
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from bnas_tf._keras2 import select_keras2

select_keras2()

try:
    __version__ = version("bnas_tf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_ATTRIBUTES = {
    "build_network": "bnas_tf.builder",
    "count_params": "bnas_tf.builder",
    "Cell": "bnas_tf.genotype",
    "Edge": "bnas_tf.genotype",
    "Genotype": "bnas_tf.genotype",
    "derive_genotype": "bnas_tf.genotype",
    "random_genotype": "bnas_tf.genotype",
    "HMNASSuperNet": "bnas_tf.hmnas",
    "load_model": "bnas_tf.saving",
    "SearchSpace": "bnas_tf.search_space",
    "SuperNet": "bnas_tf.supernet",
    "TwoStageResult": "bnas_tf.training",
    "train_two_stage": "bnas_tf.training",
}
"""Public names of the package and the module that defines each (imported on first use)."""

_SUBMODULES = ("baselines", "budget", "callbacks", "cost", "data", "decision", "errors",
               "export", "hmnas", "masks", "mixing", "ops", "recipes", "regularizers")
"""Public submodules; any other submodule (`bn.training`, `bn.tuning`) loads on use too."""

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from bnas_tf import (  # noqa: F401
        baselines,
        budget,
        callbacks,
        cost,
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
    from bnas_tf.builder import build_network, count_params  # noqa: F401
    from bnas_tf.genotype import (  # noqa: F401
        Cell,
        Edge,
        Genotype,
        derive_genotype,
        random_genotype,
    )
    from bnas_tf.hmnas import HMNASSuperNet  # noqa: F401
    from bnas_tf.saving import load_model  # noqa: F401
    from bnas_tf.search_space import SearchSpace  # noqa: F401
    from bnas_tf.supernet import SuperNet  # noqa: F401
    from bnas_tf.training import TwoStageResult, train_two_stage  # noqa: F401


def __getattr__(name: str):
    """Import a public name or submodule on first use (PEP 562)."""
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = sorted([*_ATTRIBUTES, *_SUBMODULES]) + ["__version__"]
