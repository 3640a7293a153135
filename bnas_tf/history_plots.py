"""Plots of a search's history and of a training's weight flips.

Op-probability evolution per edge, mean entropy per epoch (several runs side
by side), FF-ratio and C2I-ratio curves. Each function returns a matplotlib
`Figure` and, with `path`, also writes it atomically (see `bnas_tf.figures`).
`bnas_tf.plot` re-exports all of them.

Example:
    >>> from bnas_tf import plot
    >>> plot.plot_op_probabilities("RUN/history.json", "normal", path="RUN/normal_probs.png")
    >>> plot.plot_entropy({"T=0.2": "RUN_T02/history.json", "T=1": "RUN_T1/history.json"})
    >>> plot.plot_flip_ratios("TRAIN/metrics.json", path="TRAIN/flips.png")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bnas_tf.figures import CELL_KINDS, _check_kind, _finish, _matplotlib, _node_label, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["load_history", "mean_entropies", "plot_entropy", "plot_flip_ratios",
           "plot_op_probabilities"]


def load_history(history: Mapping | str | os.PathLike | Any) -> dict:
    """A search history as a dict, checked: from `history.json`, a dict or a `SearchHistory`.

    Raises:
        ValueError: the history has no epochs, or its probability tables do not
            match its op names.
        FileNotFoundError: the file does not exist.
    """
    where = "the history"
    if isinstance(history, str | os.PathLike):
        where = os.fspath(history)
        try:
            with open(history, encoding="utf-8") as f:
                history = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not valid JSON: {error}.") from None
    elif hasattr(history, "to_dict") and hasattr(history, "epochs"):  # a SearchHistory callback
        history = history.to_dict()
    if not isinstance(history, Mapping):
        raise TypeError(f"Expected a history dict, a path to history.json or a SearchHistory, "
                        f"got {type(history).__name__}.")
    epochs = history.get("epochs")
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"{where} has no epochs (expected a non-empty 'epochs' list, as "
                         "SearchHistory writes after every finished epoch); has the search "
                         "finished an epoch yet?")
    op_names = history.get("op_names")
    if not op_names:
        raise ValueError(f"{where} has no 'op_names'.")
    for entry in epochs:
        for kind in CELL_KINDS:
            table = np.asarray(entry.get("op_probabilities", {}).get(kind, []), dtype=float)
            if table.ndim != 2 or table.shape[1] != len(op_names):
                raise ValueError(f"{where}: epoch {entry.get('epoch')} has {kind} probabilities "
                                 f"of shape {table.shape}; expected [edges, {len(op_names)}].")
    return dict(history)


def _probabilities(history: dict, kind: str) -> np.ndarray:
    """`[epochs, edges, ops]` op probabilities of one cell type."""
    return np.stack([np.asarray(e["op_probabilities"][kind], dtype=float)
                     for e in history["epochs"]])


def _epoch_numbers(history: dict) -> np.ndarray:
    return np.array([int(e.get("epoch", i)) + 1 for i, e in enumerate(history["epochs"])])


def _edge_names(history: dict, num_edges: int) -> list[str]:
    nodes = history.get("space", {}).get("nodes")
    edges = []
    j = 0
    while len(edges) < num_edges:
        edges += [(i, j + 2) for i in range(j + 2)]
        j += 1
    if nodes is not None and sum(2 + k for k in range(nodes)) != num_edges:
        edges = [(None, e) for e in range(num_edges)]
    def math(label: str) -> str:
        return f"${label}$" if "{" in label else label

    return [f"edge {e}" if i is None else f"{math(_node_label(i))} → {math(_node_label(e))}"
            for i, e in edges[:num_edges]]


def plot_op_probabilities(history: Mapping | str | os.PathLike | Any, cell: str = "normal", *,
                          edges: Sequence[int] | None = None, ncols: int = 4,
                          path: str | os.PathLike | None = None,
                          figsize: tuple[float, float] | None = None, dpi: float = 100) -> Figure:
    """Op probabilities of every edge over the epochs of a search, one panel per edge.

    Shows which op wins on which edge and how fast each distribution
    sharpens. The probabilities are those `SearchHistory` recorded,
    `softmax(α/T)` at the end of each epoch.

    Args:
        history: `history.json`'s path, its dict, or a `SearchHistory` callback.
        cell: `"normal"` or `"reduce"`.
        edges: indices of the edges to show (α row order); default all.
        ncols: panels per row.
        path: also write the figure there (`.png`, `.svg`, `.pdf`).
        figsize: `(width, height)` in inches; default `(3·ncols, 2.2·rows)`.
        dpi: dots per inch.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: unknown cell, a history without epochs, edge out of range.

    Example:
        >>> plot_op_probabilities("RUN/history.json", "reduce", path="reduce_probs.png")
    """
    _check_kind(cell)
    history = load_history(history)
    probs = _probabilities(history, cell)
    num_edges = probs.shape[1]
    selected = list(range(num_edges)) if edges is None else list(edges)
    bad = [e for e in selected if not 0 <= e < num_edges]
    if bad or not selected:
        raise ValueError(f"Expected edge indices in 0..{num_edges - 1}, got {list(edges or [])}.")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"Expected ncols >= 1, got {ncols!r}.")
    ncols = min(ncols, len(selected))
    nrows = math.ceil(len(selected) / ncols)
    fig = new_figure(figsize or (3.0 * ncols, 2.2 * nrows + 0.6), dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    x = _epoch_numbers(history)
    names = _edge_names(history, num_edges)
    matplotlib = _matplotlib()
    cmap = matplotlib.colormaps["tab10"]
    op_names = history["op_names"]
    lines = []
    for ax, e in zip(axes, selected, strict=False):
        lines = [ax.plot(x, probs[:, e, o], marker="o" if len(x) < 12 else None, markersize=3,
                         color=cmap(o % 10), label=name)[0] for o, name in enumerate(op_names)]
        ax.set_title(names[e], fontsize=9)
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(selected):]:
        ax.set_axis_off()
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("epoch")
    fig.legend(lines, op_names, loc="outside lower center", ncols=min(len(op_names), 5),
               fontsize=8)
    fig.suptitle(f"Op probabilities per edge, {cell} cell")
    return _finish(fig, path, dpi)


def mean_entropies(history: Mapping | str | os.PathLike | Any, cell: str = "normal"
                   ) -> np.ndarray:
    """Mean entropy (nats) of the edges' op distributions after each epoch.

    Example:
        >>> mean_entropies("RUN/history.json")   # falls as the search commits
    """
    probs = np.clip(_probabilities(load_history(history), _check_kind(cell)), 1e-12, 1.0)
    return -(probs * np.log(probs)).sum(axis=-1).mean(axis=-1)


def plot_entropy(histories: Mapping[str, Any] | Mapping | str | os.PathLike | Any, *,
                 cells: Sequence[str] = CELL_KINDS, path: str | os.PathLike | None = None,
                 figsize: tuple[float, float] = (7.0, 3.2), dpi: float = 100) -> Figure:
    """Mean edge entropy of the op distributions over epochs, for one or several searches.

    Args:
        histories: one history (path, dict or `SearchHistory`), or
            `{label: history}` to compare runs (e.g. `{"T=0.2": h1, "T=1": h2}`).
        cells: the cell types to plot, one panel each.
        path: also write the figure there.
        figsize: `(width, height)` in inches.
        dpi: dots per inch.

    Returns:
        The `matplotlib.figure.Figure`; the dotted line is `log(num_ops)`, the
        entropy of a uniform distribution.

    Example:
        >>> plot_entropy({"T=0.2": "RUN_T02/history.json", "T=1": "RUN_T1/history.json"})
    """
    if isinstance(histories, Mapping) and "epochs" not in histories:
        runs = dict(histories)
        if not runs:
            raise ValueError("Expected at least one history to plot, got an empty mapping.")
    else:
        runs = {"": histories}
    loaded = {label: load_history(h) for label, h in runs.items()}
    cells = [_check_kind(c) for c in cells]
    fig = new_figure(figsize, dpi)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    for ax, kind in zip(axes, cells, strict=True):
        for label, history in loaded.items():
            ax.plot(_epoch_numbers(history), mean_entropies(history, kind), marker="o",
                    markersize=3, label=label or None)
        num_ops = len(next(iter(loaded.values()))["op_names"])
        ax.axhline(math.log(num_ops), color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{kind} cell", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_matplotlib().ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean entropy (nats)")
    if len(loaded) > 1 or next(iter(loaded)):
        axes[-1].legend(fontsize=8)
    return _finish(fig, path, dpi)


# -- weight flips ------------------------------------------------------------------------------

_FLIP_KEYS = (("ff_ratio", "FF-ratio (flips per step)"), ("c2i_ratio", "C2I-ratio (changed vs init)"))


def _flip_stages(metrics) -> list[tuple[str, dict[str, list[float]]]]:
    """`[(stage label, {metric: [per epoch]})]` from the accepted input shapes."""
    if isinstance(metrics, str | os.PathLike):
        with open(metrics, encoding="utf-8") as f:
            metrics = json.load(f)
    if hasattr(metrics, "history") and isinstance(metrics.history, Mapping):
        metrics = metrics.history  # keras History or TwoStageResult
    if not isinstance(metrics, Mapping):
        raise TypeError(f"Expected metrics.json's path or dict, a Keras History, a TwoStageResult "
                        f"or a dict of per-epoch lists, got {type(metrics).__name__}.")
    stages = []
    for stage in ("stage1", "stage2"):
        value = metrics.get(stage)
        if isinstance(value, Mapping) and isinstance(value.get("epochs"), list):  # metrics.json
            rows = value["epochs"]
            stages.append((stage, {k: [r.get(k, math.nan) for r in rows]
                                   for k, _ in _FLIP_KEYS if any(k in r for r in rows)}))
        elif isinstance(value, Mapping):  # TwoStageResult.history
            stages.append((stage, {k: list(value[k]) for k, _ in _FLIP_KEYS if k in value}))
    if not stages:
        if isinstance(metrics.get("epochs"), list):  # a search history
            rows = [e.get("logs", e) for e in metrics["epochs"]]
            stages = [("", {k: [r.get(k, math.nan) for r in rows]
                            for k, _ in _FLIP_KEYS if any(k in r for r in rows)})]
        else:  # History.history
            stages = [("", {k: list(metrics[k]) for k, _ in _FLIP_KEYS if k in metrics})]
    stages = [(label, values) for label, values in stages if values]
    if not stages or not any(len(v) for _, values in stages for v in values.values()):
        raise ValueError("No 'ff_ratio' or 'c2i_ratio' values found; train with "
                         "bn.callbacks.FlipFlopRatio() and ChangeToInitRatio() (bnas-tf train "
                         "does) to record them.")
    return stages


def plot_flip_ratios(metrics: Mapping | str | os.PathLike | Any, *,
                     path: str | os.PathLike | None = None, log_scale: bool = False,
                     figsize: tuple[float, float] = (8.0, 3.2), dpi: float = 100) -> Figure:
    """FF-ratio and C2I-ratio curves over the training epochs (AdamBNN diagnostics).

    Args:
        metrics: `metrics.json` of `bnas-tf train` (its path or dict; both
            stages, one after the other, a dashed line between them), a
            `TwoStageResult`, a Keras `History` or its `.history` dict with
            `ff_ratio`/`c2i_ratio` lists.
        path: also write the figure there.
        log_scale: logarithmic y axis for the FF-ratio (it rises about
            exponentially with weight decay).
        figsize: `(width, height)` in inches.
        dpi: dots per inch.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: no FF-ratio or C2I-ratio values in `metrics`.

    Example:
        >>> plot_flip_ratios("TRAIN/metrics.json", path="TRAIN/flips.png")
    """
    stages = _flip_stages(metrics)
    fig = new_figure(figsize, dpi)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, (key, title) in zip(axes, _FLIP_KEYS, strict=True):
        offset = 0
        for label, values in stages:
            ys = np.asarray(values.get(key, []), dtype=float)
            count = max((len(v) for v in values.values()), default=0)
            if len(ys):
                xs = offset + np.arange(1, len(ys) + 1)
                ax.plot(xs, ys, marker="o", markersize=3, label=label or None)
            if offset:
                ax.axvline(offset + 0.5, color="gray", linestyle="--", linewidth=0.8)
            offset += count
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch" + (" (stages in turn)" if len(stages) > 1 else ""))
        ax.xaxis.set_major_locator(_matplotlib().ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "ff_ratio" and log_scale:
            ax.set_yscale("log")
        if len(stages) > 1 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _finish(fig, path, dpi)
