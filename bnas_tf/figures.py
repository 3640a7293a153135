"""Matplotlib plumbing shared by the plots of `bnas_tf.plot`: figures, sizes, atomic saving.

Figures are made with matplotlib's object API (`Figure`, not `pyplot`), so
nothing needs a display and no figure is kept in pyplot's global state.
The written image is exactly `figsize × dpi` pixels (no tight cropping).

Example:
    >>> from bnas_tf import figures
    >>> fig = figures.new_figure((4, 3), dpi=100)
    >>> figures.save_figure(fig, "empty.png")   # 400 × 300 pixels, written atomically
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bnas_tf._io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["CELL_KINDS", "figure_to_png", "new_figure", "save_figure"]

CELL_KINDS = ("normal", "reduce")
_FORMATS = ("png", "svg", "pdf")
_INSTALL_HINT = "pip install bnas_tf[plot]"


def _matplotlib():
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        import matplotlib.patches  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"bnas_tf.plot needs matplotlib, which is not installed ({error}). "
            f"Install it with `{_INSTALL_HINT}`."
        ) from None
    return matplotlib


def new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    """A constrained-layout matplotlib `Figure` of `figsize` inches at `dpi`, checked.

    Raises:
        ValueError: `figsize` is not two positive numbers, or `dpi` is not positive.
        ImportError: matplotlib is not installed (`pip install bnas_tf[plot]`).

    Example:
        >>> fig = new_figure((6, 4), dpi=100)   # a 600 × 400 pixel image when saved
    """
    _check_size(figsize, dpi)
    matplotlib = _matplotlib()
    return matplotlib.figure.Figure(figsize=tuple(float(s) for s in figsize), dpi=dpi,
                                    layout="constrained")


def _check_size(figsize, dpi) -> None:
    if (not isinstance(figsize, Sequence) or len(figsize) != 2
            or not all(isinstance(s, int | float) and s > 0 for s in figsize)):
        raise ValueError(f"Expected figsize=(width, height) in inches, both > 0, got {figsize!r}.")
    if isinstance(dpi, bool) or not isinstance(dpi, int | float) or dpi <= 0:
        raise ValueError(f"Expected dpi > 0, got {dpi!r}.")


def _format_of(path: str | os.PathLike) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix not in _FORMATS:
        raise ValueError(f"Expected a path ending in .png, .svg or .pdf, got {os.fspath(path)!r}.")
    return suffix


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: float | None = None) -> None:
    """Write `fig` to `path` (PNG, SVG or PDF by suffix) atomically, at `figsize × dpi` pixels.

    Args:
        fig: a matplotlib figure.
        path: the file to write; its suffix chooses the format.
        dpi: resolution (default: the figure's own).

    Raises:
        ValueError: the suffix is not .png, .svg or .pdf.
    """
    fmt = _format_of(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi or fig.dpi)
    atomic_write_bytes(path, buffer.getvalue())


def figure_to_png(fig: Figure, *, dpi: float | None = None) -> bytes:
    """The PNG bytes of `fig` (e.g. for `tf.summary.image` or `IPython.display.Image`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
    return buffer.getvalue()


def _finish(fig: Figure, path, dpi) -> Figure:
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _check_kind(kind: str) -> str:
    if kind not in CELL_KINDS:
        raise ValueError(f"Expected cell 'normal' or 'reduce', got {kind!r}.")
    return kind


def _node_label(state: int) -> str:
    """The DARTS name of a cell state: the two cell inputs, then the nodes from 0."""
    if state == 0:
        return "c_{k-2}"
    if state == 1:
        return "c_{k-1}"
    return str(state - 2)
