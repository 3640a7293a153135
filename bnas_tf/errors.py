"""Exceptions raised by bnas_tf.

Every error names the problem and the fix. They subclass the built-in
exception a Python user would catch (`ValueError`, `RuntimeError`,
`FloatingPointError`), so `except ValueError` keeps working.
"""

from __future__ import annotations

__all__ = ["SearchSpaceError", "GenotypeError", "DataError", "ModelFileError", "ExportError",
           "NonFiniteError"]


class SearchSpaceError(ValueError):
    """An unknown op name or an inconsistent search-space setting."""


class GenotypeError(ValueError):
    """A malformed genotype or genotype file."""


class DataError(ValueError):
    """A dataset that cannot be found, read or used as given."""


class ModelFileError(ValueError):
    """A path that does not hold a loadable Keras model."""


class ExportError(RuntimeError):
    """A model that cannot be converted, verified or written."""


class NonFiniteError(FloatingPointError):
    """A loss, α or weights that became NaN or infinite during training.

    Raised at the first such training step (`bnas_tf.training.StopOnNonFinite`)
    or before saving, so that nothing is derived or saved from the values.
    """
