"""Plots of a search: cell diagrams, op-probability evolution, entropy, weight flips.

Every function returns a `matplotlib.figure.Figure` and, with `path`, also
writes it (PNG, SVG or PDF by the file suffix) atomically: to a temporary file
beside `path`, then renamed. Figures are made with matplotlib's object API
(`Figure`, not `pyplot`), so nothing needs a display and no figure is kept in
pyplot's global state; in a notebook the returned figure displays itself.
The written image is exactly `figsize × dpi` pixels (no tight cropping), so
sizes are predictable. The history and flip plots live in `bnas_tf.history_plots`, the
figure plumbing in `bnas_tf.figures`; this module re-exports both.

matplotlib is an optional dependency: `pip install bnas_tf[plot]`. Cell
diagrams use Graphviz's `dot` program when it is installed (`engine="auto"`)
and a pure-matplotlib layout otherwise.

Example:
    >>> import bnas_tf as bn
    >>> from bnas_tf import plot
    >>> g = bn.Genotype.load("RUN/genotype.json")
    >>> plot.plot_genotype(g, path="RUN/cells.png")          # normal and reduction cell
    >>> plot.plot_op_probabilities("RUN/history.json", "normal", path="RUN/normal_probs.png")
    >>> plot.plot_flip_ratios("TRAIN/metrics.json", path="TRAIN/flips.png")
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bnas_tf._io import atomic_write_bytes
from bnas_tf.figures import (
    CELL_KINDS,
    _check_kind,
    _finish,
    _format_of,
    _matplotlib,
    _node_label,
    figure_to_png,
    new_figure,
    save_figure,
)
from bnas_tf.genotype import Cell, Genotype
from bnas_tf.history_plots import (
    load_history,
    mean_entropies,
    plot_entropy,
    plot_flip_ratios,
    plot_op_probabilities,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CELL_KINDS",
    "ENGINES",
    "cell_to_dot",
    "figure_to_png",
    "graphviz_available",
    "load_history",
    "mean_entropies",
    "plot_cell",
    "plot_entropy",
    "plot_flip_ratios",
    "plot_genotype",
    "plot_op_probabilities",
    "save_figure",
]

ENGINES = ("auto", "graphviz", "matplotlib")


# -- cell diagrams -----------------------------------------------------------------------------


def graphviz_available() -> bool:
    """Whether Graphviz's `dot` program is on the PATH."""
    return shutil.which("dot") is not None



def _check_genotype(genotype) -> Genotype:
    if isinstance(genotype, str | os.PathLike):
        return Genotype.load(genotype)
    if isinstance(genotype, Mapping):
        return Genotype.from_dict(dict(genotype))
    if not isinstance(genotype, Genotype):
        raise TypeError(f"Expected a bnas_tf.Genotype, a genotype dict or a path to a genotype "
                        f"JSON file, got {type(genotype).__name__}.")
    return genotype


def _resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"Expected engine in {ENGINES}, got {engine!r}.")
    if engine == "auto":
        return "graphviz" if graphviz_available() else "matplotlib"
    if engine == "graphviz" and not graphviz_available():
        raise RuntimeError("engine='graphviz' needs Graphviz's `dot` program on the PATH (e.g. "
                           "`apt-get install graphviz`); engine='matplotlib' needs nothing more.")
    return engine



def _short_op(name: str) -> str:
    return name.replace("bin_", "b").replace("_conv_", "conv").replace("conv_", "conv") \
        .replace("_pool_", "pool").replace("skip_connect", "skip")


def _edge_label(edge, show_weights: bool, short: bool = False) -> str:
    lines = []
    for name, weight in edge.ops:
        shown = _short_op(name) if short else name
        lines.append(f"{shown} {weight:.2f}" if show_weights else shown)
    if show_weights:
        lines.append(f"β={edge.weight:.2f}")
    return "\n".join(lines)


def _is_zero(edge) -> bool:
    """An edge whose only op is `none` (a selected zero op, or an HM-NAS pruned node)."""
    return all(name == "none" for name in edge.op_names)


def _dead_nodes(cell: Cell) -> set[int]:
    """States of nodes that have inputs, all of them `none` (they output zeros)."""
    return {k + 2 for k, edges in enumerate(cell.nodes) if edges and all(map(_is_zero, edges))}


def _weighted(genotype: Genotype, cell: Cell) -> bool:
    """Whether any op or edge weight differs from 1 (or the genotype is HM-NAS style)."""
    if genotype.method != "darts":
        return True
    return any(not math.isclose(w, 1.0) or not math.isclose(e.weight, 1.0) or len(e.ops) > 1
               for edges in cell.nodes for e in edges for _, w in e.ops)


def _op_colors(genotype: Genotype) -> dict[str, Any]:
    matplotlib = _matplotlib()
    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(genotype.search_space.op_names)}


def cell_to_dot(genotype: Genotype, kind: str = "normal") -> str:
    """The Graphviz DOT source of one cell (DARTS-style, left to right).

    Args:
        genotype: the genotype.
        kind: `"normal"` or `"reduce"`.

    Returns:
        DOT text; render it with `dot -Tpng`.

    Example:
        >>> print(cell_to_dot(genotype, "reduce"))
    """
    genotype = _check_genotype(genotype)
    cell = getattr(genotype, _check_kind(kind))
    show_weights = _weighted(genotype, cell)
    colors = _op_colors(genotype)

    def hex_color(rgba) -> str:
        return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3])

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"digraph {kind} {{", '  rankdir=LR; node [style=filled, shape=rect, '
             'fontname="Helvetica", align=center]; edge [fontname="Helvetica", fontsize=10];',
             f'  label={quote(f"{kind} cell")}; labelloc=t; fontname="Helvetica";',
             '  s0 [label=<c<SUB>k-2</SUB>>, fillcolor=darkseagreen2];',
             '  s1 [label=<c<SUB>k-1</SUB>>, fillcolor=darkseagreen2];']
    kept, dead = set(cell.kept_nodes), _dead_nodes(cell)
    for k in range(len(cell.nodes)):
        state = k + 2
        if state in dead:
            lines.append(f'  s{state} [label="{k}", fillcolor=gray90, shape=circle, '
                         'style="filled,dashed", fontcolor=gray50];')
        elif state in kept:
            lines.append(f'  s{state} [label="{k}", fillcolor=lightblue, shape=circle];')
    lines.append('  out [label=<c<SUB>k</SUB>>, fillcolor=palegoldenrod];')
    for k, edges in enumerate(cell.nodes):
        for edge in edges:
            if _is_zero(edge):
                lines.append(f'  s{edge.source} -> s{k + 2} [label="none", color=gray70, '
                             'fontcolor=gray50, style=dashed];')
                continue
            main = max(edge.ops, key=lambda o: o[1])[0]
            width = max(0.5, 3.0 * abs(edge.weight)) if show_weights else 1.0
            lines.append(f"  s{edge.source} -> s{k + 2} [label={quote(_edge_label(edge, show_weights))}, "
                         f'color="{hex_color(colors[main])}", penwidth={width:.2f}];')
    for c in cell.concat:
        lines.append(f'  s{c} -> out [color=gray, style=dashed];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot(source: str, fmt: str) -> bytes:
    done = subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz `dot` failed: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout


def _spread(cells: Sequence[Cell]) -> float:
    """Vertical stretch of the layout: room for many multi-line labels (HM-NAS), 1 to 2."""
    lines = max((len(e.ops) + 1 for cell in cells for edges in cell.nodes for e in edges),
                default=1)
    busiest = max((len(edges) for cell in cells for edges in cell.nodes), default=1)
    return min(2.0, max(1.0, lines * busiest / 6))


def _layout(cell: Cell, spread: float = 1.0) -> dict[Any, tuple[float, float]]:
    """Node positions: inputs left, intermediate nodes in columns (zigzag), output right."""
    positions: dict[Any, tuple[float, float]] = {0: (0.0, spread), 1: (0.0, -spread)}
    kept = cell.kept_nodes
    for column, state in enumerate(kept, start=1):
        positions[state] = (1.6 * column, 0.8 * spread if column % 2 else -0.8 * spread)
    positions["out"] = (1.6 * (len(kept) + 1), 0.0)
    return positions


def _draw_cell_matplotlib(ax: Axes, genotype: Genotype, kind: str, *,
                          fontsize: float = 7.0) -> None:
    patches = _matplotlib().patches
    cell = getattr(genotype, kind)
    show_weights = _weighted(genotype, cell)
    colors = _op_colors(genotype)
    spread = _spread([getattr(genotype, k) for k in CELL_KINDS])
    pos = _layout(cell, spread)
    dead = _dead_nodes(cell)
    node_points = 2.2 * fontsize  # node radius in points (text boxes stay round at any aspect)
    max_weight = max([abs(e.weight) for edges in cell.nodes for e in edges] or [1.0]) or 1.0

    def arrow(a, b, color, width, rad, linestyle="-"):
        ax.add_patch(patches.FancyArrowPatch(
            pos[a], pos[b], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=9, color=color, linewidth=width, linestyle=linestyle,
            shrinkA=node_points, shrinkB=node_points, zorder=1))

    # edges into intermediate nodes; each label sits on its arc (quadratic Bezier), the
    # labels of one node's edges at different points along them, so they do not stack
    for k, edges in enumerate(cell.nodes):
        target = k + 2
        for i, edge in enumerate(edges):
            (x1, y1), (x2, y2) = pos[edge.source], pos[target]
            adjacent = abs(x2 - x1) <= 1.7 and len(edges) <= 2
            rad = 0.0 if adjacent else (1 if i % 2 else -1) * (0.18 + 0.08 * (i // 2))
            zero = _is_zero(edge)
            main = max(edge.ops, key=lambda o: o[1])[0]
            width = 0.8 + 2.2 * abs(edge.weight) / max_weight if show_weights else 1.4
            if zero:  # a zero op: drawn faint and dashed, labelled "none"
                arrow(edge.source, target, "0.7", 0.8, rad, linestyle="--")
            else:
                arrow(edge.source, target, colors[main], width, rad)
            cx = (x1 + x2) / 2 + rad * (y2 - y1)
            cy = (y1 + y2) / 2 - rad * (x2 - x1)
            t = 0.5 if len(edges) == 1 else 0.35 + 0.3 * i / (len(edges) - 1)
            lx = (1 - t) ** 2 * x1 + 2 * t * (1 - t) * cx + t ** 2 * x2
            ly = (1 - t) ** 2 * y1 + 2 * t * (1 - t) * cy + t ** 2 * y2
            label = "none" if zero else _edge_label(edge, show_weights, short=True)
            ax.text(lx, ly, label, fontsize=fontsize, ha="center", va="center", zorder=3,
                    color="0.5" if zero else "black",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white",
                          "ec": "0.7" if zero else colors[main], "lw": 0.6, "alpha": 0.85})
    for c in cell.concat:
        arrow(c, "out", "0.7" if c in dead else "gray", 0.9, 0.0, linestyle="--")
    # nodes: text in a round box whose size is set in points
    for state, (x, y) in pos.items():
        if state == "out":
            face, label = "palegoldenrod", "c_{k}"
        elif state in (0, 1):
            face, label = "#c1e1c1", _node_label(state)
        else:
            face, label = ("0.92" if state in dead else "lightblue"), _node_label(state)
        text = f"${label}$" if "{" in label else label
        pad = 0.4 if "{" in label else 0.9  # about the same circle for "c_{k-1}" and "3"
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize + 1, zorder=4,
                color="0.5" if state in dead else "black",
                bbox={"boxstyle": f"circle,pad={pad}", "fc": face, "lw": 0.8,
                      "ec": "0.5" if state in dead else "black",
                      "linestyle": "--" if state in dead else "-"})
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_ylim(-1.5 * spread, 1.5 * spread)
    # arcs bend in display space: with equal aspect the label positions computed in data
    # space land on them
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()
    pruned = len(cell.nodes) - len(cell.kept_nodes) + len(dead)
    title = f"{kind} cell" + (f" ({pruned} node{'s' * (pruned > 1)} pruned)" if pruned else "")
    ax.set_title(title, fontsize=fontsize + 3)


def _draw_cell_graphviz(ax: Axes, genotype: Genotype, kind: str, dpi: float) -> None:
    from PIL import Image

    png = _dot(cell_to_dot(genotype, kind).replace("rankdir=LR;", f"rankdir=LR; dpi={int(dpi)};"),
               "png")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    ax.imshow(image, interpolation="antialiased")
    ax.set_axis_off()


def _default_cell_size(genotype: Genotype, kinds: Sequence[str]) -> tuple[float, float]:
    widest = max(len(getattr(genotype, k).kept_nodes) for k in kinds)
    spread = _spread([getattr(genotype, k) for k in CELL_KINDS])  # as the layout
    return (max(4.0, 1.8 * (widest + 2)) * len(kinds), 4.5 * spread)


def _cells_figure(genotype, kinds, path, engine, figsize, dpi, fontsize) -> Figure:
    genotype = _check_genotype(genotype)
    kinds = [_check_kind(k) for k in kinds]
    engine = _resolve_engine(engine)
    fig = new_figure(figsize or _default_cell_size(genotype, kinds), dpi)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        if engine == "graphviz":
            _draw_cell_graphviz(ax, genotype, kind, dpi)
        else:
            _draw_cell_matplotlib(ax, genotype, kind, fontsize=fontsize)
    if (path is not None and engine == "graphviz" and len(kinds) == 1
            and _format_of(path) == "svg"):
        atomic_write_bytes(path, _dot(cell_to_dot(genotype, kinds[0]), "svg"))  # native SVG
        return fig
    return _finish(fig, path, dpi)


def plot_cell(genotype: Genotype | Mapping | str | os.PathLike, cell: str = "normal", *,
              path: str | os.PathLike | None = None, engine: str = "auto",
              figsize: tuple[float, float] | None = None, dpi: float = 100,
              fontsize: float = 7.0) -> Figure:
    """Draw one cell of a genotype: nodes, edges labelled with their ops and weights.

    Inputs `c_{k-2}`, `c_{k-1}` are on the left, intermediate nodes in the
    middle (nodes without inputs are left out), the output `c_{k}` (the concatenation)
    on the right. Each edge is coloured by its strongest op and labelled with
    its ops (an edge of only `none` is drawn faint and dashed, and a node
    fed only by such edges, as HM-NAS marks a pruned node, is greyed out and
    counted as pruned); when weights carry information (HM-NAS genotypes, several ops on
    an edge, or weights other than 1) every op shows its weight and the edge
    its weight β, and the line width follows β.

    Args:
        genotype: a `Genotype`, its dict, or the path of a genotype JSON file.
        cell: `"normal"` or `"reduce"`.
        path: also write the figure there (`.png`, `.svg` or `.pdf`), atomically.
        engine: `"graphviz"` (needs the `dot` program), `"matplotlib"`, or
            `"auto"` (Graphviz when installed).
        figsize: `(width, height)` in inches; default grows with the node count.
        dpi: dots per inch; a PNG is `figsize × dpi` pixels.
        fontsize: label size of the matplotlib engine.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: unknown cell name or engine, bad size, unsupported file suffix.
        RuntimeError: `engine="graphviz"` without the `dot` program.
        ImportError: matplotlib is not installed (`pip install bnas_tf[plot]`).

    Example:
        >>> fig = plot_cell(genotype, "reduce", path="reduce.png", figsize=(6, 4), dpi=100)
        >>> # reduce.png is 600 × 400 pixels
    """
    return _cells_figure(genotype, [cell], path, engine, figsize, dpi, fontsize)


def plot_genotype(genotype: Genotype | Mapping | str | os.PathLike, *,
                  path: str | os.PathLike | None = None, engine: str = "auto",
                  figsize: tuple[float, float] | None = None, dpi: float = 100,
                  fontsize: float = 7.0) -> Figure:
    """Draw the normal and the reduction cell side by side (see `plot_cell`).

    Example:
        >>> plot_genotype(bn.Genotype.load("RUN/genotype.json"), path="RUN/cells.svg")
    """
    return _cells_figure(genotype, CELL_KINDS, path, engine, figsize, dpi, fontsize)
